"""KafkaDirect's broker datapath: the RDMA thread and the commit handlers (Taranov et al., SIGMOD'22).

* RDMA thread (``RDMAServer.RdmaProcessor``): one QP per producer, consumer and peer
  broker, all receiving on one CQ. It sleeps on the CQ's completion channel while no
  produce is in the broker (``WaitCq`` in event mode: a wake-up) and busy-polls from a
  produce's arrival until its ack's send has completed. Each receive completion becomes
  a typed work item for the handler thread that owns the partition, through an
  in-process queue (a parked handler's wake-up): the immediate is a broker-local
  segment id (a produce write, or a push into a follower's copy) or a follower's ack
  (:class:`~kdlab.kafka.direct_replication.AckCodec`). Producers' acks complete on that
  CQ too, as on the artifact's one send/receive CQ per processor.
* Commit, on the handler thread of the partition (``Log.rdmaAppend``): CRC-check each
  batch in place at CRC-32C rate (a torn or unwritten batch is never committed), pay
  Kafka's append path (``Compute("append")``: LogValidator per record, producer state,
  high watermark), assign offsets by rewriting ``baseOffset``, advance the log end,
  queue the region's push to every follower, update the consumers' slots with plain
  stores, and ack the producer with a zero-length WRITE_WITH_IMM (immediate = segment
  id): at once for acks=1, once the high watermark covers the batch for acks=all.
* Follower: validate and append what the leader pushed (offsets already assigned) and
  ack every push with what it holds. Leader: on a follower's ack, move that follower's
  log end and the high watermark (the lowest log end of the replicas), which releases
  acks=all answers and refreshes the slots. A batch that fails validation is never
  appended, nor anything after it: the high watermark stays below it and acks=all
  requests for it are never answered (no ISR shrink is modelled).
"""

from __future__ import annotations

from typing import Any

from kdlab.kafka.batches import BASE_OFFSET, check_batch
from kdlab.kafka.direct_broker import (
    QP_DEPTH,
    SLOT_BYTES,
    KdBroker,
    LocalSegment,
    ProduceLanded,
    PushLanded,
    ReplicaAck,
    WorkItem,
    committable,
    maybe_seal,
    new_segment,
    update_slots,
)
from kdlab.kafka.direct_push import PushRegion, push_queue
from kdlab.kafka.direct_replication import end_offset, held_batches, inject_flip, is_ack
from kdlab.kafka.records import CorruptBatch
from kdlab.ops import (
    Compute,
    ConnectQp,
    CreateCq,
    CreateQp,
    Lookup,
    Notify,
    PostRecv,
    PostSend,
    Publish,
    QueueGet,
    QueuePut,
    ReadMem,
    RegMr,
    WaitCq,
    WriteMem,
)
from kdlab.program import DatapathError
from kdlab.sendq import SendQueue
from kdlab.verbs import Opcode, QpCap, RecvWR, SendWR, WcOpcode


