"""OpenMessaging Benchmark (OMB) workload files and result JSON.

A workload file is OMB's ``workloads/*.yaml``: the public fields of
``io.openmessaging.benchmark.Workload`` (openmessaging/benchmark), e.g.::

    name: 1 producer / 1 consumers on 1 topic
    topics: 1
    partitionsPerTopic: 16
    messageSize: 1024
    payloadFile: "payload/payload-1Kb.data"
    subscriptionsPerTopic: 1
    consumerPerSubscription: 1
    producersPerTopic: 1
    producerRate: 50000
    consumerBacklogSizeGB: 0
    testDurationMinutes: 15

``producerRate: 0`` asks OMB to search for the highest sustainable rate. Unlike OMB,
which ignores unknown keys, a misspelt key is an error here; every error names the
field and what it allows.

A result is the JSON of OMB's ``TestResult``: per-period (10 s in OMB) rate and
latency lists, and aggregated latency percentiles over the whole run, in ms
(publish delay in us). Percentiles follow HdrHistogram's ``getValueAtPercentile``:
the smallest sample with at least p% of samples at or below it (nearest rank).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdlab.spec import read_yaml

KEY_DISTRIBUTORS = ("NO_KEY", "KEY_ROUND_ROBIN", "RANDOM_NANO")
"""``io.openmessaging.benchmark.utils.distributor.KeyDistributorType``."""
JAVA_INT_MAX = 2**31 - 1
PERCENTILES = {"50pct": 50, "75pct": 75, "95pct": 95, "99pct": 99, "999pct": 99.9, "9999pct": 99.99}
"""TestResult's percentile fields (suffix -> percent)."""
QUANTILES = (50, 75, 87.5, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100)
"""Percentiles written to the ``aggregated*Quantiles`` maps (OMB writes HdrHistogram's ticks)."""


class OmbError(ValueError):
    """An OMB workload is malformed; the message names the field and the allowed values."""


