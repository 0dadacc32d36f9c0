"""OMB's Kafka driver file (``driver-kafka/*.yaml``) mapped to :class:`KafkaParams` fields.

The file is OMB's ``DriverConfiguration`` plus the Kafka driver's ``Config``::

    name: Kafka
    driverClass: io.openmessaging.benchmark.driver.kafka.KafkaBenchmarkDriver
    replicationFactor: 3
    topicConfig: |
      min.insync.replicas=2
    commonConfig: |
      bootstrap.servers=localhost:9092
    producerConfig: |
      acks=all
      linger.ms=1
      batch.size=131072
    consumerConfig: |
      auto.offset.reset=earliest
      enable.auto.commit=false
      max.partition.fetch.bytes=10485760

The four configs are Java properties; as ``KafkaBenchmarkDriver.initialize`` does, the
producer's properties are ``commonConfig`` overlaid by ``producerConfig``, the consumer's
``commonConfig`` overlaid by ``consumerConfig``. Each property either sets a KafkaParams
field (:data:`PRODUCER`, :data:`CONSUMER`, :data:`TOPIC`), is accepted because it does not
change the datapath (:data:`IGNORED`, listed with its reason in the result), or is refused
with one line naming it and what is supported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kdlab.kafka.omb import OmbError, format_errors
from kdlab.spec import read_yaml

KAFKA_DRIVER_CLASS = "io.openmessaging.benchmark.driver.kafka.KafkaBenchmarkDriver"
JAVA_SHORT_MAX = 2**15 - 1
JAVA_INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Prop:
    """How a property sets a KafkaParams field: its parser and the values it allows."""

    field: str | None  # None: the value is only checked
    parse: Callable[[str], Any]  # raises ValueError or KeyError for a value outside ``allowed``
    allowed: str


def _int(name: str | None, lo: int, hi: int = JAVA_INT_MAX) -> Prop:
    def parse(text: str) -> int:
        if not lo <= (value := int(text)) <= hi:
            raise ValueError(text)
        return value

    return Prop(name, parse, f"an integer {lo} to {hi}")


_ACKS = {"all": -1, "-1": -1, "0": 0, "1": 1}
_BOOLS = {"true": True, "false": False}


def _none(text: str) -> None:
    if text.lower() != "none":
        raise ValueError(text)


PRODUCER = {
    "acks": Prop("acks", lambda t: _ACKS[t.lower()], "all, -1, 0 or 1"),
    "linger.ms": _int("linger_ms", 0),
    "batch.size": _int("batch_bytes", 1),
    "max.in.flight.requests.per.connection": _int("max_in_flight", 1),
    "buffer.memory": _int("buffer_memory", 1, 2**63 - 1),
    "max.request.size": _int("max_request_bytes", 1),
    "compression.type": Prop(None, _none, "none (kdlab models no compression)"),
}
"""Producer properties (ProducerConfig names) that set KafkaParams fields."""
CONSUMER = {
    "max.partition.fetch.bytes": _int("fetch_bytes", 0),
    "fetch.max.bytes": _int("fetch_max_bytes", 0),
    "fetch.min.bytes": _int("fetch_min_bytes", 0),
    "fetch.max.wait.ms": _int("fetch_max_wait_ms", 0),
    "check.crcs": Prop("check_crcs", lambda t: _BOOLS[t.lower()], "true or false"),
}
"""Consumer properties (ConsumerConfig names) that set KafkaParams fields."""
TOPIC = {"segment.bytes": _int("segment_bytes", 14), "flush.messages": _int("flush_messages", 1)}
"""Topic properties (TopicConfig names) that set KafkaParams fields."""
_OFF_PATH = "only matters when a request fails or times out; none does in the model"
IGNORED = {
    "bootstrap.servers": "where clients first connect; the model's brokers come from the cluster shape",
    "client.id": "a name in logs and quotas",
    "default.api.timeout.ms": _OFF_PATH,
    "request.timeout.ms": _OFF_PATH,
    "delivery.timeout.ms": _OFF_PATH,
    "retries": _OFF_PATH,
    "retry.backoff.ms": _OFF_PATH,
    "enable.idempotence": "sequence numbers only change what a retry does; no send is retried in the model",
    "key.serializer": "OMB sets it (StringSerializer)",
    "value.serializer": "OMB sets it (ByteArraySerializer)",
    "key.deserializer": "OMB sets it (StringDeserializer)",
    "value.deserializer": "OMB sets it (ByteArrayDeserializer)",
    "group.id": "OMB sets one per subscription (a consumer group each)",
    "auto.offset.reset": "OMB's topics are new and its consumers subscribe before the first send: both read from 0",
    "enable.auto.commit": "offset commits are not modelled (OMB commits asynchronously after each poll)",
    "auto.commit.interval.ms": "offset commits are not modelled",
    "min.insync.replicas": "acks=all waits for the whole in-sync set; no replica leaves it in the model",
    "flush.ms": "the time-based flush runs in the log flusher, every log.flush.scheduler.interval.ms (Long.MAX_VALUE "
    "by default: never); flush.messages is modelled",
}
"""Properties accepted without changing the model, with the reason given in the result."""
_SECTIONS = {"topicConfig": TOPIC, "commonConfig": PRODUCER | CONSUMER, "producerConfig": PRODUCER}
_SECTIONS |= {"consumerConfig": CONSUMER}


def parse_properties(text: str, where: str) -> dict[str, str]:
    """``java.util.Properties.load``: ``key=value``, ``key: value`` or ``key value`` lines;
    ``#``/``!`` comments; a trailing backslash continues a line; the last of a key wins."""
    props: dict[str, str] = {}
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.lstrip(" \t\f")
        if not line or line[0] in "#!":
            continue
        while re.search(r"(?<!\\)(\\\\)*\\$", line):  # an odd number of trailing backslashes
            line = line[:-1] + next(lines, "").lstrip(" \t\f")
        m = re.match(r"((?:\\.|[^=:\s\\])*)\s*[=:]?\s*(.*)$", line)
        assert m is not None  # the pattern matches any line
        key, value = (_unescape(g) for g in m.groups())
        if not key:
            raise OmbError(f"{where}: line {raw.strip()!r} has no property name (key=value)")
        props[key] = value
    return props


