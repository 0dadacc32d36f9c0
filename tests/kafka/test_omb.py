"""OMB workload files (validated, field named on error), OMB's metrics (HdrHistogram, as OMB measures), result JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from kdlab.kafka.omb import OmbError, OmbWorkload, load_omb_workload, omb_result_json
from kdlab.kafka.omb_metrics import histogram, omb_metrics, record, recorded, value_at_percentile

# openmessaging/benchmark workloads/1-topic-16-partitions-1kb.yaml (licence header dropped)
OMB_1_TOPIC_16_PARTITIONS_1KB = """\
name: 1 producer / 1 consumers on 1 topic

topics: 1
partitionsPerTopic: 16
messageSize: 1024
payloadFile: "payload/payload-1Kb.data"
subscriptionsPerTopic: 1
consumerPerSubscription: 1
producersPerTopic: 1
producerRate: 50000
consumerBacklogSizeGB: 0
testDurationMinutes: 15
"""

# openmessaging/benchmark workloads/1-topic-100-partitions-1kb-4p-4c-200k-backlog.yaml
OMB_BACKLOG = """\
name: Backlog for 200k rate 4 producers and 4 consumers on 1 topic / 100 partition

topics: 1
partitionsPerTopic: 100

messageSize: 1024
useRandomizedPayloads: true
randomBytesRatio: 0.5
randomizedPayloadPoolSize: 1000

subscriptionsPerTopic: 1
consumerPerSubscription: 4
producersPerTopic: 4

producerRate: 200000

