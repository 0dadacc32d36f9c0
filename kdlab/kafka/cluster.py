"""Build the roles of one Kafka run: brokers, replica fetchers, producers and consumers.

Who is where comes from :class:`~kdlab.kafka.topology.Topology`: brokers ``b0..``
(``brokers``, independent of the replication factor), Kafka's replica placement,
producer ``pid`` on host ``p{pid}`` (role ``producer{pid}``), consumer ``cid`` on host
``c{cid}`` (role ``consumer{cid}``) with its group's assignment. With
``sequential_e2e`` (EndToEndLatency, one thread) the consumer runs on the producer's
host and the two share an :class:`~kdlab.kafka.clients.EndToEnd`.

Apache Kafka and OSU's RDMA Kafka share the broker (:mod:`kdlab.kafka.apache`) and the
clients (:mod:`kdlab.kafka.sender`, :mod:`kdlab.kafka.fetcher`); OSU's clients reach it
over SEND/RECV (:mod:`kdlab.kafka.osu`). A client opens one connection to each broker
that leads one of its partitions; TCP connections are spread over a broker's network
threads by the client's index. KafkaDirect's roles are :func:`kdlab.kafka.direct.roles`.
"""

from __future__ import annotations

import functools
from typing import Any

from kdlab.kafka import apache, fetcher, osu, replica_fetcher, sender
from kdlab.kafka.clients import EndToEnd, TcpLinks
from kdlab.kafka.log import PartitionLog
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.topology import Topology
from kdlab.program import Role


@functools.cache
def topology(p: KafkaParams) -> Topology:
    """The run's topology (one per parameter set)."""
    return Topology(p)


def brokers(p: KafkaParams) -> list[str]:
    """KafkaDirect's wiring (until it takes :class:`Topology`): as many brokers as the replication factor."""
    return [f"b{i}" for i in range(max(1, p.replication_factor))]


def replicas(p: KafkaParams, partition: int) -> tuple[str, ...]:
    """KafkaDirect's wiring: partition ``q`` led by broker ``q mod brokers``, followed by the next ones."""
    names = brokers(p)
    lead = partition % len(names)
    return tuple(names[(lead + k) % len(names)] for k in range(p.replication_factor))


