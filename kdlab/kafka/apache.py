"""Apache Kafka's broker over TCP: request path, produce, fetch and the purgatories.

Kafka 2.x's request path: network threads read requests from their connections into a
bounded request queue (``queued.max.requests``), which wakes a parked I/O thread
(``host.queue_wakeup_ns``); I/O threads handle them. Every request costs what only the
socket path pays (``Compute("request")``: parsing, dispatch, response serialisation).

* **Produce** (:func:`_produce`): a request carries one batch per partition this broker
  leads. Each batch is CRC-checked outside the partition's lock, then appended under it
  (:func:`_append_locked`: LogValidator and producer state, ``Compute("append")``, and a
  copy into the page cache); acks=1 answers at once, acks=all parks the answer in the
  produce purgatory until the high watermark of *every* partition in the request covers
  its batch.
* **Fetch** (:func:`_fetch`): a request asks for several partitions, each from its
  offset; the broker reads them in the request's order, whole batches below the high
  watermark (consumers) or the log end (followers), each up to its partition limit and
  all under the response limit, the first batch of the first partition with data even if
  it is larger (``minOneMessage``). Sent with ``sendfile`` (no copy), or parked in the
  fetch purgatory until ``min_bytes`` are there or ``max_wait`` expires. A follower's
  fetch tells the leader its log end, and the high watermark follows.

A connection has one request in the broker at a time (Kafka mutes it until the response
is queued), so a client's later in-flight requests wait their turn; the unmute happens
at the answering thread's own time, not before (:func:`_done`). Appends to one partition
hold the partition's log lock, so they never overlap.

A response goes back to its connection's network thread with a selector wake-up
(``Compute("handoff")``) when that thread sleeps in its poll. Simplification, stated:
the thread that completes a response (I/O thread or purgatory) then sends it itself,
so the send's CPU is counted in that thread's class. The purgatory stands for work
Kafka does on the appending thread (``tryCompleteDelayedRequests``), so its
notification costs no wake-up on JVM profiles (``host.notify_ns``).

Clients: :mod:`kdlab.kafka.sender` (producer), :mod:`kdlab.kafka.fetcher` (consumer);
followers: :mod:`kdlab.kafka.replica_fetcher`; messages: :mod:`kdlab.kafka.protocol`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.batches import check_batch
from kdlab.kafka.log import PartitionLog
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.protocol import (
    Fetch,
    FetchReply,
    FetchRequest,
    FetchResponse,
    Produce,
    ProduceAck,
    ProduceRequest,
    ProduceResponse,
    as_request,
)
from kdlab.kafka.records import CorruptBatch, assign_offsets
from kdlab.ops import (
    Clock,
    Compute,
    FileFlush,
    FileRead,
    FileWrite,
    Notify,
    QueueGet,
    QueuePut,
    Sleep,
    TcpAccept,
    TcpListen,
    TcpRecv,
    TcpSend,
    WaitNotify,
)

__all__ = ["BrokerState", "Fetch", "FetchReply", "Produce", "ProduceAck", "io_thread", "network_thread", "purgatory"]


@dataclass(eq=False)
class DelayedProduce:
    """An acks=all answer waiting until each partition's high watermark passes its batch's last offset."""

    conn: Any
    response: ProduceResponse
    waiting: dict[int, int]  # partition -> last offset of its batch


@dataclass(eq=False)
class DelayedFetch:
    deadline_ns: float
    conn: Any
    request: FetchRequest
    fid: int = 0  # its key in BrokerState.delayed_fetch


@dataclass
class BrokerState:
    """What the threads of one broker share: its logs, purgatories and muted connections."""

    name: str
    logs: dict[int, PartitionLog]
    isr_size: dict[int, int]
    parked: dict[int, deque[tuple[Any, Any]]] = field(default_factory=dict)  # conn id -> requests waiting
    busy: set[int] = field(default_factory=set)  # conns with a request in the broker
    delayed_produce: list[DelayedProduce] = field(default_factory=list)
    delayed_fetch: dict[int, DelayedFetch] = field(default_factory=dict)  # parked fetches by id
    watching: dict[int, set[int]] = field(default_factory=dict)  # partition -> parked fetches that ask for it
    deadlines: list[tuple[float, int]] = field(default_factory=list)  # heap of (deadline, fetch id)
    changed: set[int] = field(default_factory=set)  # partitions with new data since the purgatory looked
    fetches_parked: int = 0
    requests: int = 0
    purgatory_dirty: bool = False
    net_of: dict[int, int] = field(default_factory=dict)  # conn id -> the network thread that serves it
    net_polling: set[int] = field(default_factory=set)  # network threads asleep in their poll (TcpRecv)
    log_locks: set[int] = field(default_factory=set)  # partitions whose log lock token exists
    read_extents: list[tuple[int, int]] = field(default_factory=list)  # the last _fetch_reply's (token, bytes)


# --- request path -------------------------------------------------------------------------


def network_thread(p: KafkaParams, state: BrokerState, index: int, clients: int) -> Any:
    """Accept this thread's ``clients`` connections, then read requests into the request queue."""
    listener = yield TcpListen(f"{state.name}.net{index}")
    conns = []
    for _ in range(clients):
        conns.append((yield TcpAccept(listener)))
        state.net_of[conns[-1].conn_id] = index
    queue = f"{state.name}.requests"
    while True:
        state.net_polling.add(index)
        got = yield TcpRecv(conns)
        state.net_polling.discard(index)
        if got is None:
            continue
        conn, request = got
        yield Compute("alloc", as_request(request).nbytes)  # NetworkReceive: a heap buffer of the request's size
        if conn.conn_id in state.busy:  # muted: wait until the previous response is out
            state.parked.setdefault(conn.conn_id, deque()).append((conn, request))
            continue
        state.busy.add(conn.conn_id)
        yield QueuePut(queue, (conn, request), capacity=p.queued_max_requests)


