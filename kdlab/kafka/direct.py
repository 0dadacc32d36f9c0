"""KafkaDirect: RDMA produce, broker commit and slot-based consume (Taranov et al., SIGMOD'22).

* Control plane over TCP: a client asks a broker for a partition's segment (virtual
  address, rkey, position), a new segment when one is full, or its metadata slot.
* Exclusive produce: the producer keeps the write position; each batch is one
  WRITE_WITH_IMM (immediate = segment id) from its registered buffer into the
  segment. Shared produce: an 8-byte FETCH_AND_ADD on the segment's produce slot
  reserves the bytes first (one reservation outstanding per producer), then the write.
* Broker RDMA thread (``RDMAServer.RdmaProcessor``): it sleeps on its CQ's completion
  channel while no produce is in the broker (``WaitCq`` in event mode: a wake-up) and
  busy-polls from a produce's arrival until its ack's send has completed, then hands
  each request to the handler through an in-process queue (a parked handler's
  wake-up). Producers' acks complete on that CQ, as on the artifact's one send/receive
  CQ per processor.
* Broker commit, on the handler thread that owns the segment (hashed by segment id):
  CRC-check the batch in place at CRC-32C rate (a torn or unwritten batch is never
  committed), pay Kafka's append path (``Compute("append")``: LogValidator per record,
  producer state, high watermark, as ``Log.rdmaAppend`` does), assign offsets by
  rewriting ``baseOffset``, advance the log end, update the consumers' slots with
  plain stores, and ack the producer with a zero-length WRITE_WITH_IMM.
* Consume: a consumer RDMA-READs its 40-byte slot at most every ``slot_poll_us``
  while it is caught up, then READs ``min(known high-watermark position - position,
  fetch size)`` bytes into its registered cache and hands up whole batches only. The
  no-slot variant asks the broker over TCP at every catch-up instead.

* Push replication: the leader writes committed regions of its segment (zero copy)
  into each follower's copy with WRITE_WITH_IMM, in offset order, coalescing
  contiguous regions up to ``max_rdma_batch``; the follower validates and appends
  each batch that starts at its log end, and acks every push with a zero-length
  WRITE_WITH_IMM that carries how many batches it holds (``direct_replication``). The
  leader counts a push as held only up to that end; its high watermark is the lowest
  log end of the replicas, and moving it releases acks=all answers and the slots. A
  batch that fails validation is never appended, nor anything after it: the high
  watermark stays below it and acks=all requests for it are never answered (no ISR
  shrink is modelled).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.batches import BASE_OFFSET, check_batch
from kdlab.kafka.direct_replication import (
    FlipBit,
    ack_imm,
    end_offset,
    held_batches,
    imm_partition,
    inject_flip,
    is_ack,
)
from kdlab.kafka.log import PartitionLog, Segment
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.records import CorruptBatch
from kdlab.ops import (
    Compute,
    ConnectQp,
    CreateCq,
    CreateQp,
    Lookup,
    PostRecv,
    PostSend,
    Publish,
    QueueGet,
    QueuePut,
    ReadMem,
    RegMr,
    TcpAccept,
    TcpConnect,
    TcpListen,
    TcpRecv,
    TcpSend,
    WaitCq,
    WriteMem,
)
from kdlab.program import DatapathError, Role
from kdlab.sendq import SendQueue
from kdlab.verbs import Opcode, QpCap, RecvWR, SendWR, WcOpcode

SLOT_BYTES = 40  # written pos, HW pos, last-stable pos, HW offset, last-stable offset
_SLOT = struct.Struct("<qqqqq")
CTL_BYTES = 64  # a control-plane request or answer on the wire
QP_DEPTH = 256
PRODUCE_SLOTS = 512  # 4 KiB of 8-byte reservation counters, one per live segment


@dataclass(frozen=True)
class SegmentInfo:
    partition: int
    seg_id: int
    addr: int
    rkey: int
    capacity: int
    position: int
    slot_addr: int = 0  # shared produce: the segment's produce slot
    slot_rkey: int = 0


@dataclass
class KdBroker:
    """What the threads of one KafkaDirect broker share."""

    name: str
    p: KafkaParams
    logs: dict[int, PartitionLog]
    producer_sq: dict[int, SendQueue] = field(default_factory=dict)  # consumer id (< 0) -> its QP's send side
    producer_qp: dict[int, Any] = field(default_factory=dict)  # producer id -> its QP (acks complete on the RDMA CQ)
    pending: int = 0  # produces received whose ack has not completed: the RDMA thread spins while any are
    ack_target: dict[int, Any] = field(default_factory=dict)  # producer id -> its ack MR (remote)
    qp_by_num: dict[int, Any] = field(default_factory=dict)
    slot_mr: Any = None
    slot_of: dict[int, list[int]] = field(default_factory=dict)  # partition -> consumer slot indexes
    reading: dict[int, int] = field(default_factory=dict)  # consumer slot -> segment it reads
    produce_slots: Any = None
    commits: int = 0
    seg_slot: dict[int, int] = field(default_factory=dict)  # segment id -> its produce slot index
    leads: set[int] = field(default_factory=set)  # partitions this broker leads
    source: dict[int, str] = field(default_factory=dict)  # QP number -> "producer" | "leader" | follower name
    peer_sq: dict[str, SendQueue] = field(default_factory=dict)  # other broker -> send side of the QP to it
    peer_ack: dict[str, Any] = field(default_factory=dict)  # other broker -> MR its acks may target
    pushed: dict[tuple[str, int], deque[int]] = field(default_factory=dict)  # (follower, partition) -> end offsets
    deferred: dict[int, set[int]] = field(default_factory=dict)  # partition -> segments waiting for an earlier seal
    landed: dict[int, int] = field(default_factory=dict)  # segment -> produce writes completed in it
    committed: dict[int, int] = field(default_factory=dict)  # segment -> batches committed in it
    delayed: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)  # acks=all: (last offset, pid, seg)
    confirmed: dict[tuple[str, int], int] = field(default_factory=dict)  # (follower, partition) -> batches it holds
    faults: list[FlipBit] = field(default_factory=list)  # fault injection aimed at this broker's replicas (tests)


# --- broker ---------------------------------------------------------------------------


def _new_segment(state: KdBroker, log: PartitionLog) -> Any:
    seg = log.roll() if log.active.mr is not None else log.active
    seg.mr = yield RegMr(seg.capacity, path=f"{state.name}/p{log.partition}/{seg.base_offset:020d}.log")
    if state.produce_slots is not None:  # every segment has its own reservation counter
        index = len(state.seg_slot) % PRODUCE_SLOTS
        state.seg_slot[seg.seg_id] = index
        yield WriteMem(state.produce_slots, 8 * index, bytes(8))
    return seg


def _info(state: KdBroker, log: PartitionLog, seg: Segment) -> SegmentInfo:
    slots = state.produce_slots
    slot_addr = slots.addr + 8 * state.seg_slot[seg.seg_id] if slots else 0
    return SegmentInfo(
        log.partition, seg.seg_id, seg.mr.addr, seg.mr.rkey, seg.capacity, seg.position, slot_addr,
        slots.rkey if slots else 0,
    )  # fmt: skip


def control_plane(state: KdBroker, clients: int) -> Any:
    """TCP control plane: segment addresses, new segments, slots, positions."""
    listener = yield TcpListen(f"{state.name}.ctl")
    yield Lookup(f"kd.{state.name}.setup")  # the RDMA thread registered the slots and first segments
    conns = []
    for _ in range(clients):
        conns.append((yield TcpAccept(listener)))
    while True:
        conn, (kind, *args) = yield TcpRecv(conns)
        yield Compute("handoff")  # Kafka's socket server: network thread -> a parked request handler
        yield Compute("request")  # a request on the socket path: parsing, dispatch, response
        if kind == "segment":
            log = state.logs[args[0]]
            answer = _info(state, log, log.active)
        elif kind == "new_segment":  # (partition, full segment, the position that did not fit)
            log = state.logs[args[0]]
            old = log.segment(args[1])
            old.final = args[2] if old.final is None else min(old.final, args[2])
            if log.active.seg_id == args[1]:  # the first to find it full rolls it
                yield from _new_segment(state, log)
            yield from _maybe_seal(state, log, old)
            answer = _info(state, log, log.active)
        elif kind in ("first_segment", "next_segment"):  # (partition, consumer, segment read so far)
            log = state.logs[args[0]]
            later = [s for s in log.segments if kind == "first_segment" or s.seg_id > args[2]]
            answer = None
            if later:
                state.reading[args[1]] = later[0].seg_id  # its slot now describes this segment
                yield WriteMem(state.slot_mr, args[1] * SLOT_BYTES, _SLOT.pack(*_slot_values(log, later[0])))
                answer = _info(state, log, later[0])
        elif kind == "replica_segment":  # (partition, segment id, capacity): where the leader pushes
            seg = yield from _replica_segment(state, state.logs[args[0]], args[1], args[2])
            answer = (seg.mr.addr, seg.mr.rkey)
        elif kind == "slot":
            answer = (state.slot_mr.addr + args[0] * SLOT_BYTES, state.slot_mr.rkey)
        else:  # "position": the no-slot consumer's catch-up request
            log = state.logs[args[0]]
            answer = _slot_values(log, log.segment(args[1]))
        yield Compute("handoff")  # the response back to the network thread (Selector.wakeup)
        yield TcpSend(conn, answer, CTL_BYTES)


def _maybe_seal(state: KdBroker, log: PartitionLog, seg: Segment) -> Any:
    """A rolled segment is sealed once every batch that fit in it is committed.

    Batches that already landed in the next segment were held back until now
    (offsets follow segment order): wake the partition's handler for them.
    """
    if seg.final is not None and not seg.sealed and seg.position >= seg.final:
        seg.sealed = True
        yield from _update_slots(state, log, seg)
        for seg_id in sorted(state.deferred.get(log.partition, ())):
            yield QueuePut(_handler_queue(state, log.partition), (seg_id, "sealed"))


def _handler_queue(state: KdBroker, partition: int) -> str:
    """The queue of the handler thread that owns ``partition``: it commits the partition's segments in order."""
    return f"{state.name}.h{partition % state.p.handler_threads}"


