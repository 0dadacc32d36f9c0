"""Kafka's producer: the application's sends and the Sender thread over the RecordAccumulator.

Kafka 2.x (``KafkaProducer``, ``Sender``, ``RecordAccumulator``), one role standing for
the application thread and the Sender:

* the application offers records (open loop: at their intended times; closed loop: a
  full batch whenever the Sender can take one) into the accumulator
  (:mod:`kdlab.kafka.accumulator`: partitioner, ``batch.size``, ``linger.ms``,
  ``buffer.memory``);
* each Sender round, for every broker whose connection may take another request
  (``max.in.flight.requests.per.connection``), ``drain`` gives at most one sendable batch
  per partition that broker leads, up to ``max.request.size``, and they go out as *one*
  produce request (:class:`~kdlab.kafka.protocol.ProduceRequest`);
* the Sender then waits in its poll for whichever broker answers first, at most until
  the next batch becomes sendable (a linger expiring, a batch filling), so an ack is
  timestamped when it arrives; acks=0 completes a batch when it is sent;
* the run ends when every record was offered, every batch drained and every ack came.

Costs, as the clients of the artifact pay them: a record's copy into its batch
(``Compute("copy")``, charged when the batch goes out), the batch CRC when the Sender
closes it (``Compute("crc32c")``), ``sender.wakeup()`` when the Sender sleeps with
nothing in flight (``Compute("handoff")``), and the future's latch when the application
waits for its last outstanding send (``Compute("handoff")``). So ``ack_latency_ns`` of a
closed-loop producer is ProducerLatency's interval, ``send()`` to ``get()``.

When the broker of a ready batch already has ``max_in_flight`` requests, the Sender's poll
waits until an ack or until a batch of a broker that *may* take a request becomes
sendable (``next_ready_ns`` over those brokers), so one full connection does not hold
back another broker's linger. With ``sequential_e2e`` the producer is EndToEndLatency's:
one batch at a time, each after the last was delivered
(:class:`~kdlab.kafka.clients.EndToEnd`).

Result: ``records``, ``bytes``, ``t_first_ns``, ``t_last_ns``, ``ack_latency_ns`` (per
batch, ack - first record sent) and ``sent``: per batch ``(partition, records,
intended_first_ns, intended_last_ns, sent_first_ns, sent_last_ns, ack_ns)``.

Publications (how consumers know where the run stands):

* ``produced{pid}``: partition -> records this producer appends to it, published as soon
  as the application is done (every record offered: the closed batches' records plus the
  open batches', which are final then), not after the last ack: a consumer that has read
  to these ends stops at once instead of parking a fetch for ``fetch.max.wait.ms``;
* ``done{pid}``: the same counts once every batch is acknowledged (``consume_after_produce``
  consumers start then);
* with ``backlog_bytes`` (OMB's ``consumerBacklogSizeGB``): ``start{pid}``, the producer's
  start (the consumers pause at the last producer's start + ``warmup_ms``), and
  ``backlog{pid}`` once the records it had acknowledged since its own warm-up's end
  reach its share of the backlog (:func:`backlog_share`, counted as OMB counts it:
  records x ``record_bytes``), or at its end, whichever comes first.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kdlab.kafka.accumulator import Batch, RecordAccumulator
from kdlab.kafka.batch_log import SENT, BatchLog
from kdlab.kafka.batches import batch_factory
from kdlab.kafka.clients import EndToEnd
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.protocol import Produce, ProduceRequest, ProduceResponse
from kdlab.kafka.topology import Producer
from kdlab.ops import Clock, Compute, Publish, Sleep
from kdlab.program import DatapathError


def backlog_share(p: KafkaParams) -> int:
    """Record bytes each producer must have acknowledged after the warm-up for OMB's backlog to be built.

    OMB's backlog is ``subscriptionsPerTopic x sent - received`` messages of ``messageSize``
    bytes, ``sent`` counting every producer of every topic; with the consumers paused it
    grows by ``groups`` copies of each acknowledged record, so each of the ``topics x
    producers`` producers' share is ``backlog_bytes / (groups x producers x topics)``.
    0: no backlog (none asked for, or nobody consumes).
    """
    if not p.backlog_bytes or not p.groups or not p.consumers:
        return 0
    return -(-p.backlog_bytes // (p.groups * p.producers * p.topics))


@dataclass
class SenderStats:
    """What the producer measured."""

    sent: BatchLog = field(default_factory=lambda: BatchLog(SENT))
    ack_latency_ns: array = field(default_factory=lambda: array("d"))
    records: int = 0
    bytes: int = 0

    def completed(self, batch: Batch, ack_ns: float) -> None:
        self.sent.append((batch.partition, batch.records, batch.intended_first_ns, batch.intended_last_ns,
                          batch.sent_first_ns, batch.sent_last_ns, ack_ns))  # fmt: skip
        self.ack_latency_ns.append(ack_ns - batch.sent_first_ns)


class Sender:
    """One producer's Sender: requests out per broker, acks in from any."""

    def __init__(self, p: KafkaParams, me: Producer, links: Any, acc: RecordAccumulator) -> None:
        self.p, self.me, self.links, self.acc = p, me, links, acc
        self.brokers = sorted(acc.led)
        self.in_flight: dict[str, deque[list[Batch]]] = {b: deque() for b in self.brokers}  # requests per broker
        self.outstanding = 0  # requests awaiting their ack, all brokers (kept, not summed over brokers per ack)
        self.stats = SenderStats()
        self.asleep = True  # in its poll with nothing in flight: the application's send() must wake it
        self.ends_told = False
        self.backlog = Backlog(p, acc.t0)

    def may_send(self, broker: str, e2e: EndToEnd | None) -> bool:
        if e2e is not None:
            return self.outstanding == 0  # EndToEndLatency: the next send only after the last was delivered
        return self.p.acks == 0 or len(self.in_flight[broker]) < self.p.max_in_flight

    def drain(self, broker: str, e2e: EndToEnd | None) -> Any:
        """The batches for one request to ``broker``, after the application's sends up to now."""
        acc = self.acc
        if self.p.open_loop:
            now = yield Clock()
            acc.append_until(now)
            return acc.drain(broker, now)
        if acc.app_done and broker not in acc.brokers_with_data():
            return []
        if e2e is not None and self.stats.sent:
            yield from e2e.wait_delivered(len(self.stats.sent) - 1)  # the next send() after poll() returned
        now = yield Clock()  # ProducerLatency's begin: before send()
        acc.closed_loop_fill(now, [broker])
        return acc.drain(broker, now)

    def send(self, broker: str, batches: list[Batch]) -> Any:
        """Build the batches (copy, CRC) and send them to ``broker`` as one produce request."""
        p = self.p
        parts, sizes = [], []
        records = sum(b.records for b in batches)
        yield Compute("produce_records", records)  # send() per record: serialiser, partitioner, append, callback
        yield Compute("alloc", records * p.record_bytes)  # each ProducerRecord's serialised value, then garbage
        for batch in batches:
            factory = batch_factory(batch.records, p.record_bytes)
            yield Compute("copy", factory.size)  # the records into the accumulator's batch (application thread)
            data = factory.make(self.me.pid, batch.base_sequence, int(batch.sent_first_ns), int(batch.sent_last_ns))
            parts.append(Produce(batch.partition, data, batch.records, p.acks))
            sizes.append(factory.size)
        if self.asleep:
            yield Compute("handoff")  # sender.wakeup(): the Sender sleeps in epoll_wait with nothing in flight
        for size in sizes:
            yield Compute("crc32c", size)  # the batch CRC, when the Sender closes the batch
        request = ProduceRequest(p.acks, parts)
        yield from self.links.send(broker, request, request.nbytes)
        self.asleep = False
        self.stats.records += sum(b.records for b in batches)
        self.stats.bytes += sum(sizes)
        if p.acks == 0:  # no response: the batches are complete once sent
            now = yield Clock()
            for batch in batches:
                self.stats.completed(batch, now)
                self.acc.acked(batch, now)
                self.backlog.acked(batch.records, now)
            yield from self.backlog.tell_if_built(self.me.pid)
        else:
            self.in_flight[broker].append(batches)
            self.outstanding += 1

    def receive(self, broker: str, response: ProduceResponse, e2e: EndToEnd | None) -> Any:
        """An ack came: complete its request's batches at the time it arrived."""
        failed = [a for a in response.acks if a.error]
        if failed:
            raise DatapathError(f"produce to {broker} failed: partition {failed[0].partition}: {failed[0].error}")
        request = self.in_flight[broker].popleft()
        self.outstanding -= 1
        if not self.outstanding:
            yield Compute("handoff")  # the application waits for its last send: the future's latch wakes it
        now = yield Clock()  # get() returns
        for batch in request:
            self.stats.completed(batch, now)
            self.acc.acked(batch, now)
            self.backlog.acked(batch.records, now)
        if e2e is not None:
            yield from e2e.ack(len(self.stats.sent) - 1, now)
        self.asleep = not self.outstanding
        yield from self.backlog.tell_if_built(self.me.pid)

    def tell_ends(self) -> Any:
        """Once the application is done: every partition's final count, for the consumers (``produced{pid}``)."""
        if self.ends_told or not self.acc.app_done:
            return
        self.ends_told = True
        yield Publish(f"produced{self.me.pid}", final_counts(self.acc))

    def wait_timeout(self, e2e: EndToEnd | None) -> Any:
        """How long the Sender's poll may sleep: until the next batch of a broker that may take a request is
        sendable (None: until an ack)."""
        if self.acc.blocked and not self.outstanding:
            raise DatapathError(f"producer{self.me.pid}: buffer_memory ({self.p.buffer_memory} B) holds no batch")
        if not self.p.open_loop:
            return None
        now = yield Clock()
        ready = self.acc.next_ready_ns(now, [b for b in self.brokers if self.may_send(b, e2e)])
        if ready is None or (ready <= now and self.outstanding):  # only an ack can help (a full connection)
            return None
        return ready - now


