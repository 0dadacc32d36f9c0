"""Kafka's producer without its network: the application's sends and the RecordAccumulator.

Engine-neutral (no simpy, no pyverbs): a Sender role of any system asks it what to send
and tells it what was acknowledged; :mod:`kdlab.kafka.sender` is that role for Kafka and
OSU, :mod:`kdlab.kafka.direct_producer` for KafkaDirect.

* The application (``KafkaProducer.send``) offers record ``k`` at its *intended* time:
  ``t0 + k / rate`` in an open loop (OMB's rate limiter, the artifact's throttler, both
  evenly spaced), and appends it to its partition's open batch. Buffer memory is
  Kafka's ``BufferPool``: each batch holds ``batch.size`` bytes (or its own size if
  larger) from creation until its ack; when a new batch does not fit ``buffer.memory``
  the application blocks until an ack frees some, and records sent late keep their
  intended time (OMB's publish delay); the application stops at the run's end even if
  records intended before it are still unsent. In a closed loop the application hands the
  Sender a full batch whenever the Sender can take one (as fast as acks allow).
* The partitioner picks each record's partition: ``fixed`` (the producer's own partitions
  in turn), ``round-robin`` (RoundRobinPartitioner), ``sticky`` (UniformStickyPartitioner:
  one partition until its batch is closed, then another at random), ``default``
  (DefaultPartitioner: the key's hash, or sticky without keys). Keys are OMB's: 10,000
  of them, taken in turn (``round-robin``) or at random (``random``); a key's
  partition is its CRC-32 modulo the partitions (Kafka uses murmur2: the same
  uniform spread, not the same partition per key).
* ``RecordAccumulator.ready``/``drain``: a batch is sendable when it is full, its linger
  expired (``now - created >= linger.ms``), the application is blocked on memory, or
  the producer is closing (flush: no linger). A broker with one sendable first batch is
  ready, and a drain then takes the first batch of *every* partition it leads (lingering
  or not), starting where the last drain stopped, up to ``max.request.size`` (at least
  one batch).
* Open-loop producers share the schedule in turn: producer ``i`` of ``N`` offers record
  ``k`` at ``t0 + (k + i/N) / rate``, as the producers of one OMB worker share its rate
  limiter, not all at the same instant.

Records of a batch are evenly spaced (exact for an open loop under the fixed,
round-robin and sticky partitioners; keyed records are spread unevenly), so a batch
carries only its first and last times and the metrics interpolate.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from kdlab.kafka.params import KafkaParams
from kdlab.kafka.records import batch_size_bytes
from kdlab.kafka.topology import Producer

OMB_KEYS = 10_000
"""Distinct keys OMB's KeyDistributor cycles through."""


@dataclass(slots=True, eq=False)
class Batch:
    """A producer batch: one partition, ``records`` records, their times."""

    partition: int
    base_sequence: int  # records this producer appended to the partition before it
    created_ns: float
    records: int = 0
    intended_first_ns: float = 0.0
    intended_last_ns: float = 0.0
    sent_first_ns: float = 0.0  # send() returned for its first record
    sent_last_ns: float = 0.0
    closed: bool = False
    reserved: int = 0  # buffer.memory bytes it holds until acknowledged

    def add(self, intended: float, sent: float) -> None:
        if not self.records:
            self.intended_first_ns, self.sent_first_ns = intended, sent
        self.intended_last_ns, self.sent_last_ns = intended, sent
        self.records += 1


