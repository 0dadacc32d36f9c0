"""OSU's RDMA Kafka: two-sided RDMA (SEND/RECV) under Kafka's unchanged request path.

Inferred from OSU's descriptions (kafkadirect.md): the client-broker socket is
replaced by an RC QP; a request is serialised into a registered send buffer and
SENT; the broker's RDMA network thread copies it out of its receive buffer into the
heap and queues it for Kafka's I/O threads, which handle it exactly as in Apache
Kafka (:mod:`kdlab.kafka.apache`); the response is SENT back the same way. The clients
are Kafka's (:mod:`kdlab.kafka.sender`, :mod:`kdlab.kafka.fetcher`) over
:class:`VerbsLinks`: a channel per broker, all receiving on one CQ, so a producer waits
for an ack from any broker (or a linger, ``WaitCq(timeout_ns=...)``) and a consumer for
any of its outstanding fetches. Copies and the JVM request path stay; only the kernel
TCP stack leaves. Replication between brokers stays on TCP. The RDMA network thread
and the clients busy-poll their CQs (also inferred), so neither a request's arrival
nor a response's hand-back wakes a thread; a request still wakes a parked I/O thread
through the request queue. Messages are serialised with :mod:`kdlab.codec` (typed,
never pickled), so a receive buffer can hold only data, never code to run.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kdlab.codec import CodecError, decode, encode
from kdlab.kafka import apache
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.protocol import as_request
from kdlab.ops import (
    Compute,
    ConnectQp,
    CreateCq,
    CreateQp,
    Lookup,
    PostRecv,
    Publish,
    QueuePut,
    ReadMem,
    RegMr,
    WaitCq,
    WriteMem,
)
from kdlab.program import DatapathError
from kdlab.sendq import SendQueue
from kdlab.verbs import Opcode, QpCap, RecvWR, SendWR

DEPTH = 16  # receive buffers posted per peer
SLOT_MARGIN = 4096  # headers and the codec's framing around a message's record bytes


def slot_bytes(p: KafkaParams, produce_partitions: int = 0, fetch_partitions: int = 0) -> int:
    """A channel's buffer: the largest message it carries, plus headers and the codec's framing.

    A producer's channel carries produce requests: up to one batch per partition the broker
    leads for it, at most ``max.request.size`` (at least one batch). A consumer's carries fetch
    responses: up to ``max.partition.fetch.bytes`` per partition, at most ``fetch.max.bytes``,
    the first batch even if larger.
    """
    produce = max(p.batch_size, min(p.max_request_bytes, produce_partitions * p.batch_size))
    fetch = min(p.fetch_max_bytes, fetch_partitions * p.fetch_bytes) + p.batch_size * (fetch_partitions > 1)
    largest = max(produce if produce_partitions else 0, max(fetch, p.batch_size) if fetch_partitions else 0)
    return largest + SLOT_MARGIN + 64 * max(produce_partitions - 1, fetch_partitions - 1, 0)


@dataclass
class Endpoint:
    """One side of a SEND/RECV channel: QP, CQs, a ring of send slots and receive slots."""

    qp: Any
    sq: SendQueue
    recv_cq: Any
    send_mr: Any
    recv_mr: Any
    slot: int
    next_send: int = 0

    def post_send(self, message: Any) -> Any:
        blob = encode(message)
        if len(blob) > self.slot:
            raise DatapathError(f"a {len(blob)} B message exceeds the {self.slot} B receive buffer")
        off = (self.next_send % DEPTH) * self.slot
        self.next_send += 1
        yield WriteMem(self.send_mr, off, blob)  # Kafka's serialisation into the registered buffer
        yield from self.sq.post(SendWR(0, Opcode.SEND, [self.send_mr.sge(off, len(blob))]))

    def take(self, wc: Any) -> Any:
        """Copy a received message out of its buffer (into the heap) and re-post the buffer."""
        off = wc.wr_id * self.slot
        blob = yield ReadMem(self.recv_mr, off, wc.byte_len)
        yield PostRecv(self.qp, RecvWR(wc.wr_id, [self.recv_mr.sge(off, self.slot)]))
        try:
            return decode(blob)
        except CodecError as err:
            raise DatapathError(f"a received message does not decode: {err}") from None


def _endpoint(me: str, peer: str, slot: int, recv_cq: Any = None) -> Any:
    send_cq = yield CreateCq(4 * DEPTH)  # the QP's own: its SendQueue reaps it
    recv_cq = recv_cq or (yield CreateCq(4 * DEPTH))
    qp = yield CreateQp(send_cq, recv_cq, QpCap(4 * DEPTH, DEPTH))
    send_mr = yield RegMr(DEPTH * slot)
    recv_mr = yield RegMr(DEPTH * slot)
    # At most DEPTH sends in flight (SendQueue keeps ~3/4 of its depth unvouched): a send slot is
    # reused only after the SEND that used it last has completed.
    ep = Endpoint(qp, SendQueue(qp, send_cq, DEPTH, f"{me}->{peer}"), recv_cq, send_mr, recv_mr, slot)
    yield PostRecv(qp, [RecvWR(i, [recv_mr.sge(i * slot, slot)]) for i in range(DEPTH)])
    yield Publish(f"osu.{me}.{peer}", qp.endpoint())
    yield ConnectQp(qp, (yield Lookup(f"osu.{peer}.{me}")))
    return ep


class VerbsLinks:
    """A client's channels, one per broker (``slots``: broker -> buffer bytes), sharing one receive CQ."""

    def __init__(self, me: str, slots: dict[str, int]) -> None:
        self.me, self.slots = me, slots
        self.eps: dict[str, Endpoint] = {}
        self._broker_of: dict[int, str] = {}
        self.recv_cq: Any = None

    def connect(self) -> Any:
        self.recv_cq = yield CreateCq(4 * DEPTH * len(self.slots))
        for broker, slot in self.slots.items():
            self.eps[broker] = ep = yield from _endpoint(self.me, broker, slot, self.recv_cq)
            self._broker_of[ep.qp.qp_num] = broker
        for broker in self.slots:
            yield Lookup(f"osu.{broker}.ready")

    def send(self, broker: str, message: Any, nbytes: int) -> Any:
        yield from self.eps[broker].post_send(message)

    def recv(self, timeout_ns: float | None = None) -> Any:
        """The next message from any broker -> ``(broker, message)``, or None after ``timeout_ns``."""
        got = yield WaitCq(self.recv_cq, 1, timeout_ns=timeout_ns)
        if not got:
            return None
        (wc,) = got
        if not wc.ok:
            raise DatapathError(f"{self.me}: receive failed: {wc}")
        broker = self._broker_of[wc.qp_num]
        return broker, (yield from self.eps[broker].take(wc))


