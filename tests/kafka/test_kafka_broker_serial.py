"""What the Kafka broker serialises: one connection's requests, and one partition's appends.

Kafka 2.2 SocketServer.scala mutes a connection from the moment its request is read
(``selector.mute``) until its response is sent (``selector.unmute``), so the requests of one
connection are handled one after another. Log.scala's ``append`` assigns offsets, runs
LogValidator and appends to the segment inside ``lock synchronized``, so appends to one
partition never overlap, whichever connections they come from.

The spans are measured by a spy around the broker's generators: it forwards every operation
and asks the engine for the thread's own time (``Clock``, free on the JVM profile) where a span
starts and ends.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from kdlab.kafka import apache
from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.protocol import Produce
from kdlab.ops import Clock, Compute, QueueGet
from kdsim.engine import SimEngine

PROFILE = "cx4-edr-100g"  # host.op_ns = 0: the spy's Clock ops cost nothing
SMALL = {"acks": 1, "bytes_per_producer": 300_000, "record_bytes": 16, "segment_bytes": 1 << 24}


def _spied_io_thread(spans: list[tuple[int, float, float]]) -> Any:
    """io_thread, recording (connection, start, end) per request: from the moment the thread has the
    request to the moment it asks for the next one (its response sent, the connection unmuted)."""
    real = apache.io_thread

    def io_thread(p: KafkaParams, state: apache.BrokerState) -> Any:
        gen = real(p, state)
        value: Any = None
        current: tuple[int, float] | None = None
        queue = f"{state.name}.requests"
        while True:
            op = gen.send(value)
            if isinstance(op, QueueGet) and op.queue == queue and current is not None:
                end = yield Clock()
                spans.append((current[0], current[1], end))
                current = None
            value = yield op
            if isinstance(op, QueueGet) and op.queue == queue:
                start = yield Clock()
                current = (value[0].conn_id, start)

    return io_thread


def _spied_append(spans: list[tuple[int, float, float]]) -> Any:
    """_append_locked, recording (partition, start, end) of each append's work: LogValidator and the copy."""
    real = apache._append_locked

    def append(p: Any, state: apache.BrokerState, batch: Produce) -> Any:
        gen = real(p, state, batch)
        value: Any = None
        start: float | None = None
        while True:
            try:
                op = gen.send(value)
            except StopIteration as stop:
                return stop.value
            if isinstance(op, Compute) and op.kind == "append":
                start = yield Clock()
            value = yield op
            if isinstance(op, Compute) and op.kind == "copy" and start is not None:
                end = yield Clock()
                spans.append((batch.partition, start, end))
                start = None

    return append


def _overlaps(spans: list[tuple[int, float, float]]) -> list[tuple[Any, Any]]:
    by: dict[int, list[tuple[float, float]]] = {}
    for key, start, end in spans:
        by.setdefault(key, []).append((start, end))
    bad = []
    for intervals in by.values():
        intervals.sort()
        bad += [(a, b) for a, b in pairwise(intervals) if b[0] < a[1] - 1e-6]
    return bad


def _run(**params: Any) -> tuple[SimEngine, dict]:
    engine = SimEngine(PROFILE)
    results = engine.run(build(KafkaParams(**{**SMALL, **params})))
    return engine, results


SPREAD = {"producers": 2, "partitions": 6, "brokers": 3, "partitioner": "round-robin", "consumers": 2,
          "replication_factor": 2, "bytes_per_producer": 100_000}  # fmt: skip


@pytest.mark.parametrize("system", ["kafka", "osu"])
@pytest.mark.parametrize("shape", [{"producers": 1, "partitions": 1}, SPREAD], ids=["one-partition", "spread"])
def test_one_connections_requests_never_overlap(system: str, shape: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also when clients talk to several brokers with requests of several partitions each, and followers fetch."""
    spans: list[tuple[int, float, float]] = []
    monkeypatch.setattr(apache, "io_thread", _spied_io_thread(spans))
    _run(system=system, **shape)
    assert len(spans) > 20
    assert _overlaps(spans) == []


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_one_producer_keeps_the_io_threads_within_one_core(system: str) -> None:
    """The snippet of the bug report: one producer, one partition; the I/O threads' CPU added up to
    1.5 times the simulated time while the connection was unmuted too early."""
    engine, _ = _run(system=system, producers=1, partitions=1, bytes_per_producer=2_000_000)
    st = engine.stats
    io_busy = sum(ns for role, ns in st.role_cpu_busy_ns.items() if ".io" in role)
    assert 0 < io_busy <= st.sim_time_ns


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_appends_to_one_partition_from_several_connections_never_overlap(
    system: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans: list[tuple[int, float, float]] = []
    monkeypatch.setattr(apache, "_append_locked", _spied_append(spans))
    engine, _ = _run(system=system, producers=4, partitions=1)
    assert len(spans) > 40
    assert _overlaps(spans) == []
    assert sum(end - start for _, start, end in spans) <= engine.stats.sim_time_ns


def test_appends_to_different_partitions_may_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is per partition: two producers on two partitions append in parallel."""
    spans: list[tuple[int, float, float]] = []
    monkeypatch.setattr(apache, "_append_locked", _spied_append(spans))
    _run(system="kafka", producers=2, partitions=2)
    assert {q for q, _, _ in spans} == {0, 1}
    merged = [(0, s, e) for _, s, e in spans]  # as if they were one partition
    assert _overlaps(merged)
