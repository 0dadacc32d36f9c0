"""What Kafka's clients share: their links to the brokers and EndToEndLatency's one thread.

Clients speak Kafka's request protocol (:mod:`kdlab.kafka.protocol`) over *links*, one
per broker they talk to: TCP sockets for Apache Kafka (:class:`TcpLinks`), SEND/RECV
endpoints sharing one receive CQ for OSU's RDMA Kafka (:class:`kdlab.kafka.osu.VerbsLinks`).
A link set sends to one broker and receives from whichever answers first, waiting at
most a given time, so a producer can wait for an ack and a linger at once, and a
consumer for any of its outstanding fetches.

The producer is :mod:`kdlab.kafka.sender`, the consumer :mod:`kdlab.kafka.fetcher`.

With ``sequential_e2e`` a producer and a consumer on one host are EndToEndLatency's one
thread: the producer sends a batch, waits for its ack, then lets the consumer fetch
until that batch is handed up, and only then sends the next (:class:`EndToEnd`). The
consumer returns ``catchup_latency_ns``: from the ack on the application thread to the
batch handed up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.batches import BatchInfo
from kdlab.ops import Clock, Notify, TcpConnect, TcpRecv, TcpSend, WaitNotify


class TcpLinks:
    """Kafka's client sockets: one connection per broker (``services``: broker -> listener name)."""

    def __init__(self, services: dict[str, str]) -> None:
        self.services = services
        self.conns: dict[str, Any] = {}
        self._broker_of: dict[int, str] = {}

    def connect(self) -> Any:
        for broker, service in self.services.items():
            self.conns[broker] = conn = yield TcpConnect(service)
            self._broker_of[conn.conn_id] = broker

    def send(self, broker: str, message: Any, nbytes: int) -> Any:
        yield TcpSend(self.conns[broker], message, nbytes)

    def recv(self, timeout_ns: float | None = None) -> Any:
        """The next message from any broker -> ``(broker, message)``, or None after ``timeout_ns``."""
        got = yield TcpRecv(list(self.conns.values()), timeout_ns=timeout_ns)
        if got is None:
            return None
        conn, message = got
        return self._broker_of[conn.conn_id], message


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


def handed_up(e2e: EndToEnd, batch: int, catchup: list[float]) -> Any:
    """EndToEndLatency: ``batch`` is back from poll(); the catch-up ran from its ack to now."""
    now = yield Clock()
    catchup.append(now - e2e.acked[batch])
    yield from e2e.deliver(batch, now)


def delivery(info: BatchInfo, partition: int | None = None) -> tuple[int, ...]:
    """What a consumer records of a delivered batch: (producer id, base sequence, records, base offset,
    timestamp, CRC[, partition]), enough to check exactly-once, order, offsets and content afterwards."""
    out = (info.producer_id, info.base_sequence, info.records, info.base_offset, info.timestamp, info.crc)
    return out if partition is None else (*out, partition)