def _committable(log: PartitionLog, seg: Segment) -> bool:
    """Whether batches in ``seg`` may be committed: every earlier segment of the partition is sealed."""
    for earlier in log.segments:
        if earlier is seg:
            return True
        if not earlier.sealed:
            return False
    return True


def _slot_values(log: PartitionLog, seg: Segment) -> tuple[int, int, int, int, int]:
    pos = -seg.position if seg.sealed else seg.position
    hw_pos = _hw_position(log, seg)
    return (pos, hw_pos, hw_pos, log.hw, log.hw)


def _hw_position(log: PartitionLog, seg: Segment) -> int:
    """Bytes of ``seg`` below the high watermark (the end of its last fully replicated batch)."""
    if log.hw >= log.leo:
        return seg.position
    for e in reversed(log.entries):
        if e.seg_id == seg.seg_id and e.last_offset < log.hw:
            return e.position + e.size
        if e.seg_id < seg.seg_id:
            break
    return 0


def _replica_segment(state: KdBroker, log: PartitionLog, seg_id: int, capacity: int) -> Any:
    """A follower's copy of the leader's segment ``seg_id`` (created and registered on first use)."""
    for seg in log.segments:
        if seg.seg_id == seg_id:
            if seg.mr is None:
                seg.mr = yield RegMr(capacity, path=f"{state.name}/p{log.partition}/{seg_id}.log")
            return seg
    seg = Segment(seg_id, log.leo, capacity)
    seg.mr = yield RegMr(capacity, path=f"{state.name}/p{log.partition}/{seg_id}.log")
    log.segments.append(seg)
    return seg


