"""The RecordAccumulator batches as Kafka's does: batch.size, linger.ms, buffer.memory, drain, partitioners."""

from collections import Counter

import pytest

from kdlab.kafka.accumulator import RecordAccumulator
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.topology import Topology

MS = 1e6


def _acc(**kw) -> tuple[KafkaParams, RecordAccumulator]:
    p = KafkaParams(**{"system": "kafka", "record_bytes": 100, **kw})
    t = Topology(p)
    w = t.producers[0]
    return p, RecordAccumulator(p, w, {q: t.leader(q) for q in w.partitions}, 0.0)


def _run(acc: RecordAccumulator, ack_after_ns: float = 0.0) -> list:
    """Drive the accumulator as an idle Sender would: wake when something is ready, drain, ack at once."""
    now, sent = 0.0, []
    while not acc.idle:
        nxt = acc.next_ready_ns(now)
        assert nxt is not None
        now = nxt
        acc.append_until(now)
        for b in acc.brokers_with_data():
            for batch in acc.drain(b, now):
                sent.append((now, batch))
                acc.acked(batch, now + ack_after_ns)
    return sent


def test_at_a_low_rate_batches_close_on_linger() -> None:
    p, acc = _acc(rate_per_producer=2000, duration_ms=50, linger_ms=5, batch_bytes=16384)
    sent = _run(acc)
    assert sum(b.records for _, b in sent) == 100  # 2000 records/s for 50 ms
    for now, batch in sent[:-1]:  # the last is flushed when the producer closes
        assert batch.records < p.records_per_batch  # below batch.size
        assert now - batch.created_ns == pytest.approx(5 * MS)  # its age is linger.ms
        assert batch.records in (10, 11)  # a record due at the linger's end still joins


def test_at_a_high_rate_batches_close_full_before_their_linger() -> None:
    p, acc = _acc(rate_per_producer=1_000_000, duration_ms=5, linger_ms=5, batch_bytes=4096)
    sent = _run(acc)
    full = [b for _, b in sent if b.records == p.records_per_batch]
    assert len(full) >= len(sent) - 1  # all but the flushed last one
    assert all(now - b.created_ns < 5 * MS for now, b in sent)
    assert sum(b.records for _, b in sent) == 5000


def test_linger_zero_sends_each_record_when_the_sender_is_idle() -> None:
    _, acc = _acc(rate_per_producer=1000, duration_ms=10)
    assert [b.records for _, b in _run(acc)] == [1] * 10


def _run_late_acks(acc: RecordAccumulator, delay_ns: float) -> list:
    """Drive the accumulator with every ack ``delay_ns`` after its batch went out -> (sent at, batch)."""
    now, out, pending = 0.0, [], []
    while not acc.idle:
        nxt = acc.next_ready_ns(now)
        if nxt is None:  # blocked: the oldest ack frees memory
            t_ack, batch = pending.pop(0)
            now = max(now, t_ack)
            acc.acked(batch, now)
            continue
        now = nxt
        acc.append_until(now)
        for b in acc.brokers_with_data():
            for batch in acc.drain(b, now):
                pending.append((now + delay_ns, batch))
                out.append((now, batch))
    return out


def test_buffer_memory_blocks_the_application_and_delays_sends() -> None:
    """Acks come 10 ms late; 4 batches of memory: the application waits, records are sent after intended."""
    _, acc = _acc(rate_per_producer=100_000, duration_ms=30, batch_bytes=1024, buffer_memory=4096, linger_ms=0)
    sent = _run_late_acks(acc, 10 * MS)
    assert max(b.sent_first_ns - b.intended_first_ns for _, b in sent) >= 9 * MS  # OMB's publish delay


def test_the_application_stops_at_the_runs_end_even_if_records_are_unsent() -> None:
    """OMB's producers stop when the test ends: a blocked application does not catch up afterwards."""
    _, acc = _acc(rate_per_producer=1e6, duration_ms=1, batch_bytes=1024, buffer_memory=4096)
    sent = _run_late_acks(acc, 0.5 * MS)
    assert sum(b.records for _, b in sent) < 500  # of the 1,000 intended
    assert all(b.sent_first_ns < 1 * MS for _, b in sent)


def test_drain_takes_one_batch_per_partition_of_the_broker_up_to_max_request_size() -> None:
    _, acc = _acc(brokers=2, partitions=4, partitioner="round-robin", rate_per_producer=1e6, duration_ms=1,
                  batch_bytes=1024, linger_ms=1000, max_request_bytes=2048)  # fmt: skip
    acc.append_until(0.2 * MS)  # 200 records over 4 partitions: full batches queued
    for broker in ("b0", "b1"):
        batches = acc.drain(broker, 0.2 * MS)
        assert len({b.partition for b in batches}) == len(batches)  # one per partition
        assert 1 <= len(batches) <= 2
        assert all(acc.leader_of[b.partition] == broker for b in batches)


