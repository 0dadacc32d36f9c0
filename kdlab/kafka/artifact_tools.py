"""The KafkaDirect artifact's measurement tools, defined exactly as they measure.

The paper's numbers come from the tools of its public artifact (``spcl/kafkadirect``,
Kafka 2.2 with RDMA): ``kafka.tools.ProducerLatency``, ``ConsumerLatency`` (with the
instrumented ``Fetcher``), ``EndToEndLatency``, ``ProducerPerformance`` and
``ConsumerPerformance``. Each is a tool here: a Kafka run shaped as the tool sets its
clients up, and a metric computed as the tool computes it. ``docs/kafka.md`` traces every
definition to its file; the facts:

* every latency tool drops its first :data:`WARMUP` (2000) samples (ProducerLatency and
  EndToEndLatency send them untimed first; ConsumerLatency drops the first 2000 of each
  list) and takes percentile ``q`` as ``sorted[(int)(q * n)]`` (Java's cast floors);
* ConsumerLatency keeps fetches with data and without data in two lists and prints a list
  only if it has more than 2000 samples; it prints no mean;
* ProducerLatency and EndToEndLatency print the mean and p50, p95, p99 and p99.9 (µs);
* the throughput tools count payload bytes only, in MB of 2**20 bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Samples every artifact latency tool leaves out before its statistics.
WARMUP = 2000
#: The percentiles the tools print, as (column suffix, q).
PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999))
#: Bytes a ConsumerLatency fetch allows beyond the record (``entryheadersize``): one one-record batch.
CONSUMER_LATENCY_HEADER = 72
#: EndToEndLatency's consumer allows the record plus 70 bytes.
END_TO_END_HEADER = 70
#: A MB for the throughput tools (``1024 * 1024``).
MB = 1 << 20


@dataclass(frozen=True)
class Tool:
    """One artifact tool: its name here, the class it mirrors, and what it times."""

    name: str
    artifact: str
    definition: str


TOOLS = {
    t.name: t
    for t in (
        Tool("producer-latency", "core/src/main/scala/kafka/tools/ProducerLatency.scala",
             "send() to get() on the application thread, one record per request, one outstanding, linger.ms=0; "
             "2000 untimed warm-up sends; mean and sorted[(int)(q*n)]"),
        Tool("consumer-latency", "core/src/main/scala/kafka/tools/ConsumerLatency.scala + Fetcher.java",
             "a pre-filled topic read from earliest, one one-record batch per fetch, fetch.max.wait.ms=0; TCP: each "
             "fetch request, sendFetches() to the response handled, with and without data apart; RDMA: each data "
             "READ, post to completion (slot READs untimed); first 2000 of each list dropped; sorted[(int)(q*n)]"),
        Tool("end-to-end-latency", "core/src/main/scala/kafka/tools/EndToEndLatency.scala",
             "sequential in one thread: send().get(), then poll until the record is back; 2000 untimed warm-up "
             "rounds; mean and sorted[(int)(q*n)]"),
        Tool("producer-performance", "tools/src/main/java/org/apache/kafka/tools/ProducerPerformance.java",
             "asynchronous sends, payload bytes over the time from the first send to the last ack (the close's "
             "drain included), MB = 2**20 B"),
        Tool("consumer-performance", "core/src/main/scala/kafka/tools/ConsumerPerformance.scala",
             "reads a pre-filled topic with check.crcs=false, fetch.max.wait.ms=--fetchtime, "
             "max.partition.fetch.bytes=--fetch-size; payload bytes over the fetch time, MB = 2**20 B"),
    )
}  # fmt: skip


def artifact_percentile(ordered: Sequence[float], q: float) -> float:
    """The tools' percentile of sorted samples: ``sorted[(int)(q * n)]``, NaN for no samples."""
    n = len(ordered)
    if n == 0:
        return math.nan
    return float(ordered[min(n - 1, int(q * n))])


def after_warmup(samples_ns: Sequence[float], warmup: int = WARMUP) -> list[float]:
    """The samples a tool keeps, in µs: all but the first ``warmup``, in arrival order."""
    return [s / 1e3 for s in samples_ns[warmup:]]


def latency_stats(prefix: str, samples_ns: Sequence[float], *, mean: bool = True,
                  printed_only_above_warmup: bool = False, warmup: int = WARMUP) -> dict[str, float]:  # fmt: skip
    """``{prefix}_{p50,p95,p99,p999}_us``, ``{prefix}_mean_us`` and ``{prefix}_samples`` as a tool prints them.

    ``printed_only_above_warmup``: ConsumerLatency prints a list only if it held more than
    ``warmup`` samples; otherwise every statistic is NaN (and ``samples`` 0).
    """
    if printed_only_above_warmup and len(samples_ns) <= warmup:
        kept: list[float] = []
    else:
        kept = after_warmup(samples_ns, warmup)
    ordered = sorted(kept)
    out = {f"{prefix}_{name}_us": artifact_percentile(ordered, q) for name, q in PERCENTILES}
    if mean:
        out[f"{prefix}_mean_us"] = float(np.mean(kept)) if kept else math.nan
    out[f"{prefix}_samples"] = len(kept)
    return out


__all__ = [
    "CONSUMER_LATENCY_HEADER", "END_TO_END_HEADER", "MB", "PERCENTILES", "TOOLS", "WARMUP", "Tool",
    "after_warmup", "artifact_percentile", "latency_stats",
]  # fmt: skip
