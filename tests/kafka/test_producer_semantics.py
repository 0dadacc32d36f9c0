"""Kafka's producer: linger, an open-loop rate, acks timed when they arrive, acks=0, in-flight requests."""

from __future__ import annotations

import numpy as np
import pytest

from kdlab.kafka import direct_producer, sender
from kdlab.kafka.cluster import build, topology
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.records import batch_size_bytes
from kdlab.ops import Clock, Lookup
from kdlab.program import Role
from kdlab.workloads.kafka import consume_metrics, delivery_problems, produce_metrics
from kdsim.engine import SimEngine
from kdsim.profile import load_profile

OPEN = {"record_bytes": 100, "partitions": 4, "partitioner": "round-robin", "brokers": 2, "replication_factor": 2,
        "acks": -1, "segment_bytes": 1 << 22}  # fmt: skip


def _run(**params: object) -> tuple[KafkaParams, dict]:
    p = KafkaParams(**params)  # type: ignore[arg-type]
    return p, SimEngine("cx4-edr-100g").run(build(p))


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_at_a_low_rate_batches_close_on_linger(system: str) -> None:
    """2000 records/s over 4 partitions, linger 2 ms: each batch holds a few records, far below batch.size,
    and a request leaves when its oldest batch's linger expires (first send + 2 ms), not when the next record comes."""
    p, out = _run(system=system, rate_total=2000.0, duration_ms=40.0, linger_ms=2.0, **OPEN)
    sent = out["producer0"]["sent"]
    assert delivery_problems(out, p) == []
    full = p.records_per_batch
    middle = sent[8:-8]  # the last batches leave early: close() flushes without linger
    assert all(1 <= n < full for _, n, *_ in middle)
    assert all(batch_size_bytes(n, None, p.record_bytes) < p.batch_bytes for _, n, *_ in middle)
    # a request left once the linger of its oldest batch expired (the broker's other partitions' first batches
    # go with it, as Kafka's drain takes them): its ack comes after that first send + linger, within a round trip
    oldest: dict[float, float] = {}
    for _, _, _, _, first, _, ack in middle:
        oldest[ack] = max(oldest.get(ack, 0.0), ack - first)
    ages = np.array(list(oldest.values()))
    assert ages.min() >= 2e6 and np.median(ages) < 2e6 + 300e3


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_below_capacity_the_achieved_rate_is_the_offered_rate_and_latency_does_not_grow(system: str) -> None:
    runs = {}
    for ms in (50.0, 200.0):
        p, out = _run(system=system, rate_total=40_000.0, duration_ms=ms, warmup_ms=5.0, producers=2,
                      consumers=2, linger_ms=1.0, **OPEN)  # fmt: skip
        producers = [out["producer0"], out["producer1"]]
        consumers = [out["consumer0"], out["consumer1"]]
        runs[ms] = {**produce_metrics(p, producers), **consume_metrics(p, producers, consumers)}
        assert delivery_problems(out, p) == []
    for m in runs.values():
        assert m["offered_records_per_s"] == 40_000.0
        assert m["produce_records_per_s"] == pytest.approx(40_000.0, rel=0.01)
        # counted at receipt: the window's last ~ms of records arrive after it, the warm-up's first ones inside
        assert m["consume_records_per_s"] == pytest.approx(40_000.0, rel=0.02)
    for key in ("ack_latency_p50_us", "e2e_latency_p50_us"):
        assert runs[200.0][key] == pytest.approx(runs[50.0][key], rel=0.05)


def test_acks_are_timed_when_they_arrive_not_when_the_producer_next_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    """With several requests in flight to several brokers, each batch's ack time is the moment its response was
    received (a spy on the Sender's receive records the clock there)."""
    arrivals: list[float] = []
    original = sender.Sender.receive

    def receive(self, broker, response, e2e):
        from kdlab.ops import Clock

        arrivals.append((yield Clock()))
        return (yield from original(self, broker, response, e2e))

    monkeypatch.setattr(sender.Sender, "receive", receive)
    _, out = _run(system="kafka", records_per_producer=3000, max_in_flight=5, **OPEN)
    acks = sorted({s[6] for s in out["producer0"]["sent"]})
    assert len(acks) == len(arrivals)
    handoff = load_profile("cx4-edr-100g").host.handoff_ns  # the latch of the last outstanding send follows
    assert all(0 <= a - r <= handoff for a, r in zip(acks, sorted(arrivals), strict=True))


def test_acks_zero_frees_a_batch_when_it_is_sent() -> None:
    p, out = _run(
        system="kafka", records_per_producer=2000, consumers=1, **{**OPEN, "acks": 0, "replication_factor": 1}
    )
    sent = out["producer0"]["sent"]
    # complete once the request is out: after the send() work of its records, the batches' copy and CRC, with
    # no round trip (the batches of one request complete at one time)
    per_record = load_profile("cx4-edr-100g").host.producer_record_ns
    records_at: dict[float, int] = {}
    for _, records, *_, ack in sent:
        records_at[ack] = records_at.get(ack, 0) + records
    assert all(0 < ack - first < 50_000 + records_at[ack] * per_record for *_, first, _, ack in sent)
    assert delivery_problems(out, p) == []


def test_a_request_per_broker_carries_several_partitions_and_the_connection_limit_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requests: list[tuple[str, int, int]] = []
    original = sender.Sender.send

    def send(self, broker, batches):
        requests.append((broker, len(batches), len(self.in_flight[broker])))
        return (yield from original(self, broker, batches))

    monkeypatch.setattr(sender.Sender, "send", send)
    _run(system="kafka", records_per_producer=4000, max_in_flight=2, **{**OPEN, "partitions": 8})
    assert {b for b, _, _ in requests} == {"b0", "b1"}
    assert max(n for _, n, _ in requests) == 4  # each broker leads 4 of the 8 partitions
    assert max(k for _, _, k in requests) == 1  # a third request waits for an ack


