"""Kafka's replica fetchers: one request per leader per round, covering every partition the fetcher follows."""

from __future__ import annotations

from collections import defaultdict

import pytest

from kdlab.kafka import replica_fetcher
from kdlab.kafka.cluster import build, topology
from kdlab.kafka.params import KafkaParams
from kdlab.workloads.kafka import delivery_problems
from kdsim.engine import SimEngine

SHAPE = {"system": "kafka", "brokers": 3, "replication_factor": 3, "acks": -1, "partitions": 12, "producers": 3,
         "partitioner": "round-robin", "records_per_producer": 600, "record_bytes": 256, "consumers": 1,
         "segment_bytes": 1 << 20}  # fmt: skip


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict:
    """(follower, leader) -> the partitions of each fetch request its fetchers sent."""
    rounds: dict = defaultdict(list)
    original = replica_fetcher.fetch_request

    def fetch_request(p, state, order):
        request = original(p, state, order)
        rounds[state.name, request.replica].append(tuple(f.partition for f in request.partitions))
        return request

    monkeypatch.setattr(replica_fetcher, "fetch_request", fetch_request)
    return rounds


def test_one_request_per_leader_per_round_covers_all_its_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    requests: dict = defaultdict(list)
    real = replica_fetcher.replica_fetcher

    def fetcher(p, state, leader, partitions, service):
        original = replica_fetcher.fetch_request

        def spy(p_, state_, order):
            requests[state.name, leader].append(sorted(order))
            return original(p_, state_, order)

        gen = real(p, state, leader, partitions, service)
        value = None
        while True:  # run the fetcher with its request builder spied on
            replica_fetcher.fetch_request = spy
            try:
                op = gen.send(value)
            finally:
                replica_fetcher.fetch_request = original
            value = yield op

    monkeypatch.setattr(replica_fetcher, "replica_fetcher", fetcher)
    p = KafkaParams(**SHAPE)
    out = SimEngine("cx4-edr-100g").run(build(p))
    assert delivery_problems(out, p) == []
    topo = topology(p)
    for follower in topo.brokers:
        for leader, parts in topo.follows(follower).items():
            got = requests[follower, leader]
            assert len(got) >= 3  # several rounds
            assert all(r == sorted(parts) for r in got)  # each covers every partition it follows from that leader
    assert len(requests) == sum(len(topo.follows(b)) for b in topo.brokers)  # one fetcher per (follower, leader)


def test_num_replica_fetchers_splits_a_leaders_partitions_by_fetcher_id() -> None:
    p = KafkaParams(**{**SHAPE, "replica_fetchers": 2})
    topo = topology(p)
    roles = [r for r in build(p) if ".fetcher" in r.name]
    for r in roles:
        fid = int(r.name.split(".")[1].removeprefix("fetcher"))
        assert all(topo.fetcher_of(q) == fid for q in r.args["partitions"])
    covered = defaultdict(list)
    for r in roles:
        covered[r.host, r.args["leader"]] += r.args["partitions"]
    assert {k: sorted(v) for k, v in covered.items()} == {
        (b, leader): sorted(parts) for b in topo.brokers for leader, parts in topo.follows(b).items()
    }
    out = SimEngine("cx4-edr-100g").run(build(p))
    assert delivery_problems(out, p) == []


def test_acks_all_latency_does_not_grow_with_the_partitions_a_follower_replicates() -> None:
    """The issue's symptom: one fetch per partition made acks=all latency grow with the partitions. One request per
    leader keeps it flat from 3 to 24 partitions (same load per partition, 3 brokers)."""
    p50 = {}
    for n in (3, 24):
        p = KafkaParams(**{**SHAPE, "partitions": n, "producers": 1, "consumers": 0, "rate_total": 200.0 * n,
                           "duration_ms": 30.0, "linger_ms": 1.0})  # fmt: skip
        out = SimEngine("cx4-edr-100g").run(build(p))
        lat = sorted(a - f for *_, f, _, a in out["producer0"]["sent"])
        p50[n] = lat[len(lat) // 2]
    assert p50[24] < 1.3 * p50[3]