class _WorkloadDoc(BaseModel):
    """The YAML as OMB spells it; validation only."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    topics: int = Field(ge=1, le=JAVA_INT_MAX)
    partitionsPerTopic: int = Field(ge=1, le=JAVA_INT_MAX)
    messageSize: int = Field(ge=1, le=JAVA_INT_MAX)
    producersPerTopic: int = Field(ge=1, le=JAVA_INT_MAX)
    subscriptionsPerTopic: int = Field(ge=0, le=JAVA_INT_MAX)
    consumerPerSubscription: int = Field(ge=1, le=JAVA_INT_MAX)
    producerRate: int = Field(ge=0, le=JAVA_INT_MAX, description="msg/s over all producers; 0: find the max")
    testDurationMinutes: int = Field(ge=1, le=JAVA_INT_MAX)
    warmupDurationMinutes: int = Field(default=1, ge=0, le=JAVA_INT_MAX)
    keyDistributor: Literal["NO_KEY", "KEY_ROUND_ROBIN", "RANDOM_NANO"] = "NO_KEY"
    payloadFile: str | None = None
    consumerBacklogSizeGB: int = Field(default=0, ge=0)
    backlogDrainRatio: float = Field(default=1.0, ge=0.0, le=1.0)
    useRandomizedPayloads: bool = False
    randomBytesRatio: float = Field(default=0.0, ge=0.0, le=1.0)
    randomizedPayloadPoolSize: int = Field(default=0, ge=0, le=JAVA_INT_MAX)

    @model_validator(mode="after")
    def _cross_checks(self) -> _WorkloadDoc:
        if self.consumerBacklogSizeGB > 0 and self.producerRate == 0:
            raise ValueError(
                "consumerBacklogSizeGB > 0 needs producerRate >= 1 "
                "(OMB: cannot probe producer sustainable rate when building backlog)"
            )
        if self.useRandomizedPayloads and self.randomizedPayloadPoolSize < 1:
            raise ValueError("useRandomizedPayloads: true needs randomizedPayloadPoolSize >= 1")
        return self


_SNAKE = {
    "name": "name",
    "topics": "topics",
    "partitionsPerTopic": "partitions_per_topic",
    "messageSize": "message_size",
    "producersPerTopic": "producers_per_topic",
    "subscriptionsPerTopic": "subscriptions_per_topic",
    "consumerPerSubscription": "consumer_per_subscription",
    "producerRate": "producer_rate",
    "testDurationMinutes": "test_duration_minutes",
    "warmupDurationMinutes": "warmup_duration_minutes",
    "keyDistributor": "key_distributor",
    "payloadFile": "payload_file",
    "consumerBacklogSizeGB": "consumer_backlog_size_gb",
    "backlogDrainRatio": "backlog_drain_ratio",
    "useRandomizedPayloads": "use_randomized_payloads",
    "randomBytesRatio": "random_bytes_ratio",
    "randomizedPayloadPoolSize": "randomized_payload_pool_size",
}
_CAMEL = {snake: camel for camel, snake in _SNAKE.items()}


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<workload>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown field; allowed: {', '.join(_SNAKE)}"
        elif e["type"] == "missing":
            msg = "required field is missing"
        got = "" if e["type"] in ("missing", "value_error") else f" (got {e.get('input')!r})"
        lines.append(f"{origin}: {field}: {msg}{got}")
    return "\n".join(lines)


@dataclass(frozen=True)
class OmbWorkload:
    """A validated OMB workload (fields are OMB's, in snake_case; see :func:`load_omb_workload`)."""

    name: str
    topics: int
    partitions_per_topic: int
    message_size: int
    producers_per_topic: int
    subscriptions_per_topic: int
    consumer_per_subscription: int
    producer_rate: int
    test_duration_minutes: int
    warmup_duration_minutes: int = 1
    key_distributor: str = "NO_KEY"
    payload_file: str | None = None
    consumer_backlog_size_gb: int = 0
    backlog_drain_ratio: float = 1.0
    use_randomized_payloads: bool = False
    random_bytes_ratio: float = 0.0
    randomized_payload_pool_size: int = 0

    def __post_init__(self) -> None:
        try:
            _WorkloadDoc.model_validate(self.to_omb())
        except ValidationError as err:
            raise OmbError(_format_errors(err, "<workload>")) from None

    def to_omb(self) -> dict[str, Any]:
        """The workload as an OMB YAML mapping (camelCase keys)."""
        return {_CAMEL[k]: v for k, v in asdict(self).items()}

    @property
    def total_partitions(self) -> int:
        return self.topics * self.partitions_per_topic

    @property
    def total_producers(self) -> int:
        return self.topics * self.producers_per_topic

    @property
    def total_consumers(self) -> int:
        return self.topics * self.subscriptions_per_topic * self.consumer_per_subscription

    @property
    def find_max_rate(self) -> bool:
        """``producerRate: 0``: OMB searches for the highest sustainable publish rate."""
        return self.producer_rate == 0


def load_omb_workload(source: str | Path | Mapping[str, Any]) -> OmbWorkload:
    """Read and validate an OMB workload from a YAML file, YAML text or a mapping."""
    doc, origin = read_yaml(source, "workload", OmbError)
    if not isinstance(doc, dict):
        raise OmbError(f"{origin}: an OMB workload is a mapping of fields such as topics, messageSize")
    try:
        checked = _WorkloadDoc.model_validate(doc)
    except ValidationError as err:
        raise OmbError(_format_errors(err, origin)) from None
    return OmbWorkload(**{_SNAKE[k]: v for k, v in checked.model_dump().items()})


# --- results -------------------------------------------------------------------------------


def percentile(sorted_samples: np.ndarray, pct: float) -> float:
    """HdrHistogram's value at ``pct``: nearest rank, ``ceil(pct/100 * n)``-th smallest (at least the 1st)."""
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("percentile of no samples")
    rank = max(1, math.ceil(Fraction(str(pct)) * n / 100))
    return float(sorted_samples[min(rank, n) - 1])


def _samples(name: str, values: Sequence[float] | np.ndarray | None) -> np.ndarray:
    arr = np.asarray([] if values is None else values, dtype=float).ravel()
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0):
        raise ValueError(f"{name}: samples must be finite and >= 0")
    return arr


