"""The headline over the ranges of the approximate [A] host numbers (issue 11: report it over the range).

Runs the headline's experiments (the artifact tools and kafka-replication) with the
wake-up, hand-off, request-split and CRC numbers at the ends of their sourced ranges
(docs/kafka-host-sources.md section 8) as profile overrides, and prints one column of
ratios per corner:

* low: every number at its low end; high: every number at its high end;
* KD-best: what both systems pay at its low end, what only Kafka's socket path pays at its high end;
* KD-worst: the reverse.

    .venv/bin/python scripts/headline_range.py            # about 4 minutes on 2 cores
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

from kdlab.headline import CLAIMS, headline
from kdlab.runner import run_experiment
from kdlab.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
#: (low, high) of each [A] number, from docs/kafka-host-sources.md section 8.
RANGES = {
    "host.handoff_ns": (3000.0, 15000.0),
    "host.queue_wakeup_ns": (3000.0, 15000.0),
    "host.wakeup_ns": (5000.0, 9800.0),
    "host.request_ns": (15000.0, 45000.0),
    "host.append_ns": (3500.0, 6100.0),
    "host.append_record_ns": (20.0, 100.0),
    "host.crc32c_gbps": (132.0, 48.0),  # 16.5 GB/s and 6 GB/s: the low cost is the high rate
    # the clients' own work per record (issue 13): high, the measured whole-path bounds (one producer thread,
    # 1 GbE nearly full, Kreps 2014; one consumer, Kreps 2014); low, half the default, a guess (no measurement
    # of the path alone exists for 2.x)
    "host.producer_record_ns": (500.0, 1220.0),
    "host.consumer_record_ns": (250.0, 1060.0),
}
#: What only Kafka's socket path pays; the rest both systems pay.
SOCKET_ONLY = {"host.request_ns"}


def corners() -> dict[str, dict[str, float]]:
    low = {k: lo for k, (lo, _) in RANGES.items()}
    high = {k: hi for k, (_, hi) in RANGES.items()}
    best = {k: (hi if k in SOCKET_ONLY else lo) for k, (lo, hi) in RANGES.items()}
    worst = {k: (lo if k in SOCKET_ONLY else hi) for k, (lo, hi) in RANGES.items()}
    return {"default": {}, "low": low, "high": high, "KD-best": best, "KD-worst": worst}


def main() -> int:
    names = sorted({c.experiment for c in CLAIMS})
    columns: dict[str, pd.Series] = {}
    for corner, overrides in corners().items():
        with tempfile.TemporaryDirectory() as results:
            for name in names:
                spec = load_spec(ROOT / "experiments" / f"{name}.yaml")
                if overrides:
                    sweep = {**spec.sweep, **{f"profile.{k}": [v] for k, v in overrides.items()}}
                    spec = spec.model_copy(update={"sweep": sweep})
                run_experiment(spec, results_dir=results, progress=False)
            table = headline(results)
        columns[corner] = table["model"]
        print(f"{corner}: done", file=sys.stderr)
    out = pd.DataFrame({"claim (paper)": [f"{c.claim} ({c.claimed}), {c.tool}" for c in CLAIMS], **columns})
    print(out.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
