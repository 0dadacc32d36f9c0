"""KafkaDirect's guarantees on a multi-partition shape, on both engines (kdreal: ``rdma``, in the testbed).

Two producers write four partitions led by two brokers (RF 2, acks=all, 16 KiB segments: rolls); a group
of two consumers reads them. Every record is delivered once, in order per partition, byte for byte
(:func:`tests.kafka.test_direct_shapes.check_delivery`); the broker-side spies (inherited by the forked
broker processes under kdreal) raise inside the broker if an acks=all answer or a slot would go past the
high watermark, and leave a line per check in a file so the test knows they ran.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kdlab.kafka import direct, direct_broker, direct_commit
from kdlab.kafka.params import KafkaParams
from tests.kafka.test_direct_shapes import check_delivery

SHAPE = {
    "system": "kafkadirect", "brokers": 2, "replication_factor": 2, "acks": -1, "producers": 2, "partitions": 4,
    "consumers": 2, "records_per_producer": 600, "record_bytes": 100, "batch_bytes": 1024, "segment_bytes": 16384,
    "handler_threads": 2,
}  # fmt: skip


def _mark(spy_dir: Path, what: str) -> None:
    with open(spy_dir / f"{what}.{os.getpid()}", "a") as f:
        f.write("1\n")


def _count(spy_dir: Path, what: str) -> int:
    return sum(len(f.read_text().splitlines()) for f in spy_dir.glob(f"{what}.*"))


@pytest.mark.parametrize("mode", ["exclusive", "shared"])
def test_kafkadirect_groups_and_partitions_keep_kafkas_guarantees(
    engine: Any, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = {**SHAPE, "produce_mode": mode} | ({"partitioner": "round-robin"} if mode == "shared" else {})
    p = KafkaParams(**shape)
    ack_producer, slot_values = direct_commit.ack_producer, direct_broker.slot_values
    acked: dict[int, int] = {}

    def spy_ack(state: Any, pid: int, local: Any, wr: Any) -> Any:
        log = local.part.log
        acked[log.partition] = n = acked.get(log.partition, 0) + 1
        end = log.entry(n - 1).last_offset + 1
        holders = [log.leo, *(log.follower_leo.get(f, 0) for f in log.replicas[1:])]
        assert log.hw >= end and min(holders) >= end, f"acks=all answered at {end} while replicas hold {holders}"
        _mark(tmp_path, "ack")
        return ack_producer(state, pid, local, wr)

    def spy_slot(log: Any, seg: Any) -> Any:
        values = slot_values(log, seg)
        below = [e.position + e.size for e in log.entries if e.seg_id == seg.seg_id and e.last_offset < log.hw]
        assert values[1] <= max(below, default=0), f"a slot shows {values[1]} B, past the high watermark"
        _mark(tmp_path, "slot")
        return values

    monkeypatch.setattr(direct_commit, "ack_producer", spy_ack)
    monkeypatch.setattr(direct_broker, "slot_values", spy_slot)
    out = engine.run(direct.roles(p))
    check_delivery(p, out)
    assert _count(tmp_path, "ack") == sum(len(out[f"producer{i}"]["sent"]) for i in range(p.producers))
    assert _count(tmp_path, "slot") > 0


def test_kafkadirect_retention_deletes_and_deregisters_replicated_segments(engine: Any) -> None:
    """4 KiB segments, 8 KiB kept: old segments go once replicated (kdreal: real ibv_dereg_mr where the deleting
    role registered them) and every produce is acknowledged. No consumers: a slow one would fall behind retention."""
    p = KafkaParams(**{**SHAPE, "consumers": 0, "segment_bytes": 4096, "retention_bytes": 8192})
    roles = direct.roles(p)
    out = engine.run(roles)
    acked = sum(batch[1] for i in range(p.producers) for batch in out[f"producer{i}"]["sent"])
    assert acked == p.producers * p.records_per_producer
    if engine.name == "sim":  # kdreal's brokers run in processes of their own: their logs are not these objects
        logs = [part.log for r in roles if "state" in r.args and hasattr(r.args["state"], "partitions")
                for part in r.args["state"].partitions.values()]  # fmt: skip
        assert all(log.start_offset > 0 for log in logs)