def rdma_thread(state: KdBroker, links: list[tuple[str, str]]) -> Any:
    """Set up a QP per link (kind "producer" | "consumer" | "broker", peer role name), then dispatch completions."""
    p = state.p
    recv_cq = yield CreateCq(2 * QP_DEPTH * max(1, len(links)))  # receives, and producers' ack completions
    state.slot_mr = yield RegMr(p.slot_consumers * p.slots_per_consumer * SLOT_BYTES)
    if p.produce_mode == "shared":
        state.produce_slots = yield RegMr(8 * len(state.slot_owner))
    for part in state.partitions.values():
        if part.leader:
            yield from new_segment(state, part)
    yield Publish(f"kd.{state.name}.setup", True)  # the control plane may hand out segments and slots now
    recv = RecvWR(0, [])
    # Two phases (create and publish every QP, then connect), so brokers that are each
    # other's peers never wait on each other.
    qps = []
    for kind, peer in links:
        if kind == "producer":  # every ack is signaled and completes on this thread's CQ
            qp = yield CreateQp(recv_cq, recv_cq, QpCap(QP_DEPTH, QP_DEPTH))
            sq = None
        else:
            send_cq = yield CreateCq(QP_DEPTH)  # each QP its own: SendQueue reaps it
            qp = yield CreateQp(send_cq, recv_cq, QpCap(QP_DEPTH, QP_DEPTH))
            sq = SendQueue(qp, send_cq, QP_DEPTH, f"{state.name}->{peer}")
        qps.append((kind, peer, qp, sq))
        state.qps[qp.qp_num] = qp
        mine = (qp.endpoint(), state.slot_mr.remote()) if kind == "broker" else qp.endpoint()
        yield Publish(f"kd.{state.name}.{peer}", mine)
    for kind, peer, qp, sq in qps:
        ep, ack_target = yield Lookup(f"kd.{peer}.{state.name}")
        if kind == "broker":
            state.peers[peer].sq, state.peers[peer].ack_target = sq, ack_target
            state.qp_peer[qp.qp_num] = state.peers[peer]
        elif kind == "producer":
            pid = int(peer.removeprefix("producer"))
            state.producer_qp[pid], state.ack_target[pid] = qp, ack_target
            state.qp_peer[qp.qp_num] = None
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
            yield PostRecv(state.qps[wc.qp_num], recv)
            item = _work_item(state, wc.qp_num, wc.imm_data)
            yield QueuePut(state.handler_queue(item.partition), item)


def _work_item(state: KdBroker, qp_num: int, imm: int) -> WorkItem:
    """What a receive completion asks of the handler: its QP names the sender, its immediate the segment or ack."""
    peer = state.qp_peer[qp_num]
    if peer is not None and is_ack(imm):
        index, held = state.codec.decode(imm)
        return ReplicaAck(peer.led_here[index], peer.name, held)
    local = state.segments.get(imm)
    if local is None:
        raise DatapathError(f"broker {state.name}: a write names segment {imm}, which this broker does not hold")
    if peer is None:
        state.pending += 1
        return ProduceLanded(local.part.partition, imm)
    return PushLanded(local.part.partition, imm)


def handler_thread(state: KdBroker, index: int) -> Any:
    """Commit what landed in this thread's partitions' segments, in position and segment order.

    A producer may write into the next segment before the last batches of the full one
    are committed (another producer's, or its own still being checked). Those wait in
    the partition's ``deferred`` until the earlier segment is sealed, so offsets are
    assigned in log order.
    """
    queue = f"{state.name}.h{index}"
    ack = SendWR(0, Opcode.RDMA_WRITE_WITH_IMM, [], signaled=False)
    while True:
        item = yield QueueGet(queue)
        if isinstance(item, ReplicaAck):
            yield from replica_acked(state, item, ack)
            continue
        local = state.segments[item.sid]
        if isinstance(item, PushLanded):
            yield from replica_append(state, local, ack)
            continue
        if isinstance(item, ProduceLanded):  # one more write completed in this segment
            local.landed += 1
        part = local.part
        if not committable(part, local):
            part.deferred.add(local.sid)
            continue
        part.deferred.discard(local.sid)
        yield from commit(state, local, ack)


def commit(state: KdBroker, local: LocalSegment, ack: SendWR) -> Any:
    """Commit the whole, valid batches from the segment's committed position on, in position order.

    No more batches than writes have completed (``landed``): a write still in flight may
    show its length and part of its bytes. An exclusive producer's writes complete in
    order, so a landed batch whose CRC fails is corrupt and fails the broker. With shared
    producers a later position may complete first, so a failing batch at the committed
    position may still be landing: commit stops and waits for the next completion (a
    batch that never becomes valid is never committed, and the partition stalls rather
    than deliver it).
    """
    part, seg = local.part, local.seg
    log = part.log
    shared = state.p.produce_mode == "shared"
    while seg.position + 12 <= seg.capacity and local.committed < local.landed:
        head = yield ReadMem(seg.mr, seg.position, 12)
        length = int.from_bytes(head[8:12], "big", signed=True)
        if length <= 0 or seg.position + 12 + length > seg.capacity:
            break
        data = yield ReadMem(seg.mr, seg.position, 12 + length)  # the batch in place: a mapped segment, no copy
        yield Compute("crc32c", len(data))  # analyzeAndValidateRecords: batch.ensureValid() (the CRC32C intrinsic)
        try:
            batch = check_batch(data)
        except CorruptBatch:
            if not shared:
                raise
            break
        if batch is None:
            break
        yield Compute("append", batch.records)  # Log.rdmaAppend: LogValidator per record, producer state, HW
        local.committed += 1
        yield WriteMem(seg.mr, seg.position, BASE_OFFSET.pack(log.leo))  # assign offsets in place
        entry = log.append(batch.size, batch.records, seg=seg)
        state.commits += 1
        followers = log.replicas[1:]
        for follower in followers:  # queue the push of this region (in offset order)
            region = PushRegion(follower, part.partition, local.sid, entry.position, entry.size, entry.last_offset + 1)
            yield QueuePut(push_queue(state, follower), region)
        if not followers:
            log.hw = log.leo
        yield from maybe_seal(state, part, local)
        yield from update_slots(state, part, local)
        if state.p.acks == -1 and followers:
            part.delayed.append((entry.last_offset, batch.producer_id, local))
        else:
            yield from ack_producer(state, batch.producer_id, local, ack)


