"""Kafka's producer: linger, an open-loop rate, acks timed when they arrive, acks=0, in-flight requests."""

from __future__ import annotations

import numpy as np
import pytest

from kdlab.kafka import sender
from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.records import batch_size_bytes
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
    # complete once the request is out: after the batches' copy and CRC, with no round trip
    assert all(0 < ack - first < 50_000 for *_, first, _, ack in sent)
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
