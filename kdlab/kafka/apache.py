"""Apache Kafka over TCP: the baseline's produce, pull replication and fetch paths.

Brokers (Kafka 2.x request path): network threads read requests from their
connections into a bounded request queue (``queued.max.requests``), which wakes a
parked I/O thread (``host.queue_wakeup_ns``); I/O threads handle them: every request
costs what only the socket path pays (``Compute("request")``: parsing, dispatch,
response serialisation), a produce request a CRC-32C pass, the append path that
KafkaDirect's commit pays too (``Compute("append")``: LogValidator per record,
producer state, high watermark) and a copy into the page cache; then the leader
assigns offsets and answers (acks=1) or parks the answer in purgatory until the high
watermark covers the batch (acks=all). A fetch answers with whole batches below the high
watermark (consumers) or the log end (followers) using ``sendfile`` (no copy), or
waits in purgatory for ``fetch.min.bytes`` up to ``fetch.max.wait.ms``.
A connection has one request in the broker at a time (Kafka mutes it until the
response is queued), so a client's later in-flight requests wait their turn; the
unmute happens at the answering thread's own time, not before (:func:`_done`).
Appends to one partition hold the partition's log lock (:func:`_append_locked`), so
they never overlap; the batch's CRC check is done before, outside the lock.
Followers pull with one replica fetcher; the leader learns a follower's log end
from its next fetch, and the high watermark follows.

A response goes back to its connection's network thread with a selector wake-up
(``Compute("handoff")``) when that thread sleeps in its poll. Simplification, stated:
the thread that completes a response (I/O thread or purgatory) then sends it itself,
so the send's CPU is counted in that thread's class. The purgatory stands for work
Kafka does on the appending thread (``tryCompleteDelayedRequests``), so its
notification costs no wake-up on JVM profiles (``host.notify_ns``).

The client side (producer and consumer) is :mod:`kdlab.kafka.clients`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.batches import check_batch
from kdlab.kafka.log import PartitionLog
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.records import CorruptBatch, assign_offsets
from kdlab.ops import (
    Clock,
    Compute,
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
from kdlab.program import DatapathError

#: Wire bytes of request and response headers (Kafka 2.x, one topic and partition:
#: request header ~ 40 B + client id + topic name; response ~ 58 B + topic name).
PRODUCE_REQUEST_OVERHEAD = 68
PRODUCE_RESPONSE_BYTES = 68
FETCH_REQUEST_BYTES = 80
FETCH_RESPONSE_OVERHEAD = 90


@dataclass
class Produce:
    partition: int
    data: bytes
    records: int
    acks: int


@dataclass
class ProduceAck:
    partition: int
    base_offset: int
    error: str | None = None


@dataclass
class Fetch:
    partition: int
    offset: int
    max_bytes: int
    min_bytes: int
    max_wait_ns: float
    replica: str | None = None  # a follower's broker name; None for consumers


@dataclass
class FetchReply:
    partition: int
    batches: list[bytes]
    hw: int
    log_end: int


@dataclass
class BrokerState:
    """What the threads of one broker share: its logs, purgatories and muted connections."""

    name: str
    logs: dict[int, PartitionLog]
    isr_size: dict[int, int]
    parked: dict[int, deque[tuple[Any, Any]]] = field(default_factory=dict)  # conn id -> requests waiting
    busy: set[int] = field(default_factory=set)  # conns with a request in the broker
    delayed_produce: dict[int, list[tuple[int, Any, ProduceAck]]] = field(default_factory=dict)
    delayed_fetch: list[tuple[float, Any, Fetch]] = field(default_factory=list)
    requests: int = 0
    purgatory_dirty: bool = False
    net_of: dict[int, int] = field(default_factory=dict)  # conn id -> the network thread that serves it
    net_polling: set[int] = field(default_factory=set)  # network threads asleep in their poll (TcpRecv)
    log_locks: set[int] = field(default_factory=set)  # partitions whose log lock token exists


# --- broker -----------------------------------------------------------------------------


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
        if isinstance(request, Produce):
            yield from _produce(p, state, conn, request)
        else:
            yield from _fetch(p, state, conn, request)


def _produce(p: KafkaParams, state: BrokerState, conn: Any, req: Produce) -> Any:
    log = state.logs[req.partition]
    size = len(req.data)
    # validate the batch: its CRC and framing. Kafka 2.2 does this in Log.analyzeAndValidateRecords
    # (batch.ensureValid()), before Log.append takes the partition's lock, so it is outside the lock here too.
    yield Compute("crc32c", size)
    try:
        valid = check_batch(req.data) is not None
    except CorruptBatch:
        valid = False
    if not valid:
        yield from _respond(state, conn, ProduceAck(req.partition, -1, "CORRUPT_MESSAGE"), PRODUCE_RESPONSE_BYTES)
        return
    entry = yield from _append_locked(state, req)
    yield from _data_changed(state)
    ack = ProduceAck(req.partition, entry.base_offset)
    if req.acks == 0:
        yield from _done(state, conn)
    elif req.acks == 1 or state.isr_size[req.partition] == 1:
        if state.isr_size[req.partition] == 1:
            log.advance_hw(1)
            yield from _data_changed(state)
        yield from _respond(state, conn, ack, PRODUCE_RESPONSE_BYTES)
    else:
        state.delayed_produce.setdefault(req.partition, []).append((entry.last_offset, conn, ack))


def _append_locked(state: BrokerState, req: Produce) -> Any:
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
    lock = f"{state.name}.log{req.partition}.lock"
    if req.partition not in state.log_locks:  # the token is made by the partition's first append
        state.log_locks.add(req.partition)
        yield QueuePut(lock, True)
    # Take it at this thread's own time: a thread running ahead of the simulator clock (CPU debt)
    # would otherwise take the token back, in the simulator's order of events, before the threads
    # that waited for it since its release are woken, and keep the lock for one connection's
    # burst while they starve. Caught up (a wait, no CPU), threads take it in the order of their time.
    yield Sleep(0.0)
    yield QueueGet(lock)
    log = state.logs[req.partition]
    yield Compute("append", req.records)  # the append path KafkaDirect's commit pays too: LogValidator, state
    yield Compute("copy", len(req.data))  # append to the page cache, with the offsets assigned
    entry = log.append(len(req.data), req.records, assign_offsets(req.data, log.leo))
    yield QueuePut(lock, True)  # released at this thread's time, when its append work is done
    return entry


def _fetch(p: KafkaParams, state: BrokerState, conn: Any, req: Fetch) -> Any:
    log = state.logs[req.partition]
    if req.replica is not None:
        log.follower_leo[req.replica] = req.offset
        if log.advance_hw(state.isr_size[req.partition]):
            yield from _complete_delayed_produce(state, req.partition)
            yield from _data_changed(state)
    reply, nbytes = _fetch_reply(log, req)
    if nbytes >= req.min_bytes or req.max_wait_ns <= 0:
        yield from _respond(state, conn, reply, FETCH_RESPONSE_OVERHEAD + nbytes, zero_copy=True)
    else:
        now = yield Clock()
        state.delayed_fetch.append((now + req.max_wait_ns, conn, req))
        yield from _data_changed(state)


def _data_changed(state: BrokerState) -> Any:
    """Tell the purgatory to look again (the flag covers a notify it was too busy to see)."""
    state.purgatory_dirty = True
    yield Notify(f"{state.name}.data")


def _fetch_reply(log: PartitionLog, req: Fetch) -> tuple[FetchReply, int]:
    upto = log.leo if req.replica is not None else log.hw
    entries = log.read(req.offset, req.max_bytes, upto)
    batches = [e.data for e in entries if e.data is not None]
    return FetchReply(req.partition, batches, log.hw, log.leo), sum(len(b) for b in batches)


def _complete_delayed_produce(state: BrokerState, partition: int) -> Any:
    waiting = state.delayed_produce.get(partition, [])
    hw = state.logs[partition].hw
    ready = [w for w in waiting if w[0] < hw]
    state.delayed_produce[partition] = [w for w in waiting if w[0] >= hw]
    for _, conn, ack in ready:
        yield from _respond(state, conn, ack, PRODUCE_RESPONSE_BYTES)


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


def purgatory(p: KafkaParams, state: BrokerState) -> Any:
    """Answer delayed fetches once they have ``fetch.min.bytes`` or their wait expired."""
    while True:
        if not state.purgatory_dirty:
            deadline = min((d for d, _, _ in state.delayed_fetch), default=None)
            now = yield Clock()
            timeout = None if deadline is None else max(0.0, deadline - now)
            yield WaitNotify(f"{state.name}.data", timeout_ns=timeout)
        state.purgatory_dirty = False
        now = yield Clock()
        pending, state.delayed_fetch = state.delayed_fetch, []
        still = []
        for deadline_ns, conn, req in pending:
            reply, nbytes = _fetch_reply(state.logs[req.partition], req)
            if nbytes >= req.min_bytes or now >= deadline_ns:
                yield from _respond(state, conn, reply, FETCH_RESPONSE_OVERHEAD + nbytes, zero_copy=True)
            else:
                still.append((deadline_ns, conn, req))
        state.delayed_fetch.extend(still)  # fetches parked while we answered stay parked


def replica_fetcher(p: KafkaParams, state: BrokerState, leader: str, partitions: list[int], net: int) -> Any:
    """A follower's replica fetcher: pull from the leader, append, repeat (replica.fetch.*)."""
    from kdlab.ops import TcpConnect

    conn = yield TcpConnect(f"{leader}.net{net}")
    per = p.records_per_batch
    total = {q: -(-p.records_total // per) * per * producers_of(p, q) for q in partitions}
    while any(state.logs[q].leo < total[q] for q in partitions):
        for q in partitions:
            log = state.logs[q]
            if log.leo >= total[q]:
                continue
            fetch = Fetch(q, log.leo, 1024 * 1024, 1, 500e6, replica=state.name)
            yield TcpSend(conn, fetch, FETCH_REQUEST_BYTES)
            _, reply = yield TcpRecv(conn)
            for data in reply.batches:
                yield Compute("crc32c", len(data))
                info = check_batch(data)
                if info is None:
                    raise DatapathError(f"{state.name}: replica fetch of partition {q} returned a corrupt batch")
                yield Compute("append", 0)  # a follower's append: no LogValidator, the rest of the path
                yield Compute("copy", len(data))
                log.append(len(data), info.records, data)
            log.hw = max(log.hw, min(reply.hw, log.leo))
    # one last fetch tells the leader our final log end, so its high watermark completes
    for q in partitions:
        yield TcpSend(conn, Fetch(q, state.logs[q].leo, 1024 * 1024, 1, 0.0, replica=state.name), FETCH_REQUEST_BYTES)
        yield TcpRecv(conn)
    return None


def producers_of(p: KafkaParams, partition: int) -> int:
    """How many producers write to ``partition`` (producer i writes partition i mod partitions)."""
    return sum(1 for i in range(p.producers) if i % p.partitions == partition)