def io_thread(p: KafkaParams, state: BrokerState) -> Any:
    """Handle requests: produce appends, fetches answer or wait."""
    queue = f"{state.name}.requests"
    while True:
        conn, request = yield QueueGet(queue)
        state.requests += 1
        yield Compute("request")  # what only the socket path pays: parsing, dispatch, response serialisation
        request = as_request(request)
        if isinstance(request, ProduceRequest):
            yield from _produce(p, state, conn, request)
        else:
            yield from _fetch(p, state, conn, request)


# --- produce ------------------------------------------------------------------------------


def _produce(p: KafkaParams, state: BrokerState, conn: Any, req: ProduceRequest) -> Any:
    acks: list[ProduceAck] = []
    waiting: dict[int, int] = {}
    for batch in req.batches:
        # validate the batch: its CRC and framing. Kafka 2.2 does this in Log.analyzeAndValidateRecords
        # (batch.ensureValid()), before Log.append takes the partition's lock, so it is outside the lock here too.
        yield Compute("crc32c", len(batch.data))
        try:
            valid = check_batch(batch.data) is not None
        except CorruptBatch:
            valid = False
        if not valid:
            acks.append(ProduceAck(batch.partition, -1, "CORRUPT_MESSAGE"))
            continue
        entry = yield from _append_locked(p, state, batch)
        yield from _data_changed(state, (batch.partition,))
        acks.append(ProduceAck(batch.partition, entry.base_offset))
        waiting[batch.partition] = entry.last_offset
    response = ProduceResponse(acks)
    alone = [q for q in waiting if state.isr_size[q] == 1]  # the leader is the only in-sync replica
    if any([state.logs[q].advance_hw(1) for q in alone]):
        yield from _data_changed(state, alone)
    if req.acks == 0:
        yield from _done(state, conn)
        return
    if req.acks == 1 or all(state.logs[q].hw > last for q, last in waiting.items()):
        yield from _respond(state, conn, response, response.nbytes)
    else:
        state.delayed_produce.append(DelayedProduce(conn, response, waiting))


