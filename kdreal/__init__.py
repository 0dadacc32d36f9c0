"""kdreal: the real engine. It executes kdlab operations on RDMA verbs (pyverbs).

* :class:`kdreal.engine.RealEngine` runs roles, one process each, on a verbs device;
* :mod:`kdreal.verbs` holds one role's verbs resources, :mod:`kdreal.wrs` converts work requests;
* :mod:`kdreal.rendezvous` is the out-of-band key-value store roles meet at;
* :mod:`kdreal.testbed` boots a VM with Soft-RoCE (rdma_rxe) for machines whose
  kernel has no RDMA.

Importing kdreal does not import pyverbs; role processes import it when they open
the device.
"""

from kdreal.engine import RealEngine, RoleError

__all__ = ["RealEngine", "RoleError"]
