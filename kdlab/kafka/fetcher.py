"""Kafka's consumer: a group member's Fetcher over the partitions assigned to it.

Kafka 2.x (``KafkaConsumer``, ``Fetcher``): the group assigns the consumer its
partitions (:meth:`~kdlab.kafka.topology.Topology.consumers`: range or round-robin).
The Fetcher sends *one* FetchRequest per leader broker covering every assigned
partition that broker leads, each from the consumer's position with
``max.partition.fetch.bytes``, the response at most ``fetch.max.bytes``, waiting up to
``fetch.max.wait.ms`` for ``fetch.min.bytes``; it never has a second fetch outstanding to
a broker, so a consumer whose partitions lie on several brokers waits on all its
connections at once and answers whichever comes first. Partitions that returned data
move to the end of the next request (fair fetching under ``fetch.max.bytes``).

Each batch handed up costs the consumer a CRC pass (``check.crcs``) and a copy
(deserialisation). Every fetch request is timed as the artifact's instrumented Fetcher
does, from before the request is built to the response handled, in
``fetch_data_latency_ns`` if it carried a batch and ``fetch_empty_latency_ns`` if not.

**Start**: at once (tailing); with ``consume_after_produce`` once every producer that may
write its partitions is done (``done{pid}``).

**Backlog** (``backlog_bytes``, OMB's ``consumerBacklogSizeGB`` in bytes; OMB's
``WorkloadGenerator.buildAndDrainBacklog``): the consumer reads from the start, through
the warm-up; at the warm-up's end (the last producer's start, ``start{pid}``, +
``warmup_ms``) it pauses (``KafkaConsumer.pause``): no new fetch; the fetches already out
complete (timed when they arrive) and their records are kept for after the resume. It
resumes when every producer of the run has published ``backlog{pid}``
(:class:`kdlab.kafka.sender.Backlog`): each has had its share acknowledged since its
warm-up's end, ``backlog_bytes / (groups x producers x topics)`` bytes of records
(records x ``record_bytes``, as OMB counts ``subscriptions x sent - received`` in
``messageSize`` units), so ``backlog_bytes`` is the backlog over the topic's
subscriptions; the producers keep producing at their rate meanwhile. A producer whose
test ends first (kdlab's producers stop at ``warmup_ms + duration_ms``; OMB's would keep
producing) publishes at its end, and the consumers then drain what there is. While
paused, the consumer looks for the publications every :data:`POLL_NS` while a fetch of
its is out, and waits for them otherwise. Then it reads to the end, as fast as it can.
``t_first_ns`` is the resume if it paused before its first fetch.

**End**: when every assigned partition has been read to its end. The end is known in
advance where each writer's records all go to one partition (``ends``, closed-loop runs
of KafkaDirect-style ``fixed`` producers); otherwise the consumer learns it from the
producers' ``produced{pid}`` (published as soon as a producer's application is done),
which it peeks at (``Lookup(wait=False)``) each time a response leaves it caught up with
the high watermark, and, while it is caught up with a fetch parked at a broker, every
:data:`POLL_NS` from the producers' scheduled end (``warmup_ms + duration_ms`` after its
start; from the start in a run of a fixed record count), since no more data may come to
wake that fetch. It stops as soon as it has the ends and has read to them: a fetch
still parked then is left to the broker (daemon threads), not waited for. Then
``t_last_ns`` is when the last batch was handed up, not the last (empty) fetch's return.

Result: ``records``, ``delivered`` (per batch: producer id, base sequence, records, base
offset, timestamp, CRC, partition), ``received`` (per batch: partition, records, first and
max timestamp, the time its response was handled), ``e2e_latency_ns`` (per batch,
response handled - first timestamp), the fetch latencies, ``catchup_latency_ns``
(EndToEndLatency), ``t_first_ns``, ``t_last_ns``.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.batch_log import DELIVERED, RECEIVED, BatchLog
from kdlab.kafka.batches import check_batch
from kdlab.kafka.clients import EndToEnd, delivery, handed_up
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.protocol import Fetch, FetchRequest, FetchResponse
from kdlab.kafka.topology import Consumer
from kdlab.ops import Clock, Compute, Lookup
from kdlab.program import DatapathError

POLL_NS = 50_000.0
"""How often a consumer blocked on a parked fetch looks for a publication it needs (the producers' ends, or the
backlog built): a role cannot wait on its links and on a publication at once."""


@dataclass
class ConsumerStats:
    delivered: BatchLog = field(default_factory=lambda: BatchLog(DELIVERED))
    received: BatchLog = field(default_factory=lambda: BatchLog(RECEIVED))
    e2e_ns: array = field(default_factory=lambda: array("d"))
    fetch_ns: array = field(default_factory=lambda: array("d"))
    with_data: list[float] = field(default_factory=list)
    empty: list[float] = field(default_factory=list)
    catchup: list[float] = field(default_factory=list)
    records: int = 0


class Positions:
    """The consumer's partitions: position, what the leader said of them, and where they end."""

    def __init__(self, me: Consumer, leaders: dict[int, str], ends: dict[int, int] | None) -> None:
        self.offset = dict.fromkeys(me.partitions, 0)
        self.hw = dict.fromkeys(me.partitions, 0)
        self.end: dict[int, int] = dict(ends or {})
        self.order: dict[str, list[int]] = {}
        for q in me.partitions:
            self.order.setdefault(leaders[q], []).append(q)

    def finished(self, q: int) -> bool:
        return q in self.end and self.offset[q] >= self.end[q]

    def to_fetch(self, broker: str) -> list[int]:
        return [q for q in self.order[broker] if not self.finished(q)]

    @property
    def done(self) -> bool:
        return all(self.finished(q) for q in self.offset)

    @property
    def caught_up(self) -> bool:
        return all(self.offset[q] >= self.hw[q] for q in self.offset)

    def rotate(self, broker: str, with_data: set[int]) -> None:
        """Partitions that returned data go to the end of the next request."""
        parts = self.order[broker]
        self.order[broker] = [q for q in parts if q not in with_data] + [q for q in parts if q in with_data]


