"""Kafka's clients: a producer with batches in flight, and a fetching consumer.

They speak Kafka's request protocol over a *link*: TCP for Apache Kafka, two-sided
RDMA (SEND/RECV) for OSU's RDMA Kafka (:mod:`kdlab.kafka.osu`).

Both return what they measured: per-batch ack latencies, per-batch end-to-end
latencies, and what they delivered (producer id and base sequence of every batch),
so that the run can check that every record arrived exactly once and in order.

The producer is Kafka's two threads in one role: the application thread appends a
record and wakes the Sender (``sender.wakeup()``, a selector wake-up) when the Sender
has nothing in flight, the Sender sends; when the application waits for its last
outstanding send (``send().get()``, as ProducerLatency and EndToEndLatency do), the
Sender's completion wakes it through the future's latch. Both are
``Compute("handoff")`` waits, so ``ack_latency_ns`` is ProducerLatency's interval:
from before ``send()`` to ``get()`` returning on the application thread.

The consumer times every fetch request as the artifact's instrumented Fetcher does,
from before the request is built to the response handled, in
``fetch_data_latency_ns`` if it carried a batch and ``fetch_empty_latency_ns`` if not.

With ``sequential_e2e`` a producer and a consumer on one host are EndToEndLatency's one
thread: the producer sends a batch, waits for its ack, then lets the consumer fetch
until that batch is handed up, and only then sends the next (:class:`EndToEnd`). The
consumer returns ``catchup_latency_ns``: from the ack on the application thread to the
batch handed up.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.apache import FETCH_REQUEST_BYTES, PRODUCE_REQUEST_OVERHEAD, Fetch, Produce
from kdlab.kafka.batches import BatchFactory, BatchInfo, check_batch
from kdlab.kafka.params import KafkaParams
from kdlab.ops import Clock, Compute, Lookup, Notify, Publish, TcpConnect, TcpRecv, TcpSend, WaitNotify
from kdlab.program import DatapathError


class TcpLink:
    """Kafka's client socket."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.conn: Any = None

    def connect(self) -> Any:
        self.conn = yield TcpConnect(self.service)

    def send(self, message: Any, nbytes: int) -> Any:
        yield TcpSend(self.conn, message, nbytes)

    def recv(self) -> Any:
        _, message = yield TcpRecv(self.conn)
        return message


@dataclass(eq=False)
class EndToEnd:
    """EndToEndLatency's one thread, as a producer and a consumer role of one host.

    The producer publishes each batch's ack time (on its application thread) and waits
    until the consumer has handed that batch up; the consumer waits for the ack before it
    fetches. They meet through notifications that cost no wake-up where the modelled
    system is one thread (``host.notify_ns``).
    """

    key: str
    acked: dict[int, float] = field(default_factory=dict)  # batch -> time its ack reached the application
    delivered: dict[int, float] = field(default_factory=dict)  # batch -> time the consumer handed it up

    def ack(self, batch: int, t: float) -> Any:
        self.acked[batch] = t
        yield Notify(f"{self.key}.acked")

    def wait_ack(self, batch: int) -> Any:
        """The ack time of ``batch``, once the producer has it."""
        while batch not in self.acked:
            yield WaitNotify(f"{self.key}.acked")
        return self.acked[batch]

    def deliver(self, batch: int, t: float) -> Any:
        self.delivered[batch] = t
        yield Notify(f"{self.key}.delivered")

    def wait_delivered(self, batch: int) -> Any:
        while batch not in self.delivered:
            yield WaitNotify(f"{self.key}.delivered")