class Partitioner:
    """Record -> partition, as Kafka's partitioners choose."""

    def __init__(self, p: KafkaParams, producer: Producer, seed: int = 0) -> None:
        self.parts = producer.partitions
        self.kind = p.partitioner if p.keys == "none" or p.partitioner != "default" else "key"
        if self.kind == "default":
            self.kind = "sticky"
        self.keys = p.keys
        self.rng = random.Random(f"{seed}/{producer.pid}")
        self.turn = 0
        self.sticky = self.rng.choice(self.parts)
        self.key_partition: list[int] = []
        if self.kind == "key":  # OMB's keys, each with its partition
            base = producer.topic * p.partitions
            self.key_partition = [base + zlib.crc32(f"key-{k:05d}".encode()) % p.partitions for k in range(OMB_KEYS)]

    def next(self) -> int:
        if self.kind in ("fixed", "round-robin"):
            q = self.parts[self.turn % len(self.parts)]
            self.turn += 1
            return q
        if self.kind == "sticky":
            return self.sticky
        k = self.turn % OMB_KEYS if self.keys == "round-robin" else self.rng.randrange(OMB_KEYS)
        self.turn += 1
        return self.key_partition[k]

    def new_batch(self, closed: int) -> None:
        """UniformStickyPartitioner.onNewBatch: the sticky partition's batch closed; pick another."""
        if self.kind == "sticky" and closed == self.sticky and len(self.parts) > 1:
            while (q := self.rng.choice(self.parts)) == closed:
                pass
            self.sticky = q