def _append_locked(p: KafkaParams, state: BrokerState, batch: Produce) -> Any:
    """The leader's append under the partition's log lock -> the appended entry.

    Kafka 2.2, Log.append (core/src/main/scala/kafka/log/Log.scala): ``lock synchronized { ... }``
    covers offset assignment (``nextOffsetMetadata``), LogValidator.validateMessagesAndAssignOffsets,
    ``segment.append`` (the copy into the page cache), producer state and the log end offset. So
    appends to one partition are serial whichever I/O threads (and connections) they come from.

    The lock is a token in a per-partition queue: taking it is a QueueGet (free when the token is
    there at the thread's own time; contended, the thread parks and is woken at the holder's release,
    a futex wake as for an inflated JVM monitor), releasing it is a QueuePut at the holder's own time,
    after its charged append work. So no two appends to a partition overlap in simulated time.
    """
    lock = f"{state.name}.log{batch.partition}.lock"
    if batch.partition not in state.log_locks:  # the token is made by the partition's first append
        state.log_locks.add(batch.partition)
        yield QueuePut(lock, True)
    # Take it at this thread's own time: a thread running ahead of the simulator clock (CPU debt)
    # would otherwise take the token back, in the simulator's order of events, before the threads
    # that waited for it since its release are woken, and keep the lock for one connection's
    # burst while they starve. Caught up (a wait, no CPU), threads take it in the order of their time.
    yield Sleep(0.0)
    yield QueueGet(lock)
    log = state.logs[batch.partition]
    yield Compute("append", batch.records)  # the append path KafkaDirect's commit pays too: LogValidator, state
    yield Compute("copy", len(batch.data))  # append to the page cache, with the offsets assigned
    # The kernel's side of that write: over vm.dirty_ratio it blocks (under the lock, as FileChannel.write
    # does) until write-back makes room (docs/storage.md). The token says later whether it is still cached.
    stored = yield FileWrite(len(batch.data))
    entry = log.append(len(batch.data), batch.records, assign_offsets(batch.data, log.leo))
    entry.stored = stored
    yield from flush_if_due(p, log)
    yield QueuePut(lock, True)  # released at this thread's time, when its append work is done
    return entry


def flush_if_due(p: KafkaParams, log: PartitionLog) -> Any:
    """Log.append's flush: with ``log.flush.interval.messages`` records unflushed, fsync (under the lock)."""
    if p.flush_messages is not None and log.leo - log.flushed >= p.flush_messages:
        yield FileFlush()
        log.flushed = log.leo


def _complete_delayed_produce(state: BrokerState, advanced: set[int]) -> Any:
    """Answer the parked acks=all requests whose partitions are now all below the high watermark."""
    ready, still = [], []
    for d in state.delayed_produce:
        covered = not advanced.isdisjoint(d.waiting) and all(state.logs[q].hw > last for q, last in d.waiting.items())
        (ready if covered else still).append(d)
    state.delayed_produce = still  # before answering: another thread may complete requests meanwhile
    for d in ready:
        yield from _respond(state, d.conn, d.response, d.response.nbytes)


# --- fetch --------------------------------------------------------------------------------


def _fetch(p: KafkaParams, state: BrokerState, conn: Any, req: FetchRequest) -> Any:
    if req.replica is not None:  # a follower's fetch offsets are its log ends: the high watermark may follow
        advanced = set()
        for part in req.partitions:
            log = state.logs[part.partition]
            log.follower_leo[req.replica] = part.offset
            if log.advance_hw(state.isr_size[part.partition]):
                advanced.add(part.partition)
        if advanced:
            yield from _complete_delayed_produce(state, advanced)
            yield from _data_changed(state, advanced)
    reply = _fetch_reply(state, req)
    if reply.data_bytes >= req.min_bytes or req.max_wait_ns <= 0:
        yield from _send_fetched(state, conn, reply)
    else:
        now = yield Clock()
        _park(state, DelayedFetch(now + req.max_wait_ns, conn, req))
        yield from _data_changed(state, ())  # the purgatory's next deadline may be this one


def _fetch_reply(state: BrokerState, req: FetchRequest) -> FetchResponse:
    """ReplicaManager.readFromLocalLog: the partitions in order, each up to its limit, all up to the request's.

    A consumer reads below the high watermark, a follower below the log end. The first batch of
    the first partition that has one is returned even above the limits (``minOneMessage``); after
    that a partition whose next batch does not fit what is left returns nothing.
    """
    left, min_one = req.max_bytes, True
    out = []
    extents = state.read_extents = []  # where the batches lie in the host's files: read by _send_fetched
    for part in req.partitions:
        log = state.logs[part.partition]
        upto = log.leo if req.replica is not None else log.hw
        limit = min(part.max_bytes, left)
        entries = log.read(part.offset, limit, upto)
        if entries and not min_one and entries[0].size > limit:
            entries = []
        batches = [e.data for e in entries if e.data is not None]
        extents += [(e.stored, e.size) for e in entries if e.stored]
        if batches:
            min_one = False
            left = max(0, left - sum(len(b) for b in batches))
        out.append(FetchReply(part.partition, batches, log.hw, log.leo))
    return FetchResponse(out)


