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


def test_retention_is_refused_for_kafkadirect_in_one_line() -> None:
    with pytest.raises(ValueError, match="retention_bytes: not modelled for kafkadirect"):
        KafkaParams(system="kafkadirect", retention_bytes=KEEP)


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
