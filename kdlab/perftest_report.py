"""perftest's statistics and output format, shared by every engine.

Latency: ``iterations`` samples; perftest drops the two largest (``LAT_MEASURE_TAIL``),
reports the median as ``t_typical``, and half the round trip for send/write tests.
Bandwidth (``print_report_bw`` in perftest's ``src/perftest_parameters.c``), over the N = iters x QPs
WRs of a run: ``BW average = size * N / (tcompleted[N-1] - tposted[0])`` in MiB/s (2^20 B/s),
``MsgRate = N / elapsed`` in Mpps, and ``BW peak = size / opt_delta``, where ``opt_delta`` is the least
time per message over every window that opens at a post and closes at a CQE:
``min (tcompleted[j] - tposted[i]) / (j - i + 1)`` for i = 0, post_list, 2 post_list, ... and
j >= i with j % cq_mod == cq_mod - 1 (and j = N - 1). Indices count WRs over all QPs, in post
order for ``tposted`` and in completion order for ``tcompleted`` (see ``peak_ns_per_message``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

#: perftest drops this many of the largest latency samples before reporting.
LAT_MEASURE_TAIL = 2
MIB = 1 << 20

LAT_HEADER = (
    " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]"
    "   99% percentile[usec]   99.9% percentile[usec] "
)
BW_HEADER = " #bytes     #iterations    BW peak[MiB/sec]    BW average[MiB/sec]   MsgRate[Mpps]"


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """perftest's percentile: the sample at index ceil(q * n) - 1 of the sorted list."""
    n = len(sorted_values)
    return sorted_values[max(0, min(n - 1, math.ceil(q * n) - 1))]


def latency_stats(samples_us: Iterable[float]) -> dict[str, float]:
    """t_min, t_max, t_typical, t_avg, t_stdev, p99, p99.9 (us), perftest's way."""
    values = sorted(samples_us)
    if len(values) > LAT_MEASURE_TAIL + 1:
        values = values[: len(values) - LAT_MEASURE_TAIL]
    n = len(values)
    if n == 0:
        raise ValueError("no latency samples")
    mid = n // 2
    median = values[mid] if n % 2 else (values[mid - 1] + values[mid]) / 2
    avg = sum(values) / n
    var = sum((v - avg) ** 2 for v in values) / n
    return {
        "t_min_us": values[0],
        "t_max_us": values[-1],
        "t_typical_us": median,
        "t_avg_us": avg,
        "t_stdev_us": math.sqrt(var),
        "t_p99_us": _percentile(values, 0.99),
        "t_p999_us": _percentile(values, 0.999),
    }


