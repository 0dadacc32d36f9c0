"""perftest's statistics and output format, shared by every engine.

Latency: ``iterations`` samples; perftest drops the two largest (``LAT_MEASURE_TAIL``),
reports the median as ``t_typical``, and half the round trip for send/write tests.
Bandwidth: ``BW average = bytes / (last completion - first post)`` in MiB/s (2^20 B/s),
``BW peak`` the best rate over one CQ-moderation block (between consecutive CQEs), ``MsgRate`` in Mpps.
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


def bandwidth_stats(
    messages: int,
    msg_bytes: int,
    t_first_post_ns: float,
    t_last_completion_ns: float,
    block_posted_ns: Sequence[float],
    block_completed_ns: Sequence[float],
    block_messages: int,
) -> dict[str, float]:
    """BW peak and average (MiB/s and Gb/s) and message rate (Mpps)."""
    elapsed_s = (t_last_completion_ns - t_first_post_ns) * 1e-9
    if elapsed_s <= 0:
        raise ValueError("bandwidth run took no time")
    total = messages * msg_bytes
    # Peak: the best rate over one CQ-moderation block, between consecutive CQEs (the
    # first block is timed from its post, so a run of one block still has a peak).
    peak = 0.0
    starts = [block_posted_ns[0], *block_completed_ns[:-1]] if block_completed_ns else []
    for start, done in zip(starts, block_completed_ns, strict=True):
        if done > start:
            peak = max(peak, block_messages * msg_bytes / ((done - start) * 1e-9))
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
