"""A KafkaDirect follower acks only what it appended (issue 10, item 9).

One bit flipped in a batch pushed to one follower (fault injection): the follower
appends nothing from that batch on, the leader's high watermark stays at the
follower's real log end, and acks=all is not answered for the corrupt batch or any
later one, even after Kafka's request timeout (30 s). The other partition, whose
replicas are healthy, is unaffected. Without the fault, everything is answered.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from kdlab.kafka import direct, direct_commit, direct_producer
from kdlab.kafka.direct_replication import FlipBit
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.topology import Topology
from kdsim.engine import SimEngine

# RF 3 on 3 brokers, two partitions led by different brokers, ~1 KiB batches of 8 records pushed up to 2 per
# write, 16 KiB segments: several rolls per partition.
CLUSTER = {
    "system": "kafkadirect", "replication_factor": 3, "acks": -1, "producers": 2, "partitions": 2,
    "records_per_producer": 400, "record_bytes": 100, "batch_bytes": 1024, "segment_bytes": 16384,
    "handler_threads": 2,
}  # fmt: skip
REQUEST_TIMEOUT_NS = 30e9  # request.timeout.ms
REPLICAS = Topology(KafkaParams(**CLUSTER)).replicas  # partition -> (leader, follower, follower)


def _run(monkeypatch: pytest.MonkeyPatch, faults: tuple[FlipBit, ...], until_ns: float | None) -> dict[str, Any]:
    """Run the cluster; return its results, the brokers' states, and the acks each side saw."""
    p = KafkaParams(**CLUSTER)
    answered: Counter[int] = Counter()  # producer id -> acks the leader sent
    received: Counter[int] = Counter()  # producer id -> acks the producer got
    ack_producer, take_acks = direct_commit.ack_producer, direct_producer._Sender.take_acks

    def spy_ack_producer(state: Any, pid: int, local: Any, wr: Any) -> Any:
        answered[pid] += 1
        return ack_producer(state, pid, local, wr)

    def spy_take_acks(sender: Any, *args: Any) -> Any:
        before = len(sender.stats.sent)
        yield from take_acks(sender, *args)
        received[sender.pid] += len(sender.stats.sent) - before

    monkeypatch.setattr(direct_commit, "ack_producer", spy_ack_producer)
    monkeypatch.setattr(direct_producer._Sender, "take_acks", spy_take_acks)
    roles = direct.roles(p, faults)
    states = {r.host: r.args["state"] for r in roles if "state" in r.args}
    out = SimEngine("cx4-edr-100g").run(roles, until_ns=until_ns)
    return {"p": p, "out": out, "states": states, "answered": answered, "received": received}


def _contiguous(log: Any) -> bool:
    """The replica's batches follow each other from offset 0 with no gap."""
    end = 0
    for e in log.entries:
        if e.base_offset != end:
            return False
        end = e.last_offset + 1
    return end == log.leo


def test_without_a_fault_every_acks_all_request_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(monkeypatch, (), None)
    p, out, states = run["p"], run["out"], run["states"]
    batches = -(-p.records_total // p.records_per_batch)
    assert batches == 50
    for pid in range(p.producers):
        assert out[f"producer{pid}"]["records"] == batches * p.records_per_batch
        assert run["answered"][pid] == run["received"][pid] == batches
    for q in range(p.partitions):
        leader, *followers = (states[b].partitions[q].log for b in REPLICAS[q])
        assert leader.hw == leader.leo == batches * p.records_per_batch
        for log in followers:
            assert _contiguous(log) and log.leo == leader.leo


@pytest.mark.parametrize(
    ("batch", "byte"),
    [(0, 61), (18, 61), (18, 7)],
    ids=["first-batch-record", "mid-log-record", "mid-log-base-offset"],
)
def test_a_corrupt_push_is_not_acked_past_the_last_good_batch(
    monkeypatch: pytest.MonkeyPatch, batch: int, byte: int
) -> None:
    """byte 61: the first record, under the CRC; byte 7: baseOffset, outside it (a hole in the offsets)."""
    lead, bad, good = REPLICAS[0]
    run = _run(monkeypatch, (FlipBit(bad, partition=0, batch=batch, byte=byte),), REQUEST_TIMEOUT_NS)
    p, out, states = run["p"], run["out"], run["states"]
    per = p.records_per_batch
    leader, corrupt, healthy = (states[b].partitions[0].log for b in (lead, bad, good))

    # the follower appended every batch before the corrupt one and none from it on
    assert _contiguous(corrupt) and len(corrupt.entries) == batch and corrupt.leo == batch * per
    assert len(healthy.entries) > batch + 1  # the leader did push batches after it, and the other follower took them
    assert len(leader.entries) == len(healthy.entries)

    # the leader counts that follower at its real log end, and the high watermark stops there
    assert leader.follower_leo[bad] == corrupt.leo
    assert leader.hw == corrupt.leo < healthy.leo

    # acks=all: the batches below the high watermark are answered; the corrupt one and later are not
    assert "producer0" not in out  # still waiting for its acks after the request timeout
    assert run["answered"][0] == run["received"][0] == batch

    # the other partition's replicas are healthy: all of its 50 batches are answered
    assert out["producer1"]["records"] == 50 * per
    assert run["answered"][1] == run["received"][1] == 50
    log1 = states[REPLICAS[1][0]].partitions[1].log
    assert log1.hw == log1.leo == 50 * per


def test_a_fault_must_aim_at_a_follower() -> None:
    p = KafkaParams(**CLUSTER)
    with pytest.raises(ValueError, match="not a follower"):
        direct.roles(p, (FlipBit(REPLICAS[0][0], partition=0, batch=0),))  # the leader of partition 0
