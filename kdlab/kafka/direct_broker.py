"""KafkaDirect's broker: what its threads share, its segments and slots, and its TCP control plane.

* Segments are preallocated and registered whole as memory regions. Every segment a
  broker holds (of a partition it leads, or a follower's copy a leader pushes into) has
  a **broker-local id** in :attr:`KdBroker.segments`; that id is the 32-bit immediate of
  every write into it, so a completion names its segment without encoding a partition.
* Control plane over TCP (``RDMAProduceAddressRequest``, ``RDMAConsumeAddressRequest``):
  a producer asks for a partition's segment (its first address request) and for a new
  one when it is full; a consumer for the segment it reads and its metadata slot; a
  leader's push thread for a follower's copy of a segment; the no-slot consumer for the
  positions its slot would show.
* Slots (``RDMAManager``): a region of ``maxconsumers x maxslots`` slots of 40 bytes.
  A consumer owns a row (the lowest free), each partition it reads here a slot in that
  row (the lowest free), so one RDMA READ fetches all of its slots on this broker. A
  slot describes the segment its consumer reads: written position (negated once
  sealed), high-watermark position, last-stable position, high-watermark offset,
  last-stable offset; the broker updates it with plain stores.
* Shared produce: each live segment has an 8-byte reservation counter in a 4 KiB
  region (512 of them) that producers FETCH_AND_ADD.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from kdlab import codec
from kdlab.kafka.direct_replication import AckCodec, FlipBit
from kdlab.kafka.log import PartitionLog, Segment
from kdlab.kafka.params import KafkaParams
from kdlab.ops import Compute, DeregMr, Lookup, QueuePut, RegMr, TcpAccept, TcpListen, TcpRecv, TcpSend, WriteMem
from kdlab.program import DatapathError
from kdlab.sendq import SendQueue

SLOT_BYTES = 40
SLOT = struct.Struct("<qqqqq")  # written pos, HW pos, last-stable pos, HW offset, last-stable offset
CTL_BYTES = 64  # a control-plane request or answer on the wire
QP_DEPTH = 256
PRODUCE_SLOTS = 512  # 4 KiB of 8-byte reservation counters
SEGMENT_IDS = 1 << 31  # a segment id is an immediate with bit 31 clear


# --- what the control plane carries -------------------------------------------------------


@dataclass(frozen=True)
class SegmentInfo:
    """Where a segment lies: a producer writes at ``addr + position``; a consumer reads it and its slot."""

    partition: int
    seg_id: int  # broker-local: the immediate of writes into it
    addr: int
    rkey: int
    capacity: int
    position: int
    slot_addr: int = 0  # shared produce: the reservation counter; consume: the consumer's slot
    slot_rkey: int = 0


@dataclass(frozen=True)
class SegmentRequest:
    """A producer's first address request for ``partition``."""

    partition: int


@dataclass(frozen=True)
class NewSegmentRequest:
    """A producer found ``seg_id`` full at ``position``: roll it (if no one did) and answer the new one."""

    partition: int
    seg_id: int
    position: int


@dataclass(frozen=True)
class ConsumeRequest:
    """A consumer asks for the segment of ``partition`` after ``after`` (-1: the first), with its slot."""

    partition: int
    client: int
    after: int = -1


@dataclass(frozen=True)
class ReplicaSegmentRequest:
    """A leader's push thread asks for the follower's copy of its segment ``leader_seg`` (log id)."""

    partition: int
    leader_seg: int
    capacity: int


@dataclass(frozen=True)
class PositionRequest:
    """The no-slot consumer's catch-up request: what the slot of ``seg_id`` would show."""

    partition: int
    seg_id: int


for _cls in (SegmentRequest, NewSegmentRequest, ConsumeRequest, ReplicaSegmentRequest, PositionRequest):
    codec.register(_cls, f"kd.{_cls.__qualname__}")  # SegmentInfo: codec's own list (kdlab.kafka.direct)


# --- the handler threads' work items ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProduceLanded:
    """A producer's WRITE_WITH_IMM into segment ``sid`` completed: commit what landed."""

    partition: int
    sid: int


@dataclass(frozen=True, slots=True)
class SegmentSealed:
    """An earlier segment of the partition was sealed: commit what waited in ``sid``."""

    partition: int
    sid: int


@dataclass(frozen=True, slots=True)
class PushLanded:
    """Follower: the leader's push into our copy ``sid`` completed: validate and append it."""

    partition: int
    sid: int


