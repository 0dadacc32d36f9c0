"""The artifact's tools, defined as they are: warm-up, percentile index, lists, and what each interval holds."""

from __future__ import annotations

import math

import pytest

from kdlab.kafka.artifact_tools import WARMUP, artifact_percentile, latency_stats
from kdlab.spec import Point
from kdlab.workloads.artifact import ArtifactParams, ArtifactWorkload, kafka_params


def test_the_percentile_is_the_sorted_array_index_the_tools_use() -> None:
    ordered = list(range(10))  # sorted[(int)(q*n)]: no interpolation, Java's cast floors
    assert [artifact_percentile(ordered, q) for q in (0.5, 0.95, 0.99, 0.999)] == [5, 9, 9, 9]
    assert artifact_percentile(list(range(1000)), 0.999) == 999
    assert artifact_percentile(list(range(1001)), 0.999) == 999
    assert math.isnan(artifact_percentile([], 0.5))


def test_the_first_2000_samples_are_dropped() -> None:
    slow_start = [1e9] * WARMUP + [1000.0 * (i + 1) for i in range(100)]  # ns
    stats = latency_stats("x", slow_start)
    assert stats["x_samples"] == 100
    assert stats["x_p50_us"] == 51.0 and stats["x_p999_us"] == 100.0 and stats["x_mean_us"] == 50.5


def test_consumer_latency_prints_a_list_only_above_the_warm_up() -> None:
    at_warmup = latency_stats("d", [1000.0] * WARMUP, mean=False, printed_only_above_warmup=True)
    assert at_warmup["d_samples"] == 0 and math.isnan(at_warmup["d_p50_us"]) and "d_mean_us" not in at_warmup
    above = latency_stats("d", [1000.0] * (WARMUP + 1), mean=False, printed_only_above_warmup=True)
    assert above["d_samples"] == 1 and above["d_p50_us"] == 1.0


def test_each_tool_sets_its_clients_up_as_the_artifact_does() -> None:
    lat = kafka_params(ArtifactParams(tool="producer-latency", system="kafka", record_bytes=512, samples=10))
    assert (lat.records_per_batch, lat.max_in_flight, lat.linger_ms, lat.records_total) == (1, 1, 0.0, WARMUP + 10)
    cons = kafka_params(ArtifactParams(tool="consumer-latency", system="kafka", record_bytes=512))
    assert cons.consume_after_produce and cons.fetch_max_wait_ms == 0 and cons.fetch_bytes == 512 + 72
    assert cons.batch_size <= cons.fetch_bytes < 2 * cons.batch_size  # exactly one one-record batch per fetch


def _run(**params: object) -> dict:
    point = Point("t", "artifact", "sim", "cx4-edr-100g", (), tuple(sorted(params.items())), 1)
    return ArtifactWorkload().run_point(point)[0]


@pytest.mark.parametrize("system", ["kafka", "kafkadirect"])
def test_producer_latency_times_every_sample_after_the_warm_up(system: str) -> None:
    row = _run(tool="producer-latency", system=system, record_bytes=64, samples=50)
    assert row["latency_samples"] == 50 and row["delivery_ok"] is True
    assert row["latency_p50_us"] <= row["latency_p99_us"] <= row["latency_p999_us"]
    assert "ProducerLatency.scala" in row["artifact_file"] and "2000 untimed warm-up" in row["definition"]


def test_consumer_latency_over_rdma_does_not_see_the_slot_polling_interval() -> None:
    rows = [_run(tool="consumer-latency", system="kafkadirect", record_bytes=64, samples=20, slot_poll_us=us)
            for us in (2.0, 200.0)]  # fmt: skip
    assert rows[0]["data_latency_samples"] == 20 and rows[0]["empty_latency_samples"] == 0
    assert rows[0]["data_latency_p50_us"] == rows[1]["data_latency_p50_us"]
    assert all(r["delivery_ok"] for r in rows)


def test_end_to_end_latency_is_the_ack_plus_the_catch_up_after_it() -> None:
    row = _run(tool="end-to-end-latency", system="kafka", record_bytes=64, samples=20)
    ack = _run(tool="producer-latency", system="kafka", record_bytes=64, samples=20)
    assert row["latency_samples"] == 20 and row["delivery_ok"] is True
    assert row["latency_p50_us"] > ack["latency_p50_us"]  # a fetch round trip follows the ack