consumerBacklogSizeGB: 512
testDurationMinutes: 5
"""

# Every field of io.openmessaging.benchmark.TestResult (openmessaging/benchmark HEAD 8559989).
TEST_RESULT_FIELDS = {"workload", "driver", "messageSize", "topics", "partitions", "producersPerTopic"}
TEST_RESULT_FIELDS |= {"consumersPerTopic", "publishRate", "publishErrorRate", "consumeRate", "backlog"}
for _family in ("publishLatency", "publishDelayLatency", "endToEndLatency"):
    _cap = _family[0].upper() + _family[1:]
    for _stat in ("Avg", "50pct", "75pct", "95pct", "99pct", "999pct", "9999pct", "Max"):
        TEST_RESULT_FIELDS |= {f"{_family}{_stat}", f"aggregated{_cap}{_stat}"}
    TEST_RESULT_FIELDS.add(f"aggregated{_cap}Quantiles")


def doc(**changes: object) -> dict:
    d = yaml.safe_load(OMB_1_TOPIC_16_PARTITIONS_1KB)
    for key, value in changes.items():
        if value is ...:
            del d[key]
        else:
            d[key] = value
    return d


# --- workloads -------------------------------------------------------------------------


def test_omb_1kb_workload_parses_with_its_real_values() -> None:
    w = load_omb_workload(OMB_1_TOPIC_16_PARTITIONS_1KB)
    assert w == OmbWorkload(
        name="1 producer / 1 consumers on 1 topic",
        topics=1,
        partitions_per_topic=16,
        message_size=1024,
        producers_per_topic=1,
        subscriptions_per_topic=1,
        consumer_per_subscription=1,
        producer_rate=50000,
        test_duration_minutes=15,
        payload_file="payload/payload-1Kb.data",
        consumer_backlog_size_gb=0,
    )
    assert w.key_distributor == "NO_KEY" and w.warmup_duration_minutes == 1
    assert (w.total_partitions, w.total_producers, w.total_consumers, w.find_max_rate) == (16, 1, 1, False)
    assert load_omb_workload(w.to_omb()) == w
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.topics = 2  # type: ignore[misc]


def test_omb_backlog_workload_with_randomized_payloads_parses() -> None:
    w = load_omb_workload(OMB_BACKLOG)
    assert w.payload_file is None and w.use_randomized_payloads
    assert (w.random_bytes_ratio, w.randomized_payload_pool_size) == (0.5, 1000)
    assert (w.consumer_backlog_size_gb, w.total_consumers, w.total_producers) == (512, 4, 4)


def test_load_from_file_and_mapping(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(OMB_1_TOPIC_16_PARTITIONS_1KB)
    assert load_omb_workload(path) == load_omb_workload(str(path)) == load_omb_workload(doc())
    w = load_omb_workload(doc(keyDistributor="KEY_ROUND_ROBIN", producerRate=0, subscriptionsPerTopic=0))
    assert w.key_distributor == "KEY_ROUND_ROBIN" and w.find_max_rate and w.total_consumers == 0


@pytest.mark.parametrize(
    ("changes", "field", "allowed"),
    [
        ({"topics": 0}, "topics", "greater than or equal to 1"),
        ({"partitionsPerTopic": "16"}, "partitionsPerTopic", "valid integer"),
        ({"messageSize": -1}, "messageSize", "greater than or equal to 1"),
        ({"messageSize": 2**31}, "messageSize", "less than or equal to 2147483647"),
        ({"producersPerTopic": 0}, "producersPerTopic", "greater than or equal to 1"),
        ({"subscriptionsPerTopic": -1}, "subscriptionsPerTopic", "greater than or equal to 0"),
        ({"consumerPerSubscription": 0}, "consumerPerSubscription", "greater than or equal to 1"),
        ({"producerRate": -5}, "producerRate", "greater than or equal to 0"),
        ({"producerRate": 1.5}, "producerRate", "valid integer"),
        ({"testDurationMinutes": 0}, "testDurationMinutes", "greater than or equal to 1"),
        ({"keyDistributor": "ROUND_ROBIN"}, "keyDistributor", "'NO_KEY', 'KEY_ROUND_ROBIN' or 'RANDOM_NANO'"),
        ({"consumerBacklogSizeGB": -1}, "consumerBacklogSizeGB", "greater than or equal to 0"),
        ({"randomBytesRatio": 1.5}, "randomBytesRatio", "less than or equal to 1"),
        ({"name": ""}, "name", "at least 1 character"),
        ({"messageSize": ...}, "messageSize", "required field is missing"),
        ({"producerrate": 5}, "producerrate", "unknown field; allowed: name, topics, partitionsPerTopic"),
        ({"consumerBacklogSizeGB": 1, "producerRate": 0}, "<workload>", "consumerBacklogSizeGB > 0 needs producerRate"),
        ({"useRandomizedPayloads": True}, "<workload>", "randomizedPayloadPoolSize >= 1"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(changes: dict, field: str, allowed: str) -> None:
    with pytest.raises(OmbError) as info:
        load_omb_workload(doc(**changes))
    assert f"<workload>: {field}: " in str(info.value)
    assert allowed in str(info.value)


def test_errors_name_the_file_and_the_shape(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(OMB_1_TOPIC_16_PARTITIONS_1KB.replace("topics: 1", "topics: 0"))
    with pytest.raises(OmbError, match=r"bad\.yaml: topics: Input should be greater than or equal to 1 \(got 0\)"):
        load_omb_workload(path)
    with pytest.raises(OmbError, match="does not exist"):
        load_omb_workload(tmp_path / "missing.yaml")
    with pytest.raises(OmbError, match="is a mapping"):
        load_omb_workload("- just\n- a list\n")
    with pytest.raises(OmbError, match="not valid YAML"):
        load_omb_workload("topics: [1\n")


def test_constructing_directly_validates_too() -> None:
    w = load_omb_workload(OMB_1_TOPIC_16_PARTITIONS_1KB)
    with pytest.raises(OmbError, match="partitionsPerTopic: Input should be greater than or equal to 1"):
        dataclasses.replace(w, partitions_per_topic=0)


# --- metrics ----------------------------------------------------------------------------------

MS = 1_000_000  # ns


def one_batch_run(**kw: object) -> dict:
    """One batch of 4 records: intended at 1..4 ms, sent at 2..5 ms, acked at 12 ms, consumed at 14.5 ms."""
    sent = [(0, 4, 1 * MS, 4 * MS, 2 * MS, 5 * MS, 12 * MS)]
    received = [(0, 4, 2 * MS, 5 * MS, 14.5 * MS)]
    return omb_metrics(sent, received, 0, 100 * MS, period_ns=50 * MS, **kw)


def test_one_batch_gives_its_four_publish_latencies() -> None:
    m = one_batch_run()
    # publish latencies 10, 9, 8, 7 ms (ack - send); nearest rank rounded up: p50 is the 2nd of 4
    assert (m["publishLatencyAvg"], m["publishLatency50pct"]) == ([8.5, 0.0], [8.0, 0.0])
    assert m["publishLatency75pct"] == [9.0, 0.0]
    assert m["publishLatency95pct"][0] == m["publishLatencyMax"][0] == 10.0
    assert m["aggregatedPublishLatencyQuantiles"] == {25.0: 7.0, 50.0: 8.0, 75.0: 9.0, 100.0: 10.0}
    assert m["publishDelayLatency50pct"] == [1000, 0] and m["aggregatedPublishDelayLatencyMax"] == 1000  # us
    # end to end in whole ms (OMB: currentTimeMillis - CreateTime): 14 - 2..5 ms
    assert m["aggregatedEndToEndLatencyQuantiles"] == {25.0: 9.0, 50.0: 10.0, 75.0: 11.0, 100.0: 12.0}
    assert m["publishRate"] == m["consumeRate"] == [80.0, 0.0] and m["backlog"] == [0, 0]  # 4 records / 50 ms


def test_end_to_end_clock_is_omb_milliseconds_unless_refined() -> None:
    sent = [(0, 1, 5.2 * MS, 5.2 * MS, 5.2 * MS, 5.2 * MS, 5.5 * MS)]
    received = [(0, 1, 5.2 * MS, 5.2 * MS, 5.9 * MS)]
    ms = omb_metrics(sent, received, 0, 10 * MS, period_ns=10 * MS)
    # 0.7 ms inside one millisecond: 0 ms, which OMB does not record (only latencies > 0), yet it is consumed
    assert ms["consumeRate"] == [100.0] and ms["aggregatedEndToEndLatencyMax"] == 0.0
    us = omb_metrics(sent, received, 0, 10 * MS, period_ns=10 * MS, e2e_clock_ns=1000)
    assert us["aggregatedEndToEndLatency50pct"] == 0.7 and us["aggregatedPublishLatency50pct"] == 0.3


def test_hdrhistogram_semantics_are_java_hdrhistogram_2_1_12() -> None:
    h = histogram(60_000_000)
    record(h, np.array([1, 2, 3, 4, 300_000]), "x")
    top, _, counts = recorded(h)
    cum = np.cumsum(counts)
    # count at percentile rounded up (Java 2.1.12), not rounded to nearest (the Python port's own getter)
    assert value_at_percentile(top, cum, 25) == 2 and h.get_value_at_percentile(25) == 1
    assert value_at_percentile(top, cum, 40) == 2 and value_at_percentile(top, cum, 100) == 300_001
    # 5 significant digits: 300000 us shares a 2-us bucket and reads as its top, as in OMB
    assert h.get_max_value() == 300_001
    assert value_at_percentile(top, np.array([], dtype=np.int64), 50) == 0


def test_quantile_map_is_hdrhistograms_percentile_iteration() -> None:
    sent = [(0, 1, 0, 0, 0, 0, (k + 1) * 1000) for k in range(1000)]  # publish latencies 1..1000 us
    q = omb_metrics(sent, [], 0, 10 * MS, period_ns=10 * MS)["aggregatedPublishLatencyQuantiles"]
    # ticks of 0.5% up to 50%, 0.25% up to 75%, ...; keyed by the percentile each step reached
    assert q[0.1] == 0.001 and q[0.5] == 0.005 and q[50.0] == 0.5 and q[50.3] == 0.503 and q[75.0] == 0.75
    assert q[100.0] == 1.0 and 50.1 not in q and 75.1 not in q and 75.2 in q
    assert list(q) == sorted(q)


def test_warm_up_periods_backlog_and_subscriptions() -> None:
    sent = [
        (0, 10, 0, 9 * MS, 0, 9 * MS, 9.5 * MS),  # acked in the warm-up: left out, but counted in the backlog
        (0, 10, 10 * MS, 19 * MS, 10 * MS, 19 * MS, 19.5 * MS),  # period 0
        (0, 5, 20 * MS, 24 * MS, 20 * MS, 24 * MS, 34 * MS),  # period 1 (acked late)
        (0, 5, 30 * MS, 34 * MS, 30 * MS, 34 * MS, 45 * MS),  # acked after the end: not published
    ]
    received = [(0, 10, 0, 9 * MS, 12 * MS), (0, 10, 0, 9 * MS, 13 * MS), (0, 10, 10 * MS, 19 * MS, 25 * MS)]
    m = omb_metrics(sent, received, 10 * MS, 40 * MS, subscriptions=2, period_ns=20 * MS)
    assert m["publishRate"] == [10 / 0.02, 5 / 0.01]  # the last period ends at end_ns
    assert m["consumeRate"] == [30 / 0.02, 0.0]
    assert m["backlog"] == [2 * 20 - 30, 2 * 25 - 30]  # subscriptions x sent - received, from the run's start
    assert m["publishLatencyMax"] == [9.5, 14.0] and m["publishDelayLatencyMax"] == [0, 0]
    assert m["aggregatedPublishLatencyMax"] == 14.0 and m["endToEndLatencyMax"] == [15.0, 0.0]
    with pytest.raises(ValueError, match="end_ns > warmup_end_ns"):
        omb_metrics(sent, received, 40 * MS, 40 * MS)


def test_latency_is_capped_at_omb_highest_trackable_value_and_bad_input_named() -> None:
    m = omb_metrics([(0, 1, 0, 0, 0, 0, 70_000 * MS)], [], 0, 80_000 * MS, period_ns=80_000 * MS)
    assert m["aggregatedPublishLatencyMax"] == pytest.approx(60_000, rel=1e-4)  # Math.min(60 s, latency)
    with pytest.raises(ValueError, match="publish latency: negative"):
        omb_metrics([(0, 1, 0, 0, 5 * MS, 5 * MS, 1 * MS)], [], 0, 10 * MS, period_ns=10 * MS)
    with pytest.raises(ValueError, match="sent: batches need finite times and at least 1 record"):
        omb_metrics([(0, 0, 0, 0, 0, 0, 1)], [], 0, 10 * MS, period_ns=10 * MS)


def test_a_million_records_are_recorded_by_count() -> None:
    rng = np.random.default_rng(3)
    n = rng.integers(1, 40, 50_000)
    t = np.sort(rng.uniform(0, 2e9, n.size))
    ack = t + 2e5 + rng.exponential(2e6, n.size)
    sent = np.column_stack([np.zeros(n.size), n, t, t + 1e5, t + 1e5, t + 2e5, ack])
    m = omb_metrics(sent.tolist(), [], 0, 3_000_000_000, period_ns=1_000_000_000)
    assert sum(r * 1.0 for r in m["publishRate"]) == n.sum()  # 1 s periods: every record acked once
    assert 0.5 < m["aggregatedPublishLatency50pct"] < m["aggregatedPublishLatency99pct"] < 12


# --- results -------------------------------------------------------------------------------


def test_result_has_omb_fields_and_values(tmp_path: Path) -> None:
    w = load_omb_workload(OMB_1_TOPIC_16_PARTITIONS_1KB)
    path = tmp_path / "result.json"
    res = omb_result_json(w, "Kafka", one_batch_run(), path=path, notes={"timeScale": 1.0})
    assert set(res) == TEST_RESULT_FIELDS | {"kdlab"} and res["kdlab"] == {"timeScale": 1.0}
    saved = json.loads(path.read_text())
    assert saved["aggregatedPublishLatencyQuantiles"] == {"25.0": 7.0, "50.0": 8.0, "75.0": 9.0, "100.0": 10.0}
    assert (res["workload"], res["driver"], res["messageSize"], res["partitions"]) == (w.name, "Kafka", 1024, 16)
    assert res["consumersPerTopic"] == 1 and res["publishErrorRate"] == [0.0, 0.0]
    for family in ("publishLatency", "publishDelayLatency", "endToEndLatency"):
        for stat in ("Avg", "50pct", "75pct", "95pct", "99pct", "999pct", "9999pct", "Max"):
            assert len(res[f"{family}{stat}"]) == 2  # one per period, as OMB's lists
    bare = omb_result_json("w", "KafkaDirect", omb_metrics([], [], 0, MS, period_ns=MS))
    assert bare["aggregatedEndToEndLatency99pct"] == 0 and bare["aggregatedEndToEndLatencyQuantiles"] == {}
    assert "messageSize" not in bare and "kdlab" not in bare  # no samples: OMB's zeros, an empty map
