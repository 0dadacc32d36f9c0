"""The headline table: each of the paper's claims beside the ratio the model gives, measured by the artifact's tool.

Every ratio is computed from result rows (never typed in), with the tool the claim
corresponds to (:mod:`kdlab.kafka.artifact_tools`), the configuration that gives it and
the range over the swept sizes. A claim is *within 25%* when the model's ratio is within
25% of the paper's number (of the nearer end of a range), else *not reached*;
``docs/kafka.md`` has a paragraph for every miss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kdlab.results import read_results

#: How close the model's ratio must be to the paper's to count as reproduced.
TOLERANCE = 0.25


@dataclass(frozen=True)
class Claim:
    datapath: str
    claim: str
    claimed: str
    source: str
    tool: str
    experiment: str
    x: str
    metric: str
    num: str
    den: str
    subset: str = ""


CLAIMS = [
    Claim("produce", "throughput vs Kafka producers", "up to 9x", "abstract", "ProducerPerformance",
          "artifact-producer-performance", "record_bytes", "records_per_s", "KafkaDirect exclusive", "Kafka"),
    Claim("produce", "producer latency vs Kafka", "4x lower", "talk summary", "ProducerLatency (acks=1)",
          "artifact-producer-latency", "record_bytes", "latency_p50_us", "Kafka", "KafkaDirect exclusive"),
    Claim("replication", "replication performance (push vs pull)", "13x", "talk summary",
          "ProducerPerformance, acks=all (closest: kdlab's kafka workload)", "kafka-replication", "replication_factor",
          "produce_records_per_s", "KafkaDirect (push, maxrdmabatch 2000 B)", "Kafka (pull)", "replication_factor > 1"),
    Claim("consume", "consumer latency vs Kafka", "50x lower", "talk summary", "ConsumerLatency (fetches with data)",
          "artifact-consumer-latency", "record_bytes", "data_latency_p50_us", "Kafka", "KafkaDirect slots"),
    Claim("consume", "consumer throughput vs Kafka", "9x-10x", "abstract; talk summary", "ConsumerPerformance",
          "artifact-consumer-performance", "fetch_bytes", "records_per_s", "KafkaDirect slots", "Kafka"),
]  # fmt: skip


def claimed_range(text: str) -> tuple[float, float]:
    """The paper's number(s) in a claim: 'up to 9x' -> (9, 9), '9x-10x' -> (9, 10)."""
    numbers = [float(n) for n in re.findall(r"(\d+(?:\.\d+)?)x", text)]
    if not numbers:
        raise ValueError(f"no ratio in claim {text!r}")
    return min(numbers), max(numbers)


def verdict(model: float, claimed: str, tolerance: float = TOLERANCE) -> str:
    """'within 25%' when the model is within ``tolerance`` of the claimed number or range, else 'not reached'."""
    if model != model:
        return "no results"
    lo, hi = claimed_range(claimed)
    nearest = min(max(model, lo), hi)
    return f"within {tolerance:.0%}" if abs(model / nearest - 1) <= tolerance else "not reached"


def _ratios(df: pd.DataFrame, c: Claim) -> pd.Series:
    if c.subset:
        df = df.query(c.subset)
    table = df.pivot_table(index=c.x, columns="variant", values=c.metric)
    if c.num not in table or c.den not in table:
        return pd.Series(dtype=float)
    return (table[c.num] / table[c.den]).dropna()


def headline(results_dir: str | Path = "results") -> pd.DataFrame:
    rows = []
    for c in CLAIMS:
        frame = read_results(results_dir, c.experiment) if (Path(results_dir) / c.experiment).is_dir() else None
        ratios = _ratios(frame, c) if frame is not None and len(frame) else pd.Series(dtype=float)
        if len(ratios):
            at = ratios.idxmax()
            value = float(ratios[at])
            over = f"{c.x} {ratios.index.min()}-{ratios.index.max()}"
            config = (f"{c.experiment}: {c.metric}, {c.num} / {c.den}, best at {c.x}={at}; "
                      f"{ratios.min():.1f}x-{ratios.max():.1f}x over {over}")  # fmt: skip
        else:
            value, config = float("nan"), f"{c.experiment}: no results"
        rows.append({"datapath": c.datapath, "claim": c.claim, "paper": c.claimed, "tool": c.tool,
                     "model": round(value, 1) if value == value else None, "verdict": verdict(value, c.claimed),
                     "configuration": config, "source": c.source})  # fmt: skip
    return pd.DataFrame(rows)


def write_headline(table: pd.DataFrame, results_dir: str | Path, figures_dir: str | Path) -> list[Path]:
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    csv = Path(results_dir) / "headline.csv"
    table.to_csv(csv, index=False)
    md = Path(figures_dir) / "headline.md"
    lines = ["| datapath | claim | paper | artifact tool | model | verdict | configuration |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in table.itertuples():
        model = "n/a" if r.model is None or r.model != r.model else f"{r.model}x"
        lines.append(f"| {r.datapath} | {r.claim} | {r.paper} | {r.tool} | {model} | {r.verdict} | {r.configuration} |")
    md.write_text("\n".join(lines) + "\n")
    return [csv, md]
