"""Kafka's guarantees hold in the model, for every system."""

import pytest

from kdlab.kafka import apache
from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.protocol import ProduceResponse
from kdlab.spec import Point, SpecError, load_spec
from kdlab.workloads.kafka import KafkaWorkload, delivery_ok, delivery_problems
from kdsim.engine import SimEngine

SMALL = {"records_per_producer": 600, "record_bytes": 512, "segment_bytes": 65536}


def _run(**kw):
    p = KafkaParams(**{**SMALL, **kw})
    return p, SimEngine("cx4-edr-100g").run(build(p))


@pytest.mark.parametrize(
    "kw",
    [
        {"system": "kafka"},
        {"system": "kafka", "producers": 3, "partitions": 2, "consumers": 2},
        {"system": "osu", "producers": 2, "partitions": 2, "consumers": 2, "replication_factor": 2},
        {
            "system": "kafka",
            "producers": 2,
            "partitions": 6,
            "brokers": 3,
            "replication_factor": 2,
            "acks": -1,
            "partitioner": "round-robin",
            "consumers": 2,
        },
        {"system": "kafkadirect", "produce_mode": "exclusive", "producers": 2, "partitions": 2, "consumers": 2},
        {"system": "kafkadirect", "produce_mode": "shared", "producers": 3, "partitions": 1, "consumers": 1},
        {"system": "kafkadirect", "slots": False, "consumers": 1},
        {"system": "kafkadirect", "replication_factor": 3, "acks": -1, "producers": 2, "partitions": 2, "consumers": 2},
    ],
)
def test_every_record_is_delivered_once_in_order_across_segment_rolls(kw: dict) -> None:
    kw.setdefault("consumers", 1)
    p, out = _run(**kw)
    # 600 records of 512 B in 64 KiB segments: several rolls per partition
    assert p.records_total * (p.record_bytes + 9) > 3 * p.segment_bytes
    assert delivery_problems(out, p) == []
    produced = sum(out[f"producer{i}"]["records"] for i in range(p.producers))
    assert sum(out[f"consumer{j}"]["records"] for j in range(p.consumers)) == produced


def test_delivery_check_catches_a_lost_batch() -> None:
    p, out = _run(system="kafka", consumers=1)
    assert delivery_ok(out, p)
    out["consumer0"]["delivered"].pop(3)
    out["consumer0"]["received"].pop(3)
    assert not delivery_ok(out, p)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record, at every produce ack, each acknowledged batch's offsets and its partition's high watermark."""
    seen: list = []
    original = apache._respond

    def respond(state, conn, message, nbytes, zero_copy=False):
        if isinstance(message, ProduceResponse):
            for ack in message.acks:
                log = state.logs[ack.partition]
                holders = [log.leo, *log.follower_leo.values()]
                seen.append((ack.base_offset, log.hw, min(holders), len(holders)))
        return original(state, conn, message, nbytes, zero_copy)

    monkeypatch.setattr(apache, "_respond", respond)
    return seen


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_acks_all_is_answered_only_once_every_in_sync_replica_has_the_batch(
    system: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the new shapes too: 6 brokers, 3 replicas, 12 partitions spread by 3 producers, requests of several
    partitions each; the answer comes only once every partition of the request is below the high watermark."""
    shape = {"brokers": 6, "partitions": 12, "producers": 3, "partitioner": "round-robin", "replication_factor": 3}
    p = KafkaParams(system=system, acks=-1, **shape, **SMALL)
    seen = _spy(monkeypatch)
    out = SimEngine("cx4-edr-100g").run(build(p))
    per = p.records_per_batch
    assert len(seen) == sum(len(out[f"producer{i}"]["sent"]) for i in range(p.producers))
    for base, hw, held_by_all, replicas in seen:
        assert replicas == 3 and hw >= base + 1 and held_by_all >= hw
    # and replication is what holds it back: with acks=1 some ack precedes the followers
    seen.clear()
    SimEngine("cx4-edr-100g").run(build(p.model_copy(update={"acks": 1})))
    assert any(hw < base + per for base, hw, _, _ in seen)


