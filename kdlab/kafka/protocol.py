"""Kafka's request protocol as the model speaks it: produce and fetch, several partitions each.

Kafka 2.x: a ProduceRequest carries, for one broker, one record batch per partition it
leads (``RecordAccumulator.drain``) and is answered with one result per partition; a
FetchRequest asks one broker for every partition the fetcher reads there, each with its
own byte limit (``max.partition.fetch.bytes`` / ``replica.fetch.max.bytes``) under a
limit for the whole response (``fetch.max.bytes`` / ``replica.fetch.response.max.bytes``).

The per-partition parts keep the single-partition messages' names and fields
(:class:`Produce`, :class:`ProduceAck`, :class:`Fetch`, :class:`FetchReply`); a broker
takes a bare :class:`Produce` or :class:`Fetch` as a one-partition request
(:func:`as_request`). Wire sizes are the headers' (the record bytes are added by the
sender); every message here is registered with :mod:`kdlab.codec` for OSU's buffers and
kdreal's sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Wire bytes of request and response headers (Kafka 2.x, one topic and partition:
#: request header ~ 40 B + client id + topic name; response ~ 58 B + topic name).
PRODUCE_REQUEST_OVERHEAD = 68
PRODUCE_RESPONSE_BYTES = 68
FETCH_REQUEST_BYTES = 80
FETCH_RESPONSE_OVERHEAD = 90
#: Each further partition: produce (partition, records length), its result (partition, error,
#: base offset, log append time, log start offset), a fetch entry (partition, fetch offset,
#: log start offset, max bytes) and a fetch result (partition, error, high watermark, last
#: stable offset, log start offset, aborted transactions, records length).
PRODUCE_PARTITION_BYTES = 8
PRODUCE_PARTITION_RESPONSE_BYTES = 30
FETCH_PARTITION_BYTES = 24
FETCH_PARTITION_RESPONSE_BYTES = 38
#: replica.fetch.response.max.bytes (Kafka's default, 10 MiB).
REPLICA_FETCH_RESPONSE_MAX_BYTES = 10 * 1024 * 1024


@dataclass
class Produce:
    """One partition's record batch (alone: a one-partition request with ``acks``)."""

    partition: int
    data: bytes
    records: int
    acks: int = 1


@dataclass
class ProduceAck:
    """One partition's result: the batch's base offset, or an error."""

    partition: int
    base_offset: int
    error: str | None = None


@dataclass
class ProduceRequest:
    """Batches for several partitions led by one broker; answered once each is appended (acks=all: replicated)."""

    acks: int
    batches: list[Produce]

    @property
    def nbytes(self) -> int:
        extra = PRODUCE_PARTITION_BYTES * (len(self.batches) - 1)
        return PRODUCE_REQUEST_OVERHEAD + extra + sum(len(b.data) for b in self.batches)


@dataclass
class ProduceResponse:
    acks: list[ProduceAck]

    @property
    def nbytes(self) -> int:
        return PRODUCE_RESPONSE_BYTES + PRODUCE_PARTITION_RESPONSE_BYTES * (len(self.acks) - 1)


@dataclass
class Fetch:
    """One partition's fetch position and byte limit (alone: a one-partition request)."""

    partition: int
    offset: int
    max_bytes: int
    min_bytes: int = 1
    max_wait_ns: float = 0.0
    replica: str | None = None  # a follower's broker name; None for consumers


@dataclass
class FetchReply:
    """One partition's answer: whole batches from the asked offset, and the leader's offsets."""

    partition: int
    batches: list[bytes]
    hw: int
    log_end: int


@dataclass
class FetchRequest:
    """Every partition a fetcher reads from one broker, in its order; answered when ``min_bytes`` are there."""

    partitions: list[Fetch]
    max_bytes: int
    min_bytes: int
    max_wait_ns: float
    replica: str | None = None

    @property
    def nbytes(self) -> int:
        return FETCH_REQUEST_BYTES + FETCH_PARTITION_BYTES * (len(self.partitions) - 1)


@dataclass
class FetchResponse:
    partitions: list[FetchReply]

    @property
    def data_bytes(self) -> int:
        return sum(len(b) for r in self.partitions for b in r.batches)

    @property
    def nbytes(self) -> int:
        extra = FETCH_PARTITION_RESPONSE_BYTES * (len(self.partitions) - 1)
        return FETCH_RESPONSE_OVERHEAD + extra + self.data_bytes


def as_request(message: Produce | Fetch | ProduceRequest | FetchRequest) -> ProduceRequest | FetchRequest:
    """A bare one-partition :class:`Produce` or :class:`Fetch` as the request it stands for."""
    if isinstance(message, Produce):
        return ProduceRequest(message.acks, [message])
    if isinstance(message, Fetch):
        return FetchRequest([message], message.max_bytes, message.min_bytes, message.max_wait_ns, message.replica)
    return message


MESSAGES = (Produce, ProduceAck, ProduceRequest, ProduceResponse, Fetch, FetchReply, FetchRequest, FetchResponse)
"""Every message type of the protocol (registered with :mod:`kdlab.codec`)."""
