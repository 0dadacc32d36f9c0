"""KafkaDirect's consumer: slot READs for metadata, data READs for records (``FetchRdmaSessionHandler``).

* Control plane: a TCP connection to each broker leading a partition it reads; per
  partition one address request answers the segment it reads and its slot there.
* One QP per such broker. The broker gives the consumer a row of its slot region and
  each of its partitions there a slot in it, so one RDMA READ of the row's used span
  fetches all of them. At most one slot READ is pending per broker, and a broker's row
  is re-read at most every ``slotupdatetimeout`` (``slot_poll_us``, from the previous
  READ's post, as ``lastRdmaUpdate``), only while some partition there is caught up;
  the first read, and the first after EndToEndLatency's ack, go at once. The no-slot
  variant asks the broker over TCP instead, paced the same way.
* Each round, one data READ per partition that has unread bytes below its high-water
  position: ``min(known high-watermark position - position, fetch size)`` bytes (at
  least one whole batch) into its registered cache, handing up whole batches only
  (CRC-checked with ``check.crcs``), then one copy to the application. A sealed segment
  read to its end makes the consumer ask over TCP for the next one. The consumer spins
  on its CQ.
* ``fetch_data_latency_ns`` times each data READ, from just before it is posted to its
  completion, as the artifact's Fetcher does for RDMA; slot READs and TCP requests are
  not timed, and there is no empty fetch.
* It ends once every producer of its topic has published what it produced
  (``produced{pid}``, published when the producer's application is done, looked up
  without waiting whenever it is caught up) and it has read every partition to that end;
  EndToEndLatency's consumer (:class:`~kdlab.kafka.clients.EndToEnd`) ends after its
  producer's batches. With ``consume_after_produce`` it starts once the producers of its
  topic are done (``done{pid}``).
* Backlog (``backlog_bytes``, OMB's ``consumerBacklogSizeGB`` in bytes over the topic's
  subscriptions), as Kafka's consumer (:mod:`kdlab.kafka.fetcher`): it reads through the
  warm-up, pauses at its end (the last producer's ``start{pid}`` + ``warmup_ms``: no READ
  is posted, none is pending then), waits until every producer of the run has published
  ``backlog{pid}`` (its share, ``backlog_bytes / (groups x producers x topics)`` bytes of
  records, acknowledged since its warm-up's end, or it is done), and resumes
  at once (slot reads due now), reading as fast as it can until the end. ``t_first_ns`` is
  the resume if it paused before its first READ.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.batch_log import DELIVERED, RECEIVED, BatchLog
from kdlab.kafka.batches import check_batch
from kdlab.kafka.clients import EndToEnd, handed_up
from kdlab.kafka.direct_broker import CTL_BYTES, QP_DEPTH, SLOT, SLOT_BYTES, ConsumeRequest, PositionRequest
from kdlab.kafka.fetcher import backlog_pause_at
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.topology import Consumer
from kdlab.ops import (
    Clock,
    Compute,
    ConnectQp,
    CreateCq,
    CreateQp,
    IdlePoll,
    Lookup,
    PostSend,
    Publish,
    ReadMem,
    RegMr,
    Sleep,
    TcpConnect,
    TcpRecv,
    TcpSend,
    WaitCq,
)
from kdlab.program import DatapathError
from kdlab.verbs import Opcode, QpCap, SendWR


@dataclass(eq=False)
class _Conn:
    broker: str
    ctl: Any
    parts: list[_Part] = field(default_factory=list)
    qp: Any = None
    row_at: int = 0  # where its slot row lands in the cache MR
    slot_read: SendWR | None = None
    slot_due_ns: float = 0.0  # when the row (or, without slots, the positions) may be read again


@dataclass(eq=False)
class _Part:
    q: int
    conn: _Conn
    seg: Any  # SegmentInfo
    cache_at: int
    read_pos: int = 0
    known_end: int = 0  # high-water position the slot showed: never read past it
    sealed: bool = False
    seg_end: int = 0
    records: int = 0
    read: SendWR | None = None
    posted_ns: float = 0.0

    def caught_up(self) -> bool:
        return self.read_pos >= self.known_end


def consumer(p: KafkaParams, cid: int, me: Consumer, leaders: dict[int, str], writers: list[int],
             e2e: EndToEnd | None = None) -> Any:  # fmt: skip
    """Read the consumer's partitions from offset 0 until every producer of the topic is read to its end."""
    name = f"consumer{cid}"
    window = max(p.fetch_bytes, p.batch_size)  # a read always covers at least one whole batch
    row_bytes = p.slots_per_consumer * SLOT_BYTES
    conns: dict[str, _Conn] = {}
    parts: list[_Part] = []
    for b in sorted(set(leaders.values()), key=lambda b: int(b[1:])):  # connect to every leader first: a broker
        conns[b] = _Conn(b, (yield TcpConnect(f"{b}.ctl")))  # accepts all its clients before it answers one
    for q in me.partitions:
        conn = conns[leaders[q]]
        yield TcpSend(conn.ctl, ConsumeRequest(q, cid), CTL_BYTES)
        _, seg = yield TcpRecv(conn.ctl)
        part = _Part(q, conn, seg, len(parts) * window)
        conn.parts.append(part)
        parts.append(part)
    cache = yield RegMr(len(parts) * window + len(conns) * row_bytes)
    cq = yield CreateCq(QP_DEPTH)
    for k, conn in enumerate(conns.values()):
        conn.qp = yield CreateQp(cq, cq, QpCap(QP_DEPTH, 1))
        yield Publish(f"kd.{name}.{conn.broker}", (conn.qp.endpoint(), cache.remote()))
        conn.row_at = len(parts) * window + k * row_bytes
        lo = min(pt.seg.slot_addr for pt in conn.parts)
        span = max(pt.seg.slot_addr for pt in conn.parts) + SLOT_BYTES - lo  # the row's used slots
        conn.slot_read = SendWR(2 * k + 1, Opcode.RDMA_READ, [cache.sge(conn.row_at, span)], remote_addr=lo,
                                rkey=conn.parts[0].seg.slot_rkey)  # fmt: skip
    for j, part in enumerate(parts):
        part.read = SendWR(2 * j, Opcode.RDMA_READ, [cache.sge(part.cache_at, 0)])
    for conn in conns.values():
        yield ConnectQp(conn.qp, (yield Lookup(f"kd.{conn.broker}.{name}")))
        yield Lookup(f"kd.{conn.broker}.ready")
    produced: dict[int, dict[int, int]] = {}
    read_to = _Ends(parts, writers, produced)
    pause_at = None
    if p.consume_after_produce:  # a pre-filled topic: read once the producers are done
        for pid in writers:
            produced[pid] = yield Lookup(f"done{pid}")
    elif p.backlog_bytes and e2e is None:
        pause_at = yield from backlog_pause_at(p)
    e2e_batches = -(-p.records_total // p.records_per_batch)
    poll_ns = p.slot_poll_us * 1e3
    t_first = t_last = yield Clock()
    # no producer can have finished before its application ends (a run length): look for their ends from then on,
    # not at every idle poll (a look per producer per poll grows with the producers of the topic)
    ends_from = t_first + (p.warmup_ms + p.duration_ms) * 1e6 if p.duration_ms else t_first
    started = False  # a READ or a request was made
    delivered = BatchLog(DELIVERED)
    received = BatchLog(RECEIVED)
    e2e_ns = array("d")
    fetch_ns = array("d")
    catchup: list[float] = []
    while True:
        if e2e is not None:
            if len(delivered) >= e2e_batches:
                break
            if len(delivered) not in e2e.acked:
                yield from e2e.wait_ack(len(delivered))  # EndToEndLatency polls only once get() returned
                for conn in conns.values():
                    conn.slot_due_ns = 0.0  # and at once: no slot read is pending after the idle time
        elif read_to.reached():
            break
        now = yield Clock()
        if pause_at is not None and now >= pause_at:  # OMB's backlog: paused until it is built
            for pid in range(p.topics * p.producers):
                yield Lookup(f"backlog{pid}")
            pause_at = None
            now = yield Clock()
            if not started:
                t_first = t_last = now
            for conn in conns.values():
                conn.slot_due_ns = 0.0  # resumed: read the slots at once
            continue
        started = True
        posted: list[Any] = []
        wake = None
        for conn in conns.values():
            need_slot = []
            for part in conn.parts:
                if not part.caught_up():
                    n = min(part.known_end - part.read_pos, window)
                    n = max(min(n, p.fetch_bytes), min(n, p.batch_size))
                    part.read.sg_list = (cache.sge(part.cache_at, n),)
                    part.read.remote_addr, part.read.rkey = part.seg.addr + part.read_pos, part.seg.rkey
                    part.posted_ns = yield Clock()  # the data READ's createdTimeNanos: just before it is posted
                    yield PostSend(conn.qp, part.read)
                    posted.append(part)
                elif part.sealed and part.read_pos >= part.seg_end:  # read to its end: the next segment, over TCP
                    yield TcpSend(conn.ctl, ConsumeRequest(part.q, cid, part.seg.seg_id), CTL_BYTES)
                    _, nxt = yield TcpRecv(conn.ctl)
                    if nxt is not None:
                        part.seg, part.read_pos, part.known_end, part.sealed, part.seg_end = nxt, 0, 0, False, 0
                    posted.append(None)  # progress: look again at once
                else:
                    need_slot.append(part)
            if not need_slot:
                continue
            if conn.slot_due_ns > now:
                wake = min(wake or conn.slot_due_ns, conn.slot_due_ns)
                continue
            conn.slot_due_ns = now + poll_ns
            if p.slots:
                yield PostSend(conn.qp, conn.slot_read)
                posted.append(conn)
            else:
                for part in need_slot:
                    yield TcpSend(conn.ctl, PositionRequest(part.q, part.seg.seg_id), CTL_BYTES)
                    _, values = yield TcpRecv(conn.ctl)
                    _learn(part, values)
                posted.append(None)
        for _ in [x for x in posted if x is not None]:
            for wc in (yield WaitCq(cq, 1)):  # busy: the consumer spins in RDMApoll
                if not wc.ok:
                    why = " (its segment deleted by retention? raise retention_bytes)" if p.retention_bytes else ""
                    raise DatapathError(f"{name}: RDMA read failed: {wc}{why}")
                if wc.wr_id % 2:
                    conn = list(conns.values())[wc.wr_id // 2]
                    row = yield ReadMem(cache, conn.row_at, conn.slot_read.sg_list[0].length)
                    lo = conn.slot_read.remote_addr
                    for part in conn.parts:
                        _learn(part, SLOT.unpack_from(row, part.seg.slot_addr - lo))
                    continue
                part = parts[wc.wr_id // 2]
                done = yield Clock()  # the poll pass that found the completion
                fetch_ns.append(done - part.posted_ns)
                n = part.read.sg_list[0].length
                data = yield ReadMem(cache, part.cache_at, n)
                yield Compute("alloc", n)  # the records deserialised onto the heap (the read itself is off-heap)
                pos = 0
                while (info := check_batch(data, pos)) is not None:
                    if p.check_crcs:
                        yield Compute("crc32c", info.size)  # check.crcs: the consumer checks every batch
                    yield Compute("copy", info.size)  # the one copy to the application
                    yield Compute("consume_records", info.records)  # per record: parse, deserialisers, ConsumerRecord
                    delivered.append((info.producer_id, info.base_sequence, info.records, info.base_offset,
                                      info.timestamp, info.crc, part.q))  # fmt: skip
                    received.append((part.q, info.records, info.timestamp, info.max_timestamp, done))
                    e2e_ns.append(done - info.timestamp)
                    part.records += info.records
                    pos += info.size
                    if e2e is not None:
                        yield from handed_up(e2e, len(delivered) - 1, catchup)
                if pos == 0:
                    raise DatapathError(
                        f"{name}: a read of {n} B at {part.read_pos} of segment {part.seg.seg_id} (slot end "
                        f"{part.known_end}) held no whole batch: {bytes(data[:16]).hex()}"
                    )
                part.read_pos += pos
                t_last = yield Clock()
        caught_up = e2e is None and not any(isinstance(x, _Part) for x in posted)
        if caught_up and now >= ends_from and len(produced) < len(writers):  # caught up: are the producers done?
            for pid in writers:  # in order, stopping at the first not yet done: one look a round while waiting
                if pid in produced:
                    continue
                if (ends := (yield Lookup(f"produced{pid}", wait=False))) is None:
                    break
                produced[pid] = ends
        if not posted and e2e is None and pause_at is None and p.slots and wake is not None and now < ends_from:
            # caught up on every partition, slots not yet due: poll them while they show nothing new, until the
            # producers may have ended (kdsim charges those polls in bulk; kdreal performs them one by one)
            reads = [(conn.qp, conn.slot_read) for conn in conns.values()]
            yield IdlePoll(reads, min(conn.slot_due_ns for conn in conns.values()), poll_ns, ends_from)
            for conn in conns.values():
                conn.slot_due_ns = 0.0  # the poll that sees the change (or the first after the wait) is due now
            continue
        if not posted and (e2e is not None or not read_to.reached()):
            until = wake if wake is not None else now + poll_ns
            if pause_at is not None:
                until = min(until, pause_at)
            yield Sleep(max(0.0, until - now))
    return {"records": sum(pt.records for pt in parts), "delivered": delivered, "received": received,
            "e2e_latency_ns": e2e_ns, "fetch_latency_ns": fetch_ns, "fetch_data_latency_ns": array("d", fetch_ns),
            "fetch_empty_latency_ns": [], "catchup_latency_ns": catchup, "t_first_ns": t_first,
            "t_last_ns": t_last}  # fmt: skip


class _Ends:
    """Whether every partition was read to the end its producers reported.

    The partitions' targets are summed once, when the last producer has reported, not at every round.
    """

    def __init__(self, parts: list[_Part], writers: list[int], produced: dict[int, dict[int, int]]) -> None:
        self.parts, self.writers, self.produced = parts, writers, produced
        self.targets: list[int] | None = None

    def reached(self) -> bool:
        if self.targets is None:
            if len(self.produced) < len(self.writers):
                return False
            self.targets = [sum(self.produced[w].get(pt.q, 0) for w in self.writers) for pt in self.parts]
        return all(pt.records >= n for pt, n in zip(self.parts, self.targets, strict=True))


def _learn(part: _Part, values: tuple[int, ...]) -> None:
    """What a slot (or a position answer) shows of the partition's segment: never past the high watermark."""
    written, hw_pos, *_ = values
    part.sealed, part.seg_end = written < 0, abs(written)
    part.known_end = max(part.known_end, hw_pos)