def _latency_fields(prefix: str, samples: np.ndarray, periods: Sequence[Any] | None, arg: str) -> dict[str, Any]:
    """OMB's per-period lists ``{prefix}Avg..Max`` and ``aggregated{Prefix}Avg..Max`` + quantiles."""
    out: dict[str, Any] = {}
    per = [np.sort(_samples(f"{arg}[{i}]", p)) for i, p in enumerate(periods or ())]
    agg = np.sort(samples)
    stats: dict[str, Any] = {"Avg": np.mean}
    stats |= {suffix: (lambda s, p=pct: percentile(s, p)) for suffix, pct in PERCENTILES.items()}
    stats["Max"] = np.max
    for suffix, fn in stats.items():
        out[f"{prefix}{suffix}"] = [float(fn(s)) if s.size else None for s in per]
    cap = prefix[0].upper() + prefix[1:]
    for suffix, fn in stats.items():
        out[f"aggregated{cap}{suffix}"] = float(fn(agg)) if agg.size else None
    out[f"aggregated{cap}Quantiles"] = {str(float(q)): percentile(agg, q) for q in QUANTILES} if agg.size else {}
    return out


def omb_result_json(
    workload: OmbWorkload | str,
    driver: str,
    publish_rate: Sequence[float],
    consume_rate: Sequence[float],
    publish_latency_ms: Sequence[float] | np.ndarray,
    end_to_end_latency_ms: Sequence[float] | np.ndarray,
    *,
    path: str | Path | None = None,
    publish_error_rate: Sequence[float] | None = None,
    backlog: Sequence[int] | None = None,
    publish_delay_latency_us: Sequence[float] | np.ndarray | None = None,
    period_publish_latency_ms: Sequence[Sequence[float]] | None = None,
    period_end_to_end_latency_ms: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """An OMB ``TestResult`` as a dict with OMB's field names; written as JSON to ``path`` if given.

    ``publish_rate``/``consume_rate`` are msg/s per reporting period; latency samples
    are per message, over the whole run (the aggregated fields) or, optionally, per
    period (the per-period lists, empty when not given). Statistics of no samples are
    ``None`` (JSON null).
    """
    pub_rate = _samples("publish_rate", publish_rate)
    cons_rate = _samples("consume_rate", consume_rate)
    err_rate = _samples("publish_error_rate", publish_error_rate) if publish_error_rate is not None else 0 * pub_rate
    result: dict[str, Any] = {"workload": workload if isinstance(workload, str) else workload.name, "driver": driver}
    if isinstance(workload, OmbWorkload):
        result |= {
            "messageSize": workload.message_size,
            "topics": workload.topics,
            "partitions": workload.partitions_per_topic,
            "producersPerTopic": workload.producers_per_topic,
            "consumersPerTopic": workload.consumer_per_subscription,  # what OMB stores there
        }
    result |= {
        "publishRate": pub_rate.tolist(),
        "publishErrorRate": err_rate.tolist(),
        "consumeRate": cons_rate.tolist(),
        "backlog": [int(b) for b in backlog or ()],
    }
    families = (
        ("publishLatency", "publish_latency_ms", publish_latency_ms, period_publish_latency_ms),
        ("publishDelayLatency", "publish_delay_latency_us", publish_delay_latency_us, None),
        ("endToEndLatency", "end_to_end_latency_ms", end_to_end_latency_ms, period_end_to_end_latency_ms),
    )
    for prefix, arg, samples, periods in families:
        result |= _latency_fields(prefix, _samples(arg, samples), periods, f"period_{arg}")
    if path is not None:
        Path(path).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result