def consumer(p: KafkaParams, me: Consumer, leaders: dict[int, str], links: Any, writers: list[int],
             ends: dict[int, int] | None = None, e2e: EndToEnd | None = None) -> Any:  # fmt: skip
    """Read ``me``'s partitions from offset 0 to their end (see the module's docstring)."""
    yield from links.connect()
    produced: dict[int, dict[int, int]] = {}
    pause_at = None
    if p.consume_after_produce:
        for pid in writers:
            produced[pid] = yield Lookup(f"done{pid}")
    elif p.backlog_bytes and e2e is None:
        pause_at = yield from backlog_pause_at(p)
    pos = Positions(me, leaders, ends)
    if produced:
        pos.end = _ends(me, produced)
    stats = ConsumerStats()
    t_first = yield Clock()
    t_last = t_first
    poll_from = t_first + (p.warmup_ms + p.duration_ms) * 1e6  # when the producers' applications end
    outstanding: dict[str, float] = {}  # broker -> when its fetch was built
    fetched = False
    now = t_first
    max_wait = p.fetch_max_wait_ms * 1e6
    while not pos.done:
        if pause_at is not None and (yield Clock()) >= pause_at:
            held = yield from _paused(p, links, outstanding, stats)
            pause_at = None
            now = yield Clock()
            if not fetched:
                t_first = now
            for broker, response in held:  # the records fetched before the pause, handed up at the resume
                with_data = yield from _hand_up(p, pos, response, now, stats, e2e)
                pos.rotate(broker, with_data)
                if with_data and ends is None:
                    t_last = now
            if len(pos.end) < len(pos.offset) and pos.caught_up:
                yield from _peek_ends(me, writers, produced, pos)
            continue
        for broker in pos.order:
            parts = pos.to_fetch(broker)
            if broker in outstanding or not parts:
                continue
            if e2e is not None:
                yield from e2e.wait_ack(len(stats.delivered))  # EndToEndLatency polls only once get() returned
            outstanding[broker] = yield Clock()  # Fetcher.sendFetches(): before the request is built
            fetched = True
            fetches = [Fetch(q, pos.offset[q], p.fetch_bytes) for q in parts]
            request = FetchRequest(fetches, p.fetch_max_bytes, p.fetch_min_bytes, max_wait)
            yield Compute("fetch_request")  # Fetcher.sendFetches: the FetchRequest built and serialised
            yield from links.send(broker, request, request.nbytes)
        timeout = None
        ends_unknown = len(pos.end) < len(pos.offset)
        parked = ends_unknown and pos.caught_up and e2e is None  # no more data may come to wake its fetch
        if pause_at is not None:
            now = yield Clock()
            timeout = pause_at - now
        if parked:  # ``now``: as of the last response or time-out (a Clock per round would cost the thread a sync)
            poll = max(poll_from - now, POLL_NS)
            timeout = poll if timeout is None else min(timeout, poll)
        got = yield from links.recv(timeout)
        if got is None:  # the pause is due, or time to look for the producers' ends
            now += timeout
            if ends_unknown and pos.caught_up:
                yield from _peek_ends(me, writers, produced, pos)
            continue
        broker, response = got
        now = yield Clock()  # the response handled (records are parsed later, in fetchedRecords)
        yield Compute("alloc", response.nbytes + response.data_bytes)  # NetworkReceive, then deserialised values
        _timed(stats, now - outstanding.pop(broker), response)
        with_data = yield from _hand_up(p, pos, response, now, stats, e2e)
        pos.rotate(broker, with_data)
        if with_data and ends is None:
            t_last = now
        if len(pos.end) < len(pos.offset) and pos.caught_up:  # the end is not known yet: have the producers finished?
            yield from _peek_ends(me, writers, produced, pos)
    if ends is not None or not stats.delivered:
        t_last = yield Clock()
    return {"records": stats.records, "delivered": stats.delivered, "received": stats.received,
            "e2e_latency_ns": stats.e2e_ns, "fetch_latency_ns": stats.fetch_ns,
            "fetch_data_latency_ns": stats.with_data, "fetch_empty_latency_ns": stats.empty,
            "catchup_latency_ns": stats.catchup, "t_first_ns": t_first, "t_last_ns": t_last}  # fmt: skip