def peak_ns_per_message(
    tposted_ns: Sequence[float | None], tcompleted_ns: Sequence[float | None], cq_mod: int
) -> float:
    """perftest's ``opt_delta`` (``print_report_bw``): the least time per message of a window.

    ``tposted_ns[i]`` is the time just before the post call that posted the run's i-th WR
    (counted over all QPs; None for the other WRs of a post list), ``tcompleted_ns[j]``
    the time of the CQE that brought the run's completed WRs to j + 1 (None where no CQE
    did): perftest's ``tposted``/``tcompleted`` as ``run_iter_bw`` fills them. perftest's
    loop::

        opt_delta = tcompleted[0] - tposted[0];
        for (i = 0; i < N; i += post_list)
            for (j = ROUND_UP(i + 1, cq_mod) - 1; j < N; j += cq_mod)
                opt_delta = min(opt_delta, (tcompleted[j] - tposted[i]) / (j - i + 1));
            if (N % cq_mod) j = N - 1, likewise

    where an entry no CQE wrote stays 0 and its unsigned difference is never the least.
    This finds the same minimum in O(N log N) rather than O(N^2 / cq_mod): for each j,
    the best i is a vertex of the upper convex hull of the points (i, tposted[i]) with
    i <= j, as seen from (j + 1, tcompleted[j]). Returns inf when no window has a CQE.
    """
    n = len(tposted_ns)
    if len(tcompleted_ns) != n:
        raise ValueError(f"{n} post times but {len(tcompleted_ns)} completion times")
    ends = list(range(cq_mod - 1, n, cq_mod))
    if n % cq_mod:
        ends.append(n - 1)
    hx: list[int] = []  # the upper hull of (i, tposted[i]) over the posts added so far
    hy: list[float] = []
    latest = -math.inf
    best = math.inf  # perftest starts at tcompleted[0] - tposted[0]: set only if a CQE covers WR 0 alone
    if n and tposted_ns[0] is not None and tcompleted_ns[0] is not None:
        best = tcompleted_ns[0] - tposted_ns[0]
    i = 0
    for j in ends:
        while i <= j:
            y = tposted_ns[i]
            if y is not None:
                while len(hx) >= 2 and (hx[-1] - hx[-2]) * (y - hy[-2]) - (hy[-1] - hy[-2]) * (i - hx[-2]) >= 0:
                    hx.pop()
                    hy.pop()
                hx.append(i)
                hy.append(y)
                latest = max(latest, y)
            i += 1
        c = tcompleted_ns[j]
        if c is None or not hx:
            continue
        if c <= latest:
            raise ValueError(f"completion {j} at {c} ns is not after the posts it covers (up to {latest} ns)")
        x = j + 1
        lo, hi = 0, len(hx) - 1  # the time per message from hull vertex k falls, then rises
        while lo < hi:
            k = (lo + hi) // 2
            if (c - hy[k + 1]) * (x - hx[k]) < (c - hy[k]) * (x - hx[k + 1]):
                lo = k + 1
            else:
                hi = k
        best = min(best, (c - hy[lo]) / (x - hx[lo]))
    return best


def bandwidth_stats(
    messages: int,
    msg_bytes: int,
    t_first_post_ns: float,
    t_last_completion_ns: float,
    tposted_ns: Sequence[float | None],
    tcompleted_ns: Sequence[float | None],
    cq_mod: int,
) -> dict[str, float]:
    """BW peak and average (MiB/s and Gb/s) and message rate (Mpps), perftest's way.

    ``tposted_ns``/``tcompleted_ns`` are the per-WR times of ``peak_ns_per_message`` (the
    datapath's ``block_posted_ns``/``block_completed_ns``); empty when the run kept none,
    as perftest keeps none above 20000 iterations per QP: the peak is then 0, as perftest
    prints it. perftest divides whole cycles; times here are not rounded.
    """
    elapsed_s = (t_last_completion_ns - t_first_post_ns) * 1e-9
    if elapsed_s <= 0:
        raise ValueError("bandwidth run took no time")
    total = messages * msg_bytes
    peak = 0.0
    if tposted_ns or tcompleted_ns:
        if len(tposted_ns) != messages:
            raise ValueError(f"{len(tposted_ns)} per-WR post times for {messages} messages")
        per_message_ns = peak_ns_per_message(tposted_ns, tcompleted_ns, cq_mod)
        if math.isfinite(per_message_ns):
            peak = msg_bytes / (per_message_ns * 1e-9)
    return {
        "bw_peak_mib_s": peak / MIB,
        "bw_avg_mib_s": total / elapsed_s / MIB,
        "bw_avg_gbps": total * 8 / elapsed_s / 1e9,
        "msg_rate_mpps": messages / elapsed_s / 1e6,
    }


def format_latency_row(size: int, iterations: int, s: dict[str, float]) -> str:
    return (
        f" {size:<7d} {iterations:<10d}     {s['t_min_us']:<7.2f}        {s['t_max_us']:<7.2f}      "
        f"{s['t_typical_us']:<7.2f}  \t       {s['t_avg_us']:<7.2f}     \t{s['t_stdev_us']:<7.2f}\t\t"
        f"{s['t_p99_us']:<7.2f} \t\t{s['t_p999_us']:<7.2f}"
    )


def format_bw_row(size: int, iterations: int, s: dict[str, float]) -> str:
    return (
        f" {size:<7d}    {iterations:<10d}       {s['bw_peak_mib_s']:<7.2f}            "
        f"{s['bw_avg_mib_s']:<7.2f}\t\t     {s['msg_rate_mpps']:<7.6f}"
    )