@pytest.mark.parametrize("system", ["kafka", "osu"])
def test_consumers_never_read_past_the_high_watermark(system: str, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = {"brokers": 3, "partitions": 6, "producers": 2, "partitioner": "round-robin", "consumers": 2}
    p = KafkaParams(system=system, replication_factor=2, acks=1, **shape, **SMALL)
    original = apache._fetch_reply
    checked = {"consumer": 0, "follower": 0}

    def fetch_reply(state, req):
        reply = original(state, req)
        for asked, part in zip(req.partitions, reply.partitions, strict=True):
            log = state.logs[part.partition]
            last = asked.offset + sum(int.from_bytes(b[57:61], "big") for b in part.batches)
            if req.replica is None:
                assert last <= log.hw, f"a consumer was served offsets up to {last} above the high watermark {log.hw}"
                checked["consumer"] += bool(part.batches)
            else:
                checked["follower"] += last > log.hw  # followers may, and must, read past it
        return reply

    monkeypatch.setattr(apache, "_fetch_reply", fetch_reply)
    out = SimEngine("cx4-edr-100g").run(build(p))
    assert delivery_ok(out, p)
    assert checked["consumer"] > 0 and checked["follower"] > 0


def test_same_point_same_result() -> None:
    params = {"system": "kafkadirect", "consumers": 1, **SMALL}
    point = Point("t", "kafka", "sim", "cx4-edr-100g", (), tuple(sorted(params.items())), 1)
    a, b = KafkaWorkload().run_point(point)[0], KafkaWorkload().run_point(point)[0]
    assert a == b


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"system": "kafka", "record_bytes": 70000, "segment_bytes": 65536}, "segment"),
        ({"system": "kafka", "partitions": 0}, "partitions"),
        ({"system": "rabbitmq"}, "system"),
    ],
)
def test_bad_kafka_specs_are_rejected_with_the_field_named(params: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        load_spec({"name": "bad", "workload": "kafka", "params": params})


def test_omb_workload_runs_and_writes_omb_result_json(tmp_path) -> None:
    import json

    from kdlab.kafka.omb_run import run_omb

    workload = tmp_path / "w.yaml"
    workload.write_text(
        "name: small\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 512\nsubscriptionsPerTopic: 1\n"
        "consumerPerSubscription: 2\nproducersPerTopic: 2\nproducerRate: 1000\ntestDurationMinutes: 1\n"
    )
    out = tmp_path / "result.json"
    result = run_omb(workload, "kafka", out=out, time_scale=0.001, e2e_clock_ns=1)  # 2 x 60 ms, 1000 msg/s
    saved = json.loads(out.read_text())
    assert saved["workload"] == "small" and saved["publishRate"][0] > 0 and saved["consumeRate"][0] > 0
    assert saved["aggregatedEndToEndLatency50pct"] > 0 and saved["aggregatedPublishLatency50pct"] > 0
    assert "kdsim kafka" in result["driver"]


def test_kafka_rows_report_utilisation_and_pinned_memory() -> None:
    params = {"system": "kafkadirect", "consumers": 1, **SMALL}
    row = KafkaWorkload().run_point(Point("t", "kafka", "sim", "cx4-edr-100g", (), tuple(sorted(params.items())), 1))[0]
    assert 0 < row["rdma_link_util_broker"] <= 1 and 0 < row["nic_pu_util_broker"] <= 1
    assert row["registered_mb_per_broker"] >= SMALL["segment_bytes"] / 1e6  # pinned segments
    kafka = dict(params, system="kafka")
    krow = KafkaWorkload().run_point(Point("t", "kafka", "sim", "cx4-edr-100g", (), tuple(sorted(kafka.items())), 1))[0]
    assert krow["registered_mb_per_broker"] == 0 and krow["tcp_link_util_broker"] > 0
