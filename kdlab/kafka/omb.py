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

A result is the JSON of OMB's ``TestResult``: per-period (10 s in OMB) rate, backlog and
latency lists, and aggregated latency percentiles over the test phase, in ms (publish
delay in us), measured as OMB does (:mod:`kdlab.kafka.omb_metrics`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdlab.spec import read_yaml

KEY_DISTRIBUTORS = ("NO_KEY", "KEY_ROUND_ROBIN", "RANDOM_NANO")
"""``io.openmessaging.benchmark.utils.distributor.KeyDistributorType``."""
JAVA_INT_MAX = 2**31 - 1


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


def format_errors(err: ValidationError, origin: str, allowed: Sequence[str]) -> str:
    """One line per pydantic error: where, the field, what it allows (and what it got)."""
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<workload>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown field; allowed: {', '.join(allowed)}"
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
            raise OmbError(format_errors(err, "<workload>", list(_SNAKE))) from None

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
        raise OmbError(format_errors(err, origin, list(_SNAKE))) from None
    return OmbWorkload(**{_SNAKE[k]: v for k, v in checked.model_dump().items()})


# --- results -------------------------------------------------------------------------------


def omb_result_json(
    workload: OmbWorkload | str,
    driver: str,
    metrics: Mapping[str, Any],
    *,
    path: str | Path | None = None,
    notes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An OMB ``TestResult`` as a dict with OMB's field names; written as JSON to ``path`` if given.

    ``metrics`` are TestResult's rate, backlog and latency fields
    (:func:`kdlab.kafka.omb_metrics.omb_metrics`); ``notes`` (how the run was mapped and
    what it left out) go under ``kdlab``, a key OMB's readers do not look at.
    """
    result: dict[str, Any] = {"workload": workload if isinstance(workload, str) else workload.name, "driver": driver}
    if isinstance(workload, OmbWorkload):
        result |= {
            "messageSize": workload.message_size,
            "topics": workload.topics,
            "partitions": workload.partitions_per_topic,
            "producersPerTopic": workload.producers_per_topic,
            "consumersPerTopic": workload.consumer_per_subscription,  # what OMB stores there
        }
    result |= dict(metrics)
    if notes:
        result["kdlab"] = dict(notes)
    if path is not None:
        Path(path).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    return result
