"""KafkaDirect's clients: the RDMA producer and the slot-polling consumer (Taranov et al., SIGMOD'22).

The broker side (control plane, RDMA thread, commit, push replication) is
:mod:`kdlab.kafka.direct`, which also re-exports these two roles.

* Producer: Kafka's application and Sender threads in one role, as in
  :mod:`kdlab.kafka.clients`: the application writes the record into the registered
  batch buffer and wakes the Sender (``sender.wakeup()``) when no RDMA produce is
  outstanding (while one is, the Sender spins and sees the batch on its next pass); the
  Sender closes the batch (its CRC), reserves with FETCH_AND_ADD in shared mode, and
  posts one WRITE_WITH_IMM into the leader's segment; it spins on its CQ for the ack,
  and the future's latch wakes an application waiting in ``get()``. So
  ``ack_latency_ns`` is ProducerLatency's interval, ``send()`` to ``get()``.
* Consumer: RDMA-READs its 40-byte slot at most every ``slot_poll_us`` while it is
  caught up, then READs ``min(known high-watermark position - position, fetch size)``
  bytes into its registered cache and hands up whole batches (CRC-checked with
  ``check_crcs``). It spins on its CQ. ``fetch_data_latency_ns`` times each data READ,
  from just before it is posted to its completion, as the artifact's Fetcher does for
  RDMA; slot READs and TCP position requests are not timed, so this does not depend on
  ``slot_poll_us``, and there is no empty fetch (``fetch_empty_latency_ns`` stays empty).
  The no-slot variant asks the broker over TCP at every catch-up instead.
* ``sequential_e2e``: both run as EndToEndLatency's one thread
  (:class:`~kdlab.kafka.clients.EndToEnd`); the consumer polls right after the ack.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from kdlab.kafka.batches import BatchFactory, check_batch
from kdlab.kafka.clients import EndToEnd, delivery, handed_up, wait_for_producers
from kdlab.kafka.direct import _SLOT, CTL_BYTES, QP_DEPTH, SLOT_BYTES
from kdlab.kafka.params import KafkaParams
from kdlab.ops import (
    Clock,
    Compute,
    ConnectQp,
    CreateCq,
    CreateQp,
    Lookup,
    PostRecv,
    PostSend,
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

# --- producer ---------------------------------------------------------------------------


def producer(p: KafkaParams, pid: int, partition: int, leader: str, e2e: EndToEnd | None = None) -> Any:
    """Write batches straight into the leader's segment; shared mode reserves first."""
    me = f"producer{pid}"
    ctl = yield TcpConnect(f"{leader}.ctl")
    yield TcpSend(ctl, ("segment", partition), CTL_BYTES)
    _, seg = yield TcpRecv(ctl)
    factory = BatchFactory(p.records_per_batch, p.record_bytes)
    size = factory.size
    ring = max(1, p.max_in_flight)
    buf = yield RegMr(ring * size + ATOMIC_BYTES)
    ack_mr = yield RegMr(ATOMIC_BYTES)
    send_cq = yield CreateCq(QP_DEPTH)
    recv_cq = yield CreateCq(QP_DEPTH)
    qp = yield CreateQp(send_cq, recv_cq, QpCap(QP_DEPTH, QP_DEPTH))
    sq = SendQueue(qp, send_cq, QP_DEPTH, me)
    yield Publish(f"kd.{me}.{leader}", (qp.endpoint(), ack_mr.remote()))
    yield ConnectQp(qp, (yield Lookup(f"kd.{leader}.{me}")))
    recv = RecvWR(0, [])
    yield PostRecv(qp, [recv] * QP_DEPTH)
    yield Lookup(f"kd.{leader}.ready")
    shared = p.produce_mode == "shared"
    faa = SendWR(1, Opcode.ATOMIC_FETCH_AND_ADD, [buf.sge(ring * size, ATOMIC_BYTES)], compare_add=size)
    write = SendWR(2, Opcode.RDMA_WRITE_WITH_IMM, [buf.sge(0, size)], signaled=False)
    n_batches = -(-p.records_total // factory.records)
    in_flight: deque[float] = deque()
    acks_ns: list[float] = []
    t_first = yield Clock()
    pos = seg.position
    for b in range(n_batches):
        while len(in_flight) >= p.max_in_flight:
            yield from _await_ack(recv_cq, qp, recv, in_flight, acks_ns)
        if e2e is not None and b:
            yield from e2e.wait_delivered(b - 1)  # EndToEndLatency: the next send after poll() returned
        t = yield Clock()  # ProducerLatency's begin: before RDMAsend()
        slot = b % ring
        yield WriteMem(buf, slot * size, factory.make(pid, b * factory.records, int(t)))  # RDMAappend, in place
        if not in_flight:
            yield Compute("handoff")  # sender.wakeup(): with no RDMA produce out the Sender sleeps in epoll_wait
        yield Compute("crc32c", size)  # the Sender closes the batch: its CRC
        while True:
            if shared:
                faa.remote_addr, faa.rkey = seg.slot_addr, seg.slot_rkey
                yield from sq.post(faa, signaled=True)
                yield from sq.wait_for(faa.wr_id)  # raises if the reservation failed
                old = int.from_bytes((yield ReadMem(buf, ring * size, ATOMIC_BYTES)), "little")
                pos = old & ((1 << 40) - 1)  # low 40 bits: the byte offset reserved
            if pos + size <= seg.capacity:
                break
            yield TcpSend(ctl, ("new_segment", partition, seg.seg_id, pos), CTL_BYTES)  # segment full
            _, seg = yield TcpRecv(ctl)
            pos = seg.position
        write.sg_list = (buf.sge(slot * size, size),)
        write.remote_addr, write.rkey, write.imm_data = seg.addr + pos, seg.rkey, seg.seg_id
        yield from sq.post(write)
        pos += size
        in_flight.append(t)
        if e2e is not None:
            yield from _await_ack(recv_cq, qp, recv, in_flight, acks_ns)  # RDMAsend().get()
            yield from e2e.ack(b, t + acks_ns[-1])
    while in_flight:
        yield from _await_ack(recv_cq, qp, recv, in_flight, acks_ns)
    t_last = yield Clock()
    yield Publish(f"produced{pid}", True)
    return {"records": n_batches * factory.records, "bytes": n_batches * size, "t_first_ns": t_first,
            "t_last_ns": t_last, "ack_latency_ns": acks_ns}  # fmt: skip


def _await_ack(recv_cq: Any, qp: Any, recv: RecvWR, in_flight: deque[float], acks_ns: list[float]) -> Any:
    """The producer's Sender, spinning on its CQ while a produce is out, takes the broker's ack.

    The immediate is the segment id (at least 2^31: an error). When the application
    waits for its last outstanding send (``get()``), the future's latch wakes it.
    """
    for wc in (yield WaitCq(recv_cq, 1)):  # busy: the Sender spins while an RDMA produce is outstanding
        if not wc.ok or (wc.imm_data is not None and wc.imm_data >= 1 << 31):
            raise DatapathError(f"produce failed: {wc}")
        yield PostRecv(qp, recv)
        if len(in_flight) == 1:
            yield Compute("handoff")  # CountDownLatch.countDown() wakes the application thread in get()
        now = yield Clock()  # get() returns
        acks_ns.append(now - in_flight.popleft())


# --- consumer ---------------------------------------------------------------------------


def consumer(
    p: KafkaParams, cid: int, partition: int, leader: str, expected_records: int, e2e: EndToEnd | None = None
) -> Any:
    """Poll the slot, READ what the high watermark allows, hand up whole batches."""
    me = f"consumer{cid}"
    ctl = yield TcpConnect(f"{leader}.ctl")
    yield TcpSend(ctl, ("first_segment", partition, cid, -1), CTL_BYTES)
    _, seg = yield TcpRecv(ctl)
    yield TcpSend(ctl, ("slot", cid), CTL_BYTES)
    _, (slot_addr, slot_rkey) = yield TcpRecv(ctl)
    window = max(p.fetch_bytes, p.batch_size)  # a read always covers at least one whole batch
    cache = yield RegMr(window + SLOT_BYTES)
    cq = yield CreateCq(QP_DEPTH)
    qp = yield CreateQp(cq, cq, QpCap(QP_DEPTH, 1))
    yield Publish(f"kd.{me}.{leader}", (qp.endpoint(), cache.remote()))
    yield ConnectQp(qp, (yield Lookup(f"kd.{leader}.{me}")))
    yield Lookup(f"kd.{leader}.ready")
    yield from wait_for_producers(p, partition)
    t_first = yield Clock()
    slot_read = SendWR(1, Opcode.RDMA_READ, [cache.sge(window, SLOT_BYTES)], remote_addr=slot_addr,
                       rkey=slot_rkey)  # fmt: skip
    data_read = SendWR(2, Opcode.RDMA_READ, [cache.sge(0, 0)])
    read_pos, known_end, sealed, seg_end = 0, 0, False, 0
    got, delivered, e2e_ns, fetch_ns, catchup = 0, [], [], [], []
    first_poll = True
    while got < expected_records:
        if e2e is not None and len(delivered) not in e2e.acked:
            yield from e2e.wait_ack(len(delivered))  # EndToEndLatency polls only once get() returned
            first_poll = True  # and at once: no slot read is pending after the idle time
        if read_pos >= known_end:
            if sealed and read_pos >= seg_end:  # sealed and read to its end: the next segment, over TCP
                yield TcpSend(ctl, ("next_segment", partition, cid, seg.seg_id), CTL_BYTES)
                _, nxt = yield TcpRecv(ctl)
                if nxt is not None:
                    seg, read_pos, known_end, sealed, seg_end = nxt, 0, 0, False, 0
                continue
            if not first_poll:
                yield Sleep(p.slot_poll_us * 1e3)
            first_poll = False
            if p.slots:
                yield PostSend(qp, slot_read)
                _check((yield WaitCq(cq, 1)))
                written, hw_pos, *_ = _SLOT.unpack((yield ReadMem(cache, window, SLOT_BYTES)))
            else:
                yield TcpSend(ctl, ("position", partition, seg.seg_id), CTL_BYTES)
                _, (written, hw_pos, *_) = yield TcpRecv(ctl)
            sealed, seg_end = written < 0, abs(written)
            known_end = hw_pos  # never past the high watermark
            continue
        avail = known_end - read_pos
        n = max(min(avail, p.fetch_bytes), min(avail, p.batch_size))
        t0 = yield Clock()  # the data READ's createdTimeNanos: just before it is posted
        data_read.sg_list = (cache.sge(0, n),)
        data_read.remote_addr, data_read.rkey = seg.addr + read_pos, seg.rkey
        yield PostSend(qp, data_read)
        _check((yield WaitCq(cq, 1)))  # busy: the consumer spins in RDMApoll
        now = yield Clock()  # the poll pass that found the completion
        fetch_ns.append(now - t0)
        data = yield ReadMem(cache, 0, n)
        pos = 0
        while (info := check_batch(data, pos)) is not None:
            if p.check_crcs:
                yield Compute("crc32c", info.size)  # check.crcs: the consumer checks every batch, as over TCP
            yield Compute("copy", info.size)  # the one copy to the application
            delivered.append(delivery(info))
            e2e_ns.append(now - info.timestamp)
            got += info.records
            pos += info.size
            if e2e is not None:
                yield from handed_up(e2e, len(delivered) - 1, catchup)
        if pos == 0:
            raise DatapathError(
                f"{me}: a read of {n} B at {read_pos} of segment {seg.seg_id} (slot end {known_end}) held no whole"
                f" batch: {bytes(data[:16]).hex()}"
            )
        read_pos += pos
    t_last = yield Clock()
    return {"records": got, "delivered": delivered, "e2e_latency_ns": e2e_ns, "fetch_latency_ns": fetch_ns,
            "fetch_data_latency_ns": list(fetch_ns), "fetch_empty_latency_ns": [], "catchup_latency_ns": catchup,
            "t_first_ns": t_first, "t_last_ns": t_last}  # fmt: skip


def _check(wcs: list) -> None:
    for wc in wcs:
        if not wc.ok:
            raise DatapathError(f"consumer: RDMA read failed: {wc}")
