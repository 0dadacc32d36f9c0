"""OMB's metrics from a simulated run: rates, backlog and latency histograms, per period and aggregated.

Measured as OpenMessaging Benchmark measures (openmessaging/benchmark: ``MessageProducer``,
``WorkerStats``, ``LocalWorker``, ``WorkloadGenerator.printAndCollectStats``):

* A record counts as published when its ack callback runs (``recordProducerSuccess``): a
  period's publish rate is the records acked in it over its length. Its publish latency is
  ack - send() time, its publish delay send() time - intended time (the rate limiter's),
  both in whole microseconds (``NANOSECONDS.toMicros``), capped at 60 s, recorded at the ack.
* A record counts as consumed when the consumer hands it to the application. Its end-to-end
  latency is the consumer's wall clock minus the record's CreateTime, both in whole
  milliseconds (``currentTimeMillis``, ``record.timestamp()``), recorded in microseconds,
  and only if above 0 (``recordMessageReceived``). ``e2e_clock_ns`` can refine that clock.
* Backlog at a period's end: ``max(0, subscriptionsPerTopic x sent - received)``, both
  counted from the start of the run (after warm-up OMB resets latencies, not the totals).
* Warm-up: what is acked or received before ``warmup_end_ns`` is left out. Periods run
  ``period_ns`` (OMB: 10 s) from ``warmup_end_ns``, the last one ends at ``end_ns``; the
  aggregated histograms hold every test period (OMB's cumulative recorders).
* Histograms: HdrHistogram (``hdrh``) with OMB's highest trackable values (60 s publish,
  12 h end to end, in us) and 5 significant digits. Statistics are those of Java's
  HdrHistogram 2.1.12, which OMB uses: ``getValueAtPercentile`` (count rounded up, bucket
  top), ``getMean`` (bucket medians), ``getMaxValue``, and ``percentiles(100)`` for the
  quantile maps (keyed by the percentile each step reached).

Input, per batch (all its records evenly spaced between first and last):
``sent``: (partition, records, intended_first_ns, intended_last_ns, sent_first_ns,
sent_last_ns, ack_ns); ``received``: (partition, records, ts_first_ns, ts_last_ns, received_ns).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

PERIOD_NS = 10_000_000_000
"""OMB's reporting period (``Thread.sleep(10000)`` in printAndCollectStats)."""
PUBLISH_HIGHEST_US = 60_000_000
"""WorkerStats.highestTrackableValue: ``SECONDS.toMicros(60)`` (publish latency and delay)."""
E2E_HIGHEST_US = 12 * 3600 * 1_000_000
"""End-to-end recorders: ``HOURS.toMicros(12)``."""
DIGITS = 5
PERCENTILES = {"50pct": 50.0, "75pct": 75.0, "95pct": 95.0, "99pct": 99.0, "999pct": 99.9, "9999pct": 99.99}
"""TestResult's percentile fields (suffix -> percent)."""
QUANTILE_TICKS = 100
"""``percentiles(100)``: the aggregated quantile maps' ticks per half distance."""
_CHUNK = 1 << 21  # records expanded at once
_FAMILIES = ("publishLatency", "publishDelayLatency", "endToEndLatency")
_IN_US = "publishDelayLatency"  # reported in us (TestResult's longs); the others in ms (us / 1000.0)


def histogram(highest_us: int) -> HdrHistogram:
    return HdrHistogram(1, highest_us, DIGITS)


def record(h: HdrHistogram, values_us: np.ndarray, what: str) -> None:
    """Record integer microsecond values, each distinct value once with its count."""
    if values_us.size == 0:
        return
    if values_us.min() < 0:
        raise ValueError(f"{what}: negative latency ({int(values_us.min())} us): a time precedes its cause")
    values, counts = np.unique(values_us, return_counts=True)
    for v, c in zip(values.tolist(), counts.tolist(), strict=True):
        if not h.record_value(v, c):
            raise ValueError(f"{what}: {v} us is above the histogram's highest trackable value")


_BUCKETS: dict[tuple[int, int], dict[int, tuple[int, int]]] = {}


