"""KafkaDirect on Kafka's cluster shapes (issue 12): many partitions, brokers apart from the replication
factor, consumer groups, shared producers, open loop; Kafka's guarantees hold on each.

Checked from what the roles return and from spies on the brokers: every record delivered exactly once, in
order per partition (offsets contiguous, each producer's sequences in order, each batch's CRC its
producer's); a consumer group reads each partition once; acks=all answered only once every in-sync
replica holds the batch; no slot shows a consumer anything past the high watermark.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from kdlab.kafka import direct, direct_broker, direct_commit
from kdlab.kafka.batches import batch_factory
from kdlab.kafka.direct_push import PushRegion, coalesce
from kdlab.kafka.direct_replication import AckCodec
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.topology import Topology
from kdsim.engine import SimEngine

SMALL = {"system": "kafkadirect", "records_per_producer": 400, "record_bytes": 100, "batch_bytes": 1024,
         "segment_bytes": 16384, "handler_threads": 2}  # fmt: skip
SHAPES = {
    "3 producers, 12 partitions, 3 brokers, RF 2, a group of 3": {
        "brokers": 3, "replication_factor": 2, "acks": -1, "producers": 3, "partitions": 12, "consumers": 3},
    "shared, round-robin, RF 3": {
        "brokers": 3, "replication_factor": 3, "acks": -1, "producers": 2, "partitions": 4, "consumers": 2,
        "produce_mode": "shared", "partitioner": "round-robin"},
    "two topics, two groups": {"brokers": 2, "topics": 2, "groups": 2, "producers": 2, "partitions": 4,
                               "consumers": 2, "assignor": "round-robin"},
    "open loop, linger, sticky": {
        "brokers": 2, "replication_factor": 2, "acks": -1, "producers": 2, "partitions": 4, "consumers": 1,
        "produce_mode": "shared", "partitioner": "sticky", "rate_total": 400_000, "duration_ms": 2.0,
        "linger_ms": 0.05},
    "no slots": {"brokers": 2, "producers": 2, "partitions": 4, "consumers": 2, "slots": False},
}  # fmt: skip


def _run(**kw: Any) -> tuple[KafkaParams, dict, dict]:
    p = KafkaParams(**{**SMALL, **kw})
    roles = direct.roles(p)
    states = {r.host: r.args["state"] for r in roles if "state" in r.args}
    return p, SimEngine("cx4-edr-100g").run(roles), states


def check_delivery(p: KafkaParams, out: dict) -> None:
    """Exactly once, in order per partition, byte for byte; each group reads each partition of its topic once."""
    topo = Topology(p)
    produced: dict[int, int] = defaultdict(int)  # partition -> records acked
    for w in topo.producers:
        for q, records, *_ in out[w.name]["sent"]:
            assert q in w.partitions
            produced[q] += records
    assert set(produced) == set(range(len(topo.replicas))), "every partition is written"
    read: dict[tuple[int, int], list[int]] = defaultdict(list)  # (topic, group) -> partitions read
    for c in topo.consumers:
        res = out[c.name]
        read[c.topic, c.group] += c.partitions
        offset: dict[int, int] = dict.fromkeys(c.partitions, 0)
        sequence: dict[tuple[int, int], int] = defaultdict(int)
        for got, seen in zip(res["delivered"], res["received"], strict=True):
            pid, base_sequence, records, base_offset, timestamp, crc, q = got
            assert seen[:3] == (q, records, timestamp)
            assert base_offset == offset[q], f"partition {q}: offsets are contiguous"
            assert base_sequence == sequence[pid, q], f"partition {q}: producer {pid}'s batches in order, once"
            assert crc == batch_factory(records, p.record_bytes).crc(pid, base_sequence, timestamp, seen[3])
            offset[q] += records
            sequence[pid, q] += records
        assert offset == {q: produced[q] for q in c.partitions}, "every partition read to its end"
        assert res["records"] == sum(offset.values())
    for (t, _), parts in read.items():
        assert sorted(parts) == topo.topic_partitions(t), "a group reads each partition exactly once"


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_record_is_delivered_once_in_order_on_every_shape(shape: dict) -> None:
    p, out, _ = _run(**shape)
    assert p.records_total * p.record_bytes > 2 * p.segment_bytes or p.open_loop  # segment rolls
    check_delivery(p, out)


def test_results_carry_what_the_omb_metrics_read() -> None:
    _, out, _ = _run(**SHAPES["open loop, linger, sticky"])
    prod, cons = out["producer0"], out["consumer0"]
    assert {"records", "bytes", "t_first_ns", "t_last_ns", "ack_latency_ns", "sent"} <= set(prod)
    assert len(prod["sent"]) == len(prod["ack_latency_ns"]) and all(len(s) == 7 for s in prod["sent"])
    for _, _, i_first, i_last, s_first, s_last, ack in prod["sent"]:
        assert i_first <= i_last <= s_last and i_first <= s_first <= s_last < ack
    keys = {"records", "delivered", "received", "e2e_latency_ns", "fetch_latency_ns", "fetch_data_latency_ns",
            "fetch_empty_latency_ns", "catchup_latency_ns", "t_first_ns", "t_last_ns"}  # fmt: skip
    assert keys <= set(cons) and all(len(r) == 5 for r in cons["received"])


def test_acks_all_only_once_every_in_sync_replica_holds_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The n-th ack of a partition answers its n-th batch: the high watermark and every follower are past it."""
    acked: dict[tuple[str, int], int] = defaultdict(int)
    checked = []
    original = direct_commit.ack_producer

    def ack(state: Any, pid: int, local: Any, wr: Any) -> Any:
        log = local.part.log
        acked[state.name, log.partition] += 1
        end = log.entries[acked[state.name, log.partition] - 1].last_offset + 1
        followers = [log.follower_leo.get(f, 0) for f in log.replicas[1:]]
        checked.append(log.hw >= end and all(leo >= end for leo in followers))
        return original(state, pid, local, wr)

    monkeypatch.setattr(direct_commit, "ack_producer", ack)
    p, out, _ = _run(**SHAPES["3 producers, 12 partitions, 3 brokers, RF 2, a group of 3"])
    assert len(checked) == sum(len(out[f"producer{i}"]["sent"]) for i in range(p.producers)) and all(checked)


