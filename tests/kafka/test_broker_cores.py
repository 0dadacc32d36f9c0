"""A broker's threads share its cores (host.process_cores): with few cores a loaded broker queues, and rows say so."""

from kdlab.spec import Point
from kdlab.workloads.kafka import KafkaWorkload, _thread_class

SHAPE = {"system": "kafka", "brokers": 1, "partitions": 8, "producers": 4, "record_bytes": 1024, "acks": 1,
         "rate_total": 600_000, "duration_ms": 6.0, "warmup_ms": 1.0, "linger_ms": 0.2, "io_threads": 8,
         "segment_bytes": 1 << 24}  # fmt: skip


def _row(cores: int) -> dict:
    overrides = (("host.process_cores", cores),) if cores else ()
    point = Point("cores", "kafka", "sim", "cx4-edr-100g", overrides, tuple(SHAPE.items()), 0)
    (row,) = KafkaWorkload().run_point(point)
    return row


def test_a_broker_with_few_cores_queues_and_its_utilisation_shows_it() -> None:
    own, two = _row(0), _row(2)  # a core per thread, then the broker's ~13 threads on 2 cores
    for row in (own, two):  # both still keep up
        assert abs(row["produce_records_per_s"] / 600_000 - 1) < 0.01
    assert two["cpu_broker_busy_cores"] <= 2.0 + 1e-9  # never more busy cores than it has
    assert two["cpu_broker_util"] > own["cpu_broker_util"]  # the same work over fewer cores
    assert two["ack_latency_p99_us"] > own["ack_latency_p99_us"]  # threads wait for a core
    assert 0 < own["cpu_broker_util"] < 1


def test_the_row_names_the_busiest_thread_and_its_share_of_the_run() -> None:
    row = _row(0)
    busiest, util = row["cpu_busiest_thread"], row["cpu_busiest_thread_util"]
    assert 0 < util <= 1.0 + 1e-9
    # no thread class can keep fewer cores busy than its busiest thread does
    assert row[f"cpu_{_thread_class(busiest)}_cores"] >= util - 1e-9
