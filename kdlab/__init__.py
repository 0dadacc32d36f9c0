"""kdlab: RDMA publish-subscribe designs (KafkaDirect) in simulation and on real verbs.

``kdlab`` holds what both engines share: the verbs vocabulary and operations,
the engine-neutral datapaths, experiment specs, the result schema and the runner.
``kdsim`` and ``kdreal`` are the engines.
"""

__version__ = "0.1.0"
