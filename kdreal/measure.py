"""Measure perftest points on this host's verbs device: the real tools and kdreal, side by side.

Writes two CSV tables (columns: source, test, size, qps, iterations and perftest's metric
columns) that ``kdlab calibrate`` reads::

    kdlab testbed run -- .venv/bin/python -m kdreal.measure --out results/measured

``<out>/perftest-tools.csv`` holds what ``ib_<test>`` printed; ``<out>/kdreal.csv`` what the
same points gave through kdreal's engine (the same datapath code kdsim runs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from kdlab.spec import Point
from kdlab.workloads.perftest import PerftestWorkload
from kdreal.perftest_tools import ToolRun, run_tool

#: (test, size) points measured by default: latency across sizes, bandwidth at two sizes.
DEFAULT_POINTS = (
    [("write_lat", s) for s in (2, 1024, 4096, 65536)]
    + [("send_lat", 2), ("read_lat", 2), ("read_lat", 4096), ("atomic_lat", 8)]
    + [(t, s) for t in ("write_bw", "read_bw", "send_bw") for s in (4096, 65536)]
)


def measure_tools(points: list[tuple[str, int]], iterations: int) -> pd.DataFrame:
    rows = []
    for i, (test, size) in enumerate(points):
        n = iterations if test.endswith("_lat") else max(iterations, 2000)
        for row in run_tool(ToolRun(test, size, n, port=18600 + i)):
            rows.append({"source": f"ib_{test}", "test": test, "qps": 1, **row})
    return pd.DataFrame(rows)


def measure_kdreal(points: list[tuple[str, int]], iterations: int) -> pd.DataFrame:
    rows = []
    for test, size in points:
        params = {"test": test, "size": size, "iterations": iterations}
        point = Point("measure", "perftest", "real", "device", (), tuple(sorted(params.items())), 0)
        t0 = time.perf_counter()
        row = PerftestWorkload().run_point(point)[0]
        rows.append({"source": "kdreal", "wall_s": time.perf_counter() - t0, **row})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/measured")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--kdreal-iterations", type=int, default=200)
    ap.add_argument("--skip-kdreal", action="store_true")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    points = list(DEFAULT_POINTS)
    tools = measure_tools(points, args.iterations)
    tools.to_csv(out / "perftest-tools.csv", index=False)
    print(tools.to_string(index=False))
    if not args.skip_kdreal:
        ours = measure_kdreal(points, args.kdreal_iterations)
        ours.to_csv(out / "kdreal.csv", index=False)
        print(ours[["test", "size", "t_typical_us", "bw_avg_gbps", "wall_s"]].to_string(index=False))


if __name__ == "__main__":
    main()
