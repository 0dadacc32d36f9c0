"""Upstream OMB workload and Kafka driver files (tests/kafka/omb_workloads/, each citing its source): parsed,
mapped to KafkaParams, refused where kdlab does not model a field, and run at a shortened time scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlab.kafka.omb import OmbError, load_omb_workload
from kdlab.kafka.omb_driver import load_omb_driver, parse_properties
from kdlab.kafka.omb_run import drained_end, omb_params, omb_params_dict, run_omb

HERE = Path(__file__).parent / "omb_workloads"
LATENCY = HERE / "kafka-latency.yaml"


def driver_text(**sections: str) -> str:
    base = {"name": "Kafka", "driverClass": "io.openmessaging.benchmark.driver.kafka.KafkaBenchmarkDriver"}
    base |= {"replicationFactor": "3"}
    lines = [f"{k}: {v}" for k, v in base.items()]
    for key, text in sections.items():
        lines += [f"{key}: |", *(f"  {line}" for line in text.splitlines())]
    return "\n".join(lines) + "\n"


# --- driver files ----------------------------------------------------------------------------


def test_upstream_latency_driver_maps_to_kafka_params() -> None:
    d = load_omb_driver(LATENCY)
    assert d.name == "Kafka"
    assert d.params == {
        "replication_factor": 3,
        "acks": -1,
        "linger_ms": 1,
        "batch_bytes": 131072,
        "fetch_bytes": 10485760,
    }
    assert set(d.ignored) == {
        "topicConfig.min.insync.replicas",
        "commonConfig.bootstrap.servers",
        "consumerConfig.auto.offset.reset",
        "consumerConfig.enable.auto.commit",
    }
    assert d.sources["batch_bytes"] == "batch.size" and d.sources["replication_factor"] == "replicationFactor"


def test_java_properties_are_parsed_as_properties_load() -> None:
    text = (
        "# a comment\n  ! another\n\nacks = all\nlinger.ms:5\nbatch.size 16384\n"
        "buffer.memory=33554432\\\n   00\nclient.id=a\\=b\\u0041\nacks=1\n"
    )
    assert parse_properties(text, "x") == {
        "acks": "1",  # the last wins
        "linger.ms": "5",
        "batch.size": "16384",
        "buffer.memory": "3355443200",  # a continued line
        "client.id": "a=bA",
    }


def test_common_config_applies_to_producer_and_consumer_and_is_overridden() -> None:
    d = load_omb_driver(
        driver_text(
            commonConfig="acks=1\nmax.partition.fetch.bytes=4096",
            producerConfig="acks=all\nmax.in.flight.requests.per.connection=1\nbuffer.memory=1048576",
            consumerConfig="fetch.max.wait.ms=10\nfetch.min.bytes=1\nfetch.max.bytes=1048576\ncheck.crcs=false",
        )
    )
    assert d.params["acks"] == -1 and d.params["fetch_bytes"] == 4096 and d.params["max_in_flight"] == 1
    assert (d.params["fetch_max_wait_ms"], d.params["fetch_max_bytes"], d.params["check_crcs"]) == (10, 1048576, False)


@pytest.mark.parametrize(
    ("sections", "line"),
    [
        ({"producerConfig": "compression.type=lz4"}, "producerConfig: compression.type: 'lz4' is not none"),
        ({"producerConfig": "acks=2"}, "producerConfig: acks: '2' is not all, -1, 0 or 1"),
        ({"producerConfig": "linger.ms=soon"}, "producerConfig: linger.ms: 'soon' is not an integer 0 to"),
        ({"producerConfig": "transactional.id=t"}, "producerConfig: transactional.id: not modelled (supported: acks,"),
        ({"consumerConfig": "acks=all"}, "consumerConfig: acks: not modelled (supported: max.partition.fetch.bytes"),
        ({"topicConfig": "min.insync.replicas=4"}, "min.insync.replicas: '4' must be 1 to replicationFactor (3)"),
    ],
)
def test_bad_driver_properties_are_refused_one_line_each(sections: dict[str, str], line: str) -> None:
    with pytest.raises(OmbError) as info:
        load_omb_driver(driver_text(**sections))
    assert line in str(info.value) and "\n" not in str(info.value)


def test_upstream_sync_driver_flushes_every_record_and_says_why_flush_ms_changes_nothing() -> None:
    driver = load_omb_driver(HERE / "kafka-sync.yaml")
    assert driver.params["flush_messages"] == 1
    assert "log.flush.scheduler.interval.ms" in driver.ignored["topicConfig.flush.ms"]


def test_bad_driver_fields_are_refused() -> None:
    with pytest.raises(OmbError, match="driverClass: only OMB's Kafka driver"):
        load_omb_driver(
            driver_text().replace("driver.kafka.KafkaBenchmarkDriver", "driver.pulsar.PulsarBenchmarkDriver")
        )
    with pytest.raises(OmbError, match="replicationFactor: Input should be greater than or equal to 1"):
        load_omb_driver(driver_text().replace("replicationFactor: 3", "replicationFactor: 0"))
    with pytest.raises(OmbError, match="producerconfig: unknown field; allowed: name, driverClass"):
        load_omb_driver(driver_text(producerconfig="acks=all"))


# --- workloads -> KafkaParams -----------------------------------------------------------------


def test_upstream_16_partition_workload_maps_every_field() -> None:
    w = load_omb_workload(HERE / "1-topic-16-partitions-1kb.yaml")
    fields, sources, notes = omb_params_dict(w, load_omb_driver(LATENCY), "kafka")
    expected = {"topics": 1, "partitions": 16, "producers": 1, "groups": 1, "consumers": 1, "record_bytes": 1024}
    expected |= {"rate_total": 50000.0, "warmup_ms": 60_000.0, "duration_ms": 900_000.0, "keys": "none"}
    expected |= {"partitioner": "default", "backlog_bytes": 0, "replication_factor": 3, "acks": -1, "linger_ms": 1}
    assert expected.items() <= fields.items()
    assert sources["duration_ms"] == "testDurationMinutes" and sources["acks"] == "acks"
    assert "not found here: 1024-byte payloads" in notes["payload"] and notes["reportingPeriodMs"] == 10_000
    short, _, notes = omb_params_dict(w, None, "kafkadirect", time_scale=0.001)
    assert (short["warmup_ms"], short["duration_ms"], short["partitioner"]) == (60.0, 900.0, "fixed")
    assert notes["reportingPeriodMs"] == 10.0


def test_the_example_workload_is_upstreams() -> None:
    example = load_omb_workload(Path(__file__).parents[2] / "experiments/omb/1-topic-16-partitions-1kb.yaml")
    assert example == load_omb_workload(HERE / "1-topic-16-partitions-1kb.yaml")
    assert (example.producers_per_topic, example.consumer_per_subscription) == (1, 1)
    assert load_omb_driver(Path(__file__).parents[2] / "experiments/omb/kafka-driver.yaml") == load_omb_driver(LATENCY)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("1-topic-10000-partitions-1kb-4p-4c-200k", {"partitions": 10_000, "producers": 4, "consumers": 4}),
        ("100-topics-1-partitions-1kb", {"topics": 100, "groups": 3, "consumers": 1}),  # 300 consumers
        ("1-topic-100-partitions-1kb-4p-4c-200k-backlog", {"backlog_bytes": 512 * 1024**3, "rate_total": 200000}),
    ],
)
def test_big_upstream_workloads_map_without_failing(name: str, shape: dict) -> None:
    w = load_omb_workload(HERE / f"{name}.yaml")
    p, notes = omb_params(w, load_omb_driver(LATENCY), "kafka", time_scale=0.01)
    assert all(getattr(p, k) == v for k, v in shape.items())
    if w.use_randomized_payloads:
        assert set(notes["ignored"]) >= {"useRandomizedPayloads", "randomBytesRatio", "randomizedPayloadPoolSize"}


def test_workload_fields_kdlab_cannot_honour_are_refused(tmp_path: Path) -> None:
    doc = (HERE / "1-topic-16-partitions-1kb.yaml").read_text()
    keyed = load_omb_workload(doc.replace("topics: 1\n", "topics: 1\nkeyDistributor: KEY_ROUND_ROBIN\n"))
    assert omb_params_dict(keyed, None, "kafka")[0]["keys"] == "round-robin"
    with pytest.raises(OmbError, match="keyDistributor: KEY_ROUND_ROBIN: KafkaDirect's exclusive producers"):
        omb_params_dict(keyed, None, "kafkadirect")
    drained = load_omb_workload(doc + "backlogDrainRatio: 0.5\n")
    with pytest.raises(OmbError, match=r"backlogDrainRatio: 0.5: only 1.0 \(drain the backlog fully\)"):
        omb_params_dict(drained, None, "kafka")
    with pytest.raises(OmbError, match=r"time_scale: 0 must be in \(0, 1\]"):
        omb_params_dict(drained, None, "kafka", time_scale=0)
    (tmp_path / "payload").mkdir()
    (tmp_path / "payload/payload-1Kb.data").write_bytes(b"x" * 1000)
    w = load_omb_workload(doc)
    with pytest.raises(OmbError, match=r"payloadFile: .* has 1000 bytes but messageSize is 1024"):
        omb_params_dict(w, None, "kafka", workload_dir=tmp_path)
    (tmp_path / "payload/payload-1Kb.data").write_bytes(b"x" * 1024)
    assert "1024 bytes" in omb_params_dict(w, None, "kafka", workload_dir=tmp_path)[2]["payload"]


def test_kafka_params_refusals_name_the_omb_field() -> None:
    w = load_omb_workload(HERE / "1-topic-16-partitions-1kb.yaml")
    with pytest.raises(OmbError, match=r"replication_factor: 3 replicas cannot be placed on 2 brokers"):
        omb_params(w, load_omb_driver(LATENCY), "kafka", brokers=2)
    long = load_omb_workload(HERE / "100-topics-1-partitions-1kb.yaml")  # 240 minutes
    with pytest.raises(OmbError, match=r"testDurationMinutes \(duration_ms\): Input should be less than"):
        omb_params(long, None, "kafka")


def test_closed_loop_for_producer_rate_zero_is_stated() -> None:
    w = load_omb_workload(HERE / "1-topic-3-partition-100b-3producers.yaml")
    fields, _, notes = omb_params_dict(w, None, "kafka")
    assert fields["rate_total"] == 0.0 and "closed loop" in notes["producerRate"]


# --- runs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["kafka", "kafkadirect"])
def test_upstream_16_partition_workload_publishes_at_its_rate(system: str) -> None:
    res = run_omb(HERE / "1-topic-16-partitions-1kb.yaml", system, driver=LATENCY, time_scale=0.0005, brokers=3)
    # 5 ms periods: 6 of warm-up, 90 of test
    assert len(res["publishRate"]) == 90 and len(res["endToEndLatency99pct"]) == 90
    mean = sum(res["publishRate"]) / 90
    assert mean == pytest.approx(50_000, rel=0.01) and sum(res["consumeRate"]) / 90 == pytest.approx(50_000, rel=0.02)
    assert max(res["backlog"]) < 0.01 * 50_000 and "belowTarget" not in res["kdlab"]
    assert 0 < res["aggregatedPublishLatency50pct"] <= res["aggregatedPublishLatency99pct"]


def test_a_rate_nobody_can_reach_is_reported_below_target(tmp_path: Path) -> None:
    doc = (HERE / "1-topic-1-partition-1kb.yaml").read_text().replace("producerRate: 50000", "producerRate: 20000000")
    (tmp_path / "w.yaml").write_text(doc)
    res = run_omb(tmp_path / "w.yaml", "kafka", driver=LATENCY, time_scale=0.0005, brokers=3)
    assert res["kdlab"]["achievedRate"] < 0.99 * 20_000_000 and "cannot carry" in res["kdlab"]["belowTarget"]
    assert res["publishDelayLatencyMax"][-1] > res["publishDelayLatencyMax"][0]  # the intended times run away


def test_the_periods_start_at_the_producers_first_send(tmp_path: Path) -> None:
    """KafkaDirect's producers send first ~0.5 ms into the run (connections, segment addresses, QPs): with no
    warm-up and 1 ms periods the first period is a whole one of publishing, not one missing its first half."""
    doc = (HERE / "1-topic-16-partitions-1kb.yaml").read_text()
    (tmp_path / "w.yaml").write_text(
        doc.replace("testDurationMinutes: 15", "testDurationMinutes: 1\nwarmupDurationMinutes: 0")
    )
    res = run_omb(tmp_path / "w.yaml", "kafkadirect", time_scale=0.0001, brokers=3)
    assert res["kdlab"]["startMs"] > 0.3 and len(res["publishRate"]) == 6
    assert min(res["publishRate"]) >= 0.95 * 50_000 and min(res["consumeRate"]) >= 0.95 * 50_000


def test_upstream_10000_partition_workload_runs() -> None:
    """10,000 partitions, 4 producers, 4 consumers at 200,000 msg/s, 3 brokers; at 2e-5 (a 6 ms test of 0.2 ms
    periods, ~3 s here). Each record opens a batch of its own partition, so acks come in lumps of a linger.ms
    (1 ms): a test only three lingers long counts one lump more or less depending on where the lumps fall."""
    res = run_omb(HERE / "1-topic-10000-partitions-1kb-4p-4c-200k.yaml", "kafka", driver=LATENCY, time_scale=0.00002,
                  brokers=3)  # fmt: skip
    assert len(res["publishRate"]) == 30
    assert sum(res["publishRate"]) / 30 == pytest.approx(200_000, rel=0.05)
    assert sum(res["consumeRate"]) / 30 > 0.85 * 200_000
    assert 0 < res["aggregatedPublishLatency50pct"] <= res["aggregatedEndToEndLatency99pct"]


@pytest.mark.parametrize("system", ["kafka", "kafkadirect"])
def test_upstream_backlog_workload_builds_the_backlog_then_drains_it(system: str) -> None:
    """Upstream's 512 GB backlog workload at 1e-4 (1 ms periods, a 6 ms warm-up, a 30 ms test) with a 2 MB
    backlog (~10 ms of 200,000 msg/s): the consumers pause after the warm-up (consumeRate 0) while the backlog
    grows at the publish rate, then drain it far faster than it is published, and it returns to ~0."""
    backlog = 2_000_000
    res = run_omb(HERE / "1-topic-100-partitions-1kb-4p-4c-200k-backlog.yaml", system, driver=LATENCY,
                  time_scale=0.0001, brokers=3, backlog_bytes=backlog)  # fmt: skip
    pub, cons, left = res["publishRate"], res["consumeRate"], res["backlog"]
    assert len(pub) >= 30 and "backlog" in res["kdlab"]
    k = next(i for i, c in enumerate(cons) if c)
    assert k >= 8 and cons[:k] == [0.0] * k  # building: ~10 periods of 200 messages
    assert left[k - 1] >= 0.8 * backlog / 1024 and left[k - 1] > left[k - 2] > left[0] > 0
    assert max(cons[k : k + 2]) > 5 * sum(pub) / len(pub)  # draining
    assert max(left[k + 2 :]) < 0.15 * backlog / 1024 and left[-1] == 0  # back to the pipeline's few messages
    assert pub[k + 5] == pytest.approx(200_000, rel=0.2)  # the producers went on at their rate


def test_with_a_backlog_the_test_runs_on_in_whole_periods_until_it_is_drained() -> None:
    assert drained_end(10, 40, 35.0, 10) == 40  # drained within the test
    assert drained_end(10, 40, 40.0, 10) == 50  # a record received at the test's end: one more period
    assert drained_end(10, 40, 57.5, 10) == 60