def ack_producer(state: KdBroker, pid: int, local: LocalSegment, ack: SendWR) -> Any:
    """The broker's answer to a produce: a zero-length WRITE_WITH_IMM (immediate = segment id).

    Signaled: its completion, on the RDMA thread's CQ, tells that thread the produce is
    answered (the artifact's ``pendingRequests``), which is also what frees the send queue.
    """
    target = state.ack_target[pid]
    ack.remote_addr, ack.rkey, ack.imm_data = target.addr, target.rkey, local.sid
    ack.signaled = True
    yield PostSend(state.producer_qp[pid], ack)


def replica_append(state: KdBroker, local: LocalSegment, ack: SendWR) -> Any:
    """Follower: validate and append what the leader pushed (offsets already assigned), then ack.

    Only a whole, valid batch that starts at our log end is appended, so the log stays
    contiguous: after a corrupt batch nothing more is, in this push or a later one. The
    ack carries the batches we hold, not the push's end.
    """
    log, seg = local.part.log, local.seg
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
            batch = check_batch(data)
        except CorruptBatch:
            break
        if batch is None or batch.base_offset != log.leo:  # not landed yet, or past a batch we could not append
            break
        yield Compute("append", 0)  # rdmaAppend without assigning offsets: no LogValidator, the rest of the path
        log.append(batch.size, batch.records, seg=seg)
    leader = state.peers[log.replicas[0]]
    target = leader.ack_target
    ack.remote_addr, ack.rkey = target.addr, target.rkey
    ack.imm_data = state.codec.encode(leader.index[log.partition], log.batches)
    yield from leader.sq.post(ack)


def replica_acked(state: KdBroker, item: ReplicaAck, ack: SendWR) -> Any:
    """Leader: a follower acks a push; count it as held up to the follower's log end, move the high watermark.

    Acks come in push order; each confirms at most its push (the next confirms the rest).
    """
    part = state.partitions[item.partition]
    log, follower = part.log, item.follower
    progress = part.followers[follower]
    end = progress.pushed.popleft()
    peer = state.peers[follower]
    peer.outstanding -= 1
    if peer.outstanding == state.p.replication_request_quota - 1:
        yield Notify(f"{state.name}.pushq.{follower}")  # a push thread may be waiting for the quota
    mod = state.codec.held_mod
    held = held_batches(item.held, mod, progress.confirmed, log.batches, follower, item.partition)
    progress.confirmed = held
    end = min(end, end_offset(log, held))
    log.follower_leo[follower] = max(log.follower_leo.get(follower, 0), end)
    if not log.advance_hw(len(log.replicas)):
        return
    ready = [w for w in part.delayed if w[0] < log.hw]
    part.delayed = [w for w in part.delayed if w[0] >= log.hw]
    for _, pid, local in ready:
        yield from ack_producer(state, pid, local, ack)
    read = {id(slot.reading) for slot in part.readers.values() if slot.reading is not None}
    for local in part.segments:  # the high watermark moved in the segments consumers are reading
        if id(local) in read:
            yield from update_slots(state, part, local)