def recorded(h: HdrHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(highest equivalent value, median equivalent value, count) of each non-empty bucket, ascending."""
    counts = np.ctypeslib.as_array(h.counts)[: h.counts_len]
    nz = np.flatnonzero(counts)
    cache = _BUCKETS.setdefault((h.highest_trackable_value, h.significant_figures), {})
    for i in nz.tolist():
        if i not in cache:
            low = h.get_value_from_index(i)
            high = h.get_highest_equivalent_value(low)
            cache[i] = (high, low + ((high - low + 1) >> 1))
    top = np.array([cache[i][0] for i in nz.tolist()], dtype=np.int64)
    mid = np.array([cache[i][1] for i in nz.tolist()], dtype=np.int64)
    return top, mid, counts[nz].astype(np.int64)


def value_at_percentile(top: np.ndarray, cum: np.ndarray, pct: float) -> int:
    """Java HdrHistogram 2.1.12 ``getValueAtPercentile`` (0 for no samples)."""
    if cum.size == 0:
        return 0
    requested = min(max(math.nextafter(pct, -math.inf), 0.0), 100.0)
    target = max(1, math.ceil(requested * int(cum[-1]) / 100.0))
    return int(top[np.searchsorted(cum, target)])


def _next_level(level: float) -> float:
    """PercentileIterator.incrementIterationLevel: fixed ticks per half distance to 100%."""
    ticks = QUANTILE_TICKS * 2 ** (int(math.log(100.0 / (100.0 - level)) / math.log(2)) + 1)
    return level + 100.0 / ticks


def quantiles(top: np.ndarray, cum: np.ndarray) -> dict[float, int]:
    """OMB's ``aggregated*Quantiles``: ``percentiles(100)`` as {getPercentile(): getValueIteratedTo()}."""
    out: dict[float, int] = {}
    if cum.size == 0:
        return out
    total, level = int(cum[-1]), 0.0
    for value, upto in zip(top[:-1].tolist(), cum[:-1].tolist(), strict=True):
        pct = 100.0 * upto / total
        while pct >= level:
            out[pct] = value
            level = _next_level(level)
    out[100.0] = int(top[-1])  # the last value reached, and the iterator's extra step to 100%
    return out


def summary(h: HdrHistogram, family: str, *, with_quantiles: bool = False) -> dict[str, Any]:
    """TestResult's Avg, percentiles and Max of one histogram (ms; us for publish delay)."""
    top, mid, counts = recorded(h)
    cum = np.cumsum(counts)

    def unit(us: float) -> float:
        return us if family == _IN_US else us / 1000.0

    out: dict[str, Any] = {"Avg": unit(float(mid @ counts) / int(cum[-1]) if cum.size else 0.0)}
    for suffix, pct in PERCENTILES.items():
        out[suffix] = unit(value_at_percentile(top, cum, pct))
    out["Max"] = unit(h.get_max_value())
    if with_quantiles:
        out["Quantiles"] = {k: unit(v) for k, v in quantiles(top, cum).items()}
    return out


def _expand(first: np.ndarray, last: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Each batch's ``n`` record times, evenly spaced from first to last, floored to whole ns."""
    starts = np.cumsum(n) - n
    k = np.arange(int(n.sum())) - np.repeat(starts, n)
    step = np.where(n > 1, (last - first) / np.maximum(n - 1, 1), 0.0)
    return np.floor(np.repeat(first, n) + k * np.repeat(step, n)).astype(np.int64)


def _chunks(n: np.ndarray) -> Iterator[slice]:
    """Runs of consecutive batches of at most ~_CHUNK records (a bigger batch alone)."""
    ends = np.cumsum(n)
    lo = 0
    while lo < len(n):
        base = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + _CHUNK, side="right")))
        yield slice(lo, hi)
        lo = hi


def _table(rows: Sequence[Sequence[float]], width: int, what: str) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, width) if len(rows) else np.zeros((0, width))
    if not np.all(np.isfinite(arr)) or (arr[:, 1] < 1).any():
        raise ValueError(f"{what}: batches need finite times and at least 1 record")
    return arr


def period_bounds(warmup_end_ns: int, end_ns: int, period_ns: int = PERIOD_NS) -> np.ndarray:
    """Ends of OMB's reporting periods: every ``period_ns`` from the warm-up's end, the last at ``end_ns``."""
    if period_ns <= 0 or end_ns <= warmup_end_ns:
        raise ValueError(f"periods: need period_ns > 0 and end_ns > warmup_end_ns (got {period_ns}, {end_ns})")
    m = math.ceil((end_ns - warmup_end_ns) / period_ns)
    return np.minimum(warmup_end_ns + period_ns * np.arange(m + 1, dtype=np.int64), end_ns)


