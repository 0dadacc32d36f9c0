"""State that must not grow with a run or a cluster: gap search, per-batch rows, reference cycles, probes."""

from __future__ import annotations

import gc
import pickle
import random
from bisect import insort
from itertools import pairwise
from typing import Any

import numpy as np
import pytest

from kdlab.kafka.batch_log import DELIVERED, SENT, BatchLog, stack
from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdsim.engine import SimEngine
from kdsim.timeline import MAX_GAPS, Timeline


class _ScanTimeline:
    """The reference: the same server with its gaps in one list of tuples, scanned from the start."""

    def __init__(self) -> None:
        self.end, self.gaps = 0.0, []

    def reserve(self, arrival: float, duration: float, min_end: float = 0.0) -> tuple[float, float]:
        if arrival >= self.end:
            if arrival > self.end:
                self.gaps.append((self.end, arrival))
                if len(self.gaps) > MAX_GAPS:
                    del self.gaps[: MAX_GAPS // 2]
            self.end = max(arrival + duration, min_end)
            return arrival, self.end
        for i, (g0, g1) in enumerate(self.gaps):
            if g1 <= arrival:
                continue
            start = max(g0, arrival)
            end = max(start + duration, min_end)
            if end <= g1:
                del self.gaps[i]
                if start > g0:
                    insort(self.gaps, (g0, start))
                if end < g1:
                    insort(self.gaps, (end, g1))
                return start, end
        start = self.end
        self.end = max(start + duration, min_end)
        return start, self.end


@pytest.mark.parametrize("seed", range(40))
def test_bisected_gap_search_schedules_exactly_as_a_full_scan(seed: int) -> None:
    """Random arrivals, some before the server's end (they fill gaps), on integer times so ties happen."""
    rng = random.Random(seed)
    fast, ref = Timeline(), _ScanTimeline()
    for _ in range(400):
        job = (float(rng.randint(0, 4000)), float(rng.randint(0, 30)), float(rng.choice([0, rng.randint(0, 4000)])))
        assert fast.reserve(*job) == ref.reserve(*job)
        assert fast.gaps == ref.gaps and fast.end == ref.end


def test_batch_log_reads_back_what_was_appended_in_less_memory() -> None:
    rows = [(q, 3, 1.5 * q, 2.5 * q, 3.0 * q, 4.0 * q, 10.0 * q + 0.25) for q in range(1000)]
    log = BatchLog(SENT, rows)
    assert len(log) == 1000 and log[7] == rows[7] and log[-1] == rows[-1] and list(log) == rows and log == rows
    assert np.array_equal(stack([log, rows[:2]], 7), np.asarray(rows + rows[:2], dtype=float))
    assert pickle.loads(pickle.dumps(log)) == log  # kdreal hands results back from its processes by pickle
    log[0] = rows[1]
    assert log.pop(0) == rows[1] and len(log) == 999
    with pytest.raises(ValueError, match="7 values"):
        log.append(rows[0][:6])
    big = BatchLog(DELIVERED, [(1, 2, 3, 2**40, 2**62, 2**32 - 1, 5)])
    assert big[0] == (1, 2, 3, 2**40, 2**62, 2**32 - 1, 5)  # CRCs, offsets and stamps stay exact integers


SMALL = dict(
    system="kafkadirect", brokers=3, topics=1, partitions=2, producers=2, consumers=2, replication_factor=3,
    acks=-1, record_bytes=1024, linger_ms=1.0, rate_per_producer=20_000.0, duration_ms=2.0, warmup_ms=0.0,
)  # fmt: skip


@pytest.mark.parametrize("system", ["kafkadirect", "kafka"])
def test_a_run_leaves_no_reference_cycles_per_wait(system: str) -> None:
    """Garbage a run leaves for Python's cycle collector does not grow with its length (the set-up's only)."""

    def cyclic_garbage(ms: float) -> tuple[int, int]:
        p = KafkaParams(**{**SMALL, "system": system, "duration_ms": ms})
        roles = build(p, 0)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            engine = SimEngine("cx4-edr-100g")
            engine.run(roles)
            gc.collect()
            return len(gc.garbage), engine.stats.operations
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    (short, ops_short), (long, ops_long) = cyclic_garbage(1.0), cyclic_garbage(4.0)
    # the engine itself is one cycle at the end (with the timers still queued then); a cycle per wait was ~13 objects
    assert (long - short) / (ops_long - ops_short) < 0.1, (short, long, ops_short, ops_long)


def test_probes_observe_without_changing_a_run() -> None:
    p = KafkaParams(**SMALL)
    plain = SimEngine("cx4-edr-100g").run(build(p, 0))
    probed_engine = SimEngine("cx4-edr-100g", probe_every_ns=100_000.0)
    probed = probed_engine.run(build(p, 0))
    assert all(plain[k] == probed[k] for k in plain)
    probes = probed_engine.stats.probes
    assert len(probes) >= 20 and [x[0] for x in probes] == sorted(x[0] for x in probes)
    assert all(b[2] >= a[2] and b[3] >= a[3] for a, b in pairwise(probes))


def test_the_memory_meter_counts_small_regions_whole_and_large_ones_by_the_pages_written() -> None:
    from itertools import count

    from kdlab.verbs import Access
    from kdsim.memory import LAZY_BYTES, PAGE_BYTES, HostMemory, MemoryMeter

    meter = MemoryMeter()
    a, b = HostMemory("a", count(1), meter), HostMemory("b", count(100), meter)
    small = a.register(1000, Access.LOCAL_WRITE)
    big = b.register(4 * LAZY_BYTES, Access.LOCAL_WRITE)
    assert meter.held == 1000
    HostMemory.write(big, big.handle.addr + 10 * PAGE_BYTES - 5, b"x" * 10)  # two pages, the bytes straddle them
    assert meter.held == 1000 + 2 * PAGE_BYTES
    HostMemory.write(big, big.handle.addr + 10 * PAGE_BYTES, b"y" * 100)  # a page already held
    assert meter.held == 1000 + 2 * PAGE_BYTES
    HostMemory.write(big, big.handle.addr, b"z")
    assert meter.held == 1000 + 3 * PAGE_BYTES
    b.deregister(big.handle.lkey)
    a.deregister(small.handle.lkey)
    assert meter.held == 0 and meter.peak == 1000 + 3 * PAGE_BYTES


def test_a_receive_through_a_selector_runs_exactly_as_one_that_scans_every_connection(monkeypatch) -> None:
    """Kafka's network threads read many connections; the selector must pick the same message at the same time."""
    import kdsim.engine as engine_module

    p = KafkaParams(
        **{**SMALL, "system": "kafka", "producers": 6, "consumers": 6, "partitions": 6, "network_threads": 1}
    )
    engine = SimEngine("cx4-edr-100g")
    selected = engine.run(build(p, 0))
    assert engine.sockets._selectors  # the brokers' network threads read through selectors
    monkeypatch.setattr(engine_module, "SELECT_MIN", 10**9)  # every receive scans its connections
    scanned = SimEngine("cx4-edr-100g").run(build(p, 0))
    assert all(selected[k] == scanned[k] for k in scanned)
    assert sum(len(selected[f"producer{i}"]["sent"]) for i in range(6)) > 12


def test_a_write_fires_only_the_idle_pollers_whose_bytes_it_changed_in_the_order_they_came() -> None:
    from kdsim.memory import ChangeWatchers

    data = bytearray(4096)
    watchers, fired = ChangeWatchers(), []
    far = watchers.add(3000, bytes(16), lambda: fired.append("far"))
    a = watchers.add(100, bytes(16), lambda: fired.append("a"))
    b = watchers.add(250, bytes(16), lambda: fired.append("b"))  # spans two buckets
    data[260:262] = b"xx"
    watchers.check(data, 260, 262)
    assert fired == ["b"] and len(watchers) == 2
    data[0:4096] = b"y" * 4096  # one write over everything: the rest fire, in the order they were added
    watchers.check(data, 0, 4096)
    assert fired == ["b", "far", "a"] and len(watchers) == 0 and not watchers.buckets
    watchers.discard(a)  # already gone: nothing happens
    assert far[0] < a[0] < b[0]


@pytest.mark.parametrize("system", ["kafkadirect", "kafka"])
def test_timed_waits_leave_no_timers_piling_up_in_the_event_queue(system: str) -> None:
    """A KafkaDirect consumer's idle waits end when its producers may have; a Kafka client's receives have a poll
    timeout. Each wait's own timer used to stay queued until its time even when the wait ended early."""
    p = KafkaParams(**{**SMALL, "system": system, "duration_ms": 8.0, "rate_per_producer": 5_000.0})
    engine = SimEngine("cx4-edr-100g", probe_every_ns=250_000.0)
    engine.run(build(p, 0))
    pending = [x[4] for x in engine.stats.probes if 1e6 <= x[0] <= 8e6]
    assert max(pending[len(pending) // 2 :]) <= max(pending[: len(pending) // 2]) + 5, pending


def test_probes_do_not_lengthen_a_run_without_servers() -> None:
    from kdlab.ops import Sleep
    from kdlab.program import Role

    def sleeper() -> Any:
        yield Sleep(1500.0)

    plain, probed = SimEngine("cx4-edr-100g"), SimEngine("cx4-edr-100g", probe_every_ns=1000.0)
    plain.run([Role("s", "h", sleeper)])
    probed.run([Role("s", "h", sleeper)])
    assert plain.stats.sim_time_ns == probed.stats.sim_time_ns == 1500.0


def test_a_selector_drops_what_was_read_through_other_receives() -> None:
    """Connections read once together, then one at a time: the selector's heap stays near what is unread."""
    from kdlab.ops import Sleep, TcpAccept, TcpConnect, TcpListen, TcpRecv, TcpSend
    from kdlab.program import Role

    n, k = 4, 2000

    def server() -> Any:
        listener = yield TcpListen("svc")
        conns = []
        for _ in range(n):
            conns.append((yield TcpAccept(listener)))
        first, _ = yield TcpRecv(conns)  # once through their selector
        for i in range(k):
            for c in conns:
                if not (c is first and i == k - 1):
                    yield TcpRecv(c)  # then one at a time

    def client(i: int) -> Any:
        conn = yield TcpConnect("svc")
        for j in range(k):
            yield TcpSend(conn, j, 64)
            yield Sleep(2_000.0)  # a message every 2 us: read as they come

    roles = [Role("server", "s", server)] + [Role(f"c{i}", f"c{i}", client, {"i": i}) for i in range(n)]
    engine = SimEngine("cx4-edr-100g")
    engine.run(roles)
    (selector,) = engine.sockets._selectors.values()
    assert len(selector.heap) < 200  # (n * k = 8,000 messages passed through the connections)


def _getter(timeout: float | None) -> Any:
    from kdlab.ops import Clock, QueueGet

    item = yield QueueGet("q", timeout_ns=timeout)
    return item, (yield Clock())


def _putter(work: int) -> Any:
    from kdlab.ops import Compute, QueuePut

    yield Compute("copy", work)  # the put is made at once but seen only after the copy
    yield QueuePut("q", "x")


def test_a_timed_getter_does_not_take_the_wake_an_idle_getter_needs() -> None:
    """A put wakes one idle getter; one with a time limit already has its wake coming (review of the deadlines)."""
    from kdlab.program import Role

    roles = [Role("g1", "a", _getter, {"timeout": 100.0}), Role("g2", "a", _getter, {"timeout": None}),
             Role("p", "a", _putter, {"work": 1 << 20})]  # fmt: skip
    out = SimEngine("cx4-edr-100g").run(roles)
    assert out["g1"] == (None, 100.0) and out["g2"][0] == "x"


def test_timed_waits_end_at_their_limits_and_a_run_with_its_last_worker() -> None:
    from kdlab.ops import Clock, Notify, Sleep, WaitNotify
    from kdlab.program import Role

    def waiter() -> Any:
        a = yield WaitNotify("k1", timeout_ns=1000.0)  # notified at 10 ns
        b = yield WaitNotify("k2", timeout_ns=50_000.0)  # notified at 20 ns
        c = yield WaitNotify("never", timeout_ns=0.0)  # at once
        d = yield WaitNotify("never", timeout_ns=100.0)
        return a, b, c, d, (yield Clock())

    def notifier() -> Any:
        yield Sleep(10.0)
        yield Notify("k1")
        yield Sleep(10.0)
        yield Notify("k2")

    engine = SimEngine("cx4-edr-100g")
    out = engine.run([Role("w", "a", waiter), Role("n", "a", notifier)])
    assert out["w"][:4] == (True, True, False, False) and out["w"][4] == 120.0
    assert engine.stats.sim_time_ns == 120.0  # not the first waits' limits, still queued (1,000 and 50,020 ns)
