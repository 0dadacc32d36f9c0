"""kdreal KafkaDirect's produce and consume throughput as a ratio to ib_write_bw and ib_read_bw.

On the same device, in the same run, at the same message size: a KafkaDirect
producer's batches of ``--size`` bytes are each one RDMA WRITE_WITH_IMM (compared
with ``ib_write_bw -s SIZE``), and a catch-up consumer's fetches of ``--size`` bytes
are each one RDMA READ (compared with ``ib_read_bw -s SIZE``). One broker, one
producer, one consumer, replication factor 1. The Kafka work stays in: the producer
CRCs each batch, the broker checks it and assigns offsets, the consumer checks it.
Alternates kdreal and the tool ``--repeat`` times and prints medians and ratios
(goal >= 0.8). Needs a verbs device:

    kdlab testbed run -- .venv/bin/python benchmarks/kd_vs_perftest.py
"""

from __future__ import annotations

import argparse
import statistics

from kdlab.kafka.params import KafkaParams
from kdlab.spec import Point
from kdlab.workloads.kafka import KafkaWorkload
from kdreal.perftest_tools import ToolRun, run_tool


def kafkadirect_gbps(size: int, batches: int, in_flight: int) -> tuple[float, float]:
    """(produce Gb/s, consume Gb/s) of one kdreal KafkaDirect run with ``size``-byte batches and fetches."""
    record = 1000
    probe = KafkaParams(system="kafkadirect", record_bytes=record, batch_bytes=size)
    params = {
        "system": "kafkadirect", "record_bytes": record, "batch_bytes": size, "fetch_bytes": probe.batch_size,
        "records_per_producer": batches * probe.records_per_batch, "consumers": 1, "consume_after_produce": True,
        "max_in_flight": in_flight, "segment_bytes": 64 * 1024 * 1024, "handler_threads": 1,
    }  # fmt: skip
    point = Point("bench", "kafka", "real", "kdreal-rxe-tcg", (), tuple(sorted(params.items())), 0)
    row = KafkaWorkload().run_point(point)[0]
    assert row["delivery_ok"], "the benchmark run lost or reordered records"
    consume_bytes_per_s = row["consume_records_per_s"] / probe.records_per_batch * probe.batch_size
    return row["produce_mb_per_s"] * 8e6 / 1e9, consume_bytes_per_s * 8 / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=65536, help="batch size = fetch size = perftest message size")
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--in-flight", type=int, default=16, help="producer max.in.flight.requests")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    produce, consume, write_bw, read_bw = [], [], [], []
    for i in range(args.repeat):
        p, c = kafkadirect_gbps(args.size, args.batches, args.in_flight)
        produce.append(p)
        consume.append(c)
        write_bw.append(run_tool(ToolRun("write_bw", args.size, 2000, port=18515 + 2 * i))[0]["bw_avg_gbps"])
        read_bw.append(run_tool(ToolRun("read_bw", args.size, 2000, port=18516 + 2 * i))[0]["bw_avg_gbps"])
    for what, ours, tool, name in (("produce", produce, write_bw, "ib_write_bw"), ("consume", consume, read_bw,
                                                                                  "ib_read_bw")):  # fmt: skip
        a, b = statistics.median(ours), statistics.median(tool)
        print(f"kafkadirect {what} {args.size} B: kdreal {a:.3f} Gb/s, {name} {b:.3f} Gb/s, ratio {a / b:.2f} "
              f"(goal >= 0.8; median of {args.repeat}; runs {[round(x, 3) for x in ours]} vs "
              f"{[round(x, 3) for x in tool]})")  # fmt: skip


if __name__ == "__main__":
    main()
