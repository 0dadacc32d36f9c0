"""Kafka's consumers: group assignment, one fetch per broker over all of a member's partitions, the end, the start."""

from __future__ import annotations

from collections import Counter

import pytest

from kdlab.kafka import fetcher
from kdlab.kafka.cluster import build, topology
from kdlab.kafka.params import KafkaParams
from kdlab.workloads.kafka import delivery_problems
from kdsim.engine import SimEngine

GROUP = {"brokers": 3, "replication_factor": 2, "partitions": 12, "producers": 3, "partitioner": "round-robin",
         "consumers": 3, "records_per_producer": 1500, "record_bytes": 256, "segment_bytes": 1 << 20}  # fmt: skip


def _run(**params: object) -> tuple[KafkaParams, dict]:
    p = KafkaParams(**params)  # type: ignore[arg-type]
    return p, SimEngine("cx4-edr-100g").run(build(p))


def _partitions_read(out: dict, name: str) -> Counter:
    return Counter(d[6] for d in out[name]["delivered"])


@pytest.mark.parametrize("system", ["kafka", "osu"])
@pytest.mark.parametrize("assignor", ["range", "round-robin"])
def test_a_group_of_three_reads_each_of_twelve_partitions_exactly_once(system: str, assignor: str) -> None:
    p, out = _run(system=system, assignor=assignor, **GROUP)
    assert delivery_problems(out, p) == []
    seen = [set(_partitions_read(out, c.name)) for c in topology(p).consumers]
    assert [sorted(s) for s in seen] == [sorted(c.partitions) for c in topology(p).consumers]
    assert set().union(*seen) == set(range(12)) and sum(len(s) for s in seen) == 12


def test_two_groups_each_read_everything() -> None:
    p, out = _run(system="kafka", groups=2, **GROUP)
    assert delivery_problems(out, p) == []
    produced = sum(out[f"producer{i}"]["records"] for i in range(3))
    for g in (0, 1):
        members = [c for c in topology(p).consumers if c.group == g]
        assert sum(out[c.name]["records"] for c in members) == produced


def test_one_fetch_per_broker_covers_every_partition_there_and_one_is_outstanding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One consumer of 12 partitions on 3 brokers: each request names all its unfinished partitions that broker
    leads, and the consumer never has two fetches outstanding to one broker."""
    sends: list[tuple[str, tuple[int, ...]]] = []
    real = fetcher.consumer

    def consumer(p, me, leaders, links, writers, ends=None, e2e=None):
        inner_send = links.send

        def send(broker, request, nbytes):
            sends.append((broker, tuple(f.partition for f in request.partitions)))
            yield from inner_send(broker, request, nbytes)

        links.send = send
        return (yield from real(p, me, leaders, links, writers, ends, e2e))

    monkeypatch.setattr(fetcher, "consumer", consumer)
    p, out = _run(system="kafka", **{**GROUP, "consumers": 1})
    assert delivery_problems(out, p) == []
    leaders = {q: topology(p).leader(q) for q in range(12)}
    first = {}
    for broker, parts in sends:
        first.setdefault(broker, parts)
        assert {leaders[q] for q in parts} == {broker}
    assert {b: sorted(parts) for b, parts in first.items()} == {
        b: sorted(q for q in range(12) if leaders[q] == b) for b in topology(p).brokers
    }


@pytest.mark.parametrize("start", ["consume_after_produce", "backlog_bytes"])
def test_consumers_start_after_the_producers_or_a_backlog(start: str) -> None:
    value = True if start == "consume_after_produce" else 40_000
    p, out = _run(system="kafka", **{**GROUP, start: value})
    assert delivery_problems(out, p) == []
    first_fetch = min(out[f"consumer{j}"]["t_first_ns"] for j in range(3))
    acked = sorted(ack for i in range(3) for *_, ack in out[f"producer{i}"]["sent"])
    if start == "consume_after_produce":
        assert first_fetch >= acked[-1]
    else:  # no warm-up: paused from the start until every producer has had its third of the backlog acknowledged
        for i in range(3):
            sent = out[f"producer{i}"]["sent"]
            assert sum(n for _, n, *_, ack in sent if ack <= first_fetch) * p.record_bytes >= 40_000 / 3
        assert first_fetch < acked[-1]


def _resumes_at(p: KafkaParams, out: dict, producers: int) -> float:
    """When every producer had its share of the backlog acknowledged after its warm-up's end."""
    share = p.backlog_bytes / (p.groups * producers)
    times = []
    for i in range(producers):
        r = out[f"producer{i}"]
        warm_end = r["t_first_ns"] + p.warmup_ms * 1e6
        total = 0
        for _, n, *_, ack in sorted(r["sent"], key=lambda s: s[6]):
            total += n if ack >= warm_end else 0
            if total * p.record_bytes >= share:
                times.append(ack)
                break
    return max(times)


@pytest.mark.parametrize("system", ["kafka", "osu", "kafkadirect"])
def test_omb_backlog_consumers_read_the_warm_up_pause_until_the_backlog_is_built_then_drain_it(system: str) -> None:
    """OMB's buildAndDrainBacklog: consumers read during the warm-up, pause at its end while the producers go on,
    resume once backlog_bytes (over the subscriptions) are unread, and then catch up."""
    backlog = 600 * 256  # 600 records: ~6 ms at 100,000 records/s
    shape = {**GROUP, "partitioner": "fixed" if system == "kafkadirect" else "round-robin", "groups": 2}
    p, out = _run(system=system, rate_total=100_000.0, warmup_ms=4.0, duration_ms=12.0, backlog_bytes=backlog,
                  **shape)  # fmt: skip
    assert delivery_problems(out, p) == []
    pause = max(out[f"producer{i}"]["t_first_ns"] for i in range(3)) + p.warmup_ms * 1e6
    resume = _resumes_at(p, out, 3)
    # 600 records over 2 groups: 300 records acknowledged after the pause, 3 ms at 100,000 records/s
    assert 2.5e6 < resume - pause < 4e6
    last_ack = max(s[6] for i in range(3) for s in out[f"producer{i}"]["sent"])
    for c in topology(p).consumers:
        got = [r[4] for r in out[c.name]["received"]]
        assert min(got) < pause - 2e6  # read through the warm-up
        assert all(t <= pause + 0.1e6 or t >= resume for t in got)  # nothing between the pause and the resume
        assert min(t for t in got if t > pause + 0.1e6) < resume + 0.3e6  # resumed at once
        assert max(got) < last_ack + 1e6  # and drained: the end comes with the producers'


def test_a_consumer_with_no_partition_returns_at_once() -> None:
    p, out = _run(system="kafka", **{**GROUP, "partitions": 2, "consumers": 3})
    assert out["consumer2"]["records"] == 0 and delivery_problems(out, p) == []
