"""Build the roles of one Kafka run: brokers, replicas, producers and consumers.

Hosts: brokers ``b0..``, producers ``p0..``, consumers ``c0..``, each on its own host.
Partition ``q`` is led by broker ``q mod brokers`` and replicated on the next
``replication_factor - 1`` brokers; producer ``i`` writes partition ``i mod
partitions``, consumer ``j`` reads partition ``j mod partitions`` from offset 0.
With ``sequential_e2e`` (EndToEndLatency, one thread) the consumer runs on the
producer's host and the two share an :class:`~kdlab.kafka.clients.EndToEnd`.
"""

from __future__ import annotations

from typing import Any

from kdlab.kafka import apache, clients, osu
from kdlab.kafka.log import PartitionLog
from kdlab.kafka.params import KafkaParams
from kdlab.program import Role


def brokers(p: KafkaParams) -> list[str]:
    return [f"b{i}" for i in range(max(1, p.replication_factor))]


def replicas(p: KafkaParams, partition: int) -> tuple[str, ...]:
    names = brokers(p)
    lead = partition % len(names)
    return tuple(names[(lead + k) % len(names)] for k in range(p.replication_factor))


def expected_records(p: KafkaParams, partition: int) -> int:
    per = p.records_per_batch
    return apache.producers_of(p, partition) * (-(-p.records_total // per) * per)


def consumer_host(p: KafkaParams, j: int) -> str:
    """Consumer ``j``'s host: its own, or the producer's for EndToEndLatency's one thread."""
    return "p0" if p.sequential_e2e else f"c{j}"


def end_to_end(p: KafkaParams) -> dict[str, Any]:
    """The role argument that joins producer and consumer into EndToEndLatency's one thread, if asked for."""
    return {"e2e": clients.EndToEnd("e2e0")} if p.sequential_e2e else {}


def build(p: KafkaParams) -> list[Role]:
    if p.system == "kafkadirect":
        from kdlab.kafka.direct import roles as kd_roles

        return kd_roles(p)
    return _apache_roles(p)  # Apache Kafka, or OSU's (the same broker behind SEND/RECV)


def _apache_roles(p: KafkaParams) -> list[Role]:
    names = brokers(p)
    states = {
        b: apache.BrokerState(
            b,
            logs={
                q: PartitionLog(q, p.segment_bytes, replicas(p, q)) for q in range(p.partitions) if b in replicas(p, q)
            },
            isr_size={q: p.replication_factor for q in range(p.partitions)},
        )
        for b in names
    }
    clients_per_net: dict[tuple[str, int], int] = {}
    roles: list[Role] = []

    def connect(leader: str, key: int) -> str:
        net = key % p.network_threads
        clients_per_net[leader, net] = clients_per_net.get((leader, net), 0) + 1
        return f"{leader}.net{net}"

    osu_clients: dict[str, list[str]] = {b: [] for b in names}
    e2e = end_to_end(p)
    for i in range(p.producers):
        q = i % p.partitions
        leader = replicas(p, q)[0]
        args = {"p": p, "pid": i, "partition": q, **e2e}
        if p.system == "osu":
            osu_clients[leader].append(f"producer{i}")
            roles.append(Role(f"producer{i}", f"p{i}", osu.producer, {**args, "service": "", "broker": leader}))
        else:
            roles.append(Role(f"producer{i}", f"p{i}", clients.producer, {**args, "service": connect(leader, i)}))
    for j in range(p.consumers):
        q = j % p.partitions
        leader = replicas(p, q)[0]
        args = {"p": p, "cid": j, "partition": q, "expected_records": expected_records(p, q), **e2e}
        host = consumer_host(p, j)
        if p.system == "osu":
            osu_clients[leader].append(f"consumer{j}")
            roles.append(Role(f"consumer{j}", host, osu.consumer, {**args, "service": "", "broker": leader}))
        else:
            service = connect(leader, p.producers + j)
            roles.append(Role(f"consumer{j}", host, clients.consumer, {**args, "service": service}))
    for follower in names:
        by_leader: dict[str, list[int]] = {}
        for q in range(p.partitions):
            reps = replicas(p, q)
            if follower in reps[1:]:
                by_leader.setdefault(reps[0], []).append(q)
        for leader, parts in sorted(by_leader.items()):
            connect(leader, 0)
            args = {"p": p, "state": states[follower], "leader": leader, "partitions": parts, "net": 0}
            roles.append(Role(f"{follower}.fetcher.{leader}", follower, apache.replica_fetcher, args))
    for b in names:
        st = states[b]
        for i in range(p.network_threads):
            args = {"p": p, "state": st, "index": i, "clients": clients_per_net.get((b, i), 0)}
            roles.append(Role(f"{b}.network{i}", b, apache.network_thread, args, daemon=True))
        for i in range(p.io_threads):
            roles.append(Role(f"{b}.io{i}", b, apache.io_thread, {"p": p, "state": st}, daemon=True))
        roles.append(Role(f"{b}.purgatory", b, apache.purgatory, {"p": p, "state": st}, daemon=True))
        if osu_clients[b]:
            args = {"p": p, "state": st, "clients_": osu_clients[b]}
            roles.append(Role(f"{b}.rdma_network", b, osu.network_thread, args, daemon=True))
    return roles