def _send_fetched(state: BrokerState, conn: Any, reply: FetchResponse) -> Any:
    """Send a fetch response with sendfile; bytes that have left the page cache are read from the device first.

    ``state.read_extents`` is the reply's, set by :func:`_fetch_reply` in the same atomic step.
    """
    if state.read_extents:
        yield FileRead(state.read_extents)
    yield from _respond(state, conn, reply, reply.nbytes, zero_copy=True)


def purgatory(p: KafkaParams, state: BrokerState) -> Any:
    """Answer delayed fetches once they have ``min_bytes`` or their wait expired.

    As Kafka's DelayedOperationPurgatory, a parked fetch is watched by the partitions it
    asks for: new data in a partition re-checks only the fetches watching it, so the
    work per append does not grow with the fetches parked on other partitions.
    """
    while True:
        if not state.purgatory_dirty:
            while state.deadlines and state.deadlines[0][1] not in state.delayed_fetch:
                heapq.heappop(state.deadlines)  # answered before its deadline
            now = yield Clock()
            timeout = max(0.0, state.deadlines[0][0] - now) if state.deadlines else None
            yield WaitNotify(f"{state.name}.data", timeout_ns=timeout)
        state.purgatory_dirty = False
        now = yield Clock()
        due = set()
        for q in state.changed:
            due |= state.watching.get(q, set())
        state.changed.clear()
        while state.deadlines and state.deadlines[0][0] <= now:
            due.add(heapq.heappop(state.deadlines)[1])
        for fid in sorted(due):  # in the order they were parked
            d = state.delayed_fetch.get(fid)
            if d is None:
                continue
            reply = _fetch_reply(state, d.request)
            if reply.data_bytes >= d.request.min_bytes or now >= d.deadline_ns:
                _unpark(state, d)
                yield from _send_fetched(state, d.conn, reply)


def _park(state: BrokerState, d: DelayedFetch) -> None:
    state.fetches_parked += 1
    d.fid = state.fetches_parked
    state.delayed_fetch[d.fid] = d
    for part in d.request.partitions:
        state.watching.setdefault(part.partition, set()).add(d.fid)
    heapq.heappush(state.deadlines, (d.deadline_ns, d.fid))


def _unpark(state: BrokerState, d: DelayedFetch) -> None:
    del state.delayed_fetch[d.fid]
    for part in d.request.partitions:
        state.watching[part.partition].discard(d.fid)


# --- responses ----------------------------------------------------------------------------


def _data_changed(state: BrokerState, partitions: Iterable[int]) -> Any:
    """Tell the purgatory that ``partitions`` have new data (the flag covers a notify it was too busy to see)."""
    state.changed.update(partitions)
    state.purgatory_dirty = True
    yield Notify(f"{state.name}.data")


def _respond(state: BrokerState, conn: Any, message: Any, nbytes: int, zero_copy: bool = False) -> Any:
    if hasattr(conn, "reply"):  # a two-sided RDMA peer (OSU): its own send path
        yield from conn.reply(message, nbytes)
    else:
        if state.net_of.get(conn.conn_id) in state.net_polling:
            yield Compute("handoff")  # back to the network thread asleep in its poll: Selector.wakeup()
        yield TcpSend(conn, message, nbytes, zero_copy=zero_copy)
    yield from _done(state, conn)


def _done(state: BrokerState, conn: Any) -> Any:
    """The connection's request is answered: let its next request in (unmute).

    Kafka 2.2 SocketServer.scala: the Processor mutes a connection when it has read a request
    (``selector.mute`` in processCompletedReceives) and unmutes it only once the response is sent
    (``selector.unmute`` in processCompletedSends, or processNewResponses for NoOpAction), so one
    connection's requests are handled strictly one after another.

    The unmute must happen at this thread's own time (the simulator clock plus its CPU debt: the
    response was sent after all the work charged for the request), not at the simulator clock. A
    parked request is queued by QueuePut, which is time-stamped with this thread's time. But with
    none parked yet, dropping the mute is a plain change of shared state that a network thread
    would see at once: one whose own time is still before our response would read the
    connection's next request and queue it to another I/O thread while this one is still
    handling the current request, so one connection's requests overlapped. So the thread first
    catches up with its own time (``Sleep(0)``: a wait, no CPU), then looks again for a request
    parked meanwhile.
    """
    waiting = state.parked.get(conn.conn_id)
    if not waiting:
        yield Sleep(0.0)
        waiting = state.parked.get(conn.conn_id)
    if waiting:
        yield QueuePut(f"{state.name}.requests", waiting.popleft())
    else:
        state.busy.discard(conn.conn_id)
