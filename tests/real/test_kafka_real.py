"""Kafka, OSU-Kafka and KafkaDirect on both engines: the same datapath code, the same guarantees.

A 3-broker cluster with replication factor 3, two producers and two consumers moves
3000 records (about 380 batches, many segment rolls) through each system. Every
test runs on kdsim (default suite) and on kdreal (``rdma``: real verbs, real
sockets, real files; in the testbed). Checked:

* every record is delivered exactly once, in order per partition, with contiguous
  offsets, and byte for byte (each batch's CRC, which covers every byte after it,
  is the one its producer computed; consumers verified it against the bytes);
* acks=all is answered only once every in-sync replica holds the batch;
* no consumer is served, or shown in its metadata slot, anything past the high
  watermark.

The broker-side checks are spies wrapped around the datapath's functions before the
engine starts; under kdreal the forked broker processes inherit them. A violated
check raises inside the broker, which fails the run; each check also appends a line
to a file, so the test knows the checks ran.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kdlab.kafka import apache, direct_broker, direct_commit
from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.protocol import ProduceResponse
from kdlab.workloads.kafka import delivery_ok, delivery_problems

SYSTEMS = [
    {"system": "kafka"},
    {"system": "osu"},
    {"system": "kafkadirect", "produce_mode": "exclusive"},
    {"system": "kafkadirect", "produce_mode": "shared"},
]
CLUSTER = {
    "replication_factor": 3, "producers": 2, "partitions": 2, "consumers": 2, "acks": -1,
    "records_per_producer": 1500, "record_bytes": 100, "batch_bytes": 1024, "segment_bytes": 16384,
    "network_threads": 1, "io_threads": 2, "handler_threads": 2,
}  # fmt: skip


def _log(spy_dir: Path, what: str) -> None:
    with open(spy_dir / f"{what}.{os.getpid()}", "a") as f:
        f.write("1\n")


def _count(spy_dir: Path, what: str) -> int:
    return sum(len(f.read_text().splitlines()) for f in spy_dir.glob(f"{what}.*"))


def _install_spies(monkeypatch: pytest.MonkeyPatch, p: KafkaParams, spy_dir: Path) -> None:
    install_spies(monkeypatch.setattr, p, spy_dir)


def install_spies(setattr_: Any, p: KafkaParams, spy_dir: Path) -> None:
    """Wrap the broker functions with the checks; ``setattr_(module, name, value)`` installs each
    (monkeypatch's in this process, plain ``setattr`` in a host process of another machine)."""
    respond, fetch_reply = apache._respond, apache._fetch_reply
    ack_producer, slot_values = direct_commit.ack_producer, direct_broker.slot_values
    acked: dict[tuple[str, int], int] = {}

    def spy_respond(state: Any, conn: Any, message: Any, nbytes: int, zero_copy: bool = False) -> Any:
        if isinstance(message, ProduceResponse):
            for ack in message.acks:
                log = state.logs[ack.partition]
                holders = [log.leo, *log.follower_leo.values()]
                assert len(holders) == p.replication_factor and min(holders) >= log.hw > ack.base_offset, (
                    f"acks=all answered for offset {ack.base_offset} while the replicas hold {holders}"
                )
                _log(spy_dir, "ack")
        return respond(state, conn, message, nbytes, zero_copy)

    def spy_fetch_reply(state: Any, req: Any) -> Any:
        reply = fetch_reply(state, req)
        if req.replica is None:
            for asked, part in zip(req.partitions, reply.partitions, strict=True):
                log = state.logs[part.partition]
                last = asked.offset + sum(int.from_bytes(b[57:61], "big") for b in part.batches)
                assert last <= log.hw, f"a consumer was served offsets up to {last}, above the high watermark {log.hw}"
            _log(spy_dir, "fetch")
        return reply

    def spy_ack_producer(state: Any, pid: int, local: Any, wr: Any) -> Any:
        log = local.part.log
        q = log.partition
        acked[state.name, q] = n = acked.get((state.name, q), 0) + 1
        end = log.entries[n - 1].last_offset + 1  # acks leave in commit order
        holders = [log.leo, *log.follower_leo.values()]
        assert len(holders) == p.replication_factor and min(holders) >= end, (
            f"ack {n} of partition {q} (offsets below {end}) sent while the replicas hold {holders} records"
        )
        _log(spy_dir, "ack")
        return ack_producer(state, pid, local, wr)

    def spy_slot_values(log: Any, seg: Any) -> Any:
        values = slot_values(log, seg)
        below = [e.position + e.size for e in log.entries if e.seg_id == seg.seg_id and e.last_offset < log.hw]
        assert values[1] <= max(below, default=0), f"slot shows {values[1]} B of segment {seg.seg_id} > high watermark"
        _log(spy_dir, "slot")
        return values

    setattr_(apache, "_respond", spy_respond)
    setattr_(apache, "_fetch_reply", spy_fetch_reply)
    setattr_(direct_commit, "ack_producer", spy_ack_producer)
    setattr_(direct_broker, "slot_values", spy_slot_values)


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: "-".join(s.values()))
def test_cluster_delivers_every_record_once_in_order_and_never_past_the_high_watermark(
    engine: Any, system: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = KafkaParams(**system, **CLUSTER)
    _install_spies(monkeypatch, p, tmp_path)
    check_acceptance_run(engine.run(build(p)), p, tmp_path)


def check_acceptance_run(out: dict[str, Any], p: KafkaParams, tmp_path: Path) -> None:
    """The acceptance run's checks: exact delivery, every ack checked, the spies ran (also used across hosts)."""
    assert p.records_total * (p.record_bytes + 9) > 4 * p.segment_bytes  # several segment rolls per partition
    produced = [out[f"producer{i}"]["records"] for i in range(p.producers)]
    consumed = [out[f"consumer{j}"]["records"] for j in range(p.consumers)]
    # producers send exactly their records (the last batch holds what is left)
    assert produced == consumed == [1500, 1500]
    assert delivery_ok(out, p)
    batches = -(-produced[0] // p.records_per_batch) * 2
    assert _count(tmp_path, "ack") == batches  # every acknowledgement was checked
    if p.system == "kafkadirect":
        assert _count(tmp_path, "slot") > 0
    else:
        assert _count(tmp_path, "fetch") > 0


def test_delivery_check_rejects_a_changed_byte_or_a_reordered_batch(engine: Any) -> None:
    p = KafkaParams(system="kafkadirect", **{**CLUSTER, "records_per_producer": 80})
    out = engine.run(build(p))
    assert delivery_ok(out, p)
    got = out["consumer0"]["delivered"]
    first = got[0]
    got[0] = (*first[:5], first[5] ^ 1, *first[6:])  # a batch whose bytes differ from what its producer wrote
    assert not delivery_ok(out, p)
    got[0] = first
    got[0], got[1] = got[1], got[0]
    assert not delivery_ok(out, p)


SPREAD = {
    "brokers": 3, "replication_factor": 3, "acks": -1, "partitions": 12, "producers": 3, "partitioner": "round-robin",
    "consumers": 3, "records_per_producer": 400, "record_bytes": 100, "batch_bytes": 1024, "segment_bytes": 16384,
    "network_threads": 1, "io_threads": 2,
}  # fmt: skip
# the consumers tail: they learn each partition's end by peeking at the producers' counts (Lookup(wait=False))


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_producers_spread_over_partitions_deliver_exactly_once_to_a_group(
    engine: Any, system: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 producers over 12 partitions on 3 brokers, read by a group of 3 consumers (requests of several partitions,
    consumers of several brokers, replica fetchers of several partitions): every record once, in order per
    partition, every partition used, each partition read by one member."""
    p = KafkaParams(system=system, **SPREAD)
    _install_spies(monkeypatch, p, tmp_path)
    out = engine.run(build(p))
    assert delivery_problems(out, p) == []
    for i in range(p.producers):
        assert {s[0] for s in out[f"producer{i}"]["sent"]} == set(range(p.partitions))
    assert sum(out[f"consumer{j}"]["records"] for j in range(p.consumers)) == 3 * 400
    read = [{d[6] for d in out[f"consumer{j}"]["delivered"]} for j in range(p.consumers)]
    assert sorted(q for r in read for q in r) == list(range(p.partitions))  # each partition by exactly one member
    assert _count(tmp_path, "ack") > 0 and _count(tmp_path, "fetch") > 0
