"""OMB workload files (validated, field named on error) and OMB-style result JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from kdlab.kafka.omb import OmbError, OmbWorkload, load_omb_workload, omb_result_json, percentile

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


# --- results -------------------------------------------------------------------------------


def test_percentile_is_hdrhistogram_nearest_rank() -> None:
    s = np.arange(1, 1001, dtype=float)
    assert [percentile(s, p) for p in (0, 50, 75, 95, 99, 99.9, 99.99, 100)] == [1, 500, 750, 950, 990, 999, 1000, 1000]
    assert percentile(np.array([7.0]), 99.99) == 7.0
    with pytest.raises(ValueError):
        percentile(np.array([]), 50)


def test_result_has_omb_fields_and_values(tmp_path: Path) -> None:
    w = load_omb_workload(OMB_1_TOPIC_16_PARTITIONS_1KB)
    rng = np.random.default_rng(1)
    pub = rng.permutation(np.arange(1, 1001, dtype=float))  # 1..1000 ms, shuffled
    path = tmp_path / "result.json"
    res = omb_result_json(
        w,
        "Kafka",
        [50000.0, 49990.5],
        [50000.0, 50001.0],
        pub,
        pub * 2,
        path=path,
        backlog=[0, 3],
        period_publish_latency_ms=[pub[:500], pub[500:]],
    )
    assert set(res) == TEST_RESULT_FIELDS
    assert json.loads(path.read_text()) == res
    assert (res["workload"], res["driver"], res["messageSize"], res["partitions"]) == (w.name, "Kafka", 1024, 16)
    assert res["publishRate"] == [50000.0, 49990.5] and res["publishErrorRate"] == [0.0, 0.0]
    assert res["consumeRate"] == [50000.0, 50001.0] and res["backlog"] == [0, 3]
    expected = {"Avg": 500.5, "50pct": 500, "75pct": 750, "95pct": 950, "99pct": 990, "999pct": 999}
    expected |= {"9999pct": 1000, "Max": 1000}
    for stat, value in expected.items():
        assert res[f"aggregatedPublishLatency{stat}"] == value
        assert res[f"aggregatedEndToEndLatency{stat}"] == 2 * value
        assert len(res[f"publishLatency{stat}"]) == 2 and res[f"endToEndLatency{stat}"] == []
    assert res["aggregatedPublishLatencyQuantiles"]["99.9"] == 999
    assert res["aggregatedPublishDelayLatency99pct"] is None and res["aggregatedPublishDelayLatencyQuantiles"] == {}


def test_result_without_consumers_and_bad_samples() -> None:
    res = omb_result_json("w", "KafkaDirect", [1.0], [0.0], [0.5, 0.7], [])
    assert res["aggregatedEndToEndLatency99pct"] is None and "messageSize" not in res
    with pytest.raises(ValueError, match="publish_latency_ms"):
        omb_result_json("w", "d", [1.0], [1.0], [1.0, float("nan")], [1.0])
    with pytest.raises(ValueError, match="consume_rate"):
        omb_result_json("w", "d", [1.0], [-1.0], [1.0], [1.0])
