"""Kafka's clients: a producer with batches in flight, and a fetching consumer.

They speak Kafka's request protocol over a *link*: TCP for Apache Kafka, two-sided
RDMA (SEND/RECV) for OSU's RDMA Kafka (:mod:`kdlab.kafka.osu`).

Both return what they measured: per-batch ack latencies, per-batch end-to-end
latencies, and what they delivered (producer id and base sequence of every batch),
so that the run can check that every record arrived exactly once and in order.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from kdlab.kafka.apache import FETCH_REQUEST_BYTES, PRODUCE_REQUEST_OVERHEAD, Fetch, Produce
from kdlab.kafka.batches import BatchFactory, BatchInfo, check_batch
from kdlab.kafka.params import KafkaParams
from kdlab.ops import Clock, Compute, Lookup, Publish, Sleep, TcpConnect, TcpRecv, TcpSend
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


def producer(p: KafkaParams, pid: int, partition: int, service: str, link: Any = None) -> Any:
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
        if p.linger_ms:
            yield Sleep(p.linger_ms * 1e6)
        t = yield Clock()
        yield Compute("copy", factory.size)  # records into the accumulator's batch
        yield Compute("crc32c", factory.size)  # the batch CRC
        data = factory.make(pid, seq * factory.records, int(t))
        yield from conn.send(Produce(partition, data, factory.records, p.acks), factory.size + PRODUCE_REQUEST_OVERHEAD)
        in_flight.append(t)
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
    now = yield Clock()
    acks_ns.append(now - in_flight.popleft())


def consumer(p: KafkaParams, cid: int, partition: int, service: str, expected_records: int, link: Any = None) -> Any:
    """Fetch from offset 0 until ``expected_records`` records were delivered."""
    conn = link or TcpLink(service)
    yield from conn.connect()
    yield from wait_for_producers(p, partition)
    t_first = yield Clock()
    offset, got = 0, 0
    delivered: list[tuple[int, int, int]] = []
    e2e_ns: list[float] = []
    fetch_ns: list[float] = []
    max_wait = p.fetch_max_wait_ms * 1e6
    while got < expected_records:
        t0 = yield Clock()
        yield from conn.send(Fetch(partition, offset, p.fetch_bytes, p.fetch_min_bytes, max_wait), FETCH_REQUEST_BYTES)
        reply = yield from conn.recv()
        now = yield Clock()
        fetch_ns.append(now - t0)
        for data in reply.batches:
            yield Compute("crc32c", len(data))  # the consumer checks every batch
            yield Compute("copy", len(data))  # and deserialises it for the application
            info = check_batch(data)
            if info is None:
                raise DatapathError("consumer received a partial batch")
            delivered.append(delivery(info))
            e2e_ns.append(now - info.timestamp)
            offset += info.records
            got += info.records
    t_last = yield Clock()
    return {"records": got, "delivered": delivered, "e2e_latency_ns": e2e_ns, "fetch_latency_ns": fetch_ns,
            "t_first_ns": t_first, "t_last_ns": t_last}  # fmt: skip


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
