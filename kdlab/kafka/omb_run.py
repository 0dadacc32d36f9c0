"""Run an OpenMessaging Benchmark workload with an OMB Kafka driver file on a simulated cluster.

Every workload field is honoured or refused (:func:`omb_params_dict`):

* ``topics``, ``partitionsPerTopic``, ``producersPerTopic``, ``subscriptionsPerTopic`` (consumer
  groups per topic), ``consumerPerSubscription`` (consumers per group), ``messageSize`` and
  ``consumerBacklogSizeGB`` map to KafkaParams; ``keyDistributor`` to ``keys`` with Kafka's
  default partitioner (KafkaDirect's exclusive producers own their partitions: no keys).
* ``producerRate`` is the open-loop rate over all producers (OMB's UniformRateLimiter); a
  rate the cluster cannot carry shows, as in OMB, as a publish rate below it and a growing
  publish delay. ``producerRate: 0`` is OMB's search for the highest sustainable rate
  (WorkloadGenerator.findMaximumSustainableRate: RateController every 3 s); kdlab runs the
  producers closed loop instead (as fast as acks and buffer.memory allow) and says so.
* ``warmupDurationMinutes`` and ``testDurationMinutes`` are simulated time, in OMB's 10 s
  periods; ``time_scale`` shrinks both and the period alike (0.001: a 15-minute test is
  90 periods of 10 ms), and the result states it.
* ``payloadFile`` is read as OMB does (its size must be ``messageSize``); a file not found
  (OMB's payload/ folder is not here) leaves ``messageSize`` bytes, stated. Payload contents
  (``useRandomizedPayloads``, ``randomBytesRatio``, ``randomizedPayloadPoolSize``) only
  matter to compression, which is not modelled: listed as ignored.
* The warm-up and test periods count from the producers' start (their first send, after
  connecting), not from simulated time 0.
* ``consumerBacklogSizeGB`` is OMB's ``buildAndDrainBacklog``: the consumers read through
  the warm-up, pause at its end while the producers keep producing at the rate, and
  resume once ``subscriptionsPerTopic x sent - received`` reaches the size
  (``backlog_bytes``; :mod:`kdlab.kafka.fetcher`); the test then runs past
  ``testDurationMinutes``, in whole periods, until the backlog is drained (the last
  record received), as OMB keeps it running. Two differences, stated in the result:
  kdlab's producers stop at the test's end (OMB's keep producing, and OMB runs another
  ``testDurationMinutes`` after the drain), and a backlog the test cannot build (the
  rate x test shorter than it) ends the pause when the producers stop.
* ``backlogDrainRatio`` other than 1 (drain fully) is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdlab.kafka.batch_log import stack
from kdlab.kafka.omb import OmbError, OmbWorkload, load_omb_workload, omb_result_json
from kdlab.kafka.omb_driver import OmbDriver, load_omb_driver
from kdlab.kafka.omb_metrics import PERIOD_NS, omb_metrics
from kdlab.kafka.params import KafkaParams

KEYS = {"NO_KEY": "none", "KEY_ROUND_ROBIN": "round-robin", "RANDOM_NANO": "random"}
"""OMB's KeyDistributorType -> KafkaParams.keys."""
_CONTENT_ONLY = "payload contents only matter to compression, which is not modelled"
_CLOSED_LOOP = (
    "producerRate 0: OMB searches the highest sustainable rate (RateController, every 3 s); "
    "kdlab ran the producers closed loop (as fast as acks and buffer.memory allow) and reports what they achieved"
)