def test_no_slot_shows_anything_past_the_high_watermark(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = direct_broker.slot_values

    def slot_values(log: Any, seg: Any) -> Any:
        values = original(log, seg)
        below = [e.position + e.size for e in log.entries if e.seg_id == seg.seg_id and e.last_offset < log.hw]
        seen.append(values[1] <= max(below, default=0))
        return values

    monkeypatch.setattr(direct_broker, "slot_values", slot_values)
    p, out, _ = _run(**SHAPES["shared, round-robin, RF 3"])
    check_delivery(p, out)
    assert len(seen) > 100 and all(seen)


def test_exclusive_producers_write_only_their_own_partitions_one_qp_per_broker() -> None:
    p, out, states = _run(brokers=3, producers=3, partitions=12, consumers=1)
    topo = Topology(p)
    for w in topo.producers:
        assert {s[0] for s in out[w.name]["sent"]} == set(w.partitions)
    for b, st in states.items():  # one QP from each producer to each broker leading one of its partitions
        writers = sorted(w.pid for w in topo.producers if any(topo.leader(q) == b for q in w.partitions))
        assert sorted(st.producer_qp) == writers


def test_a_consumer_owns_one_slot_row_per_broker_and_one_slot_per_partition_there() -> None:
    p, _, states = _run(brokers=2, producers=2, partitions=8, consumers=2)
    row_bytes = p.slots_per_consumer * direct_broker.SLOT_BYTES
    for st in states.values():
        assert sorted(st.rows) == [0, 1] and sorted(st.rows.values()) == [0, 1]
        for part in st.partitions.values():
            for client, slot in part.readers.items():
                assert slot.offset // row_bytes == st.rows[client]  # in the client's row
        offsets = [s.offset for pt in st.partitions.values() for s in pt.readers.values()]
        assert len(offsets) == len(set(offsets))


def test_push_threads_are_chosen_by_follower_id_and_coalesce_per_partition() -> None:
    p = KafkaParams(**{**SMALL, "brokers": 6, "replication_factor": 3, "partitions": 12, "replication_threads": 2})
    pushers = [r for r in direct.roles(p) if ".push" in r.name]
    for r in pushers:
        assert all(int(f[1:]) % 2 == r.args["index"] for f in r.args["followers"])
    for b in Topology(p).brokers:  # every follower of each leader has exactly one push thread there
        mine = [f for r in pushers if r.host == b for f in r.args["followers"]]
        assert len(mine) == len(set(mine))
    regions = [PushRegion("b1", q, sid, pos, 800, end) for q, sid, pos, end in
               [(0, 5, 0, 8), (1, 6, 0, 8), (0, 5, 800, 16), (0, 5, 1600, 24), (0, 7, 0, 32)]]  # fmt: skip
    pushes = coalesce(regions, 2000)
    assert [(r.partition, r.sid, r.position, r.size, r.end) for r in pushes] == [
        (0, 5, 0, 2400, 24), (0, 7, 0, 800, 32), (1, 6, 0, 800, 8)]  # fmt: skip


def test_a_replica_ack_immediate_names_its_partition_and_is_refused_when_it_cannot() -> None:
    codec = AckCodec.for_replicas(3000)
    assert codec.index_bits == 12
    imm = codec.encode(2999, 5 + 3 * codec.held_mod)
    assert imm < 1 << 32 and codec.decode(imm) == (2999, 5)
    with pytest.raises(ValueError, match="do not fit a 32-bit replica ack"):
        AckCodec.for_replicas(2_000_000)
