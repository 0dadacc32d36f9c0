"""Sweep throughput: points per minute on 1 and 2 local workers (goal: close to 2x on 2 cores).

Runs the same sweep (uncached) with ``workers=1`` and ``workers=2``, alternating, ``--repeat``
times, and prints the medians and their ratio.

    .venv/bin/python benchmarks/sweep_throughput.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from kdlab.runner import run_experiment

SPEC = {
    "name": "bench-sweep",
    "workload": "kafka",
    "params": {"record_bytes": 1024, "records_per_producer": 40000, "consumers": 1, "segment_bytes": 4194304},
    "sweep": {"system": ["kafka", "osu", "kafkadirect"], "batch_bytes": [4096, 16384, 65536, 262144]},
}


def points_per_minute(workers: int) -> float:
    t0 = time.perf_counter()
    df = run_experiment(SPEC, workers=workers, results_dir=None, progress=False)
    return len(df) / (time.perf_counter() - t0) * 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    one, two = [], []
    for _ in range(args.repeat):
        one.append(points_per_minute(1))
        two.append(points_per_minute(2))
    a, b = statistics.median(one), statistics.median(two)
    print(f"1 worker : {a:8.1f} points/min (median of {args.repeat})")
    print(f"2 workers: {b:8.1f} points/min")
    print(f"speed-up : {b / a:.2f}x (goal close to 2x on 2 cores)")


if __name__ == "__main__":
    main()