def _update_slots(state: KdBroker, log: PartitionLog, seg: Segment) -> Any:
    """Plain stores into the slots of the partition's consumers (the segment just committed to)."""
    values = _SLOT.pack(*_slot_values(log, seg))
    for index in state.slot_of.get(log.partition, []):
        if state.reading.get(index) == seg.seg_id:
            yield WriteMem(state.slot_mr, index * SLOT_BYTES, values)


def rdma_thread(state: KdBroker, producers: list[tuple[int | None, str]]) -> Any:
    """Set up a QP per producer, then turn receive completions into commit requests."""
    p = state.p
    recv_cq = yield CreateCq(2 * QP_DEPTH * max(1, len(producers)))  # receives, and producers' ack completions
    state.slot_mr = yield RegMr(max(1, p.consumers) * SLOT_BYTES)
    if p.produce_mode == "shared":
        state.produce_slots = yield RegMr(8 * PRODUCE_SLOTS)
    for q, log in state.logs.items():
        if q in state.leads:
            yield from _new_segment(state, log)
    yield Publish(f"kd.{state.name}.setup", True)  # the control plane may hand out segments and slots now
    recv = RecvWR(0, [])
    # Two phases (create and publish every QP, then connect), so brokers that are each
    # other's peers never wait on each other.
    qps = []
    for pid, peer in producers:
        if pid is not None and pid >= 0:  # a producer: every ack is signaled and completes on this thread's CQ
            qp = yield CreateQp(recv_cq, recv_cq, QpCap(QP_DEPTH, QP_DEPTH))
            qps.append((pid, peer, qp, None))
        else:
            send_cq = yield CreateCq(QP_DEPTH)  # each QP its own: SendQueue reaps it
            qp = yield CreateQp(send_cq, recv_cq, QpCap(QP_DEPTH, QP_DEPTH))
            qps.append((pid, peer, qp, SendQueue(qp, send_cq, QP_DEPTH, f"{state.name}->{peer}")))
        state.qp_by_num[qp.qp_num] = qp
        yield Publish(
            f"kd.{state.name}.{peer}", (qp.endpoint(), state.slot_mr.remote()) if pid is None else qp.endpoint()
        )
    for pid, peer, qp, sq in qps:
        ep, ack_target = yield Lookup(f"kd.{peer}.{state.name}")
        if pid is None:  # another broker: we lead for it, or it leads for us
            state.peer_sq[peer], state.peer_ack[peer] = sq, ack_target
            state.source[qp.qp_num] = peer
        elif sq is None:
            state.producer_qp[pid], state.ack_target[pid] = qp, ack_target
            state.source[qp.qp_num] = "producer"
        else:  # a consumer's QP: it only READs
            state.producer_sq[pid], state.ack_target[pid] = sq, ack_target
            state.source[qp.qp_num] = "consumer"
        yield ConnectQp(qp, ep)
        yield PostRecv(qp, [recv] * QP_DEPTH)
    yield Publish(f"kd.{state.name}.ready", True)
    while True:
        # RDMAServer.poll: with no produce in the broker the thread arms the CQ and sleeps on its completion
        # channel (a wake-up); from a produce's arrival until its ack's send completes it busy-polls.
        mode = "busy" if state.pending else "event"
        for wc in (yield WaitCq(recv_cq, 64, mode)):
            if not wc.ok:
                raise DatapathError(f"broker {state.name}: a completion failed: {wc}")
            if wc.opcode < WcOpcode.RECV:  # a producer's ack was sent: that produce is answered
                state.pending -= 1
                continue
            yield PostRecv(state.qp_by_num[wc.qp_num], recv)
            imm = wc.imm_data  # a segment id, or a follower's ack
            source = state.source[wc.qp_num]
            if source == "producer":
                state.pending += 1
            yield QueuePut(_handler_queue(state, imm_partition(imm)), (imm, source))


