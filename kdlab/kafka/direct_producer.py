"""KafkaDirect's producer: Kafka's accumulator, with RDMA writes into the leaders' segments.

* The application and the RecordAccumulator are Kafka's (:mod:`kdlab.kafka.accumulator`):
  an open-loop rate or a closed loop, batch.size, linger.ms, buffer.memory.
* Control plane: a TCP connection to each broker leading a partition it writes; the
  first address request of each partition fires at once.
* One QP per such broker; one registered buffer holds the batches being written. The
  Sender (``Sender.sendProducerData`` with ``RecordAccumulator.drainRdma``) drains a
  broker that is not contended and has fewer than ``max.in.flight`` batches out (kdlab
  applies Kafka's per-connection limit to the RDMA connection too): at most one batch
  per partition, up to ``max.request.size``. Each batch is made in the buffer in place
  (``RDAMappend``), closed (its CRC), and written with one WRITE_WITH_IMM to the
  segment's address + position (immediate: the segment id). Exclusive: the producer
  keeps the position; shared: a FETCH_AND_ADD on the segment's produce slot reserves
  the bytes first.
* Segment full: a new one is asked for over TCP, at most once per partition per
  ``num.rdmaproduce.tcptimeout`` counted from its last address request
  (``RdmaSessionHandlers.canSendNewFileRequest``); until then that partition's batches
  wait (a segment that fills sooner stalls its partition).
* Flow control (``SimpleVerbsEP``): at most ``maxrequestquota`` requests outstanding per
  connection (a write returns its quota at its ack, a reservation at its completion);
  further writes wait in the client, and a broker with more than ``contention`` waiting
  writes is not drained.
* Acks come on the producer's CQ: the immediate names the segment, hence the partition,
  whose acks come in order. The Sender spins on the CQ while a write is out, until the
  next batch is due (the next record, a linger expiry, a segment request allowed), so
  every ack is timed when it arrives. ProducerLatency's hand-offs: the application wakes
  the Sender (``sender.wakeup()``) for a batch when nothing is out, and the future's
  latch wakes the application for the last outstanding ack.
* The Sender's poll waits for the next batch of a broker it may drain (``next_ready_ns``
  over the brokers below ``max.in.flight`` and ``contention``), so a full connection does
  not hold back another broker's linger.
* ``sequential_e2e``: EndToEndLatency's one thread (:class:`~kdlab.kafka.clients.EndToEnd`).
* Publications, as Kafka's producer's (:mod:`kdlab.kafka.sender`): ``produced{pid}`` (the
  final count per partition) as soon as the application is done, ``done{pid}`` after the
  last ack, and with ``backlog_bytes`` ``start{pid}`` and ``backlog{pid}``
  (:class:`~kdlab.kafka.sender.Backlog`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.accumulator import Batch, RecordAccumulator
from kdlab.kafka.batches import batch_factory
from kdlab.kafka.clients import EndToEnd
from kdlab.kafka.direct_broker import CTL_BYTES, QP_DEPTH, NewSegmentRequest, SegmentInfo, SegmentRequest
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.sender import Backlog, SenderStats, final_counts
from kdlab.kafka.topology import Producer
from kdlab.ops import (
    Clock,
    Compute,
    ConnectQp,
    CreateCq,
    CreateQp,
    Lookup,
    PostRecv,
    Publish,
    ReadMem,
    RegMr,
    Sleep,
    TcpConnect,
    TcpRecv,
    TcpSend,
    WaitCq,
    WriteMem,
)
from kdlab.program import DatapathError
from kdlab.sendq import SendQueue
from kdlab.verbs import ATOMIC_BYTES, Opcode, QpCap, RecvWR, SendWR


@dataclass(eq=False)
class _Partition:
    """What the producer knows of a partition it writes: the leader's segment and where it writes next."""

    q: int
    conn: _Conn
    seg: SegmentInfo
    pos: int
    requested_ns: float  # its last address request: num.rdmaproduce.tcptimeout counts from here
    full_at: int | None = None  # the position that did not fit the segment (a new one is due)
    acks: deque[tuple[Batch, int]] = field(default_factory=deque)  # written, not acked: (batch, buffer slot)


