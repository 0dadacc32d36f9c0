"""BW peak and average as perftest computes them (``print_report_bw``, perftest_parameters.c).

perftest's peak is ``size / opt_delta`` with ``opt_delta`` the least
``(tcompleted[j] - tposted[i]) / (j - i + 1)`` over posts i (every ``post_list``-th WR) and
CQE indices j >= i on the ``cq_mod`` grid (and N - 1), the indices counting WRs over all QPs.
``perftest_opt_delta`` below is that loop, transcribed; kdlab's O(N log N) version must agree.
"""

from __future__ import annotations

import math
import random

import pytest

from kdlab.datapaths.perftest import NO_PEAK_ITERS, PerftestConfig, merge_bandwidth, roles
from kdlab.perftest_report import MIB, bandwidth_stats, peak_ns_per_message
from kdlab.spec import Point
from kdlab.workloads.perftest import PerftestWorkload
from kdsim.engine import SimEngine
from kdsim.fabric import RETH_BYTES, WireModel
from kdsim.profile import load_profile


def perftest_opt_delta(tposted: list, tcompleted: list, cq_mod: int, post_list: int) -> float:
    """print_report_bw's peak loop, literally (None: an entry perftest never wrote, left 0)."""
    n = len(tposted)

    def t(i: int, j: int) -> float:
        if tposted[i] is None or tcompleted[j] is None:
            return math.inf  # cycles_t arithmetic on a 0 entry wraps to a huge value
        return (tcompleted[j] - tposted[i]) / (j - i + 1)

    opt = t(0, 0)  # opt_delta = tcompleted[0] - tposted[0]
    for i in range(0, n, post_list):
        j = (i + 1 if (i + 1) % cq_mod == 0 else cq_mod * ((i + 1) // cq_mod + 1)) - 1  # ROUND_UP(i+1, cq_mod)-1
        while j < n:
            opt = min(opt, t(i, j))
            j += cq_mod
        if n % cq_mod:
            opt = min(opt, t(i, n - 1))
    return opt


def stats(out: dict) -> dict[str, float]:
    return bandwidth_stats(
        out["messages"], out["msg_bytes"], out["t_first_post_ns"], out["t_last_completion_ns"],
        out["block_posted_ns"], out["block_completed_ns"], out["cq_mod"],
    )  # fmt: skip


def simulate(profile: str = "cx4-edr-100g", **kw: object) -> dict:
    cfg = PerftestConfig("write_bw", **kw)  # type: ignore[arg-type]
    results = SimEngine(load_profile(profile)).run(roles(cfg))
    return merge_bandwidth([v for k, v in sorted(results.items()) if k.startswith("client")])


def run_point(**params: object) -> dict:
    point = Point("peak", "perftest", "sim", "cx4-edr-100g", (), tuple(sorted(params.items())), 1)
    (row,) = PerftestWorkload().run_point(point)
    return row


# --- the formula on hand-made times ----------------------------------------------------


def test_peak_is_the_best_window_from_a_post_to_a_cqe_computed_by_hand() -> None:
    # 4 WRs, a CQE per 2: windows (i, j) with j in {1, 3}, j >= i.
    tposted = [0.0, 1.0, 2.0, 32.0]
    tcompleted = [None, 20.0, None, 40.0]
    # (0,1) 20/2=10  (0,3) 40/4=10  (1,1) 19  (1,3) 39/3=13  (2,3) 38/2=19  (3,3) 8/1=8
    assert peak_ns_per_message(tposted, tcompleted, 2) == 8.0
    assert perftest_opt_delta(tposted, tcompleted, 2, 1) == 8.0
    s = bandwidth_stats(4, 1024, 0.0, 40.0, tposted, tcompleted, 2)
    assert s["bw_peak_mib_s"] == pytest.approx(1024 / 8e-9 / MIB)
    assert s["bw_avg_mib_s"] == pytest.approx(4 * 1024 / 40e-9 / MIB)


def test_a_last_cqe_off_the_cq_mod_grid_closes_windows_too() -> None:
    # 5 WRs, cq_mod 2: j in {1, 3} and, as 5 % 2 != 0, j = 4 (the last WR is signaled).
    tposted = [0.0, 1.0, 2.0, 3.0, 4.0]
    tcompleted = [None, 30.0, None, 50.0, 51.0]
    # best: (0,4) 51/5 = 10.2; (0,3) 50/4 = 12.5; (4,4) 47; (2,4) 49/3
    assert peak_ns_per_message(tposted, tcompleted, 2) == pytest.approx(10.2)
    assert perftest_opt_delta(tposted, tcompleted, 2, 1) == pytest.approx(10.2)


def test_cqes_off_the_grid_are_ignored_as_perftest_ignores_them() -> None:
    # perftest reads tcompleted only at j % cq_mod == cq_mod - 1 (and N - 1): a CQE that
    # a partial block put at j = 2 is never a window's end.
    tposted = [0.0, 0.0, 0.0, 0.0]
    tcompleted = [None, 40.0, 1.0, 100.0]
    assert peak_ns_per_message(tposted, tcompleted, 2) == 20.0  # (0,1): 40/2, not (0,2): 1/3
    assert perftest_opt_delta(tposted, tcompleted, 2, 1) == 20.0


def test_with_a_post_list_windows_open_only_at_post_calls() -> None:
    tposted = [0.0, None, 10.0, None]  # post_list 2: tposted is written at 0 and 2 only
    tcompleted = [None, 12.0, None, 16.0]
    # (0,1) 12/2=6  (0,3) 16/4=4  (2,3) 6/2=3
    assert peak_ns_per_message(tposted, tcompleted, 2) == 3.0
    assert perftest_opt_delta(tposted, tcompleted, 2, 2) == 3.0


def test_the_peak_matches_perftests_loop_on_random_runs() -> None:
    rng = random.Random(11)
    for _ in range(1000):
        plist = rng.choice([1, 1, 2, 4])
        cq_mod = plist * rng.choice([1, 2, 3, 5, 25])
        n = plist * rng.randint(1, 60)
        tposted: list = [None] * n
        t = 0.0
        for i in range(0, n, plist):
            t += rng.choice([0.0, rng.expovariate(1.0), 30 * rng.random()])
            tposted[i] = t
        tcompleted: list = [None] * n
        c = 0.0
        k = 0
        while k < n:  # CQEs cover a block each, a partial one now and then (several QPs)
            k = min(n, k + rng.choice([cq_mod, cq_mod, cq_mod, max(1, cq_mod // 2)]))
            last_post = max(x for x in tposted[:k] if x is not None)
            c = max(c, last_post) + rng.expovariate(0.2) + 1e-3
            tcompleted[k - 1] = c
        assert peak_ns_per_message(tposted, tcompleted, cq_mod) == pytest.approx(
            perftest_opt_delta(tposted, tcompleted, cq_mod, plist), rel=1e-12
        )


def test_no_per_wr_times_means_no_peak_as_perftest_prints_it() -> None:
    s = bandwidth_stats(100, 64, 0.0, 1000.0, [], [], 100)
    assert s["bw_peak_mib_s"] == 0.0 and s["bw_avg_mib_s"] > 0


def test_inconsistent_times_are_refused() -> None:
    with pytest.raises(ValueError, match="not after"):
        peak_ns_per_message([0.0, 50.0], [None, 40.0], 2)
    with pytest.raises(ValueError, match="per-WR post times"):
        bandwidth_stats(3, 64, 0.0, 10.0, [0.0, 1.0], [None, 5.0], 2)


# --- what the datapath records, and the simulated peak ----------------------------------


def test_the_datapath_records_perftests_arrays() -> None:
    out = simulate(size=4096, iterations=300, qps=3)
    tp, tc = out["block_posted_ns"], out["block_completed_ns"]
    assert len(tp) == len(tc) == out["messages"] == 900
    assert all(t is not None for t in tp) and tp == sorted(tp)  # one post call per WR
    assert [j for j, t in enumerate(tc) if t is not None] == list(range(99, 900, 100))
    assert out["t_first_post_ns"] == tp[0] and out["t_last_completion_ns"] == tc[-1]


def test_a_post_list_records_one_time_per_post_call_and_cqes_on_its_grid() -> None:
    out = simulate(size=64, iterations=224, qps=2, post_list=16)  # cq_mod 100 -> one CQE per 112 WRs
    tp, tc = out["block_posted_ns"], out["block_completed_ns"]
    assert out["cq_mod"] == 112
    assert [i for i, t in enumerate(tp) if t is not None] == list(range(0, 448, 16))
    assert [j for j, t in enumerate(tc) if t is not None] == [111, 223, 335, 447]
    assert stats(out)["bw_peak_mib_s"] * MIB * 1e-9 == pytest.approx(64 / perftest_opt_delta(tp, tc, out["cq_mod"], 16))


@pytest.mark.parametrize("qps", [1, 2, 4])
def test_the_simulated_peak_is_perftests_formula_and_within_the_wire(qps: int) -> None:
    size = 65536
    out = simulate(size=size, iterations=1000, qps=qps)
    s = stats(out)
    opt = perftest_opt_delta(out["block_posted_ns"], out["block_completed_ns"], out["cq_mod"], 1)
    assert s["bw_peak_mib_s"] == pytest.approx(size / (opt * 1e-9) / MIB, rel=1e-12)
    profile = load_profile("cx4-edr-100g")
    line_mib_s = profile.link.data_rate_gbps * 1e9 / 8 / MIB  # ~11,920 MiB/s of bits at 100 Gb/s
    goodput_mib_s = WireModel.from_profile(profile).goodput_gbps(size, RETH_BYTES) * 1e9 / 8 / MIB
    assert s["bw_avg_mib_s"] * (1 - 1e-12) <= s["bw_peak_mib_s"] <= goodput_mib_s * 1.001
    assert goodput_mib_s < line_mib_s


def test_kdlab_perftest_write_bw_q4_peak_does_not_exceed_the_line_rate() -> None:
    """Issue 11: ``kdlab perftest write_bw -s 65536 -q 4`` printed a peak of 16,448 MiB/s."""
    row = run_point(test="write_bw", size=65536, qps=4)
    assert row["bw_avg_mib_s"] * (1 - 1e-12) <= row["bw_peak_mib_s"] < 100e9 / 8 / MIB


def test_several_threads_merge_into_one_run_over_all_qps() -> None:
    out = simulate(size=65536, iterations=200, qps=4, threads=2)
    tp, tc = out["block_posted_ns"], out["block_completed_ns"]
    assert len(tp) == len(tc) == out["messages"] == 800
    assert tp == sorted(tp) and [t for t in tc if t is not None] == sorted(t for t in tc if t is not None)
    s = stats(out)
    assert s["bw_peak_mib_s"] * MIB * 1e-9 == pytest.approx(65536 / perftest_opt_delta(tp, tc, out["cq_mod"], 1))
    assert s["bw_avg_mib_s"] * (1 - 1e-12) <= s["bw_peak_mib_s"] < 100e9 / 8 / MIB


def test_above_perftests_iteration_limit_there_is_no_peak() -> None:
    out = simulate(size=64, iterations=NO_PEAK_ITERS + 100, tx_depth=500, cq_mod=500, post_list=20)
    assert out["block_posted_ns"] == out["block_completed_ns"] == []
    s = stats(out)
    assert s["bw_peak_mib_s"] == 0.0 and s["msg_rate_mpps"] > 0


def test_cq_mod_defaults_as_perftest_does_without_dash_q() -> None:
    from kdlab.workloads.perftest import PerftestParams, cq_mod_for

    assert cq_mod_for(PerftestParams(test="write_bw", size=8192)) == 100
    assert cq_mod_for(PerftestParams(test="write_bw", size=8193)) == 1  # MSG_SIZE_CQ_MOD_LIMIT
    assert cq_mod_for(PerftestParams(test="write_bw", size=65536, cq_mod=100)) == 100  # -Q given