def omb_params_dict(
    w: OmbWorkload, driver: OmbDriver | None, system: str, *, time_scale: float = 1.0, workload_dir: Path | None = None
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """(KafkaParams fields, field -> the OMB field or property that set it, notes for the result)."""
    if not 0 < time_scale <= 1:
        raise OmbError(f"time_scale: {time_scale} must be in (0, 1] (1: OMB's minutes and 10 s periods)")
    period_ms = PERIOD_NS / 1e6 * time_scale
    p: dict[str, Any] = {
        "system": system,
        "variant": f"OMB {w.name}",
        "topics": w.topics,
        "partitions": w.partitions_per_topic,
        "producers": w.producers_per_topic,
        "groups": w.subscriptions_per_topic,
        "consumers": w.consumer_per_subscription if w.subscriptions_per_topic else 0,
        "record_bytes": w.message_size,
        "rate_total": float(w.producer_rate),
        "warmup_ms": _periods(w.warmup_duration_minutes) * period_ms,
        "duration_ms": _periods(w.test_duration_minutes) * period_ms,
        "keys": KEYS[w.key_distributor],
        "partitioner": "default",
        "backlog_bytes": w.consumer_backlog_size_gb * 1024**3,
    }
    sources = {k: v for k, v in _WORKLOAD_SOURCES.items() if k in p}
    if system == "kafkadirect":
        if w.key_distributor != "NO_KEY":
            raise OmbError(
                f"keyDistributor: {w.key_distributor}: KafkaDirect's exclusive producers each own their partitions "
                "(allowed: NO_KEY; keyed records need --system kafka or osu)"
            )
        p["partitioner"] = "fixed"
    if w.backlog_drain_ratio != 1.0:
        raise OmbError(f"backlogDrainRatio: {w.backlog_drain_ratio}: only 1.0 (drain the backlog fully) is modelled")
    notes: dict[str, Any] = {"timeScale": time_scale, "reportingPeriodMs": period_ms}
    notes |= {"warmupMs": p["warmup_ms"], "testMs": p["duration_ms"], "ignored": {}}
    if w.use_randomized_payloads:
        for f in ("useRandomizedPayloads", "randomBytesRatio", "randomizedPayloadPoolSize"):
            notes["ignored"][f] = _CONTENT_ONLY
    else:
        notes["payload"] = _payload(w, workload_dir)
    if w.find_max_rate:
        notes["producerRate"] = _CLOSED_LOOP
    if driver is not None:
        p |= driver.params
        sources |= driver.sources
        notes["ignored"] |= driver.ignored
    return p, sources, notes


def _periods(minutes: int) -> int:
    """OMB reports every 10 s until the phase's minutes have passed: whole periods."""
    return math.ceil(minutes * 60e9 / PERIOD_NS)


_WORKLOAD_SOURCES = {
    "topics": "topics",
    "partitions": "partitionsPerTopic",
    "producers": "producersPerTopic",
    "groups": "subscriptionsPerTopic",
    "consumers": "consumerPerSubscription",
    "record_bytes": "messageSize",
    "rate_total": "producerRate",
    "warmup_ms": "warmupDurationMinutes",
    "duration_ms": "testDurationMinutes",
    "keys": "keyDistributor",
    "backlog_bytes": "consumerBacklogSizeGB",
}


def _payload(w: OmbWorkload, workload_dir: Path | None) -> str:
    """OMB's FilePayloadReader: the file's bytes are the payload, and must be messageSize long."""
    if w.payload_file is None:
        return f"no payloadFile: {w.message_size}-byte payloads (messageSize)"
    candidates = [Path(w.payload_file)] + ([workload_dir / w.payload_file] if workload_dir else [])
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        return f"payloadFile {w.payload_file!r} not found here: {w.message_size}-byte payloads (messageSize)"
    size = found.stat().st_size
    if size != w.message_size:
        raise OmbError(
            f"payloadFile: {str(found)!r} has {size} bytes but messageSize is {w.message_size} "
            "(OMB: Payload length mismatch)"
        )
    return f"payloadFile {str(found)!r}: {size} bytes"


def omb_params(
    w: OmbWorkload,
    driver: OmbDriver | None,
    system: str,
    *,
    time_scale: float = 1.0,
    workload_dir: Path | None = None,
    **overrides: Any,
) -> tuple[KafkaParams, dict[str, Any]]:
    """KafkaParams for the workload and driver (``overrides`` last), and the notes for the result."""
    fields, sources, notes = omb_params_dict(w, driver, system, time_scale=time_scale, workload_dir=workload_dir)
    try:
        return KafkaParams(**(fields | overrides)), notes
    except ValidationError as err:
        lines = []
        for e in err.errors():
            name = str(e["loc"][0]) if e["loc"] else ""
            where = f"{sources[name]} ({name})" if name in sources else name or "<mapped workload>"
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')} (got {e.get('input')!r})")
        raise OmbError("\n".join(lines)) from None


def run_omb(
    source: str | Path,
    system: str,
    profile: str = "cx4-edr-100g",
    out: str | Path | None = None,
    *,
    driver: str | Path | None = None,
    time_scale: float = 1.0,
    e2e_clock_ns: int = 1_000_000,
    **overrides: Any,
) -> dict[str, Any]:
    """Simulate the workload on ``system`` with the driver file; -> OMB's TestResult dict (also written to ``out``).

    Without a driver file, Kafka's client defaults (KafkaParams') apply. ``e2e_clock_ns``
    is the clock of end-to-end latency (OMB: milliseconds, Kafka's CreateTime).
    """
    from kdlab.engines import make_engine
    from kdlab.kafka.cluster import build

    w = load_omb_workload(source)
    d = load_omb_driver(driver) if driver is not None else None
    where = Path(source).parent if "\n" not in str(source) and Path(source).is_file() else None
    p, notes = omb_params(w, d, system, time_scale=time_scale, workload_dir=where, **overrides)
    results = make_engine("sim", profile).run(build(p))
    sent = stack((r["sent"] for r in results.values() if isinstance(r, dict) and "sent" in r), 7)
    received = stack((r["received"] for r in results.values() if isinstance(r, dict) and "received" in r), 5)
    starts = [r["t_first_ns"] for name, r in results.items() if name.startswith("producer") and isinstance(r, dict)]
    start_ns = min(starts, default=0.0)  # the producers' first send: the warm-up starts there
    warmup_end_ns = round(start_ns + p.warmup_ms * 1e6)
    period_ns = round(PERIOD_NS * time_scale)
    end_ns = warmup_end_ns + round(p.duration_ms * 1e6)
    if p.backlog_bytes and len(received):
        end_ns = drained_end(warmup_end_ns, end_ns, float(received[:, 4].max()), period_ns)
        notes |= _backlog_notes(p, w, end_ns - warmup_end_ns)
    metrics = omb_metrics(
        sent,
        received,
        warmup_end_ns,
        end_ns,
        subscriptions=w.subscriptions_per_topic,
        period_ns=period_ns,
        e2e_clock_ns=e2e_clock_ns,
    )
    notes |= {"system": system, "profile": profile, "e2eClockMs": e2e_clock_ns / 1e6, "startMs": start_ns / 1e6}
    notes |= _rate_notes(w, metrics["publishRate"])
    name = d.name if d is not None else "Kafka (client defaults)"
    return omb_result_json(w, f"{name} on kdsim {system} ({profile})", metrics, path=out, notes=notes)


def drained_end(warmup_end_ns: int, test_end_ns: int, last_received_ns: float, period_ns: int) -> int:
    """OMB with a backlog: the test runs on, in whole periods, until the backlog is drained -> the last period's end
    (the test's end, or the first period end after the last record received)."""
    if last_received_ns < test_end_ns:
        return test_end_ns
    periods = math.floor((last_received_ns - warmup_end_ns) / period_ns) + 1
    return warmup_end_ns + periods * period_ns


def _backlog_notes(p: KafkaParams, w: OmbWorkload, measured_ns: int) -> dict[str, Any]:
    test_bytes = p.rate_total * p.duration_ms / 1e3 * p.record_bytes * max(1, w.subscriptions_per_topic)
    out: dict[str, Any] = {
        "backlog": (
            f"consumers paused at the warm-up's end until {p.backlog_bytes} B were unread over "
            f"{w.subscriptions_per_topic} subscription(s), then drained it; the test ran {measured_ns / 1e6:g} ms "
            f"(testDurationMinutes: {p.duration_ms:g} ms). kdlab's producers stop at the test's end (OMB's keep "
            "producing and run another testDurationMinutes after the drain)"
        )
    }
    if p.rate_total and test_bytes < p.backlog_bytes:
        out["backlogNotBuilt"] = (
            f"the test produces ~{test_bytes:.0f} B for the subscriptions, less than the {p.backlog_bytes} B "
            "backlog: the consumers resumed when the producers stopped"
        )
    return out


def _rate_notes(w: OmbWorkload, publish_rate: list[float]) -> dict[str, Any]:
    """The offered and achieved rates; a target missed by over 1% is said so (OMB only shows the numbers)."""
    achieved = sum(publish_rate) / len(publish_rate) if publish_rate else 0.0
    out: dict[str, Any] = {"targetRate": w.producer_rate or None, "achievedRate": achieved}
    if w.producer_rate and achieved < 0.99 * w.producer_rate:
        out["belowTarget"] = (
            f"published {achieved:.0f} msg/s of the {w.producer_rate} offered: the cluster cannot carry the "
            "rate (OMB shows it as a lower publishRate and a growing publishDelayLatency)"
        )
    return out
