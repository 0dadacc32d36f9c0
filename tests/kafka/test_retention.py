"""log.retention.bytes: the oldest segments go once a replica's log is larger, so memory follows live data."""

from __future__ import annotations

import pytest

from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.workloads.kafka import delivery_problems
from kdsim.engine import SimEngine, SimulationError

SEG, KEEP = 64 * 1024, 128 * 1024
SHAPE = {"brokers": 2, "replication_factor": 2, "acks": -1, "partitions": 1, "record_bytes": 1000,
         "batch_bytes": 16384, "segment_bytes": SEG, "records_per_producer": 3000, "consumers": 1}  # fmt: skip


def _logs(roles: list) -> list:
    """Every replica's log: Kafka's brokers keep them in ``logs``, KafkaDirect's in ``partitions``."""
    states = [r.args["state"] for r in roles if "state" in r.args]
    logs = [log for st in states if hasattr(st, "logs") for log in st.logs.values()]
    return logs + [part.log for st in states if hasattr(st, "partitions") for part in st.partitions.values()]


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_a_tailing_run_keeps_only_the_retained_segments_and_delivers_everything(system: str) -> None:
    p = KafkaParams(system=system, retention_bytes=KEEP, **SHAPE)
    roles = build(p)
    out = SimEngine("cx4-edr-100g").run(roles)
    assert delivery_problems(out, p) == [] and out["consumer0"]["records"] == 3000  # it kept up: nothing lost
    logs = {id(log): log for log in _logs(roles)}.values()
    assert len(logs) == 2  # the leader's and the follower's replica
    for log in logs:
        held = sum(s.position for s in log.segments)
        assert held < KEEP + 2 * SEG  # below retention without its oldest segment, and the active one
        assert log.start_offset > 0 and log.entries[0].base_offset == log.start_offset
        assert log.leo == 3000  # the log end is where it would be: only the oldest segments went


def test_a_reader_behind_the_retained_data_fails_in_one_clear_line() -> None:
    p = KafkaParams(system="kafka", retention_bytes=KEEP, consume_after_produce=True, **SHAPE)
    with pytest.raises(SimulationError, match="deleted by retention"):
        SimEngine("cx4-edr-100g").run(build(p))


def test_retention_never_deletes_what_the_followers_have_not_fetched() -> None:
    """Kafka deletes only segments wholly below the high watermark: a follower that lags keeps the leader's data."""
    from kdlab.kafka.log import PartitionLog

    log = PartitionLog(0, 100, retention_bytes=100)
    for _ in range(5):
        log.append(100, 1)  # a segment each
    assert log.start_offset == 0 and len(log.segments) == 5  # high watermark 0: nothing may go
    log.hw = 3
    log.append(100, 1)  # a roll: retention looks again
    assert log.start_offset == 3 and log.segments[0].base_offset == 3
    with pytest.raises(ValueError, match="deleted by retention"):
        log.entry(0)


#: The shape a review found crashing a first KafkaDirect retention: batches as large as segments, so a segment is
#: sealed (committed) while its pushes to the follower still wait in the push queue.
KD_CROWDED = {"system": "kafkadirect", "brokers": 2, "replication_factor": 2, "acks": -1, "partitions": 4,
              "producers": 4, "record_bytes": 1000, "batch_bytes": 4096, "segment_bytes": 4096,
              "records_per_producer": 2000}  # fmt: skip


def test_kafkadirect_deletes_only_what_is_replicated_and_frees_its_memory() -> None:
    p = KafkaParams(retention_bytes=8192, **KD_CROWDED)
    roles = build(p)
    eng = SimEngine("cx4-edr-100g")
    out = eng.run(roles)
    assert delivery_problems(out, p) == []
    logs = list({id(log): log for log in _logs(roles)}.values())
    assert len(logs) == 8 and all(log.start_offset > 0 for log in logs)  # leaders and followers both deleted
    for log in logs:
        assert all(s.mr is not None for s in log.segments)  # what is kept stays registered
        assert sum(s.position for s in log.segments) < 8192 + 4 * 4096  # retention, plus what hw or pushes hold
    written = 4 * 2000 * 1000  # at least this went into each broker's segments (leader or follower of each)
    for b in ("b0", "b1"):
        assert eng.memories[b].registered_bytes < written / 4


def test_kafkadirect_tailing_consumers_read_everything_while_old_segments_go() -> None:
    shape = {k: v for k, v in KD_CROWDED.items() if k != "records_per_producer"}
    # a segment a batch, five a millisecond: 64 KiB keep ~3 ms, more than a tailing consumer lags
    p = KafkaParams(retention_bytes=65536, consumers=4, rate_per_producer=20_000, duration_ms=20.0, **shape)
    roles = build(p)
    out = SimEngine("cx4-edr-100g").run(roles)
    assert delivery_problems(out, p) == []
    assert sum(out[f"consumer{i}"]["records"] for i in range(4)) == sum(
        out[f"producer{i}"]["records"] for i in range(4)
    )
    assert all(log.start_offset > 0 for log in _logs(roles))


def test_a_kafkadirect_consumer_behind_retention_fails_in_one_line_naming_it() -> None:
    p = KafkaParams(retention_bytes=8192, consumers=1, **KD_CROWDED)  # one consumer for four busy partitions
    with pytest.raises(SimulationError, match="deleted by retention"):
        SimEngine("cx4-edr-100g").run(build(p))


def test_kafkadirect_retention_below_two_segments_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"retention_bytes: .* must be at least two segments"):
        KafkaParams(system="kafkadirect", retention_bytes=SEG, segment_bytes=SEG)


def test_the_memory_report_follows_live_data_with_retention_and_written_data_without() -> None:
    def peak(retention: int | None) -> int:
        eng = SimEngine("cx4-edr-100g")
        shape = {**KD_CROWDED, "segment_bytes": 1 << 20, "records_per_producer": 12_000}
        eng.run(build(KafkaParams(retention_bytes=retention, **shape)))
        return eng.stats.model_peak_bytes

    written = 4 * 12_000 * 1000 * 2  # every record at the leader and its one follower
    kept, grown = peak(2 << 20), peak(None)
    assert grown > written and kept < written / 2
