"""kdreal's bandwidth as a ratio to the real perftest tools, on the same device in the same run.

Runs the perftest workload's write_bw and read_bw (64 KiB by default) on kdreal, then
``ib_write_bw``/``ib_read_bw`` with the same size and iterations, alternating, ``--repeat``
times, and prints the medians and their ratio (goal >= 0.8). Needs a verbs device:

    kdlab testbed run -- .venv/bin/python benchmarks/real_vs_perftest.py
"""

from __future__ import annotations

import argparse
import statistics

from kdlab.spec import Point
from kdlab.workloads.perftest import PerftestWorkload
from kdreal.perftest_tools import ToolRun, run_tool


def kdreal_gbps(test: str, size: int, iterations: int) -> float:
    params = {"test": test, "size": size, "iterations": iterations}
    point = Point("bench", "perftest", "real", "device", (), tuple(sorted(params.items())), 0)
    return PerftestWorkload().run_point(point)[0]["bw_avg_gbps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for test in ("write_bw", "read_bw"):
        ours, tool = [], []
        for i in range(args.repeat):
            ours.append(kdreal_gbps(test, args.size, args.iterations))
            row = run_tool(ToolRun(test, args.size, args.iterations, port=18515 + i))[0]
            tool.append(row["bw_avg_gbps"])
        a, b = statistics.median(ours), statistics.median(tool)
        print(
            f"{test} {args.size} B: kdreal {a:.3f} Gb/s, ib_{test} {b:.3f} Gb/s, ratio {a / b:.2f} "
            f"(goal >= 0.8; median of {args.repeat})"
        )


if __name__ == "__main__":
    main()