def handler_thread(state: KdBroker, index: int) -> Any:
    """Commit the batches that landed in this thread's partitions' segments, in position and segment order.

    A producer may write into the next segment before the last batches of the full
    one are committed (another producer's, or its own still being checked). Those
    wait in ``state.deferred`` until the earlier segment is sealed, so offsets are
    assigned in log order.
    """
    queue = f"{state.name}.h{index}"
    ack = SendWR(0, Opcode.RDMA_WRITE_WITH_IMM, [], signaled=False)
    while True:
        seg_id, source = yield QueueGet(queue)  # or a follower's ack, which names no segment
        if is_ack(seg_id):  # a follower confirms a push
            yield from _replica_acked(state, state.logs[imm_partition(seg_id)], source, seg_id, ack)
            continue
        log = state.logs[seg_id // 1_000_000]
        seg = log.segment(seg_id)
        if log.partition not in state.leads:
            yield from _replica_append(state, log, seg, ack)  # the leader pushed into our copy
            continue
        if source == "producer":  # one more write completed in this segment
            state.landed[seg_id] = state.landed.get(seg_id, 0) + 1
        if not _committable(log, seg):
            state.deferred.setdefault(log.partition, set()).add(seg_id)
            continue
        state.deferred.get(log.partition, set()).discard(seg_id)
        yield from _commit(state, log, seg, ack)


def _commit(state: KdBroker, log: PartitionLog, seg: Segment, ack: SendWR) -> Any:
    """Commit the whole, valid batches from the segment's committed position on, in position order.

    No more batches than writes have completed (``state.landed``): a write still in
    flight may show its length and part of its bytes. An exclusive producer's
    writes complete in order, so a landed batch whose CRC fails is corrupt and
    fails the broker. With shared producers a later position may complete first, so
    a failing batch at the committed position may still be landing: commit stops and
    waits for the next completion (a batch that never becomes valid is never
    committed, and the partition stalls rather than deliver it).
    """
    seg_id = seg.seg_id
    shared = state.p.produce_mode == "shared"
    while seg.position + 12 <= seg.capacity and state.committed.get(seg_id, 0) < state.landed.get(seg_id, 0):
        head = yield ReadMem(seg.mr, seg.position, 12)
        length = int.from_bytes(head[8:12], "big", signed=True)
        if length <= 0 or seg.position + 12 + length > seg.capacity:
            break
        data = yield ReadMem(seg.mr, seg.position, 12 + length)  # the batch in place: a mapped segment, no copy
        yield Compute("crc32c", len(data))  # analyzeAndValidateRecords: batch.ensureValid() (the CRC32C intrinsic)
        try:
            info = check_batch(data)
        except CorruptBatch:
            if not shared:
                raise
            break
        if info is None:
            break
        yield Compute("append", info.records)  # Log.rdmaAppend: LogValidator per record, producer state, HW
        state.committed[seg_id] = state.committed.get(seg_id, 0) + 1
        yield WriteMem(seg.mr, seg.position, BASE_OFFSET.pack(log.leo))  # assign offsets in place
        entry = log.append(info.size, info.records, seg=seg)
        state.commits += 1
        replicas = log.replicas[1:]
        for follower in replicas:  # queue the push of this region (in offset order)
            yield QueuePut(f"{state.name}.push.{follower}", (log.partition, seg_id, entry.position, entry.size,
                                                                 entry.last_offset + 1))  # fmt: skip
        if not replicas:
            log.hw = log.leo
        yield from _maybe_seal(state, log, seg)
        yield from _update_slots(state, log, seg)
        if state.p.acks == -1 and replicas:
            state.delayed.setdefault(log.partition, []).append((entry.last_offset, info.producer_id, seg_id))
        else:
            yield from _ack_producer(state, info.producer_id, seg_id, ack)


def _ack_producer(state: KdBroker, pid: int, seg_id: int, ack: SendWR) -> Any:
    """The broker's answer to a produce: a zero-length WRITE_WITH_IMM (immediate = segment id).

    Signaled: its completion, on the RDMA thread's CQ, tells that thread the produce is
    answered (the artifact's ``pendingRequests``), which is also what frees the send queue.
    """
    target = state.ack_target[pid]
    ack.remote_addr, ack.rkey, ack.imm_data = target.addr, target.rkey, seg_id
    ack.signaled = True
    yield PostSend(state.producer_qp[pid], ack)


def _replica_append(state: KdBroker, log: PartitionLog, seg: Segment, ack: SendWR) -> Any:
    """Follower: validate and append what the leader pushed (offsets already assigned), then ack.

    Only a whole, valid batch that starts at our log end is appended, so the log
    stays contiguous: after a corrupt batch nothing more is, in this push or a later
    one. The ack carries the batches we hold, not the push's end.
    """
    while seg.position + 12 <= seg.capacity:
        head = yield ReadMem(seg.mr, seg.position, 12)
        length = int.from_bytes(head[8:12], "big", signed=True)
        if length <= 0 or seg.position + 12 + length > seg.capacity:
            break
        data = yield ReadMem(seg.mr, seg.position, 12 + length)  # in place: a mapped segment, no copy
        if state.faults and (yield from inject_flip(state.faults, log, seg, data)):
            data = yield ReadMem(seg.mr, seg.position, 12 + length)  # fault injection: read the flipped bytes
        yield Compute("crc32c", len(data))  # the follower's append checks the CRC too
        try:  # a later push may still be landing: its bytes are checked once its completion came
            info = check_batch(data)
        except CorruptBatch:
            break
        if info is None or info.base_offset != log.leo:  # not landed yet, or past a batch we could not append
            break
        yield Compute("append", 0)  # rdmaAppend without assigning offsets: no LogValidator, the rest of the path
        log.append(info.size, info.records, seg=seg)
    leader = log.replicas[0]
    target = state.peer_ack[leader]
    ack.remote_addr, ack.rkey, ack.imm_data = target.addr, target.rkey, ack_imm(log.partition, len(log.entries))
    yield from state.peer_sq[leader].post(ack)


def _replica_acked(state: KdBroker, log: PartitionLog, follower: str, imm: int, ack: SendWR) -> Any:
    """Leader: a follower acks a push; count it as held up to the follower's log end, move the high watermark.

    Acks come in push order; each confirms at most its push (the next confirms the rest).
    """
    q = log.partition
    end = state.pushed[follower, q].popleft()
    held = held_batches(imm, state.confirmed.get((follower, q), 0), len(log.entries), follower, q)
    state.confirmed[follower, q] = held
    end = min(end, end_offset(log, held))
    log.follower_leo[follower] = max(log.follower_leo.get(follower, 0), end)
    if not log.advance_hw(len(log.replicas)):
        return
    waiting = state.delayed.get(q, [])
    ready = [w for w in waiting if w[0] < log.hw]
    state.delayed[q] = [w for w in waiting if w[0] >= log.hw]
    for _, pid, seg_id in ready:
        yield from _ack_producer(state, pid, seg_id, ack)
    read = {state.reading[c] for c in state.slot_of.get(q, []) if c in state.reading}
    for seg in log.segments:  # the high watermark moved in the segments consumers are reading
        if seg.seg_id in read:
            yield from _update_slots(state, log, seg)


def push_thread(state: KdBroker, follower: str) -> Any:
    """Leader: push committed regions to one follower, in offset order, coalesced up to maxrdmabatch."""
    p = state.p
    ctl = yield TcpConnect(f"{follower}.ctl")  # connect first: the follower's control plane counts on it
    yield Lookup(f"kd.{state.name}.ready")
    remote: dict[int, tuple[int, int]] = {}
    queue = f"{state.name}.push.{follower}"
    for q in state.leads:
        state.pushed[follower, q] = deque()
    write = SendWR(0, Opcode.RDMA_WRITE_WITH_IMM, [], signaled=False)
    held = None
    while True:
        q, seg_id, pos, size, end = held or (yield QueueGet(queue))
        held = None
        while size < p.max_rdma_batch:  # coalesce contiguous regions of one segment
            more = yield QueueGet(queue, timeout_ns=0.0)
            if more is None:
                break
            if more[1] != seg_id or more[2] != pos + size:
                held = more
                break
            size, end = size + more[3], more[4]
        seg = state.logs[q].segment(seg_id)
        if seg_id not in remote:
            yield TcpSend(ctl, ("replica_segment", q, seg_id, seg.capacity), CTL_BYTES)
            _, remote[seg_id] = yield TcpRecv(ctl)
        addr, rkey = remote[seg_id]
        write.sg_list = (seg.mr.sge(pos, size),)  # zero copy: straight from the leader's segment
        write.remote_addr, write.rkey, write.imm_data = addr + pos, rkey, seg_id
        state.pushed[follower, q].append(end)
        yield from state.peer_sq[follower].post(write)


# --- wiring -------------------------------------------------------------------------------


def roles(p: KafkaParams, faults: tuple[FlipBit, ...] = ()) -> list[Role]:
    """The roles of one KafkaDirect run; ``faults`` (fault injection, for tests) flip bits in followers' copies."""
    from kdlab.kafka.cluster import brokers, consumer_host, end_to_end, expected_records, replicas
    from kdlab.kafka.direct_clients import consumer, producer

    for f in faults:
        if f.partition >= p.partitions or f.follower not in replicas(p, f.partition)[1:]:
            raise ValueError(f"{f}: {f.follower} is not a follower of partition {f.partition}")
    states = {}
    for b in brokers(p):
        logs = {q: PartitionLog(q, p.segment_bytes, replicas(p, q)) for q in range(p.partitions) if b in replicas(p, q)}
        aimed = [f for f in faults if f.follower == b]
        states[b] = KdBroker(b, p, logs, leads={q for q in logs if replicas(p, q)[0] == b}, faults=aimed)
    out: list[Role] = []
    producers: dict[str, list[tuple[int, str]]] = {b: [] for b in states}
    clients: dict[str, int] = dict.fromkeys(states, 0)
    e2e = end_to_end(p)
    for i in range(p.producers):
        q = i % p.partitions
        leader = replicas(p, q)[0]
        producers[leader].append((i, f"producer{i}"))
        clients[leader] += 1
        args = {"p": p, "pid": i, "partition": q, "leader": leader, **e2e}
        out.append(Role(f"producer{i}", f"p{i}", producer, args))
    for j in range(p.consumers):
        q = j % p.partitions
        leader = replicas(p, q)[0]
        states[leader].slot_of.setdefault(q, []).append(j)
        clients[leader] += 1
        args = {"p": p, "cid": j, "partition": q, "leader": leader, "expected_records": expected_records(p, q), **e2e}
        out.append(Role(f"consumer{j}", consumer_host(p, j), consumer, args))
        producers[leader].append((-1 - j, f"consumer{j}"))  # a QP for the consumer's reads
    peers = {b: sorted({r for q in st.logs for r in replicas(p, q)} - {b}) for b, st in states.items()}
    for b, st in states.items():
        for other in peers[b]:
            producers[b].append((None, other))  # a QP to each broker we replicate with
            clients[b] += any(b in replicas(p, q) for q in states[other].leads)  # its push thread's control connection
        followers = sorted({r for q in st.leads for r in replicas(p, q)[1:]})
        for f in followers:
            out.append(Role(f"{b}.push.{f}", b, push_thread, {"state": st, "follower": f}, daemon=True))
    for b, st in states.items():
        out.append(Role(f"{b}.rdma0", b, rdma_thread, {"state": st, "producers": producers[b]}, daemon=True))
        out.append(Role(f"{b}.control", b, control_plane, {"state": st, "clients": clients[b]}, daemon=True))
        for i in range(p.handler_threads):
            out.append(Role(f"{b}.handler{i}", b, handler_thread, {"state": st, "index": i}, daemon=True))
    return out


def __getattr__(name: str) -> Any:
    """``direct.producer`` and ``direct.consumer``: the client roles live in :mod:`kdlab.kafka.direct_clients`."""
    if name in ("producer", "consumer"):
        from kdlab.kafka import direct_clients

        return getattr(direct_clients, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
