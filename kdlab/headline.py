"""The headline table: each of the paper's claims beside the ratio the model gives.

Every ratio is computed from result rows (never typed in) and names the
configuration that gives it. Claims the model cannot evaluate yet say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kdlab.results import read_results

KD = "KafkaDirect exclusive"


@dataclass(frozen=True)
class Claim:
    datapath: str
    claim: str
    claimed: str
    source: str


CLAIMS = [
    Claim("produce", "throughput vs Kafka producers", "up to 9x", "abstract"),
    Claim("produce", "producer latency vs Kafka", "4x lower", "talk summary"),
    Claim("replication", "replication performance (push vs pull)", "13x", "talk summary"),
    Claim("consume", "consumer latency vs Kafka", "50x lower", "talk summary"),
    Claim("consume", "consumer throughput vs Kafka", "9x-10x", "abstract; talk summary"),
]


def _ratio(df: pd.DataFrame, x: str, metric: str, num: str, den: str, best: str) -> tuple[float, str]:
    """The best (max) ratio num/den over ``x``, and the configuration that gives it."""
    table = df.pivot_table(index=x, columns="variant", values=metric)
    if num not in table or den not in table:
        return float("nan"), "missing results"
    ratios = table[num] / table[den]
    at = ratios.idxmax() if best == "max" else ratios.idxmin()
    return float(ratios[at]), f"{x}={at}"


def headline(results_dir: str | Path = "results") -> pd.DataFrame:
    rows = []

    def load(name: str) -> pd.DataFrame:
        root = Path(results_dir) / name
        return read_results(results_dir, name) if root.is_dir() else pd.DataFrame()

    produce, latency = load("kafka-produce"), load("kafka-produce-latency")
    consume, consume_lat = load("kafka-consume"), load("kafka-consume-latency")
    replication = load("kafka-replication")
    for claim in CLAIMS:
        value, config, note = float("nan"), "", ""
        if claim.claim.startswith("throughput") and len(produce):
            value, config = _ratio(produce, "record_bytes", "produce_records_per_s", KD, "Kafka", "max")
            config = f"kafka-produce, {KD} / Kafka, 1 producer, acks=1, {config}"
        elif claim.claim.startswith("producer latency") and len(latency):
            value, config = _ratio(latency, "record_bytes", "ack_latency_p50_us", "Kafka", KD, "max")
            config = f"kafka-produce-latency, p50 ack, Kafka / {KD}, 1 record per request, {config}"
        elif claim.datapath == "replication" and len(replication):
            push = "KafkaDirect (push, maxrdmabatch 2000 B)"
            value, config = _ratio(replication[replication.replication_factor > 1], "replication_factor",
                                   "produce_records_per_s", push, "Kafka (pull)", "max")  # fmt: skip
            config = f"kafka-replication, acks=all throughput, {push} / Kafka (pull), {config}"
        elif claim.claim.startswith("consumer latency") and len(consume_lat):
            value, config = _ratio(
                consume_lat, "fetch_bytes", "e2e_latency_p50_us", "Kafka", "KafkaDirect slots", "max"
            )
            config = f"kafka-consume-latency, p50 end-to-end, Kafka / KafkaDirect slots, {config}"
        elif claim.claim.startswith("consumer throughput") and len(consume):
            value, config = _ratio(consume, "fetch_bytes", "consume_records_per_s", "KafkaDirect slots", "Kafka", "max")
            config = f"kafka-consume, catch-up reads, KafkaDirect slots / Kafka, {config}"
        rows.append({"datapath": claim.datapath, "claim": claim.claim, "paper": claim.claimed,
                     "model": round(value, 1) if value == value else None, "configuration": config or note,
                     "source": claim.source})  # fmt: skip
    return pd.DataFrame(rows)


def write_headline(table: pd.DataFrame, results_dir: str | Path, figures_dir: str | Path) -> list[Path]:
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    csv = Path(results_dir) / "headline.csv"
    table.to_csv(csv, index=False)
    md = Path(figures_dir) / "headline.md"
    lines = ["| datapath | claim | paper | model | configuration |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        model = "n/a" if r.model is None or r.model != r.model else f"{r.model}x"
        lines.append(f"| {r.datapath} | {r.claim} | {r.paper} | {model} | {r.configuration} |")
    md.write_text("\n".join(lines) + "\n")
    return [csv, md]
