"""The knee and the saturation throughput of a latency-under-load sweep, as a table.

    .venv/bin/python scripts/latency_knee.py [EXPERIMENT] [--results-dir results]

Reads the current rows of a sweep over offered load (default: sweep-latency-under-load; run it first with
``kdlab run experiments/sweeps/latency-under-load.yaml``) and prints, per variant:

* saturation: the highest achieved produce rate (records acknowledged in the measured window, as OMB counts);
* knee: the highest achieved rate whose ack-latency p99 is still at most twice the p99 at the lowest load, with
  that p99 (the end of the flat part of the hockey stick);
* p50 and p99 at the lowest and at the highest load.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from kdlab.results import load_results, rows_of_spec
from kdlab.spec import load_spec

HERE = Path(__file__).resolve().parent.parent
KNEE_FACTOR = 2.0


def knee_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per variant: saturation rate, knee rate and its p99, and latency at the lowest and highest offered load."""
    rows = []
    for variant, g in frame.groupby("variant", sort=False):
        g = g.sort_values("rate_total")
        base = float(g["ack_latency_p99_us"].iloc[0])
        flat = g[g["ack_latency_p99_us"] <= KNEE_FACTOR * base]
        knee = flat.loc[flat["produce_records_per_s"].idxmax()]
        rows.append({
            "variant": variant,
            "saturation_records_per_s": float(g["produce_records_per_s"].max()),
            "knee_records_per_s": float(knee["produce_records_per_s"]),
            "knee_p99_us": float(knee["ack_latency_p99_us"]),
            "low_load_p50_us": float(g["ack_latency_p50_us"].iloc[0]),
            "low_load_p99_us": base,
            "top_load_p50_us": float(g["ack_latency_p50_us"].iloc[-1]),
            "top_load_p99_us": float(g["ack_latency_p99_us"].iloc[-1]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", nargs="?", default="sweep-latency-under-load")
    ap.add_argument("--results-dir", default=str(HERE / "results"))
    args = ap.parse_args()
    spec_file = HERE / "experiments" / "sweeps" / f"{args.experiment.removeprefix('sweep-')}.yaml"
    frame = load_results(args.results_dir, args.experiment).frame
    if spec_file.is_file():
        frame = rows_of_spec(frame, load_spec(spec_file))
    if not len(frame):
        raise SystemExit(f"{args.experiment}: no current rows in {args.results_dir}; run the sweep first")
    with pd.option_context("display.width", 200, "display.float_format", "{:,.0f}".format):
        print(knee_table(frame).to_string(index=False))


if __name__ == "__main__":
    main()