def expected_records(p: KafkaParams, partition: int) -> int:
    """Records a partition receives when producer ``i`` writes whole batches to partition ``i mod partitions``
    (KafkaDirect's consumers; Kafka's learn the end from the producers, :mod:`kdlab.kafka.fetcher`)."""
    per = p.records_per_batch
    writers = sum(1 for i in range(p.producers) if i % p.partitions == partition)
    return writers * (-(-p.records_total // per) * per)


def known_ends(p: KafkaParams, topo: Topology, partitions: tuple[int, ...]) -> dict[int, int] | None:
    """The end offset of each partition, where it is known before the run: a closed loop of a fixed number of
    records whose writers each write only that partition. None: the consumer learns it from the producers."""
    if p.duration_ms or p.partitioner != "fixed":
        return None
    ends = {}
    for q in partitions:
        writers = [w for w in topo.producers if q in w.partitions]
        if any(len(w.partitions) != 1 for w in writers):
            return None
        ends[q] = len(writers) * p.records_total
    return ends


def consumer_host(p: KafkaParams, j: int) -> str:
    """Consumer ``j``'s host: its own, or the producer's for EndToEndLatency's one thread."""
    return "p0" if p.sequential_e2e else f"c{j}"


def end_to_end(p: KafkaParams) -> dict[str, Any]:
    """The role argument that joins producer and consumer into EndToEndLatency's one thread, if asked for."""
    return {"e2e": EndToEnd("e2e0")} if p.sequential_e2e else {}


def build(p: KafkaParams, seed: int = 0) -> list[Role]:
    """The roles of one run; ``seed`` (the point's) seeds the producers' random partition choices (sticky, keys)."""
    if p.system == "kafkadirect":
        from kdlab.kafka.direct import roles as kd_roles

        return kd_roles(p, seed=seed)
    return _apache_roles(p, seed)  # Apache Kafka, or OSU's (the same broker behind SEND/RECV)


class _Wiring:
    """Connections as the brokers must expect them: TCP per network thread, OSU channels per client."""

    def __init__(self, p: KafkaParams, topo: Topology) -> None:
        self.p, self.topo = p, topo
        self.tcp: dict[tuple[str, int], int] = {}  # (broker, network thread) -> connections
        self.osu: dict[str, dict[str, int]] = {b: {} for b in topo.brokers}  # broker -> client -> buffer bytes

    def tcp_service(self, broker: str, key: int) -> str:
        net = key % self.p.network_threads
        self.tcp[broker, net] = self.tcp.get((broker, net), 0) + 1
        return f"{broker}.net{net}"

    def links(self, name: str, key: int, partitions: tuple[int, ...], consumer: bool) -> Any:
        """A client's links to the leaders of ``partitions``."""
        led: dict[str, int] = {}
        for q in partitions:
            led[self.topo.leader(q)] = led.get(self.topo.leader(q), 0) + 1
        led = dict(sorted(led.items()))
        if self.p.system != "osu":
            return TcpLinks({b: self.tcp_service(b, key) for b in led})
        slots = {b: osu.slot_bytes(self.p, 0 if consumer else n, n if consumer else 0) for b, n in led.items()}
        for b, slot in slots.items():
            self.osu[b][name] = slot
        return osu.VerbsLinks(name, slots)


def _apache_roles(p: KafkaParams, seed: int = 0) -> list[Role]:
    topo = topology(p)
    states = {
        b: apache.BrokerState(
            b,
            logs={
                q: PartitionLog(q, p.segment_bytes, topo.replicas[q], retention_bytes=p.retention_bytes)
                for q in topo.hosted_by(b)
            },
            isr_size={q: len(topo.replicas[q]) for q in topo.hosted_by(b)},
        )
        for b in topo.brokers
    }
    wiring = _Wiring(p, topo)
    leaders = {q: topo.leader(q) for q in range(len(topo.replicas))}
    roles: list[Role] = []
    e2e = end_to_end(p)
    for w in topo.producers:
        links = wiring.links(w.name, w.pid, w.partitions, consumer=False)
        args = {"p": p, "me": w, "leaders": leaders, "links": links, "seed": seed, **e2e}
        roles.append(Role(w.name, f"p{w.pid}", sender.producer, args))
    for c in topo.consumers:
        writers = sorted({pid for q in c.partitions for pid in topo.writers(q)})
        links = wiring.links(c.name, len(topo.producers) + c.cid, c.partitions, consumer=True)
        args = {"p": p, "me": c, "leaders": leaders, "links": links, "writers": writers,
                "ends": known_ends(p, topo, c.partitions), **e2e}  # fmt: skip
        roles.append(Role(c.name, consumer_host(p, c.cid), fetcher.consumer, args))
    for follower in topo.brokers:
        for leader, parts in topo.follows(follower).items():
            by_fetcher: dict[int, list[int]] = {}
            for q in parts:
                by_fetcher.setdefault(topo.fetcher_of(q), []).append(q)
            for fid, mine in sorted(by_fetcher.items()):
                args = {"p": p, "state": states[follower], "leader": leader, "partitions": mine,
                        "service": wiring.tcp_service(leader, fid)}  # fmt: skip
                roles.append(Role(f"{follower}.fetcher{fid}.{leader}", follower, replica_fetcher.replica_fetcher,
                                  args, daemon=True))  # fmt: skip
    for b, st in states.items():
        for i in range(p.network_threads):
            args = {"p": p, "state": st, "index": i, "clients": wiring.tcp.get((b, i), 0)}
            roles.append(Role(f"{b}.network{i}", b, apache.network_thread, args, daemon=True))
        for i in range(p.io_threads):
            roles.append(Role(f"{b}.io{i}", b, apache.io_thread, {"p": p, "state": st}, daemon=True))
        roles.append(Role(f"{b}.purgatory", b, apache.purgatory, {"p": p, "state": st}, daemon=True))
        if wiring.osu[b]:
            args = {"p": p, "state": st, "clients_": wiring.osu[b]}
            roles.append(Role(f"{b}.rdma_network", b, osu.network_thread, args, daemon=True))
    return roles