@dataclass(frozen=True, slots=True)
class ReplicaAck:
    """Leader: ``follower`` holds ``held`` batches of the partition (modulo the ack codec's :attr:`held_mod`)."""

    partition: int
    follower: str
    held: int


WorkItem = ProduceLanded | SegmentSealed | PushLanded | ReplicaAck


# --- the broker's state --------------------------------------------------------------------


@dataclass(eq=False)
class LocalSegment:
    """One entry of the broker's segment table."""

    sid: int
    part: PartitionState
    seg: Segment
    landed: int = 0  # produce writes completed in it
    committed: int = 0  # batches committed in it
    produce_slot: int = -1  # shared produce: its reservation counter


@dataclass(eq=False)
class ReaderSlot:
    """A consumer's slot for one partition: where it lies in the region, which segment it describes."""

    offset: int
    reading: LocalSegment | None = None


@dataclass(eq=False)
class FollowerProgress:
    """Leader side, per follower and partition: pushes not yet acked (their end offsets), batches confirmed."""

    pushed: deque[int] = field(default_factory=deque)
    confirmed: int = 0


@dataclass(eq=False)
class PartitionState:
    """One replica of a partition on this broker."""

    log: PartitionLog
    leader: bool
    segments: list[LocalSegment] = field(default_factory=list)  # in log order
    deferred: set[int] = field(default_factory=set)  # segments whose commits wait for an earlier seal
    delayed: list[tuple[int, int, LocalSegment]] = field(default_factory=list)  # acks=all: (last offset, pid, seg)
    followers: dict[str, FollowerProgress] = field(default_factory=dict)
    readers: dict[int, ReaderSlot] = field(default_factory=dict)  # consumer client -> its slot

    @property
    def partition(self) -> int:
        return self.log.partition


@dataclass(eq=False)
class Peer:
    """Another broker this one replicates with: the QP to it, and the replica indexes of the acks."""

    name: str
    led_here: list[int] = field(default_factory=list)  # partitions we lead that it follows (its acks' indexes)
    led_there: list[int] = field(default_factory=list)  # partitions it leads that we follow (our acks' indexes)
    sq: SendQueue | None = None
    ack_target: Any = None  # an MR of its that our zero-length acks may target
    outstanding: int = 0  # pushes to it not yet acked (num.replication.maxrequestquota)
    index: dict[int, int] = field(default_factory=dict)  # partition we follow from it -> its replica index

    def __post_init__(self) -> None:
        self.index = {q: k for k, q in enumerate(self.led_there)}


@dataclass(eq=False)
class KdBroker:
    """What the threads of one KafkaDirect broker share."""

    name: str
    p: KafkaParams
    codec: AckCodec
    partitions: dict[int, PartitionState]
    peers: dict[str, Peer] = field(default_factory=dict)
    segments: dict[int, LocalSegment] = field(default_factory=dict)  # broker-local id -> segment
    producer_qp: dict[int, Any] = field(default_factory=dict)  # producer id -> its QP (acks complete on the RDMA CQ)
    ack_target: dict[int, Any] = field(default_factory=dict)  # producer id -> its ack MR (remote)
    qp_peer: dict[int, Peer | None] = field(default_factory=dict)  # QP number -> the broker on it (None: a producer)
    qps: dict[int, Any] = field(default_factory=dict)  # QP number -> QP
    rows: dict[int, int] = field(default_factory=dict)  # consumer client -> its row of the slot region
    slot_mr: Any = None
    produce_slots: Any = None
    slot_owner: list[LocalSegment | None] = field(default_factory=lambda: [None] * PRODUCE_SLOTS)
    produce_slots_used: int = 0
    pending: int = 0  # produces received whose ack has not completed: the RDMA thread spins while any are
    commits: int = 0
    next_sid: int = 0  # the next broker-local segment id
    faults: list[FlipBit] = field(default_factory=list)  # fault injection aimed at this broker's replicas (tests)

    def add_segment(self, part: PartitionState, seg: Segment) -> LocalSegment:
        sid = self.next_sid  # never reused: a deleted segment's id may still be in flight
        self.next_sid += 1
        if sid >= SEGMENT_IDS:
            raise DatapathError(f"broker {self.name}: more than {SEGMENT_IDS} segments; an immediate cannot name one")
        local = LocalSegment(sid, part, seg)
        self.segments[sid] = local
        part.segments.append(local)
        return local

    def handler_queue(self, partition: int) -> str:
        """The queue of the handler thread that owns ``partition``: it commits the partition's segments in order."""
        return f"{self.name}.h{partition % self.p.handler_threads}"