def producer(
    p: KafkaParams, pid: int, partition: int, service: str, link: Any = None, e2e: EndToEnd | None = None
) -> Any:
    """Send ``records_per_producer`` records in full batches, ``max_in_flight`` at a time."""
    conn = link or TcpLink(service)
    yield from conn.connect()
    factory = BatchFactory(p.records_per_batch, p.record_bytes)
    n_batches = -(-p.records_total // factory.records)
    in_flight: deque[float] = deque()
    acks_ns: list[float] = []
    t_first = yield Clock()
    for seq in range(n_batches):
        while len(in_flight) >= p.max_in_flight and p.acks != 0:
            yield from _await_ack(conn, in_flight, acks_ns)
        if e2e is not None and seq:
            yield from e2e.wait_delivered(seq - 1)  # EndToEndLatency: the next send after poll() returned
        # linger.ms never delays this producer: Kafka sends a batch when it is full or its linger expires, and a
        # closed-loop producer fills each batch at once (the last is flushed by close(), which does not linger).
        t = yield Clock()  # ProducerLatency's begin: before send()
        yield Compute("copy", factory.size)  # records into the accumulator's batch (application thread)
        if not in_flight:
            yield Compute("handoff")  # sender.wakeup(): the Sender sleeps in epoll_wait with nothing in flight
        yield Compute("crc32c", factory.size)  # the batch CRC, when the Sender closes the batch
        data = factory.make(pid, seq * factory.records, int(t))
        yield from conn.send(Produce(partition, data, factory.records, p.acks), factory.size + PRODUCE_REQUEST_OVERHEAD)
        in_flight.append(t)
        if e2e is not None:
            yield from _await_ack(conn, in_flight, acks_ns)  # send().get()
            yield from e2e.ack(seq, t + acks_ns[-1])
    while in_flight and p.acks != 0:
        yield from _await_ack(conn, in_flight, acks_ns)
    t_last = yield Clock()
    yield Publish(f"produced{pid}", True)
    return {"records": n_batches * factory.records, "bytes": n_batches * factory.size, "t_first_ns": t_first,
            "t_last_ns": t_last, "ack_latency_ns": acks_ns}  # fmt: skip


def _await_ack(conn: Any, in_flight: deque[float], acks_ns: list[float]) -> Any:
    ack = yield from conn.recv()
    if ack.error:
        raise DatapathError(f"produce failed: {ack.error}")
    if len(in_flight) == 1:
        yield Compute("handoff")  # the application waits for its last send: the future's latch wakes it
    now = yield Clock()  # get() returns
    acks_ns.append(now - in_flight.popleft())


def consumer(
    p: KafkaParams,
    cid: int,
    partition: int,
    service: str,
    expected_records: int,
    link: Any = None,
    e2e: EndToEnd | None = None,
) -> Any:
    """Fetch from offset 0 until ``expected_records`` records were delivered."""
    conn = link or TcpLink(service)
    yield from conn.connect()
    yield from wait_for_producers(p, partition)
    t_first = yield Clock()
    offset, got = 0, 0
    delivered: list[tuple[int, int, int]] = []
    e2e_ns: list[float] = []
    fetch_ns: list[float] = []
    with_data: list[float] = []
    empty: list[float] = []
    catchup: list[float] = []
    max_wait = p.fetch_max_wait_ms * 1e6
    while got < expected_records:
        if e2e is not None:
            yield from e2e.wait_ack(len(delivered))  # EndToEndLatency polls only once get() returned
        t0 = yield Clock()  # Fetcher.sendFetches(): before the request is built
        yield from conn.send(Fetch(partition, offset, p.fetch_bytes, p.fetch_min_bytes, max_wait), FETCH_REQUEST_BYTES)
        reply = yield from conn.recv()
        now = yield Clock()  # the response handled (records are parsed later, in fetchedRecords)
        fetch_ns.append(now - t0)
        (with_data if reply.batches else empty).append(now - t0)
        for data in reply.batches:
            if p.check_crcs:
                yield Compute("crc32c", len(data))  # check.crcs: the consumer checks every batch
            yield Compute("copy", len(data))  # and deserialises it for the application
            info = check_batch(data)
            if info is None:
                raise DatapathError("consumer received a partial batch")
            delivered.append(delivery(info))
            e2e_ns.append(now - info.timestamp)
            offset += info.records
            got += info.records
            if e2e is not None:
                yield from handed_up(e2e, len(delivered) - 1, catchup)
    t_last = yield Clock()
    return {"records": got, "delivered": delivered, "e2e_latency_ns": e2e_ns, "fetch_latency_ns": fetch_ns,
            "fetch_data_latency_ns": with_data, "fetch_empty_latency_ns": empty, "catchup_latency_ns": catchup,
            "t_first_ns": t_first, "t_last_ns": t_last}  # fmt: skip


def handed_up(e2e: EndToEnd, batch: int, catchup: list[float]) -> Any:
    """EndToEndLatency: ``batch`` is back from poll(); the catch-up ran from its ack to now."""
    now = yield Clock()
    catchup.append(now - e2e.acked[batch])
    yield from e2e.deliver(batch, now)


def delivery(info: BatchInfo) -> tuple[int, int, int, int, int, int]:
    """What a consumer records of a delivered batch: (producer id, base sequence, records, base offset,
    timestamp, CRC), enough to check exactly-once, order, offsets and content afterwards."""
    return (info.producer_id, info.base_sequence, info.records, info.base_offset, info.timestamp, info.crc)


def wait_for_producers(p: KafkaParams, partition: int) -> Any:
    """With ``consume_after_produce``, wait until every producer of the partition is done."""
    if p.consume_after_produce:
        for i in range(p.producers):
            if i % p.partitions == partition:
                yield Lookup(f"produced{i}")
