"""KafkaDirect (Taranov et al., SIGMOD'22): Kafka whose produce, replication and consume use one-sided RDMA.

This module wires one run's roles; each datapath has a module of its own:

* :mod:`~kdlab.kafka.direct_broker`: a broker's shared state (a table of segments by
  broker-local id, partitions, peers, slots) and its TCP control plane;
* :mod:`~kdlab.kafka.direct_commit`: the broker's RDMA thread and commit handlers
  (produce commit, follower append, replica acks, the high watermark);
* :mod:`~kdlab.kafka.direct_push`: push replication threads;
* :mod:`~kdlab.kafka.direct_replication`: what a follower's ack immediate carries, and
  fault injection for tests;
* :mod:`~kdlab.kafka.direct_producer` and :mod:`~kdlab.kafka.direct_consumer`: the clients.

The cluster's shape is Kafka's (:class:`~kdlab.kafka.topology.Topology`): brokers,
topics, replica placement, producers owning partitions (exclusive produce: one writer
per partition), consumer groups. Each broker has one RDMA thread with a QP per
producer, consumer and peer broker; ``handler_threads`` commit handlers (a partition's
handler is ``partition mod handler_threads``); ``replication_threads`` push threads; a
control plane. Hosts: brokers ``b0..``, producers ``p0..``, consumers ``c0..`` (with
``sequential_e2e``, EndToEndLatency's consumer runs on the producer's host).
"""

from __future__ import annotations

from typing import Any

from kdlab.kafka.clients import EndToEnd
from kdlab.kafka.direct_broker import (
    FollowerProgress,
    KdBroker,
    PartitionState,
    Peer,
    SegmentInfo,
    control_plane,
)
from kdlab.kafka.direct_commit import handler_thread, rdma_thread
from kdlab.kafka.direct_consumer import consumer
from kdlab.kafka.direct_producer import producer
from kdlab.kafka.direct_push import broker_id, push_thread
from kdlab.kafka.direct_replication import AckCodec, FlipBit
from kdlab.kafka.log import PartitionLog
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.topology import Topology
from kdlab.program import Role

__all__ = ["SegmentInfo", "brokers_of", "consumer", "producer", "roles"]


def brokers_of(partitions: tuple[int, ...], topo: Topology) -> list[str]:
    """The brokers leading any of ``partitions``, in broker order."""
    return sorted({topo.leader(q) for q in partitions}, key=broker_id)


def _states(p: KafkaParams, topo: Topology, faults: tuple[FlipBit, ...]) -> dict[str, KdBroker]:
    """Each broker's state: its replicas, its peers (with the replica indexes of their acks)."""
    follows = {b: topo.follows(b) for b in topo.brokers}  # follower -> leader -> partitions
    codec = AckCodec.for_replicas(max((len(qs) for f in follows.values() for qs in f.values()), default=1))
    states = {}
    for b in topo.brokers:
        parts = {}
        for q in topo.hosted_by(b):
            reps = topo.replicas[q]
            log = PartitionLog(q, p.segment_bytes, reps, retention_bytes=p.retention_bytes, pushed_copy=reps[0] != b)
            part = PartitionState(log, reps[0] == b)
            if part.leader:
                part.followers = {f: FollowerProgress() for f in reps[1:]}
            parts[q] = part
        led_here = {f: follows[f][b] for f in topo.brokers if b in follows[f]}
        peers = {o: Peer(o, led_here.get(o, []), follows[b].get(o, [])) for o in sorted({*led_here, *follows[b]})}
        states[b] = KdBroker(b, p, codec, parts, peers, faults=[f for f in faults if f.follower == b])
    return states


def roles(p: KafkaParams, faults: tuple[FlipBit, ...] = (), seed: int = 0) -> list[Role]:
    """The roles of one KafkaDirect run; ``faults`` (fault injection, for tests) flip bits in followers' copies."""
    topo = Topology(p)
    for f in faults:
        if f.partition >= len(topo.replicas) or f.follower not in topo.replicas[f.partition][1:]:
            raise ValueError(f"{f}: {f.follower} is not a follower of partition {f.partition}")
    states = _states(p, topo, faults)
    links: dict[str, list[tuple[str, str]]] = {b: [] for b in states}  # the RDMA thread's QPs: (kind, peer)
    clients = dict.fromkeys(states, 0)  # control-plane connections
    e2e: dict[str, Any] = {"e2e": EndToEnd("e2e0")} if p.sequential_e2e else {}
    out: list[Role] = []
    for w in topo.producers:
        leaders = {q: topo.leader(q) for q in w.partitions}
        for b in brokers_of(w.partitions, topo):
            links[b].append(("producer", w.name))
            clients[b] += 1
        args = {"p": p, "pid": w.pid, "me": w, "leaders": leaders, "seed": seed, **e2e}
        out.append(Role(w.name, f"p{w.pid}", producer, args))
    writers_of: dict[int, list[int]] = {}  # topic -> its producers (once, not a scan of every producer per consumer)
    for w in topo.producers:
        writers_of.setdefault(w.topic, []).append(w.pid)
    for c in topo.consumers:
        leaders = {q: topo.leader(q) for q in c.partitions}
        for b in brokers_of(c.partitions, topo):
            links[b].append(("consumer", c.name))
            clients[b] += 1
            mine = sum(leaders[q] == b for q in c.partitions)
            if mine > p.slots_per_consumer:
                raise ValueError(f"slots_per_consumer: {c.name} reads {mine} partitions on {b}, more than its row's "
                                 f"{p.slots_per_consumer} slots (num.rdmaslots.maxslots)")  # fmt: skip
        writers = writers_of.get(c.topic, [])
        args = {"p": p, "cid": c.cid, "me": c, "leaders": leaders, "writers": writers, **e2e}
        out.append(Role(c.name, "p0" if p.sequential_e2e else f"c{c.cid}", consumer, args))
    for b, st in states.items():
        readers = sum(kind == "consumer" for kind, _ in links[b])
        if readers > p.slot_consumers:
            raise ValueError(f"slot_consumers: {readers} consumers read from {b}, more than its "
                             f"{p.slot_consumers} slot rows (num.rdmaslots.maxconsumers)")  # fmt: skip
        links[b] += [("broker", o) for o in st.peers]
        clients[b] += sum(1 for peer in st.peers.values() if peer.led_there)  # each leader's push thread to us
        threads: dict[int, list[str]] = {}
        for f, peer in st.peers.items():
            if peer.led_here:
                threads.setdefault(broker_id(f) % p.replication_threads, []).append(f)
        for t, followers in sorted(threads.items()):
            out.append(Role(f"{b}.push{t}", b, push_thread, {"state": st, "index": t, "followers": followers},
                            daemon=True))  # fmt: skip
    for b, st in states.items():
        out.append(Role(f"{b}.rdma0", b, rdma_thread, {"state": st, "links": links[b]}, daemon=True))
        out.append(Role(f"{b}.control", b, control_plane, {"state": st, "clients": clients[b]}, daemon=True))
        for i in range(p.handler_threads):
            out.append(Role(f"{b}.handler{i}", b, handler_thread, {"state": st, "index": i}, daemon=True))
    return out