# --- segments and slots --------------------------------------------------------------------


def new_segment(state: KdBroker, part: PartitionState) -> Any:
    """Roll the leader's active segment (the first is made at start-up), register it, give it a reservation slot."""
    log = part.log
    seg = log.roll() if part.segments else log.active
    seg.mr = yield RegMr(seg.capacity, path=f"{state.name}/p{log.partition}/{seg.base_offset:020d}.log")
    local = state.add_segment(part, seg)
    yield from free_deleted(state, part)  # the roll let retention look (log.roll)
    if state.produce_slots is not None:  # shared produce: every segment has its own reservation counter, in turn
        index = state.produce_slots_used % PRODUCE_SLOTS
        state.produce_slots_used += 1
        owner = state.slot_owner[index]
        if owner is not None and not owner.seg.sealed:
            raise DatapathError(f"broker {state.name}: more than {PRODUCE_SLOTS} unsealed segments in shared mode")
        local.produce_slot = index
        state.slot_owner[index] = local
        yield WriteMem(state.produce_slots, 8 * index, bytes(8))
    return local


def info(state: KdBroker, local: LocalSegment) -> SegmentInfo:
    slots, seg = state.produce_slots, local.seg
    slot_addr = slots.addr + 8 * local.produce_slot if slots else 0
    return SegmentInfo(
        local.part.partition, local.sid, seg.mr.addr, seg.mr.rkey, seg.capacity, seg.position, slot_addr,
        slots.rkey if slots else 0,
    )  # fmt: skip


def committable(part: PartitionState, local: LocalSegment) -> bool:
    """Whether batches in ``local`` may be committed: every earlier segment of the partition is sealed."""
    for earlier in part.segments:
        if earlier is local:
            return True
        if not earlier.seg.sealed:
            return False
    return True


def slot_values(log: PartitionLog, seg: Segment) -> tuple[int, int, int, int, int]:
    """What a slot describing ``seg`` shows (never past the high watermark)."""
    pos = -seg.position if seg.sealed else seg.position
    hw_pos = hw_position(log, seg)
    return (pos, hw_pos, hw_pos, log.hw, log.hw)


def hw_position(log: PartitionLog, seg: Segment) -> int:
    """Bytes of ``seg`` below the high watermark (the end of its last fully replicated batch)."""
    if log.hw >= log.leo:
        return seg.position
    for e in reversed(log.entries):
        if e.seg_id == seg.seg_id and e.last_offset < log.hw:
            return e.position + e.size
        if e.base_offset < seg.base_offset:
            break
    return 0


def update_slots(state: KdBroker, part: PartitionState, local: LocalSegment) -> Any:
    """Plain stores into the slots of the consumers reading ``local``."""
    values = None
    for slot in part.readers.values():
        if slot.reading is local:
            values = values or SLOT.pack(*slot_values(part.log, local.seg))
            yield WriteMem(state.slot_mr, slot.offset, values)


def reader_slot(state: KdBroker, part: PartitionState, client: int) -> ReaderSlot:
    """The consumer's slot for the partition: its row (lowest free) and the lowest free slot in it."""
    if client not in state.rows:
        used = set(state.rows.values())
        state.rows[client] = min(set(range(state.p.slot_consumers)) - used)  # roles() checked there is one
    if client not in part.readers:
        row = state.rows[client]
        taken = {s.offset for pt in state.partitions.values() for c, s in pt.readers.items() if c == client}
        k = next(k for k in range(state.p.slots_per_consumer) if slot_offset(state.p, row, k) not in taken)
        part.readers[client] = ReaderSlot(slot_offset(state.p, row, k))
    return part.readers[client]


def slot_offset(p: KafkaParams, row: int, slot: int) -> int:
    return (row * p.slots_per_consumer + slot) * SLOT_BYTES


def maybe_seal(state: KdBroker, part: PartitionState, local: LocalSegment) -> Any:
    """A rolled segment is sealed once every batch that fit in it is committed.

    Batches that already landed in the next segment were held back until now (offsets
    follow segment order): hand them to the partition's handler again.
    """
    seg = local.seg
    if seg.final is not None and not seg.sealed and seg.position >= seg.final:
        seg.sealed = True
        yield from update_slots(state, part, local)
        for sid in sorted(part.deferred):
            yield QueuePut(state.handler_queue(part.partition), SegmentSealed(part.partition, sid))