def _unescape(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        c = m.group(1)
        if c.startswith("u"):
            return chr(int(c[1:], 16))
        return {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(c, c)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", one, text)


class _DriverDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    driverClass: str
    replicationFactor: int = Field(ge=1, le=JAVA_SHORT_MAX)
    reset: bool = False
    topicConfig: str = ""
    commonConfig: str = ""
    producerConfig: str = ""
    consumerConfig: str = ""


@dataclass(frozen=True)
class OmbDriver:
    """A validated Kafka driver: its name, the KafkaParams it sets and the properties it ignores."""

    name: str
    params: dict[str, Any]
    ignored: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # KafkaParams field -> the property that set it


def load_omb_driver(source: str | Path | Mapping[str, Any]) -> OmbDriver:
    """Read an OMB Kafka driver file (or YAML text, or mapping) and map its properties."""
    doc, origin = read_yaml(source, "driver", OmbError)
    if not isinstance(doc, dict):
        raise OmbError(f"{origin}: an OMB driver is a mapping of fields such as name, driverClass, producerConfig")
    try:
        d = _DriverDoc.model_validate(doc)
    except ValidationError as err:
        raise OmbError(format_errors(err, origin, list(_DriverDoc.model_fields))) from None
    if d.driverClass != KAFKA_DRIVER_CLASS:
        raise OmbError(f"{origin}: driverClass: only OMB's Kafka driver is modelled ({KAFKA_DRIVER_CLASS})")
    params: dict[str, Any] = {"replication_factor": d.replicationFactor}
    sources = {"replication_factor": "replicationFactor"}
    ignored: dict[str, str] = {}
    errors: list[str] = []
    sections = {s: parse_properties(getattr(d, s), f"{origin}: {s}") for s in _SECTIONS}
    for section, props in sections.items():
        for key in props:
            if key in IGNORED:
                ignored[f"{section}.{key}"] = IGNORED[key]
            elif key not in _SECTIONS[section]:
                errors.append(
                    f"{origin}: {section}: {key}: not modelled (supported: {', '.join(_SECTIONS[section])}; "
                    f"accepted and ignored: {', '.join(IGNORED)})"
                )
    merged = {
        "topicConfig": sections["topicConfig"],
        "producerConfig": sections["commonConfig"] | sections["producerConfig"],
        "consumerConfig": sections["commonConfig"] | sections["consumerConfig"],
    }
    for section, table in (("topicConfig", TOPIC), ("producerConfig", PRODUCER), ("consumerConfig", CONSUMER)):
        for key, text in merged[section].items():
            if key not in table:
                continue
            prop = table[key]
            try:
                value = prop.parse(text.strip())
            except (ValueError, KeyError):
                errors.append(f"{origin}: {section}: {key}: {text!r} is not {prop.allowed}")
                continue
            if prop.field is not None:
                params[prop.field], sources[prop.field] = value, key
    _check_min_insync(sections["topicConfig"], d.replicationFactor, origin, errors)
    if errors:
        raise OmbError("\n".join(errors))
    return OmbDriver(d.name, params, ignored, sources)


def _check_min_insync(topic: dict[str, str], rf: int, origin: str, errors: list[str]) -> None:
    text = topic.get("min.insync.replicas")
    if text is None:
        return
    if not text.strip().isdigit() or not 1 <= int(text) <= rf:
        errors.append(
            f"{origin}: topicConfig: min.insync.replicas: {text!r} must be 1 to replicationFactor ({rf}); "
            "more would fail every acks=all send"
        )
