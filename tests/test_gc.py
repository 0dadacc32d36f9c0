"""Young collections of a JVM host (kdsim/gc.py): pauses follow allocation, stop every thread of the
process and no other, and make the tail grow toward saturation (a queue whose server takes vacations)."""

from __future__ import annotations

from typing import Any

import pytest

from kdlab.ops import Clock, Compute, Sleep
from kdlab.program import Role
from kdlab.runner import run_points
from kdlab.spec import expand, load_spec
from kdsim.engine import SimEngine
from kdsim.profile import load_profile

BASE = load_profile("cx4-edr-100g")
YOUNG, PAUSE = 1 << 20, 200_000.0  # 1 MiB of eden, 200 us pauses: scaled down so short runs see many
GC = {"host.gc_young_bytes": YOUNG, "host.gc_pause_ns": PAUSE}
COPY_NS = 4096 * 8.0 / BASE.host.memcpy_gbps


def _allocator(n: int, nbytes: int) -> Any:
    """Copy ``nbytes`` and allocate as much, ``n`` times -> the time it took."""
    t0 = yield Clock()
    for _ in range(n):
        yield Compute("copy", nbytes)
        yield Compute("alloc", nbytes)
    return (yield Clock()) - t0


def _spinner(n: int) -> Any:
    """CPU work only, no allocation, with a 1 ns sleep after each piece -> the time it took.

    The sleeps keep the thread in step with the clock: kdsim lets a thread run ahead of it while it never waits,
    and a pause another thread starts later in simulated time cannot reach back into work already accounted
    (an error of at most that run-ahead, microseconds in the Kafka datapaths, which wait at every request)."""
    t0 = yield Clock()
    for _ in range(n):
        yield Compute("copy", 4096)
        yield Sleep(1.0)
    return (yield Clock()) - t0


def test_pauses_come_every_young_generation_of_allocation_and_add_their_length_exactly() -> None:
    prof = BASE.with_overrides(GC)
    eng = SimEngine(prof)
    out = eng.run([Role("a", "h0", _allocator, {"n": 1000, "nbytes": 4096})])
    pauses = 1000 * 4096 // YOUNG
    assert eng.stats.gc_pauses == {"h0": pauses}
    assert out["a"] == pytest.approx(1000 * COPY_NS + pauses * PAUSE)


def test_a_pause_stops_every_thread_of_the_process_and_none_of_another_host() -> None:
    prof = BASE.with_overrides(GC)
    roles = [Role("a", "h0", _allocator, {"n": 1000, "nbytes": 4096}),
             Role("same", "h0", _spinner, {"n": 1000}), Role("other", "h1", _spinner, {"n": 1000})]  # fmt: skip
    out = SimEngine(prof).run(roles)
    alone = 1000 * (COPY_NS + 1.0)
    assert out["other"] == pytest.approx(alone)  # another process: untouched
    # the same process: stopped by each of the allocator's collections while it runs (its 3 pauses all fall
    # within the spinner's run, which is as long as the allocator's work), for each pause's whole length less
    # the piece of work it was doing when the pause began (a thread stops at its next piece: a safepoint)
    assert out["same"] == pytest.approx(alone + 3 * PAUSE, abs=3 * (COPY_NS + 1.0))
    assert out["same"] <= alone + 3 * PAUSE


def _sleeper(ns: float) -> Any:
    """Sleep, then read the clock -> when it ran again."""
    yield Sleep(ns)
    return (yield Clock())