def replica_segment(state: KdBroker, part: PartitionState, leader_seg: int, capacity: int) -> Any:
    """A follower's copy of the leader's segment ``leader_seg`` (created and registered on first use)."""
    for local in part.segments:
        if local.seg.seg_id == leader_seg:
            return local
    log = part.log
    seg = next((s for s in log.segments if s.seg_id == leader_seg and s.mr is None), None)  # the log's first
    if seg is None:
        seg = Segment(leader_seg, log.leo, capacity)
        log.segments.append(seg)
    seg.mr = yield RegMr(capacity, path=f"{state.name}/p{part.partition}/{leader_seg}.log")
    local = state.add_segment(part, seg)
    if log.retention_bytes is not None:
        log.retain()  # a follower's copies are made here, not by a roll
        yield from free_deleted(state, part)
    return local


def free_deleted(state: KdBroker, part: PartitionState) -> Any:
    """Forget the segments retention deleted from the partition's log and deregister their memory."""
    log = part.log
    if not log.deleted:
        return
    gone = {id(seg) for seg in log.deleted}
    for local in [x for x in part.segments if id(x.seg) in gone]:
        part.segments.remove(local)
        state.segments.pop(local.sid, None)
        if local.produce_slot >= 0 and state.slot_owner[local.produce_slot] is local:
            state.slot_owner[local.produce_slot] = None
    for seg in log.deleted:
        if seg.mr is not None:
            yield DeregMr(seg.mr)
            seg.mr = None
    log.deleted.clear()


# --- the control plane ---------------------------------------------------------------------


def control_plane(state: KdBroker, clients: int) -> Any:
    """TCP control plane: segment addresses, new segments, slots, replica segments, positions."""
    listener = yield TcpListen(f"{state.name}.ctl")
    yield Lookup(f"kd.{state.name}.setup")  # the RDMA thread registered the slots and first segments
    conns = []
    for _ in range(clients):
        conns.append((yield TcpAccept(listener)))
    while True:
        conn, request = yield TcpRecv(conns)
        yield Compute("handoff")  # Kafka's socket server: network thread -> a parked request handler
        yield Compute("request")  # a request on the socket path: parsing, dispatch, response
        answer = yield from _answer(state, request)
        yield Compute("handoff")  # the response back to the network thread (Selector.wakeup)
        yield TcpSend(conn, answer, CTL_BYTES)


def _answer(state: KdBroker, request: Any) -> Any:
    part = state.partitions[request.partition]
    if isinstance(request, SegmentRequest):
        return info(state, part.segments[-1])
    if isinstance(request, NewSegmentRequest):
        local = state.segments[request.seg_id]
        seg = local.seg
        seg.final = request.position if seg.final is None else min(seg.final, request.position)
        if part.segments[-1] is local:  # the first to find it full rolls it
            yield from new_segment(state, part)
        yield from maybe_seal(state, part, local)
        return info(state, part.segments[-1])
    if isinstance(request, ConsumeRequest):
        slot = reader_slot(state, part, request.client)
        after = [i for i, s in enumerate(part.segments) if s.sid == request.after]
        if request.after >= 0 and not after:
            raise DatapathError(
                f"broker {state.name}: partition {part.partition}: consumer {request.client} read segment "
                f"{request.after}, since deleted by retention (raise retention_bytes)"
            )
        at = after[0] + 1 if after else 0
        if at >= len(part.segments):
            return None
        slot.reading = part.segments[at]  # its slot now describes this segment
        yield WriteMem(state.slot_mr, slot.offset, SLOT.pack(*slot_values(part.log, slot.reading.seg)))
        return replace(info(state, slot.reading), slot_addr=state.slot_mr.addr + slot.offset,
                       slot_rkey=state.slot_mr.rkey)  # fmt: skip
    if isinstance(request, ReplicaSegmentRequest):
        local = yield from replica_segment(state, part, request.leader_seg, request.capacity)
        return (local.seg.mr.addr, local.seg.mr.rkey, local.sid)
    if isinstance(request, PositionRequest):
        if request.seg_id not in state.segments:
            raise DatapathError(f"broker {state.name}: segment {request.seg_id} of partition {part.partition} was "
                                "deleted by retention (raise retention_bytes)")  # fmt: skip
        return slot_values(part.log, state.segments[request.seg_id].seg)
    raise DatapathError(f"broker {state.name}: unknown control request {request!r}")
