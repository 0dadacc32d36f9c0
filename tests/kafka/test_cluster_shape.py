"""A Kafka cluster, not a pipe: brokers apart from the replication factor, placement, roles from the topology."""

from __future__ import annotations

from collections import Counter

import pytest

from kdlab.kafka.cluster import build, topology
from kdlab.kafka.params import KafkaParams
from kdlab.workloads.kafka import delivery_problems
from kdsim.engine import SimEngine

SPREAD = {"brokers": 3, "replication_factor": 3, "acks": -1, "partitions": 12, "producers": 3,
          "partitioner": "round-robin", "consumers": 3, "records_per_producer": 900, "record_bytes": 256,
          "segment_bytes": 65536}  # fmt: skip


@pytest.mark.parametrize(("brokers", "partitions"), [(3, 12), (6, 12), (12, 12), (6, 20)])
def test_each_broker_leads_its_share_of_partitions(brokers: int, partitions: int) -> None:
    p = KafkaParams(system="kafka", brokers=brokers, partitions=partitions, replication_factor=3)
    topo = topology(p)
    led = Counter(topo.leader(q) for q in range(partitions))
    share = partitions / brokers
    assert all(abs(led[b] - share) <= 1 for b in topo.brokers)


def test_roles_and_hosts_follow_the_topologys_ids() -> None:
    p = KafkaParams(system="kafka", brokers=6, partitions=12, producers=3, consumers=2, groups=2, topics=2,
                    replication_factor=3, partitioner="round-robin")  # fmt: skip
    topo = topology(p)
    roles = {r.name: r for r in build(p)}
    for w in topo.producers:
        assert roles[w.name].host == f"p{w.pid}" and roles[w.name].args["me"] == w
    for c in topo.consumers:
        assert roles[c.name].host == f"c{c.cid}" and roles[c.name].args["me"] == c
    assert len(topo.producers) == 6 and len(topo.consumers) == 8
    brokers = {r.host for r in roles.values() if r.host.startswith("b")}
    assert brokers == set(topo.brokers) == {f"b{i}" for i in range(6)}
    # every broker replicates from the leaders of the partitions it follows, with one connection per fetcher
    for b in topo.brokers:
        fetchers = {n for n, r in roles.items() if r.host == b and ".fetcher" in n}
        assert fetchers == {f"{b}.fetcher0.{leader}" for leader in topo.follows(b)}


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_three_producers_over_twelve_partitions_deliver_exactly_once_in_order(system: str) -> None:
    p = KafkaParams(system=system, **SPREAD)
    out = SimEngine("cx4-edr-100g").run(build(p))
    assert delivery_problems(out, p) == []
    for i in range(3):  # every producer used every partition
        assert {s[0] for s in out[f"producer{i}"]["sent"]} == set(range(12))
    read = sum(out[f"consumer{j}"]["records"] for j in range(3))
    assert read == sum(out[f"producer{i}"]["records"] for i in range(3)) == 3 * 900
    # a produce request carries batches of several partitions
    assert max(len(out[f"producer{i}"]["sent"]) for i in range(3)) > 12


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"brokers": 2, "replication_factor": 3}, "replication_factor: 3 replicas cannot be placed on 2 brokers"),
        ({"rate_total": 10.0, "rate_per_producer": 10.0}, "set at most one"),
        ({"warmup_ms": 5.0}, "warm-up needs a run length"),
        ({"lingr_ms": 5.0}, "lingr_ms"),
    ],
)
def test_bad_shapes_are_refused_in_one_line(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        KafkaParams(system="kafka", **params)
    assert any(match in line for line in str(err.value).splitlines())


def test_a_buffer_that_holds_no_batch_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"buffer_memory: 8192 B cannot hold one batch of 16384 B"):
        KafkaParams(system="kafka", record_bytes=4000, batch_bytes=16384, buffer_memory=8192, rate_total=1e4,
                    duration_ms=1.0)  # fmt: skip