@dataclass(eq=False)
class Peer:
    """The broker's end of a client's channel, as the request queue carries it."""

    conn_id: int
    ep: Endpoint
    pending: list = field(default_factory=list)

    def reply(self, message: Any, nbytes: int) -> Any:
        yield from self.ep.post_send(message)


def network_thread(p: KafkaParams, state: apache.BrokerState, clients_: dict[str, int]) -> Any:
    """The broker's RDMA network thread: one receive CQ for all clients (name -> buffer bytes), requests to the
    I/O threads."""
    recv_cq = yield CreateCq(4 * DEPTH * max(1, len(clients_)))
    peers: dict[int, Peer] = {}
    for client, slot in clients_.items():
        ep = yield from _endpoint(state.name, client, slot, recv_cq)
        peers[ep.qp.qp_num] = Peer(ep.qp.qp_num, ep)
    yield Publish(f"osu.{state.name}.ready", True)
    while True:
        for wc in (yield WaitCq(recv_cq, 16)):
            if not wc.ok:
                raise DatapathError(f"{state.name}: receive failed: {wc}")
            peer = peers[wc.qp_num]
            request = yield from peer.ep.take(wc)
            yield Compute("alloc", as_request(request).nbytes)  # copied out of the receive buffer to the heap
            if peer.conn_id in state.busy:  # Kafka's muting, as on a socket
                state.parked.setdefault(peer.conn_id, deque()).append((peer, request))
                continue
            state.busy.add(peer.conn_id)
            yield QueuePut(f"{state.name}.requests", (peer, request), capacity=p.queued_max_requests)