def test_a_thread_woken_inside_a_pause_runs_when_the_pause_ends() -> None:
    prof = BASE.with_overrides(GC)
    roles = [Role("a", "h0", _allocator, {"n": YOUNG // 4096, "nbytes": 4096}), Role("s", "h0", _sleeper, {"ns": 1.0})]
    roles.append(Role("w", "h0", _sleeper, {"ns": YOUNG // 4096 * COPY_NS + PAUSE / 2}))  # wakes mid-pause
    out = SimEngine(prof).run(roles)
    pause_end = YOUNG // 4096 * COPY_NS + PAUSE  # the allocator's last piece fills eden: the pause starts there
    assert out["w"] == pytest.approx(pause_end)
    assert out["s"] == pytest.approx(1.0)  # woken before the pause: untouched


def test_back_to_back_pauses_are_one_stop() -> None:
    from kdsim.gc import Heap

    heap = Heap(100, 10.0)
    heap.allocate(0.0, 250)  # two collections at once: [0, 10) and [10, 20)
    assert heap.resume_at(5.0) == 20.0 and heap.stopped_ns(0.0, 30.0) == 20.0


def test_with_no_young_generation_allocations_cost_nothing_and_nothing_pauses() -> None:
    eng = SimEngine(BASE)
    out = eng.run([Role("a", "h0", _allocator, {"n": 1000, "nbytes": 4096})])
    assert out["a"] == pytest.approx(1000 * COPY_NS) and eng.stats.gc_pauses == {} and eng.heaps == {}


CLUSTER = {"record_bytes": 1024, "brokers": 3, "partitions": 6, "replication_factor": 3, "acks": -1, "producers": 3,
           "consumers": 3, "linger_ms": 0.2, "batch_bytes": 65536, "duration_ms": 40.0, "warmup_ms": 2.0,
           "segment_bytes": 1 << 26}  # fmt: skip
#: A broker's young collections as in a Kafka 1.1 broker's G1 log (781 MB of eden, 14.6 ms pauses; profile
#: cx4-edr-100g-cluster), both scaled down 100 times: the same share of time paused at a given load, so a 40 ms
#: run sees several pauses rather than none (the pauses are then short against the latency: a milder tail).
SCALED = {"host.gc_young_bytes": 7_810_000, "host.gc_pause_ns": 146_000.0}


def _rows(system: str, rates: list[int], seed: int = 0, gc: dict[str, float] = SCALED) -> list[dict]:
    sweep = {"system": [system], "rate_total": rates, **{f"profile.{k}": [v] for k, v in gc.items()}}
    spec = load_spec({"name": "gc", "workload": "kafka", "profile": "cx4-edr-100g-jitter", "seeds": [seed],
                      "params": CLUSTER, "sweep": sweep})  # fmt: skip
    rows, failures = run_points(expand(spec), workers=1, progress=False)
    assert failures == []
    return sorted(rows, key=lambda r: r["rate_total"])


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_kafkadirect_brokers_do_not_collect_where_kafka_brokers_do(system: str) -> None:
    """Kafka's broker reads every request into a heap buffer (NetworkReceive; OSU's copies it out of its receive
    buffer); KafkaDirect's data lands by RDMA in the log, so its brokers allocate nothing per byte. Both systems'
    clients still serialise records."""
    kafka, kd = _rows(system, [1_200_000])[0], _rows("kafkadirect", [1_200_000])[0]
    # a broker leads a third of the partitions and follows the rest: it receives every produced byte once
    received = kafka["produce_records_per_s"] * 1024 * (CLUSTER["duration_ms"] + CLUSTER["warmup_ms"]) * 1e-3
    assert kafka["gc_pauses_broker"] == pytest.approx(received / SCALED["host.gc_young_bytes"], abs=1.5)
    assert kd["gc_pauses_broker"] == 0 and kd["gc_pauses_client"] > 0
    assert kafka["gc_paused_share_broker"] > 0.015 and kd["gc_paused_share_broker"] == 0
    assert kafka["delivery_ok"] and kd["delivery_ok"]


def test_with_collections_kafkas_tail_grows_toward_saturation() -> None:
    """Pauses come in proportion to the load (allocation), and the backlog one leaves drains more slowly the
    nearer the cluster is to saturation (~1.4 M records/s here): p99/p50 grows from 10% to 85% of it."""
    rates = [150_000, 750_000, 1_200_000]
    rows = _rows("kafka", rates, seed=1)
    ratio = [r["ack_latency_p99_us"] / r["ack_latency_p50_us"] for r in rows]
    assert all(r["produce_records_per_s"] > 0.97 * r["rate_total"] for r in rows)  # below saturation throughout
    assert 1 < ratio[0] < ratio[1] < ratio[2]
    assert rows[0]["gc_pauses_broker"] < rows[1]["gc_pauses_broker"] < rows[2]["gc_pauses_broker"]
    # the collections make the tail, not the widths: the same seed without them has a tail a pause shorter at 85%
    # and the same one at 10% (no pause there)
    off = _rows("kafka", rates, seed=1, gc={"host.gc_young_bytes": 0})
    pause_us = SCALED["host.gc_pause_ns"] / 1e3
    assert rows[0]["ack_latency_p99_us"] == pytest.approx(off[0]["ack_latency_p99_us"])
    assert rows[2]["ack_latency_p99_us"] > off[2]["ack_latency_p99_us"] + pause_us


def test_only_the_cluster_profiles_collect_and_every_profile_sources_its_collections() -> None:
    from kdsim.profile import available_profiles

    for name in available_profiles():
        prof = load_profile(name)
        for key in ("host.gc_young_bytes", "host.gc_pause_ns"):
            assert prof.sources[key].text, (name, key)
        collects = prof.host.gc_young_bytes > 0
        assert collects == (name in ("cx4-edr-100g-cluster", "aws-i3en-2xlarge")), name
        assert not collects or prof.host.gc_pause_ns > 0