def final_counts(acc: RecordAccumulator) -> dict[int, int]:
    """Once the application is done: records per partition, the open batches' included (no record joins them)."""
    return {q: n + (acc.open[q].records if q in acc.open else 0) for q, n in acc.sequence.items()}


class Backlog:
    """OMB's backlog, the producer's side: ``start{pid}`` at its start, ``backlog{pid}`` once its share is built.

    Records count when acknowledged at or after the producer's warm-up end (its start +
    ``warmup_ms``); the share is :func:`backlog_share`. Engine-neutral (Publish only), so
    KafkaDirect's producer uses it too.
    """

    def __init__(self, p: KafkaParams, t0: float) -> None:
        self.share = backlog_share(p)
        self.record_bytes = p.record_bytes
        self.t0 = t0
        self.warm_end = t0 + p.warmup_ms * 1e6
        self.records = 0
        self.told = self.share == 0

    def start(self, pid: int) -> Any:
        if self.share:
            yield Publish(f"start{pid}", self.t0)

    def acked(self, records: int, now: float) -> None:
        if now >= self.warm_end:
            self.records += records

    def tell_if_built(self, pid: int) -> Any:
        if not self.told and self.records * self.record_bytes >= self.share:
            yield from self.tell(pid)

    def tell(self, pid: int) -> Any:
        if self.told:
            return
        self.told = True
        yield Sleep(0.0)  # at this thread's own time, not before the CPU work it has been charged
        yield Publish(f"backlog{pid}", self.records * self.record_bytes)


