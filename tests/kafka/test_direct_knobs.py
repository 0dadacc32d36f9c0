"""The KafkaDirect artifact's knobs and Kafka's producer semantics on the RDMA producer (issue 12 items 2, 5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from kdlab.kafka import direct, direct_producer
from kdlab.kafka.params import KafkaParams
from kdsim.engine import SimEngine

SMALL = {"system": "kafkadirect", "records_per_producer": 400, "record_bytes": 100, "batch_bytes": 1024,
         "segment_bytes": 16384}  # fmt: skip


def _run(**kw: Any) -> tuple[KafkaParams, dict, dict]:
    p = KafkaParams(**{**SMALL, **kw})
    roles = direct.roles(p)
    states = {r.host: r.args["state"] for r in roles if "state" in r.args}
    return p, SimEngine("cx4-edr-100g").run(roles), states


def test_a_producer_asks_for_a_new_segment_at_most_once_per_tcptimeout() -> None:
    """num.rdmaproduce.tcptimeout: 16 KiB segments fill in ~15 batches, far sooner than 1 ms."""
    free = _run()
    throttled = _run(segment_request_ms=1.0)
    for p, out, states in (free, throttled):
        segments = len(states["b0"].partitions[0].segments)
        assert segments >= 3 and out["consumer0" if p.consumers else "producer0"]["records"] == 400
    p, out, states = throttled
    rolls = len(states["b0"].partitions[0].segments) - 1
    span = out["producer0"]["t_last_ns"] - out["producer0"]["t_first_ns"]
    assert span >= rolls * 1e6  # each roll waited for the throttle, counted from the last request
    assert span < (rolls + 1) * 1e6
    assert free[1]["producer0"]["t_last_ns"] - free[1]["producer0"]["t_first_ns"] < 1e6


def _spy_requests(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The most writes outstanding (posted, not acked) and waiting on any connection."""
    seen = {"requests": 0, "waiting": 0}
    trigger = direct_producer._Sender.trigger

    def spy(sender: Any, conn: Any, now: float) -> Any:
        seen["waiting"] = max(seen["waiting"], len(conn.waiting))
        yield from trigger(sender, conn, now)
        seen["requests"] = max(seen["requests"], conn.requests)

    monkeypatch.setattr(direct_producer._Sender, "trigger", spy)
    return seen


@pytest.mark.parametrize(("quota", "most"), [(2, 2), (50, 8)])
def test_maxrequestquota_bounds_the_writes_outstanding_per_connection(
    monkeypatch: pytest.MonkeyPatch, quota: int, most: int
) -> None:
    seen = _spy_requests(monkeypatch)
    _, out, _ = _run(max_in_flight=8, rdma_request_quota=quota)
    assert out["producer0"]["records"] == 400
    assert seen["requests"] == most


def test_a_contended_connection_is_not_drained(monkeypatch: pytest.MonkeyPatch) -> None:
    """contention 0: once a write waits for quota, the broker gets no new batches until it is written."""
    seen = _spy_requests(monkeypatch)
    _run(max_in_flight=8, rdma_request_quota=1, rdma_contention=0)
    assert seen["waiting"] == 1
    seen = _spy_requests(monkeypatch)
    _run(max_in_flight=8, rdma_request_quota=1, rdma_contention=100)
    assert seen["waiting"] == 7


def test_below_capacity_the_achieved_rate_is_the_offered_rate_and_latency_does_not_grow() -> None:
    medians: dict[int, list[float]] = {}
    for duration_ms in (2.0, 4.0):
        p, out, _ = _run(producers=2, partitions=4, rate_per_producer=200_000, duration_ms=duration_ms,
                         linger_ms=0.02)  # fmt: skip
        for i in range(p.producers):
            sent = out[f"producer{i}"]["sent"]
            assert sum(s[1] for s in sent) == pytest.approx(200_000 * duration_ms / 1e3, rel=0.01)
            assert max(s[4] - s[2] for s in sent) == 0  # never blocked: each record sent when intended
            medians.setdefault(i, []).append(np.median([s[6] - s[4] for s in sent]))
    for runs in medians.values():  # each producer: the same latency, whatever the run length
        assert max(runs) == pytest.approx(min(runs), rel=0.02)


def test_at_a_low_rate_batches_close_on_linger() -> None:
    p, out, _ = _run(rate_per_producer=100_000, duration_ms=2.0, linger_ms=0.05)
    sent = out["producer0"]["sent"]
    per = p.records_per_batch
    assert all(s[1] < per for s in sent)  # 6 records per linger, batches hold 8
    assert all(s[3] - s[2] <= 0.05e6 + 1e-6 for s in sent)  # a batch's records span at most the linger
    first_ack = min(s[6] - s[2] for s in sent[:-1])  # the last is flushed at close(), without linger
    assert first_ack >= 0.05e6  # each other waited for its linger before its write