@pytest.mark.parametrize("partitioner", ["round-robin", "sticky"])
def test_spreading_partitioners_use_every_partition(partitioner: str) -> None:
    _, acc = _acc(partitions=12, partitioner=partitioner, rate_per_producer=100_000, duration_ms=20,
                  batch_bytes=1024)  # fmt: skip
    used = Counter(b.partition for _, b in _run(acc))
    assert sorted(used) == list(range(12))


def test_sticky_stays_on_a_partition_until_its_batch_closes() -> None:
    p, acc = _acc(partitions=6, partitioner="sticky", rate_per_producer=1e6, duration_ms=1, batch_bytes=2048,
                  linger_ms=1000)  # fmt: skip
    acc.append_until(0.1 * MS)
    queued = [b for q in acc.queued.values() for b in q]
    assert queued and all(b.records == p.records_per_batch for b in queued)
    assert len(acc.open) == 1  # only the current sticky partition has an open batch


def test_keyed_records_follow_their_keys() -> None:
    _, acc = _acc(partitions=8, partitioner="default", keys="round-robin", rate_per_producer=1e6, duration_ms=2)
    used = Counter(b.partition for _, b in _run(acc) for _ in range(b.records))
    assert sorted(used) == list(range(8))
    assert max(used.values()) < 2 * min(used.values())  # 10,000 keys spread about evenly


def test_closed_loop_fills_each_partition_with_full_batches() -> None:
    p, acc = _acc(brokers=2, partitions=4, records_per_producer=1000, batch_bytes=1024)
    made = acc.closed_loop_fill(0.0, ["b0", "b1"])
    assert made == 4
    batches = [b for broker in ("b0", "b1") for b in acc.drain(broker, 0.0)]
    assert all(b.records == p.records_per_batch for b in batches)


def test_same_seed_same_batches() -> None:
    def shape() -> list:
        _, acc = _acc(partitions=5, partitioner="sticky", rate_per_producer=50_000, duration_ms=5, linger_ms=1)
        return [(now, b.partition, b.records) for now, b in _run(acc)]

    assert shape() == shape()


def test_a_ready_broker_takes_every_partitions_first_batch_lingering_or_not() -> None:
    """Kafka's drainBatchesForOneNode: one expired linger sends the first batch of all the broker's partitions."""
    _, acc = _acc(brokers=2, partitions=24, partitioner="round-robin", rate_per_producer=24_000, duration_ms=50,
                  linger_ms=5)  # fmt: skip
    now, requests = 0.0, []
    while not acc.idle:
        now = acc.next_ready_ns(now)
        acc.append_until(now)
        for broker in ("b0", "b1"):
            if batches := acc.drain(broker, now):
                requests.append(len(batches))
                for b in batches:
                    acc.acked(b, now)
    assert sum(requests) / len(requests) > 8  # about 12 partitions per broker, not one batch per request
    assert min(requests) >= 1


def test_open_loop_producers_take_turns_on_the_schedule() -> None:
    p = KafkaParams(system="kafka", partitions=4, producers=4, rate_total=4000, duration_ms=10)
    t = Topology(p)
    firsts = [RecordAccumulator(p, w, {q: t.leader(q) for q in w.partitions}, 0.0).intended(0) for w in t.producers]
    assert firsts == pytest.approx([0, 0.25 * MS, 0.5 * MS, 0.75 * MS])  # 1 ms apart each, a quarter apart in turn


def test_the_points_seed_drives_the_random_partition_choices() -> None:
    """Sticky partitioning draws its partitions from the run's seed: the same seed the same choices, another seed
    other choices (through the whole datapath, on both systems' producers)."""
    from kdlab.kafka.cluster import build
    from kdsim.engine import SimEngine

    def partitions(system: str, seed: int) -> list[int]:
        produce_mode = {"produce_mode": "shared"} if system == "kafkadirect" else {}
        p = KafkaParams(system=system, partitions=8, partitioner="sticky", rate_total=50_000, duration_ms=2.0,
                        batch_bytes=1024, record_bytes=100, **produce_mode)  # fmt: skip
        out = SimEngine("cx4-edr-100g", seed=seed).run(build(p, seed))
        return [s[0] for s in out["producer0"]["sent"]]

    for system in ("kafka", "kafkadirect"):
        assert partitions(system, 1) == partitions(system, 1)
        assert partitions(system, 1) != partitions(system, 2)
