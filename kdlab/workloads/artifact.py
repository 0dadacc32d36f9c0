"""The ``artifact`` workload: one of KafkaDirect's artifact tools, run as the tool runs, measured as it measures.

``params: {tool: producer-latency, system: kafkadirect, record_bytes: 64}`` sets up the
Kafka run the tool would (one record per request and one outstanding for ProducerLatency,
a pre-filled topic and one-batch fetches for ConsumerLatency, ...) and reports the tool's
statistics (:mod:`kdlab.kafka.artifact_tools`). Every row names its tool, the artifact file
it mirrors and the definition, so a number is never read as another tool's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdlab.engines import point_engine
from kdlab.kafka.artifact_tools import (
    CONSUMER_LATENCY_HEADER,
    END_TO_END_HEADER,
    MB,
    TOOLS,
    WARMUP,
    latency_stats,
)
from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.spec import ExperimentSpec, Point, validate_points
from kdlab.workloads.kafka import delivery_ok

ToolName = Literal["producer-latency", "consumer-latency", "end-to-end-latency", "producer-performance",
                   "consumer-performance"]  # fmt: skip


class ArtifactParams(BaseModel):
    """A tool's command line, with the artifact's names where it has them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tool: ToolName
    system: Literal["kafka", "osu", "kafkadirect"]
    variant: str = Field(default="", description="a label for this configuration in tables and figures")
    produce_mode: Literal["exclusive", "shared"] = Field(default="exclusive", description="withrdma / withrdmashared")
    slots: bool = Field(default=True, description="ConsumerLatency withrdmaslots (KafkaDirect)")
    slot_poll_us: float = Field(default=20.0, gt=0, description="num.rdmafetch.slotupdatetimeout, µs")
    record_bytes: int = Field(default=100, ge=1, le=16 * 1024 * 1024, description="message_size_bytes / --record-size")
    acks: Literal[1, -1] = Field(default=1, description="producer_acks: 1 or -1 (all)")
    replication_factor: int = Field(default=1, ge=1, le=8)
    samples: int = Field(default=2000, ge=1, le=1_000_000,
                         description="timed samples after the warm-up; --num-records / --messages")  # fmt: skip
    total_bytes: int | None = Field(default=None, ge=1,
                                    description="performance tools: records = total_bytes // record_bytes")  # fmt: skip
    batch_bytes: int = Field(default=16384, ge=1, description="batch.size (performance tools)")
    max_in_flight: int = Field(default=5, ge=1, le=100, description="max.in.flight.requests.per.connection")
    fetch_bytes: int = Field(default=1024 * 1024, ge=64, description="ConsumerPerformance --fetch-size")
    fetch_time_ms: float = Field(default=100.0, ge=0, description="ConsumerPerformance --fetchtime")
    segment_bytes: int = Field(default=16 * 1024 * 1024, ge=4096, description="log.segment.bytes")

    @model_validator(mode="after")
    def _runs(self) -> ArtifactParams:
        try:
            kafka_params(self)  # the Kafka run it sets up must be valid; its error names the field
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "params"
            raise ValueError(f"the Kafka run {self.tool} sets up: {where}: {first['msg']}") from None
        return self


def kafka_params(a: ArtifactParams) -> KafkaParams:
    """The Kafka run a tool sets up."""
    base: dict[str, Any] = {
        "system": a.system, "variant": a.variant, "produce_mode": a.produce_mode, "record_bytes": a.record_bytes,
        "acks": a.acks, "replication_factor": a.replication_factor, "segment_bytes": a.segment_bytes,
        "slots": a.slots, "slot_poll_us": a.slot_poll_us, "linger_ms": 0.0, "producers": 1, "partitions": 1,
    }  # fmt: skip
    one_record = {"batch_bytes": 1, "max_in_flight": 1, "records_per_producer": WARMUP + a.samples}
    if a.tool == "producer-latency":
        return KafkaParams(**base, **one_record, consumers=0)
    if a.tool == "consumer-latency":  # the topic is filled first (by ProducerLatency), then read from earliest
        return KafkaParams(**base, **{**one_record, "max_in_flight": 5}, consumers=1, consume_after_produce=True,
                           fetch_bytes=a.record_bytes + CONSUMER_LATENCY_HEADER, fetch_max_wait_ms=0.0)  # fmt: skip
    if a.tool == "end-to-end-latency":
        return KafkaParams(**base, **one_record, consumers=1, sequential_e2e=True,
                           fetch_bytes=a.record_bytes + END_TO_END_HEADER, fetch_max_wait_ms=0.0)  # fmt: skip
    performance = {"batch_bytes": a.batch_bytes, "max_in_flight": a.max_in_flight, "records_per_producer": a.samples,
                   "bytes_per_producer": a.total_bytes}  # fmt: skip
    if a.tool == "producer-performance":
        return KafkaParams(**base, **performance, consumers=0)
    return KafkaParams(**base, **performance, consumers=1, consume_after_produce=True, fetch_bytes=a.fetch_bytes,
                       fetch_max_wait_ms=a.fetch_time_ms, check_crcs=False)  # fmt: skip


def tool_metrics(a: ArtifactParams, results: dict[str, Any]) -> dict[str, Any]:
    """The statistics the tool prints, from what the roles measured."""
    producer = results["producer0"]
    consumer = results.get("consumer0")
    if a.tool == "producer-latency":
        return latency_stats("latency", producer["ack_latency_ns"])
    if a.tool == "consumer-latency":
        assert consumer is not None
        data = latency_stats("data_latency", consumer["fetch_data_latency_ns"], mean=False,
                             printed_only_above_warmup=True)  # fmt: skip
        empty = latency_stats("empty_latency", consumer["fetch_empty_latency_ns"], mean=False,
                              printed_only_above_warmup=True)  # fmt: skip
        return {**data, **empty}
    if a.tool == "end-to-end-latency":
        assert consumer is not None
        acks, catchup = producer["ack_latency_ns"], consumer["catchup_latency_ns"]
        if len(acks) != len(catchup):
            raise ValueError(f"end-to-end-latency: {len(acks)} acks but {len(catchup)} catch-ups")
        return latency_stats("latency", [x + y for x, y in zip(acks, catchup, strict=True)])
    side = producer if a.tool == "producer-performance" else consumer
    assert side is not None
    seconds = (side["t_last_ns"] - side["t_first_ns"]) * 1e-9
    return {"records_per_s": side["records"] / seconds, "mb_per_s": side["records"] * a.record_bytes / MB / seconds,
            "elapsed_s": seconds}  # fmt: skip


class ArtifactWorkload:
    name = "artifact"

    def validate_spec(self, spec: ExperimentSpec, origin: str) -> None:
        validate_points(spec, origin, ArtifactParams, "artifact")

    def run_point(self, point: Point) -> list[dict[str, Any]]:
        a = ArtifactParams.model_validate(point.params_dict)
        kp = kafka_params(a)
        engine = point_engine(point)
        results = engine.run(build(kp, point.seed))
        tool = TOOLS[a.tool]
        row: dict[str, Any] = {**a.model_dump(), "artifact_file": tool.artifact, "definition": tool.definition}
        row.update(tool_metrics(a, results))
        row["delivery_ok"] = delivery_ok(results, kp)
        return [row]
