"""Parameters of a simulated Kafka cluster run, with Kafka's names and defaults.

One model for every system (``kafka``, ``osu``, ``kafkadirect``); a parameter that a
system does not use is ignored by it. Errors name the field and the allowed range.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdlab.kafka.records import batch_size_bytes

SYSTEMS = ("kafka", "osu", "kafkadirect")


class KafkaParams(BaseModel):
    """A Kafka workload: cluster shape, client settings and how long to run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: Literal["kafka", "osu", "kafkadirect"]
    variant: str = Field(default="", description="a label for this configuration in tables and figures")
    produce_mode: Literal["exclusive", "shared"] = Field(
        default="exclusive", description="KafkaDirect: one writer per segment, or FETCH_AND_ADD reservations"
    )
    record_bytes: int = Field(default=100, ge=1, le=16 * 1024 * 1024, description="value size of a record")
    batch_bytes: int = Field(default=16384, ge=1, description="producer batch.size")
    linger_ms: float = Field(
        default=0.0,
        ge=0,
        description="producer linger.ms (never delays a closed-loop producer: its batches fill at once)",
    )
    acks: Literal[0, 1, -1] = Field(default=1, description="0, 1, or -1 for 'all'")
    max_in_flight: int = Field(default=5, ge=1, le=100, description="max.in.flight.requests.per.connection")
    # --- cluster shape (kdlab.kafka.topology) ---
    brokers: int | None = Field(
        default=None, ge=1, le=1000, description="brokers in the cluster (default: the replication factor)"
    )
    racks: int = Field(default=0, ge=0, le=1000, description="0: no rack information; k: broker i is in rack i mod k")
    topics: int = Field(default=1, ge=1, le=50_000)
    partitions: int = Field(default=1, ge=1, le=100_000, description="partitions per topic")
    replication_factor: int = Field(default=1, ge=1, le=100)
    producers: int = Field(default=1, ge=1, le=50_000, description="producers per topic")
    consumers: int = Field(default=0, ge=0, le=50_000, description="consumers per group (per topic)")
    groups: int = Field(default=1, ge=0, le=1000, description="consumer groups (OMB subscriptions) per topic")
    assignor: Literal["range", "round-robin"] = Field(
        default="range", description="partition.assignment.strategy of the consumer groups"
    )
    partitioner: Literal["fixed", "round-robin", "sticky", "default"] = Field(
        default="fixed",
        description="fixed: producer i writes the partitions q = i mod producers (one writer each, as "
        "KafkaDirect's exclusive producers); round-robin: RoundRobinPartitioner; sticky: "
        "UniformStickyPartitioner; default: Kafka's DefaultPartitioner (murmur2 of the key, sticky without one)",
    )
    keys: Literal["none", "round-robin", "random"] = Field(
        default="none", description="record keys, as OMB's keyDistributor: NO_KEY, KEY_ROUND_ROBIN, RANDOM_NANO"
    )
    # --- offered load and run length ---
    rate_total: float = Field(default=0.0, ge=0, description="open loop: records/s over all producers (0: closed)")
    rate_per_producer: float = Field(default=0.0, ge=0, description="open loop: records/s per producer (0: closed)")
    duration_ms: float = Field(
        default=0.0, ge=0, le=3.6e6, description="simulated run length after warm-up (0: records_per_producer each)"
    )
    warmup_ms: float = Field(default=0.0, ge=0, le=3.6e6, description="warm-up that metrics leave out")
    buffer_memory: int = Field(default=32 * 1024 * 1024, ge=1024, description="producer buffer.memory")
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, description="producer max.request.size")
    backlog_bytes: int = Field(
        default=0, ge=0, description="consumers start once this many bytes are unread (OMB consumerBacklogSizeGB)"
    )
    records_per_producer: int = Field(default=20000, ge=1, le=10_000_000)
    bytes_per_producer: int | None = Field(
        default=None, ge=1, description="if set, records_per_producer = bytes_per_producer // record_bytes (>= 1 batch)"
    )
    consume_after_produce: bool = Field(
        default=False, description="consumers start once the producers finished (catch-up reads) instead of tailing"
    )
    sequential_e2e: bool = Field(
        default=False,
        description="EndToEndLatency: the producer sends a batch, waits for its ack, then the consumer (same host) "
        "fetches until it is back, then the next is sent; needs 1 producer, 1 consumer, 1 partition, acks 1 or all",
    )
    check_crcs: bool = Field(default=True, description="consumer check.crcs: CRC-32C of every fetched batch")
    fetch_bytes: int = Field(default=1024 * 1024, ge=64, description="max.partition.fetch.bytes / RDMA read size")
    fetch_max_bytes: int = Field(default=50 * 1024 * 1024, ge=64, description="consumer fetch.max.bytes")
    fetch_min_bytes: int = Field(default=1, ge=1)
    fetch_max_wait_ms: float = Field(default=500.0, ge=0)
    replica_fetchers: int = Field(default=1, ge=1, le=64, description="num.replica.fetchers")
    replica_fetch_max_bytes: int = Field(default=1024 * 1024, ge=64, description="replica.fetch.max.bytes")
    replica_fetch_wait_max_ms: float = Field(default=500.0, ge=0, description="replica.fetch.wait.max.ms")
    replica_fetch_min_bytes: int = Field(default=1, ge=1, description="replica.fetch.min.bytes")
    slots: bool = Field(default=True, description="KafkaDirect consumers poll metadata slots (else TCP)")
    slot_poll_us: float = Field(default=20.0, gt=0, description="KafkaDirect slotupdatetimeout")
    max_rdma_batch: int = Field(default=2000, ge=64, description="KafkaDirect push replication maxrdmabatch")
    segment_bytes: int = Field(default=1024 * 1024 * 1024, ge=4096, description="log.segment.bytes")
    retention_bytes: int | None = Field(
        default=None,
        ge=1,
        description="log.retention.bytes (topic retention.bytes) per partition replica: the "
        "oldest segments are deleted once the log is larger; None: keep everything (Kafka's default -1)",
    )
    flush_messages: int | None = Field(
        default=None,
        ge=1,
        description="log.flush.interval.messages (topic flush.messages): fsync the log in the "
        "append once this many records are unflushed; None: never (Kafka's default, the OS writes back)",
    )
    network_threads: int = Field(default=3, ge=1, le=64)
    io_threads: int = Field(default=8, ge=1, le=256)
    rdma_threads: int = Field(default=1, ge=1, le=64, description="KafkaDirect RDMA network threads")
    handler_threads: int = Field(default=8, ge=1, le=256, description="KafkaDirect commit handler threads")
    # --- KafkaDirect artifact knobs ---
    # Each names the artifact's (spcl/kafkadirect) config and its default. Where this model's default differs, it
    # keeps earlier results unchanged; the artifact-* experiments may set the artifact's value.
    segment_request_ms: float = Field(
        default=0.0,
        ge=0,
        description="producer num.rdmaproduce.tcptimeout: at most one new-segment request per partition per this many "
        "ms, counted from its first address request (artifact: 5000; 0 here: no throttle)",
    )
    rdma_request_quota: int = Field(
        default=50, ge=1, description="client num.rdmanetwork.maxrequestquota (50): requests outstanding per RDMA "
        "connection; a producer's further writes wait in its client until an ack returns one"
    )  # fmt: skip
    rdma_contention: int = Field(
        default=100, ge=0, description="producer num.rdmanetwork.contention (100): a broker whose connection holds "
        "more waiting writes is not drained"
    )  # fmt: skip
    replication_threads: int = Field(
        default=4, ge=1, le=64, description="broker num.replication.threads (4): push threads; follower broker id "
        "mod threads picks a follower's"
    )  # fmt: skip
    replication_batch: int = Field(
        default=30, ge=1, description="broker num.replication.replicationbatch (30): queued appends a push thread "
        "takes per loop"
    )  # fmt: skip
    replication_request_quota: int = Field(
        default=100, ge=1, description="broker num.replication.maxrequestquota (100): pushes outstanding per follower"
    )
    slot_consumers: int = Field(
        default=50, ge=1, description="broker num.rdmaslots.maxconsumers (50): consumer rows of the slot region"
    )
    slots_per_consumer: int = Field(
        default=50, ge=1, description="broker num.rdmaslots.maxslots (50): slots in a consumer's row"
    )
    queued_max_requests: int = Field(default=500, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaParams:
        if self.batch_size < 1:
            raise ValueError("batch_bytes: too small for one record")
        if self.batch_size > self.segment_bytes:
            raise ValueError(
                f"record_bytes/batch_bytes: a batch of {self.batch_size} B does not fit a segment of "
                f"{self.segment_bytes} B (segment_bytes must be >= the batch size)"
            )
        if self.brokers is not None and self.replication_factor > self.brokers:
            raise ValueError(
                f"replication_factor: {self.replication_factor} replicas cannot be placed on {self.brokers} brokers "
                f"(allowed: 1 to brokers)"
            )
        if self.racks > self.broker_count:
            raise ValueError(f"racks: {self.racks} racks for {self.broker_count} brokers (allowed: 0 to brokers)")
        need = max(self.batch_bytes, batch_size_bytes(1, None, self.record_bytes))
        if self.buffer_memory < need:
            raise ValueError(
                f"buffer_memory: {self.buffer_memory} B cannot hold one batch of {need} B (Kafka's BufferPool refuses "
                f"an allocation above buffer.memory); allowed: >= {need}"
            )
        # what one machine of 24 GB holds: a client's model takes ~0.1 MB before it runs (benchmarks/scale.py: 1.5 GB
        # for 100 brokers and 10,000 clients), and a long run adds its per-batch rows and live log data
        totals = {"partitions": (self.topics * self.partitions, 100_000),
                  "producers": (self.topics * self.producers, 50_000),
                  "consumers": (self.topics * self.groups * self.consumers, 50_000)}  # fmt: skip
        for field, (total, most) in totals.items():
            if total > most:
                raise ValueError(f"{field}: {total} in the cluster (all topics and groups); allowed: at most {most}")
        if self.rate_total and self.rate_per_producer:
            raise ValueError("rate_total/rate_per_producer: set at most one (records/s in total or per producer)")
        if self.warmup_ms and not self.duration_ms:
            raise ValueError("warmup_ms: a warm-up needs a run length (duration_ms > 0)")
        if self.system == "kafkadirect" and self.produce_mode == "exclusive":
            if self.partitioner != "fixed":
                raise ValueError(
                    f"partitioner: exclusive KafkaDirect producers each own their partitions (allowed: fixed); "
                    f"got {self.partitioner!r} (use produce_mode shared for shared partitions)"
                )
            if self.partitions < self.producers:
                raise ValueError(
                    f"partitions ({self.partitions}) must be >= producers ({self.producers}) for exclusive "
                    "KafkaDirect producers (one writer per partition)"
                )
        kd_retention = self.system == "kafkadirect" and self.retention_bytes is not None
        if kd_retention and self.retention_bytes < 2 * self.segment_bytes:  # type: ignore[operator]
            raise ValueError(
                f"retention_bytes: {self.retention_bytes} B for KafkaDirect must be at least two segments "
                f"({2 * self.segment_bytes} B)"
            )
        if self.flush_messages is not None and self.system == "kafkadirect":
            raise ValueError(
                "flush_messages: not modelled for kafkadirect (its producers write the log by RDMA into a mapped "
                "file, whose write-back kdlab does not model); allowed: kafka, osu"
            )
        if self.keys != "none" and self.partitioner != "default":
            raise ValueError(f"keys: keyed records need partitioner default (key hash); got {self.partitioner!r}")
        if self.sequential_e2e:
            shape = ("producers", "consumers", "partitions", "topics", "groups")
            wrong = [f"{k} = {getattr(self, k)}" for k in shape if getattr(self, k) != 1]
            wrong += ["acks = 0"] * (self.acks == 0) + ["consume_after_produce = true"] * self.consume_after_produce
            if wrong:
                raise ValueError(
                    f"sequential_e2e: EndToEndLatency is one producer and one consumer of one partition, each send "
                    f"waiting for its ack (producers, consumers, partitions 1; acks 1 or -1; consume_after_produce "
                    f"false); got {', '.join(wrong)}"
                )
        return self

    @property
    def broker_count(self) -> int:
        """Brokers in the cluster: ``brokers``, or as many as the replication factor needs."""
        return self.brokers if self.brokers is not None else self.replication_factor

    @property
    def open_loop(self) -> bool:
        """Whether producers offer a fixed rate (else they send as fast as acks allow)."""
        return bool(self.rate_total or self.rate_per_producer)

    @property
    def producer_rate(self) -> float:
        """Records/s each producer offers (0: closed loop)."""
        return self.rate_per_producer or self.rate_total / (self.producers * self.topics)

    @property
    def records_total(self) -> int:
        """Records each producer sends."""
        if self.bytes_per_producer is None:
            return self.records_per_producer
        return max(self.records_per_batch, self.bytes_per_producer // self.record_bytes)

    @property
    def records_per_batch(self) -> int:
        """Records a full batch holds (at least one, as Kafka sends an oversized record alone)."""
        per = batch_size_bytes(1, None, self.record_bytes) - 61
        return max(1, (self.batch_bytes - 61) // per)

    @property
    def batch_size(self) -> int:
        """Bytes of one full batch on the wire and in the log."""
        return batch_size_bytes(self.records_per_batch, None, self.record_bytes)
