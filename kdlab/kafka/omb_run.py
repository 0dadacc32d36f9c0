"""Run an OpenMessaging Benchmark workload on a simulated cluster and write OMB's result JSON.

Mapping, stated: partitions = topics x partitionsPerTopic; producers = topics x
producersPerTopic; consumers = topics x subscriptionsPerTopic x consumerPerSubscription
(consumer j reads partition j mod partitions from the start); messageSize is the record
size. Producers run closed loop (as fast as the system allows), so ``producerRate`` is
not enforced, and the run covers ``bytes_per_producer`` of data rather than
``testDurationMinutes`` of wall time: the simulated rates and latencies are those of a
saturated run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlab.engines import make_engine
from kdlab.kafka.cluster import build
from kdlab.kafka.omb import OmbWorkload, load_omb_workload, omb_result_json
from kdlab.kafka.params import KafkaParams


def omb_params(w: OmbWorkload, system: str, **overrides: Any) -> KafkaParams:
    return KafkaParams(
        system=system,
        variant=f"OMB {w.name}",
        partitions=w.total_partitions,
        producers=w.total_producers,
        consumers=w.total_consumers,
        record_bytes=w.message_size,
        **{"bytes_per_producer": 4_000_000, "segment_bytes": 16 * 1024 * 1024, **overrides},
    )


def run_omb(source: str | Path, system: str, profile: str = "cx4-edr-100g", out: str | Path | None = None,
            **overrides: Any) -> dict[str, Any]:  # fmt: skip
    """Simulate the workload on ``system``; -> OMB's TestResult dict (also written to ``out``)."""
    w = load_omb_workload(source)
    p = omb_params(w, system, **overrides)
    results = make_engine("sim", profile).run(build(p))
    producers = [v for k, v in results.items() if k.startswith("producer")]
    consumers = [v for k, v in results.items() if k.startswith("consumer")]
    span = (max(r["t_last_ns"] for r in producers) - min(r["t_first_ns"] for r in producers)) * 1e-9
    publish_rate = [sum(r["records"] for r in producers) / span]
    consume_rate = []
    if consumers:
        cspan = (max(r["t_last_ns"] for r in consumers) - min(r["t_first_ns"] for r in consumers)) * 1e-9
        consume_rate = [sum(r["records"] for r in consumers) / cspan]
    return omb_result_json(
        w, f"kdsim {system} ({profile})", publish_rate, consume_rate,
        [x / 1e6 for r in producers for x in r["ack_latency_ns"]],
        [x / 1e6 for r in consumers for x in r["e2e_latency_ns"]],
        path=out,
    )  # fmt: skip
