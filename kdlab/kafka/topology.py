"""The shape of a Kafka cluster run: brokers, topics, replica placement, who writes and reads what.

Ids are explicit and global: partition ``t * partitions + q`` is partition ``q`` of
topic ``t``; producer ``t * producers + i`` is producer ``i`` of topic ``t``; consumer
``(t * groups + g) * consumers + j`` is member ``j`` of group ``g`` of topic ``t``.
Hosts: brokers ``b0..``, producers ``p0..``, consumers ``c0..``.

Placement is Kafka's default assignment (``AdminUtils.assignReplicasToBrokers``,
Kafka 2.x): the leader of a topic's partition ``q`` is broker ``(q + start) mod n`` and
its followers follow it with a shift that grows by one every ``n`` partitions; with
racks, brokers are first arranged alternating racks and a follower is skipped while
its rack (or broker) already holds a replica and another rack (broker) does not. Kafka
draws ``start`` and the first shift at random per topic; here they come from a
generator seeded with the topic's index, so a run is deterministic and topics do not
all start on broker 0.

Consumer groups assign partitions as Kafka's ``RangeAssignor`` (contiguous ranges, the
first ``P mod C`` members one more) or ``RoundRobinAssignor`` (partition ``q`` to member
``q mod C``); members are ordered by index, standing in for Kafka's member ids.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property

from kdlab.kafka.params import KafkaParams


def _replica_index(first: int, shift: int, k: int, n: int) -> int:
    """AdminUtils.replicaIndex: the broker index of the ``k``-th follower."""
    return (first + 1 + (shift + k) % (n - 1)) % n


def assign_replicas(partitions: int, rf: int, brokers: list[str], rng: random.Random,
                    rack: dict[str, str] | None = None) -> list[tuple[str, ...]]:  # fmt: skip
    """Kafka's default replica assignment of one topic -> the replicas of each partition, leader first."""
    n = len(brokers)
    if not 1 <= rf <= n:
        raise ValueError(f"replication_factor: {rf} replicas cannot be placed on {n} brokers (allowed: 1 to {n})")
    if rack:
        order = _rack_alternated(brokers, rack)
        racks = len(set(rack.values()))
    else:
        order, racks = list(brokers), 1
    start, shift = rng.randrange(n), rng.randrange(n)
    out = []
    for q in range(partitions):
        if q > 0 and q % n == 0:
            shift += 1
        first = (q + start) % n
        reps = [order[first]]
        if not rack:
            reps += [order[_replica_index(first, shift, k, n)] for k in range(rf - 1)]
        else:
            used_racks, k = {rack[reps[0]]}, 0
            while len(reps) < rf:
                b = order[_replica_index(first, shift * racks, k, n)]
                k += 1
                if (rack[b] not in used_racks or len(used_racks) == racks) and b not in reps:
                    reps.append(b)
                    used_racks.add(rack[b])
        out.append(tuple(reps))
    return out


def _rack_alternated(brokers: list[str], rack: dict[str, str]) -> list[str]:
    """AdminUtils.getRackAlternatedBrokerList: one broker of each rack in turn (racks and brokers sorted)."""
    by_rack = {r: [b for b in brokers if rack[b] == r] for r in sorted(set(rack.values()))}
    out: list[str] = []
    while len(out) < len(brokers):
        for members in by_rack.values():
            if members:
                out.append(members.pop(0))
    return out


def assign_group(partitions: list[int], members: int, assignor: str) -> list[list[int]]:
    """One consumer group's assignment of a topic's ``partitions`` -> the partitions of each member."""
    out: list[list[int]] = [[] for _ in range(members)]
    if assignor == "round-robin":
        for k, q in enumerate(partitions):
            out[k % members].append(q)
        return out
    per, extra = divmod(len(partitions), members)
    at = 0
    for j in range(members):
        n = per + (j < extra)
        out[j] = partitions[at : at + n]
        at += n
    return out


@dataclass(frozen=True)
class Consumer:
    cid: int
    topic: int
    group: int
    partitions: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"consumer{self.cid}"


@dataclass(frozen=True)
class Producer:
    pid: int
    topic: int
    partitions: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"producer{self.pid}"


@dataclass
class Topology:
    """Who is where: built once per run from the parameters."""

    p: KafkaParams
    brokers: list[str] = field(init=False)
    replicas: list[tuple[str, ...]] = field(init=False)  # partition id -> replicas, leader first

    def __post_init__(self) -> None:
        p = self.p
        self.brokers = [f"b{i}" for i in range(p.broker_count)]
        rack = {b: f"rack{i % p.racks}" for i, b in enumerate(self.brokers)} if p.racks else None
        self.replicas = []
        for t in range(p.topics):
            self.replicas += assign_replicas(p.partitions, p.replication_factor, self.brokers, random.Random(t), rack)

    def leader(self, q: int) -> str:
        return self.replicas[q][0]

    def topic_partitions(self, t: int) -> list[int]:
        return list(range(t * self.p.partitions, (t + 1) * self.p.partitions))

    @cached_property
    def producers(self) -> list[Producer]:
        p, out = self.p, []
        for t in range(p.topics):
            parts = self.topic_partitions(t)
            for i in range(p.producers):
                if p.partitioner != "fixed":
                    mine = parts
                elif p.producers <= p.partitions:
                    mine = parts[i :: p.producers]
                else:
                    mine = [parts[i % p.partitions]]
                out.append(Producer(t * p.producers + i, t, tuple(mine)))
        return out

    @cached_property
    def consumers(self) -> list[Consumer]:
        p, out = self.p, []
        for t in range(p.topics):
            for g in range(p.groups):
                if not p.consumers:
                    continue
                for j, mine in enumerate(assign_group(self.topic_partitions(t), p.consumers, p.assignor)):
                    out.append(Consumer((t * p.groups + g) * p.consumers + j, t, g, tuple(mine)))
        return out

    def writers(self, q: int) -> list[int]:
        """Producer ids that may write partition ``q``."""
        return self._writers.get(q, [])

    @cached_property
    def _writers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for w in self.producers:
            for q in w.partitions:
                out.setdefault(q, []).append(w.pid)
        return out

    def led_by(self, broker: str) -> list[int]:
        return [q for q, reps in enumerate(self.replicas) if reps[0] == broker]

    def hosted_by(self, broker: str) -> list[int]:
        return [q for q, reps in enumerate(self.replicas) if broker in reps]

    def follows(self, follower: str) -> dict[str, list[int]]:
        """Leader -> the partitions ``follower`` replicates from it."""
        out: dict[str, list[int]] = {}
        for q, reps in enumerate(self.replicas):
            if follower in reps[1:]:
                out.setdefault(reps[0], []).append(q)
        return dict(sorted(out.items()))

    def fetcher_of(self, q: int) -> int:
        """The replica fetcher thread of a follower that handles partition ``q`` (AbstractFetcherManager.getFetcherId:
        ``Utils.abs(31 * topic.hashCode + partition) % numFetchers``; the topic's hash is its index here)."""
        t, k = divmod(q, self.p.partitions)
        return abs(31 * t + k) % self.p.replica_fetchers