def producer(p: KafkaParams, me: Producer, leaders: dict[int, str], links: Any,
             e2e: EndToEnd | None = None, seed: int = 0) -> Any:  # fmt: skip
    """Offer ``me``'s records to its partitions (led by ``leaders``) and send them until every one is acknowledged."""
    yield from links.connect()
    t_first = yield Clock()
    acc = RecordAccumulator(p, me, {q: leaders[q] for q in me.partitions}, t_first, seed)
    sender = Sender(p, me, links, acc)
    yield from sender.backlog.start(me.pid)
    while True:
        sending = True
        while sending:  # Sender.sendProducerData: one request per ready broker a round, until none is sent
            sending = False
            for broker in sender.brokers:
                if sender.may_send(broker, e2e) and (batches := (yield from sender.drain(broker, e2e))):
                    yield from sender.send(broker, batches)
                    sending = True
        yield from sender.tell_ends()
        if acc.idle and not sender.outstanding:
            break
        timeout = yield from sender.wait_timeout(e2e)
        got = yield from links.recv(timeout)
        if got is None:  # a linger expired or a record is due
            continue
        yield from sender.receive(*got, e2e)
    t_last = yield Clock()
    yield from sender.tell_ends()  # (told already, unless nothing was ever sent)
    yield from sender.backlog.tell(me.pid)  # nothing more will come: paused consumers need not wait longer
    yield Sleep(0.0)  # at this thread's own time, as the broker unmutes (apache._done)
    yield Publish(f"done{me.pid}", dict(acc.sequence))
    s = sender.stats
    return {"records": s.records, "bytes": s.bytes, "t_first_ns": t_first, "t_last_ns": t_last,
            "ack_latency_ns": s.ack_latency_ns, "sent": s.sent}  # fmt: skip