SPREAD = {"record_bytes": 100, "partitions": 12, "brokers": 3, "replication_factor": 2, "producers": 2,
          "consumers": 2, "acks": -1, "segment_bytes": 1 << 22, "linger_ms": 1.0, "rate_total": 30_000.0,
          "duration_ms": 10.0}  # fmt: skip


def _spread(system: str) -> dict:
    return {**SPREAD, "partitioner": "fixed" if system == "kafkadirect" else "sticky"}


@pytest.mark.parametrize("system", ["kafka", "osu", "kafkadirect"])
def test_the_run_ends_with_the_last_ack_not_a_fetch_parked_for_fetch_max_wait(system: str) -> None:
    """A 10 ms open loop over 12 partitions on 3 brokers: some consumer's fetch is parked at a broker whose
    partitions get no more data; the consumer still stops once it has read to the producers' ends, so the
    simulated time (utilisations divide by it) ends with the last ack, and no fetch waited fetch.max.wait.ms."""
    p = KafkaParams(system=system, **_spread(system))
    engine = SimEngine("cx4-edr-100g")
    out = engine.run(build(p))
    assert delivery_problems(out, p) == []
    last_ack = max(s[6] for i in range(2) for s in out[f"producer{i}"]["sent"])
    assert last_ack <= engine.stats.sim_time_ns < last_ack + 0.1e6
    assert max(out[f"consumer{j}"]["t_last_ns"] for j in range(2)) < last_ack + 0.1e6
    fetches = [x for j in range(2) for x in out[f"consumer{j}"]["fetch_latency_ns"]]
    assert max(fetches) < 0.05 * p.fetch_max_wait_ms * 1e6


@pytest.mark.parametrize("system", ["kafka", "kafkadirect"])
def test_the_final_counts_are_published_when_the_application_is_done_not_after_the_last_ack(system: str) -> None:
    """``produced{pid}`` (how consumers know the end) comes once every record is offered: after the last send(),
    before the last ack, and it counts every record the producer appended."""
    p = KafkaParams(system=system, **_spread(system))

    def observer() -> object:
        seen = {}
        for pid in range(2):
            counts = yield Lookup(f"produced{pid}")
            seen[pid] = (counts, (yield Clock()))
        return seen

    out = SimEngine("cx4-edr-100g").run([*build(p), Role("observer", "p0", observer, {})])
    for pid in range(2):
        counts, at = out["observer"][pid]
        sent = out[f"producer{pid}"]["sent"]
        assert max(s[5] for s in sent) <= at < out[f"producer{pid}"]["t_last_ns"]
        per_partition: dict[int, int] = {}
        for q, n, *_ in sent:
            per_partition[q] = per_partition.get(q, 0) + n
        assert {q: n for q, n in counts.items() if n} == per_partition


@pytest.mark.parametrize(("system", "linger_ms", "rate"), [("kafka", 0.05, 20_000.0), ("kafkadirect", 0.01, 25_000.0)])
def test_a_full_connection_does_not_hold_back_another_brokers_linger(
    system: str, linger_ms: float, rate: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_in_flight 1, 3 partitions on 2 brokers: one broker (2 partitions) is often full with a batch ready
    while the other's batch lingers. The Sender wakes for that linger (next_ready_ns over the brokers that may
    take a request) instead of waiting for an ack: each batch of the lone partition goes out when its linger
    expires or its previous batch is acknowledged, whichever is later (give or take the Sender's CPU work)."""
    closes: list[tuple[int, float, int, float]] = []  # partition, created, records, drained at
    if system == "kafkadirect":
        real_close = direct_producer._Sender.close

        def close(self, part, batch):
            closes.append((batch.partition, batch.created_ns, batch.records, (yield Clock())))
            return (yield from real_close(self, part, batch))

        monkeypatch.setattr(direct_producer._Sender, "close", close)
    else:
        real_send = sender.Sender.send

        def send(self, broker, batches):
            now = yield Clock()
            closes.extend((b.partition, b.created_ns, b.records, now) for b in batches)
            return (yield from real_send(self, broker, batches))

        monkeypatch.setattr(sender.Sender, "send", send)
    p = KafkaParams(system=system, partitions=3, brokers=2, replication_factor=2, acks=-1, consumers=1,
                    partitioner="fixed" if system == "kafkadirect" else "round-robin", max_in_flight=1,
                    linger_ms=linger_ms, rate_total=rate, duration_ms=20.0, record_bytes=100,
                    segment_bytes=1 << 22)  # fmt: skip
    out = SimEngine("cx4-edr-100g").run(build(p))
    leaders = [topology(p).leader(q) for q in range(3)]
    (alone,) = [q for q in range(3) if leaders.count(leaders[q]) == 1]
    acks = sorted(s[6] for s in out["producer0"]["sent"] if s[0] == alone)
    mine = [c for c in closes if c[0] == alone]
    late = []
    for j, (_, created, records, at) in enumerate(mine[:-2]):  # the last ones leave at close(), without linger
        assert records < p.records_per_batch  # each closes on its linger
        free = acks[j - 1] if j else 0.0
        late.append(at - max(created + linger_ms * 1e6, free))
    assert len(late) > 50 and max(late) < 10e3  # a wait for the other broker's ack would be tens of us
