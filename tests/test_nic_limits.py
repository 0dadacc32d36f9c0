"""NIC limits: outstanding READ/atomic credits per QP, and the QP-context cache."""

from __future__ import annotations

from itertools import pairwise

import pytest

from kdlab.datapaths.perftest import PerftestConfig, roles
from kdlab.ops import Clock, PostSend, Publish, WaitCq
from kdlab.perftest_report import bandwidth_stats
from kdlab.spec import Point
from kdlab.verbs import Opcode, SendWR, WcStatus
from kdlab.workloads.perftest import PerftestWorkload
from kdsim.engine import SimEngine
from kdsim.rnic import QpContextCache
from tests.helpers import idle_until, make_rc_pair, run_sim, sim_profile


def _perftest(params: dict, overrides: dict | None = None, profile: str = "cx4-edr-100g") -> dict:
    point = Point("t", "perftest", "sim", profile, tuple(sorted((overrides or {}).items())),
                  tuple(sorted(params.items())), 1)  # fmt: skip
    (row,) = PerftestWorkload().run_point(point)
    return row


# --- READ / atomic credits ----------------------------------------------------------------


def test_small_read_rate_scales_with_max_rd_atomic() -> None:
    rate = {
        k: _perftest({"test": "read_bw", "size": 64, "iterations": 400}, {"nic.max_rd_atomic": k})["msg_rate_mpps"]
        for k in (1, 2, 8)
    }
    # With k READs in flight the rate is k / round trip, until the processing units limit it.
    assert rate[2] / rate[1] == pytest.approx(2.0, rel=0.05)
    assert 6.0 <= rate[8] / rate[1] <= 8.05


def test_reads_beyond_the_credit_limit_wait_and_then_complete_in_order() -> None:
    n = 12

    def requester(side):
        yield PostSend(side.qp, [
            SendWR(i, Opcode.RDMA_READ, [side.mr.sge(64 * i, 64)], remote_addr=side.peer.addr + 64 * i,
                   rkey=side.peer.rkey)
            for i in range(n)
        ])  # fmt: skip
        seen = []
        while len(seen) < n:
            wcs = yield WaitCq(side.send_cq, 1)
            t = yield Clock()
            seen += [(wc, t) for wc in wcs]
        yield Publish("requester.done", True)
        return seen

    gaps = {}
    for k in (1, n):
        roles_ = make_rc_pair(requester, lambda side: idle_until("requester.done"))
        res, _ = run_sim(roles_, overrides={"nic.max_rd_atomic": k})
        seen = res["requester"]
        assert [(wc.wr_id, wc.status) for wc, _ in seen] == [(i, WcStatus.SUCCESS) for i in range(n)]
        times = [t for _, t in seen]
        gaps[k] = [b - a for a, b in pairwise(times)]
    # With one credit each READ waits for the previous one's response: completions are a
    # round trip (over a microsecond) apart; with twelve they follow each other closely.
    assert min(gaps[1]) > 1000.0
    assert min(gaps[1]) > 5 * max(gaps[n])


# --- QP-context cache ---------------------------------------------------------------------


def test_qp_context_cache_is_lru() -> None:
    cache = QpContextCache(2)
    assert [cache.touch(q) for q in (1, 2, 1, 3, 2, 1, 3, 3)] == [
        False,  # 1 cold
        False,  # 2 cold
        True,  # 1 hit, now most recent
        False,  # 3 miss, evicts 2 (least recently used)
        False,  # 2 miss, evicts 1
        False,  # 1 miss, evicts 3
        False,  # 3 miss, evicts 2
        True,  # 3 hit
    ]
    assert (cache.hits, cache.misses) == (2, 6)
    assert list(cache.entries) == [1, 3]


def test_qp_context_cache_of_one_entry_hits_only_on_repeats() -> None:
    cache = QpContextCache(1)
    assert [cache.touch(q) for q in (7, 7, 8, 7, 7)] == [False, True, False, False, True]
    assert len(cache.entries) == 1


def _write_bw(qps: int, iterations: int, overrides: dict, tx_depth: int = 16) -> tuple[float, int, int]:
    """perftest write_bw, 64 B, post_list 16; -> (Mpps, context misses on the requester and responder NICs)."""
    cfg = PerftestConfig("write_bw", size=64, iterations=iterations, qps=qps, post_list=16, tx_depth=tx_depth)
    engine = SimEngine(sim_profile(overrides=overrides))
    out = engine.run(roles(cfg))["client"]
    stats = bandwidth_stats(out["messages"], out["msg_bytes"], out["t_first_post_ns"], out["t_last_completion_ns"],
                            out["block_posted_ns"], out["block_completed_ns"], out["cq_mod"])  # fmt: skip
    return stats["msg_rate_mpps"], engine.nics["a"].qpc.misses, engine.nics["b"].qpc.misses


#: Make the single perftest thread cheap, so that the NIC, not the CPU, limits the rate.
CHEAP_POSTING = {"host.post_ns": 10.0, "host.post_wr_ns": 1.0}


def test_qp_contexts_thrash_once_there_are_more_qps_than_cache_entries() -> None:
    # 16 QPs fit a 64-entry cache: one cold miss per QP and NIC, then only hits.
    _, miss_a, miss_b = _write_bw(16, 256, {"nic.qpc_cache_entries": 64})
    assert (miss_a, miss_b) == (16, 16)
    # 256 QPs served round robin through a 64-entry LRU: every visit of a QP (one post
    # list of 16 WRs, as tx_depth = 16) misses, on both NICs.
    _, miss_a, miss_b = _write_bw(256, 64, {"nic.qpc_cache_entries": 64})
    assert (miss_a, miss_b) == (256 * 64 // 16, 256 * 64 // 16)


def test_message_rate_drops_when_contexts_thrash_and_the_nic_is_the_bottleneck() -> None:
    big, _, _ = _write_bw(256, 64, {**CHEAP_POSTING, "nic.qpc_cache_entries": 2048})
    small, _, _ = _write_bw(256, 64, {**CHEAP_POSTING, "nic.qpc_cache_entries": 64})
    assert small < 0.85 * big


def test_message_rate_knee_beyond_the_context_cache() -> None:
    """The configuration of experiments/perftest-msgrate-qps.yaml: 4 threads, tx_depth 1, QPs round robin.

    Every WR then goes to another QP than the one before, as on a NIC serving many
    clients; past the cache size every WR misses on both NICs and the rate falls.
    """
    base = {"test": "write_bw", "size": 64, "threads": 4, "tx_depth": 1, "cq_mod": 1}
    fits = _perftest({**base, "qps": 64, "iterations": 64}, {"nic.qpc_cache_entries": 128})["msg_rate_mpps"]
    thrash = _perftest({**base, "qps": 256, "iterations": 16}, {"nic.qpc_cache_entries": 128})["msg_rate_mpps"]
    assert thrash < 0.5 * fits