def omb_metrics(
    sent: Sequence[Sequence[float]],
    received: Sequence[Sequence[float]],
    warmup_end_ns: int,
    end_ns: int,
    *,
    subscriptions: int = 1,
    period_ns: int = PERIOD_NS,
    e2e_clock_ns: int = 1_000_000,
) -> dict[str, Any]:
    """TestResult's rate, backlog and latency fields (OMB's names) for the test phase of a run."""
    s = _table(sent, 7, "sent")
    r = _table(received, 5, "received")
    bounds = period_bounds(warmup_end_ns, end_ns, period_ns)
    m = len(bounds) - 1
    seconds = np.diff(bounds) / 1e9
    s_period = np.searchsorted(bounds, s[:, 6], side="right") - 1
    r_period = np.searchsorted(bounds, r[:, 4], side="right") - 1
    s_period[s[:, 6] >= end_ns] = r_period[r[:, 4] >= end_ns] = -1
    out: dict[str, Any] = {}
    out["publishRate"] = _per_period(s_period, s[:, 1], m) / seconds
    out["publishErrorRate"] = np.zeros(m)
    out["consumeRate"] = _per_period(r_period, r[:, 1], m) / seconds
    sent_by = _cumulative(s[:, 6], s[:, 1], bounds[1:])
    received_by = _cumulative(r[:, 4], r[:, 1], bounds[1:])
    out = {k: v.tolist() for k, v in out.items()}
    out["backlog"] = np.maximum(0, subscriptions * sent_by - received_by).astype(int).tolist()
    totals = {f: histogram(E2E_HIGHEST_US if f == "endToEndLatency" else PUBLISH_HIGHEST_US) for f in _FAMILIES}
    lists: dict[str, list[Any]] = {f"{f}{k}": [] for f in _FAMILIES for k in ("Avg", *PERCENTILES, "Max")}
    for k in range(m):
        hists = _period_histograms(s[s_period == k], r[r_period == k], e2e_clock_ns)
        for family, h in hists.items():
            for stat, value in summary(h, family).items():
                lists[f"{family}{stat}"].append(value)
            totals[family].add(h)
    out |= lists
    for family, h in totals.items():
        cap = family[0].upper() + family[1:]
        out |= {f"aggregated{cap}{stat}": v for stat, v in summary(h, family, with_quantiles=True).items()}
    return out


def _per_period(period: np.ndarray, records: np.ndarray, m: int) -> np.ndarray:
    ok = (period >= 0) & (period < m)
    return np.bincount(period[ok], weights=records[ok], minlength=m)[:m]


def _cumulative(times: np.ndarray, records: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Records whose time is before each of ``at`` (counted from the run's start)."""
    order = np.argsort(times, kind="stable")
    cum = np.concatenate([[0], np.cumsum(records[order])])
    return cum[np.searchsorted(times[order], at, side="left")].astype(np.int64)


def _period_histograms(s: np.ndarray, r: np.ndarray, e2e_clock_ns: int) -> dict[str, HdrHistogram]:
    """One period's three histograms from its acked (``s``) and received (``r``) batches."""
    pub, delay, e2e = histogram(PUBLISH_HIGHEST_US), histogram(PUBLISH_HIGHEST_US), histogram(E2E_HIGHEST_US)
    n = s[:, 1].astype(np.int64)
    for c in _chunks(n):
        send = _expand(s[c, 4], s[c, 5], n[c])
        intended = _expand(s[c, 2], s[c, 3], n[c])
        ack = np.repeat(np.floor(s[c, 6]).astype(np.int64), n[c])
        record(pub, np.minimum((ack - send) // 1000, PUBLISH_HIGHEST_US), "publish latency")
        record(delay, np.minimum((send - intended) // 1000, PUBLISH_HIGHEST_US), "publish delay")
    n = r[:, 1].astype(np.int64)
    for c in _chunks(n):
        created = _expand(r[c, 2], r[c, 3], n[c]) // e2e_clock_ns
        now = np.repeat(np.floor(r[c, 4]).astype(np.int64), n[c]) // e2e_clock_ns
        us = (now - created) * e2e_clock_ns // 1000
        record(e2e, np.minimum(us[us > 0], E2E_HIGHEST_US), "end-to-end latency")
    return {"publishLatency": pub, "publishDelayLatency": delay, "endToEndLatency": e2e}
