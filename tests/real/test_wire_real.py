"""The foreign-process attack of ``tests/test_wire.py`` during the RDMA systems' runs on real verbs.

OSU's RDMA Kafka (typed messages in SEND buffers, replication over TCP) and
KafkaDirect (its TCP control plane carries tuples and segment descriptors) run a
small replicated cluster while a foreign process connects to the rendezvous and to
every listener with pickled payloads and wrong tokens: nothing runs, every foreign
connection is closed, and every record is delivered once and in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.workloads.kafka import delivery_ok
from tests.test_wire import check_attacks_failed, install_attackers

CLUSTER = {
    "replication_factor": 2, "producers": 2, "partitions": 2, "consumers": 2, "acks": -1,
    "records_per_producer": 200, "record_bytes": 100, "batch_bytes": 1024, "segment_bytes": 16384,
    "network_threads": 1, "io_threads": 1, "handler_threads": 1,
}  # fmt: skip


def _listeners(p: KafkaParams) -> int:
    """TcpListen calls of the cluster: each broker's network threads (Kafka, OSU) or control plane (KafkaDirect)."""
    return 2 * (1 if p.system == "kafkadirect" else p.network_threads)


@pytest.mark.rdma
@pytest.mark.parametrize("system", ["osu", "kafkadirect"])
def test_rdma_systems_are_unaffected_by_a_foreign_process(
    real_engine: Any, system: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = KafkaParams(system=system, **CLUSTER)
    install_attackers(monkeypatch, tmp_path)
    out = real_engine.run(build(p))
    assert [out[f"consumer{i}"]["records"] for i in (0, 1)] == [out[f"producer{i}"]["records"] for i in (0, 1)]
    assert delivery_ok(out, p)
    check_attacks_failed(tmp_path, listeners=_listeners(p))