class RecordAccumulator:
    """One producer's application and accumulator; times in ns from the run's start."""

    def __init__(self, p: KafkaParams, producer: Producer, leader_of: dict[int, str], t0: float, seed: int = 0):
        self.p, self.producer, self.leader_of = p, producer, leader_of
        self.partitioner = Partitioner(p, producer, seed)
        self.per_batch = p.records_per_batch
        self.t0 = t0
        rate = p.producer_rate
        self.gap = 1e9 / rate if rate else 0.0
        # producers share the rate limiter's schedule, in turn (OMB: one limiter per worker), not in lockstep
        self.phase = producer.pid / (p.producers * p.topics)
        if p.duration_ms:
            self.end_ns = t0 + (p.warmup_ms + p.duration_ms) * 1e6
            self.limit = None
        else:
            self.end_ns = float("inf")
            self.limit = p.records_total  # records this producer sends
        self.next_k = 0
        self.open: dict[int, Batch] = {}
        self.queued: dict[int, deque[Batch]] = {q: deque() for q in producer.partitions}
        self.sequence = dict.fromkeys(producer.partitions, 0)
        self.free = p.buffer_memory
        self.unblocked_ns = t0  # the application may send from here (after waiting for memory)
        self.blocked = False
        self.drain_index: dict[str, int] = {}
        self.led: dict[str, list[int]] = {}
        for q in producer.partitions:
            self.led.setdefault(leader_of[q], []).append(q)

    # --- the application ---------------------------------------------------------------

    def intended(self, k: int) -> float:
        return self.t0 + (k + self.phase) * self.gap

    @property
    def app_done(self) -> bool:
        """Every record has been offered."""
        if self.limit is not None:
            return self.next_k >= self.limit
        return self.intended(self.next_k) >= self.end_ns

    def append_until(self, now: float) -> int:
        """The application's sends up to ``now`` (open loop) -> records appended."""
        appended = 0
        while not self.app_done and (t := self.intended(self.next_k)) <= now:
            if self.unblocked_ns >= self.end_ns:  # the run ended while the application waited for memory
                self.end_ns = t  # OMB's producers stop at the test's end: records not yet sent never are
                break
            q = self.partitioner.next()
            batch = self.open.get(q)
            if batch is None:
                if not self._new_batch(q, max(t, self.unblocked_ns)):
                    self.blocked = True
                    break
                batch = self.open[q]
            batch.add(t, max(t, self.unblocked_ns))
            self.next_k += 1
            appended += 1
            if batch.records >= self.per_batch:
                self._close(batch)
        return appended

    def closed_loop_fill(self, now: float, brokers: list[str]) -> int:
        """Closed loop: a full batch, made now, for each partition led by ``brokers`` with none waiting -> made.

        The application keeps every partition it writes supplied (in turn) as fast as the
        Sender can take batches; the last batch holds what is left.
        """
        if now >= self.end_ns:  # a closed loop with a run length: the application stops sending
            self.limit = self.next_k
        made = 0
        for b in brokers:
            for q in self.led.get(b, []):
                if self.app_done or self.queued[q] or q in self.open:
                    continue
                if not self._new_batch(q, now):
                    self.blocked = True
                    return made
                batch = self.open[q]
                n = self.per_batch if self.limit is None else min(self.per_batch, self.limit - self.next_k)
                batch.records, batch.intended_first_ns, batch.intended_last_ns = n, now, now
                batch.sent_first_ns = batch.sent_last_ns = now
                self.next_k += n
                self._close(batch)
                made += 1
        return made

    def _new_batch(self, q: int, now: float) -> bool:
        size = max(self.p.batch_bytes, batch_size_bytes(1, None, self.p.record_bytes))
        if size > self.free:
            return False
        self.free -= size
        self.open[q] = Batch(q, self.sequence[q], now, reserved=size)
        return True

    def _close(self, batch: Batch) -> None:
        batch.closed = True
        del self.open[batch.partition]
        self.sequence[batch.partition] += batch.records
        self.queued[batch.partition].append(batch)
        self.partitioner.new_batch(batch.partition)

    # --- the Sender --------------------------------------------------------------------

    def _sendable(self, batch: Batch, now: float, closing: bool) -> bool:
        return batch.closed or closing or self.blocked or now - batch.created_ns >= self.p.linger_ms * 1e6 - 1e-6

    def head(self, q: int) -> Batch | None:
        """The partition's first batch (a full one waiting, else the open one)."""
        return self.queued[q][0] if self.queued[q] else self.open.get(q)

    def ready(self, broker: str, now: float) -> bool:
        """RecordAccumulator.ready: some partition ``broker`` leads has a sendable first batch."""
        closing = self.app_done
        heads = (self.head(q) for q in self.led.get(broker, []))
        return any(b is not None and self._sendable(b, now, closing) for b in heads)

    def drain(self, broker: str, now: float) -> list[Batch]:
        """RecordAccumulator.drain for one broker, if it is ready: the first batch of each partition it leads.

        As Kafka's ``drainBatchesForOneNode``: once the broker is ready (one sendable
        batch), every partition's first batch goes, lingering or not (it is closed), from a
        rotating start, up to ``max.request.size`` (at least one batch).
        """
        if not self.ready(broker, now):
            return []
        parts = self.led[broker]
        start = self.drain_index.get(broker, 0)
        out: list[Batch] = []
        total = 0
        for i in range(len(parts)):
            q = parts[(start + i) % len(parts)]
            batch = self.head(q)
            if batch is None:
                continue
            size = batch_size_bytes(batch.records, None, self.p.record_bytes)
            if out and total + size > self.p.max_request_bytes:
                break
            if not batch.closed:
                self._close(batch)
            self.queued[q].popleft()
            out.append(batch)
            total += size
            self.drain_index[broker] = (start + i + 1) % len(parts)
        return out

    def brokers_with_data(self) -> list[str]:
        return [b for b, parts in self.led.items() if any(self.queued[q] or q in self.open for q in parts)]

    def next_ready_ns(self, now: float, brokers: Iterable[str] | None = None) -> float | None:
        """When a batch for ``brokers`` (default: all) next becomes sendable with no ack meanwhile.

        The next record that fills a batch, or the earliest linger expiry; with no
        linger, the next record at all. None: only an ack can help (memory, or nothing left).
        """
        if self.blocked:
            return None
        led = self.led if brokers is None else {b: self.led.get(b, []) for b in brokers}
        parts = [q for qs in led.values() for q in qs]
        if any(self.queued[q] for q in parts):
            return now
        open_ = [b for q in parts if (b := self.open.get(q)) is not None]
        if self.app_done:
            return now if open_ else None
        times = [b.created_ns + self.p.linger_ms * 1e6 for b in open_]
        if self.gap and parts:
            k = self.next_k
            if self.p.linger_ms == 0 or not open_:
                times.append(self.intended(k))
            else:
                need = min(self.per_batch - b.records for b in open_)
                times.append(self.intended(k + need - 1))
        return max(now, min(times)) if times else None

    @property
    def idle(self) -> bool:
        """Nothing left to send: every record offered and every batch drained."""
        return self.app_done and not self.open and not any(self.queued.values())

    def acked(self, batch: Batch, now: float) -> None:
        """The batch's ack came: its memory returns to the pool and a blocked application resumes."""
        self.free += batch.reserved
        batch.reserved = 0
        if self.blocked:
            self.blocked = False
            self.unblocked_ns = max(self.unblocked_ns, now)