@dataclass(eq=False)
class _Conn:
    """The producer's connection to one broker: TCP for addresses, a QP for writes."""

    broker: str
    ctl: Any
    qp: Any = None
    sq: SendQueue | None = None
    outstanding: int = 0  # batches drained to this broker and not acked
    requests: int = 0  # requests posted and not returned (maxrequestquota)
    waiting: deque[tuple[_Partition, Batch, int]] = field(default_factory=deque)  # closed, not yet written
    segment_partition: dict[int, int] = field(default_factory=dict)  # segment id -> partition (acks)


def producer(p: KafkaParams, pid: int, me: Producer, leaders: dict[int, str], e2e: EndToEnd | None = None,
             seed: int = 0) -> Any:  # fmt: skip
    """Send the producer's records to its partitions' leaders; return what was acked and when."""
    name = f"producer{pid}"
    conns: dict[str, _Conn] = {}
    parts: dict[int, _Partition] = {}
    for b in sorted(set(leaders.values()), key=lambda b: int(b[1:])):  # connect to every leader first: a broker
        conns[b] = _Conn(b, (yield TcpConnect(f"{b}.ctl")))  # accepts all its clients before it answers one
    for q in me.partitions:  # the first address request of each partition fires at once
        conn = conns[leaders[q]]
        yield TcpSend(conn.ctl, SegmentRequest(q), CTL_BYTES)
        _, seg = yield TcpRecv(conn.ctl)
        parts[q] = _Partition(q, conn, seg, seg.position, (yield Clock()))
        conn.segment_partition[seg.seg_id] = q
    slot_bytes = p.batch_size
    slots = sum(p.max_in_flight - 1 + sum(leaders[q] == b for q in me.partitions) for b in conns)
    buf = yield RegMr(slots * slot_bytes + ATOMIC_BYTES)
    ack_mr = yield RegMr(ATOMIC_BYTES)
    recv_cq = yield CreateCq(QP_DEPTH * len(conns))
    for conn in conns.values():
        send_cq = yield CreateCq(QP_DEPTH)
        conn.qp = yield CreateQp(send_cq, recv_cq, QpCap(QP_DEPTH, QP_DEPTH))
        conn.sq = SendQueue(conn.qp, send_cq, QP_DEPTH, f"{name}->{conn.broker}")
        yield Publish(f"kd.{name}.{conn.broker}", (conn.qp.endpoint(), ack_mr.remote()))
    by_qp = {}
    recv = RecvWR(0, [])
    for conn in conns.values():
        yield ConnectQp(conn.qp, (yield Lookup(f"kd.{conn.broker}.{name}")))
        yield PostRecv(conn.qp, [recv] * QP_DEPTH)
        by_qp[conn.qp.qp_num] = conn
    for b in conns:
        yield Lookup(f"kd.{b}.ready")
    t_first = yield Clock()
    acc = RecordAccumulator(p, me, leaders, t_first, seed)
    sender = _Sender(p, pid, buf, slot_bytes, slots, parts, by_qp, recv, Backlog(p, t_first))
    yield from sender.backlog.start(pid)
    ends_told = False
    while True:
        if e2e is not None and sender.stats.sent and not acc.app_done:
            yield from e2e.wait_delivered(len(sender.stats.sent) - 1)  # EndToEndLatency: send after poll() returned
        now = yield Clock()
        if p.open_loop:
            acc.append_until(now)
        progressed = False
        for conn in conns.values():
            if _may_drain(p, conn):
                if not p.open_loop:
                    acc.closed_loop_fill(now, [conn.broker])
                for batch in acc.drain(conn.broker, now):
                    yield from sender.close(parts[batch.partition], batch)
                    progressed = True
            if conn.waiting:
                yield from sender.trigger(conn, now)
        if not ends_told and acc.app_done:  # every record offered: the final counts, for the consumers
            ends_told = True
            yield Publish(f"produced{pid}", final_counts(acc))
        if e2e is not None and progressed:
            while sender.outstanding:
                yield from sender.take_acks(recv_cq, None, acc)  # send().get()
            yield from e2e.ack(len(sender.stats.sent) - 1, sender.stats.sent[-1][6])
            continue
        if acc.idle and not sender.outstanding:
            break
        if progressed:
            continue
        wake = acc.next_ready_ns(now, [c.broker for c in conns.values() if _may_drain(p, c)])
        if wake is not None and wake <= now:  # due, yet not drained: only an ack can make room
            wake = None
        wake = min([t for t in (wake, sender.unstalls_at(now)) if t is not None], default=None)
        if sender.posted:
            yield from sender.take_acks(recv_cq, None if wake is None else wake - now, acc)
        elif wake is not None:
            yield Sleep(wake - now)  # nothing out: the Sender sleeps in its poll until the next batch is due
        else:
            raise DatapathError(f"{name}: nothing is out, nothing can be sent, and records are left")
    t_last = yield Clock()
    yield from sender.backlog.tell(pid)  # nothing more will come: paused consumers need not wait longer
    yield Publish(f"done{pid}", {q: acc.sequence[q] for q in me.partitions})
    s = sender.stats
    return {"records": s.records, "bytes": s.bytes, "t_first_ns": t_first, "t_last_ns": t_last,
            "ack_latency_ns": s.ack_latency_ns, "sent": s.sent}  # fmt: skip


