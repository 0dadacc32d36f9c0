"""The cluster's shape follows Kafka's rules: placement, partition ownership, group assignment."""

import random
from collections import Counter

import pytest

from kdlab.kafka.params import KafkaParams
from kdlab.kafka.topology import Topology, assign_group, assign_replicas


@pytest.mark.parametrize(("brokers", "partitions", "rf"), [(3, 12, 3), (6, 12, 3), (12, 50, 2), (5, 7, 1)])
def test_leaders_spread_round_robin(brokers: int, partitions: int, rf: int) -> None:
    t = Topology(KafkaParams(system="kafka", brokers=brokers, partitions=partitions, replication_factor=rf))
    led = Counter(t.leader(q) for q in range(partitions))
    share = partitions / brokers
    assert all(abs(led[b] - share) <= 1 for b in t.brokers)
    for reps in t.replicas:  # rf distinct brokers, leader first
        assert len(set(reps)) == rf


def test_followers_are_the_following_brokers_with_kafkas_shift() -> None:
    """AdminUtils with fixed start 0 and shift 0: partition q on q, q+1, q+2, then the shift grows every n."""

    class Fixed(random.Random):
        def randrange(self, n: int) -> int:  # type: ignore[override]
            return 0

    names = [f"b{i}" for i in range(4)]
    reps = assign_replicas(8, 3, names, Fixed())
    assert reps[:4] == [("b0", "b1", "b2"), ("b1", "b2", "b3"), ("b2", "b3", "b0"), ("b3", "b0", "b1")]
    assert reps[4] == ("b0", "b2", "b3")  # second round: followers shifted by one


def test_rack_aware_placement_puts_replicas_in_distinct_racks() -> None:
    p = KafkaParams(system="kafka", brokers=6, racks=3, partitions=30, replication_factor=3)
    t = Topology(p)
    rack = {b: i % 3 for i, b in enumerate(t.brokers)}
    for reps in t.replicas:
        assert len({rack[b] for b in reps}) == 3


def test_placement_that_cannot_be_made_is_one_line() -> None:
    with pytest.raises(ValueError, match="replication_factor: 4 replicas cannot be placed on 3 brokers"):
        KafkaParams(system="kafka", brokers=3, replication_factor=4)


def test_brokers_default_to_the_replication_factor() -> None:
    assert Topology(KafkaParams(system="kafka", replication_factor=3)).brokers == ["b0", "b1", "b2"]


def test_topics_have_their_own_partitions_and_producers() -> None:
    p = KafkaParams(system="kafka", brokers=3, topics=2, partitions=4, producers=2, consumers=2, groups=2)
    t = Topology(p)
    assert len(t.replicas) == 8
    assert [w.partitions for w in t.producers] == [(0, 2), (1, 3), (4, 6), (5, 7)]
    assert [w.topic for w in t.producers] == [0, 0, 1, 1]
    by_group: dict = {}
    for c in t.consumers:
        by_group.setdefault((c.topic, c.group), []).extend(c.partitions)
    assert {k: sorted(v) for k, v in by_group.items()} == {
        (0, 0): [0, 1, 2, 3], (0, 1): [0, 1, 2, 3], (1, 0): [4, 5, 6, 7], (1, 1): [4, 5, 6, 7],
    }  # fmt: skip
    assert sorted(c.cid for c in t.consumers) == list(range(8))


def test_spreading_partitioners_give_every_producer_every_partition() -> None:
    p = KafkaParams(system="kafka", partitions=12, producers=3, partitioner="sticky")
    assert all(w.partitions == tuple(range(12)) for w in Topology(p).producers)


@pytest.mark.parametrize(
    ("assignor", "expected"),
    [("range", [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]), ("round-robin", [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]])],
)
def test_assignors_as_kafka(assignor: str, expected: list) -> None:
    assert assign_group(list(range(10)), 3, assignor) == expected


def test_more_members_than_partitions_leave_some_idle() -> None:
    assert assign_group([0, 1], 3, "range") == [[0], [1], []]


def test_fetcher_id_as_kafka() -> None:
    p = KafkaParams(system="kafka", brokers=3, replication_factor=3, partitions=8, replica_fetchers=3)
    t = Topology(p)
    assert [t.fetcher_of(q) for q in range(8)] == [q % 3 for q in range(8)]