def backlog_pause_at(p: KafkaParams) -> Any:
    """OMB's backlog: when the consumers pause, the warm-up's end (the last producer's start + ``warmup_ms``)."""
    starts = []
    for pid in range(p.topics * p.producers):
        starts.append((yield Lookup(f"start{pid}")))
    return max(starts) + p.warmup_ms * 1e6


def backlog_built(p: KafkaParams, waiting: list[int]) -> Any:
    """The producers of ``waiting`` that have not yet published ``backlog{pid}`` (looked up without waiting)."""
    left = []
    for pid in waiting:
        if (yield Lookup(f"backlog{pid}", wait=False)) is None:
            left.append(pid)
    return left


def _paused(p: KafkaParams, links: Any, outstanding: dict[str, float], stats: ConsumerStats) -> Any:
    """Paused until the backlog is built: the fetches out complete (timed now, kept); -> them, as (broker,
    response)."""
    held = []
    waiting = list(range(p.topics * p.producers))
    while waiting := (yield from backlog_built(p, waiting)):
        if not outstanding:
            for pid in waiting:
                yield Lookup(f"backlog{pid}")
            break
        got = yield from links.recv(POLL_NS)
        if got is not None:
            broker, response = got
            now = yield Clock()
            _timed(stats, now - outstanding.pop(broker), response)
            held.append((broker, response))
    return held


def _timed(stats: ConsumerStats, took: float, response: FetchResponse) -> None:
    stats.fetch_ns.append(took)
    (stats.with_data if response.data_bytes else stats.empty).append(took)


def _hand_up(p: KafkaParams, pos: Positions, response: FetchResponse, now: float, stats: ConsumerStats,
             e2e: EndToEnd | None) -> Any:  # fmt: skip
    """Check and hand up every batch of a response -> the partitions that returned data."""
    with_data = set()
    for reply in response.partitions:
        q = reply.partition
        pos.hw[q] = reply.hw
        for data in reply.batches:
            if p.check_crcs:
                yield Compute("crc32c", len(data))  # check.crcs: the consumer checks every batch
            yield Compute("copy", len(data))  # and deserialises it for the application
            info = check_batch(data)
            if info is None or info.base_offset != pos.offset[q]:
                raise DatapathError(f"partition {q}: a partial or misplaced batch at offset {pos.offset[q]}")
            yield Compute("consume_records", info.records)  # per record: parse, deserialisers, ConsumerRecord
            stats.delivered.append(delivery(info, q))
            stats.received.append((q, info.records, info.timestamp, info.max_timestamp, now))
            stats.e2e_ns.append(now - info.timestamp)
            pos.offset[q] += info.records
            stats.records += info.records
            with_data.add(q)
            if e2e is not None:
                yield from handed_up(e2e, len(stats.delivered) - 1, stats.catchup)
    return with_data


def _peek_ends(me: Consumer, writers: list[int], produced: dict[int, dict[int, int]], pos: Positions) -> Any:
    for pid in writers:
        if pid not in produced:
            got = yield Lookup(f"produced{pid}", wait=False)
            if got is None:
                return
            produced[pid] = got
    pos.end = _ends(me, produced)


def _ends(me: Consumer, produced: dict[int, dict[int, int]]) -> dict[int, int]:
    """Each partition's end offset: the records every producer appended to it."""
    return {q: sum(counts.get(q, 0) for counts in produced.values()) for q in me.partitions}