def _may_drain(p: KafkaParams, conn: _Conn) -> bool:
    """The broker may be drained: fewer than ``max.in.flight`` batches out, not more than ``contention`` waiting."""
    return conn.outstanding < p.max_in_flight and len(conn.waiting) <= p.rdma_contention


class _Sender:
    """The Sender's RDMA side: the registered buffer, writes waiting for quota or a segment, acks."""

    def __init__(self, p: KafkaParams, pid: int, buf: Any, slot_bytes: int, slots: int, parts: dict[int, _Partition],
                 by_qp: dict[int, _Conn], recv: RecvWR, backlog: Backlog) -> None:  # fmt: skip
        self.p, self.pid, self.buf, self.slot_bytes = p, pid, buf, slot_bytes
        self.backlog = backlog
        self.parts, self.by_qp, self.recv = parts, by_qp, recv
        self.free = list(range(slots - 1, -1, -1))
        self.faa_at = slots * slot_bytes
        self.faa = SendWR(1, Opcode.ATOMIC_FETCH_AND_ADD, [buf.sge(self.faa_at, ATOMIC_BYTES)])
        self.write = SendWR(2, Opcode.RDMA_WRITE_WITH_IMM, [], signaled=False)
        self.outstanding = 0  # batches closed and not acked, all brokers
        self.posted = 0  # writes posted and not acked
        self.stats = SenderStats()  # per batch: what was sent and when it was acked (as Kafka's producer reports)

    def close(self, part: _Partition, batch: Batch) -> Any:
        """RDMAappend and close: the batch made in the registered buffer, its CRC; it waits for its write."""
        data = batch_factory(batch.records, self.p.record_bytes).make(
            self.pid, batch.base_sequence, int(batch.sent_first_ns), int(batch.sent_last_ns)
        )
        slot = self.free.pop()
        yield Compute("produce_records", batch.records)  # send() per record: serialiser, partitioner, append, callback
        yield Compute("alloc", batch.records * self.p.record_bytes)  # each ProducerRecord's serialised value
        yield WriteMem(self.buf, slot * self.slot_bytes, data)
        if not self.outstanding:
            yield Compute("handoff")  # sender.wakeup(): with no RDMA produce out the Sender sleeps in epoll_wait
        yield Compute("crc32c", len(data))  # the Sender closes the batch: its CRC
        self.outstanding += 1
        part.conn.outstanding += 1
        part.conn.waiting.append((part, batch, slot))

    def trigger(self, conn: _Conn, now: float) -> Any:
        """SimpleVerbsEP.trigger_send: write the waiting batches the quota allows, in order per partition.

        A batch whose partition needs a new segment it may not ask for yet stays, and so
        do its partition's later batches."""
        stalled: set[int] = set()
        keep: deque[tuple[_Partition, Batch, int]] = deque()
        while conn.waiting:
            part, batch, slot = conn.waiting.popleft()
            if part.q in stalled or conn.requests >= self.p.rdma_request_quota:
                keep.append((part, batch, slot))
                continue
            size = batch_factory(batch.records, self.p.record_bytes).size
            pos = yield from self._place(part, size, now)
            if pos is None:
                stalled.add(part.q)
                keep.append((part, batch, slot))
                continue
            write, seg = self.write, part.seg
            write.sg_list = (self.buf.sge(slot * self.slot_bytes, size),)
            write.remote_addr, write.rkey, write.imm_data = seg.addr + pos, seg.rkey, seg.seg_id
            yield from conn.sq.post(write)
            conn.requests += 1
            self.posted += 1
            part.acks.append((batch, slot))
        conn.waiting = keep

    def _place(self, part: _Partition, size: int, now: float) -> Any:
        """Where in the leader's segment the batch goes (reserving it in shared mode); None: the partition waits
        for a new segment it may not ask for yet."""
        conn = part.conn
        while True:
            if part.full_at is None:
                if self.p.produce_mode == "shared":
                    self.faa.compare_add = size
                    self.faa.remote_addr, self.faa.rkey = part.seg.slot_addr, part.seg.slot_rkey
                    yield from conn.sq.post(self.faa, signaled=True)
                    yield from conn.sq.wait_for(self.faa.wr_id)  # raises if the reservation failed
                    old = int.from_bytes((yield ReadMem(self.buf, self.faa_at, ATOMIC_BYTES)), "little")
                    part.pos = old & ((1 << 40) - 1)  # low 40 bits: the byte offset reserved
                if part.pos + size <= part.seg.capacity:
                    pos, part.pos = part.pos, part.pos + size
                    return pos
                part.full_at = part.pos
            if now - part.requested_ns < self.p.segment_request_ms * 1e6:
                return None  # canSendNewFileRequest: not yet
            yield TcpSend(conn.ctl, NewSegmentRequest(part.q, part.seg.seg_id, part.full_at), CTL_BYTES)
            _, part.seg = yield TcpRecv(conn.ctl)
            part.pos, part.full_at, part.requested_ns = part.seg.position, None, now
            conn.segment_partition[part.seg.seg_id] = part.q

    def unstalls_at(self, now: float) -> float | None:
        """When the next partition waiting for a segment may ask for one (after ``now``)."""
        throttle = self.p.segment_request_ms * 1e6
        times = [t for part in self.parts.values() if part.full_at is not None
                 and (t := part.requested_ns + throttle) > now]  # fmt: skip
        return min(times, default=None)

    def take_acks(self, recv_cq: Any, timeout_ns: float | None, acc: RecordAccumulator) -> Any:
        """Spin on the CQ (until ``timeout_ns``) for the brokers' acks; time each when it arrives."""
        for wc in (yield WaitCq(recv_cq, 1, timeout_ns=timeout_ns)):
            if not wc.ok or (wc.imm_data is not None and wc.imm_data >= 1 << 31):
                raise DatapathError(f"produce failed: {wc}")
            conn = self.by_qp[wc.qp_num]
            yield PostRecv(conn.qp, self.recv)
            part = self.parts[conn.segment_partition[wc.imm_data]]
            batch, slot = part.acks.popleft()
            if self.outstanding == 1:
                yield Compute("handoff")  # CountDownLatch.countDown() wakes the application thread in get()
            now = yield Clock()  # get() returns
            self.outstanding -= 1
            self.posted -= 1
            conn.outstanding -= 1
            conn.requests -= 1
            self.free.append(slot)
            self.stats.records += batch.records
            self.stats.bytes += batch_factory(batch.records, self.p.record_bytes).size
            acc.acked(batch, now)
            self.backlog.acked(batch.records, now)
            self.stats.completed(batch, now)
            yield from self.backlog.tell_if_built(self.pid)
            if conn.waiting:
                yield from self.trigger(conn, now)
