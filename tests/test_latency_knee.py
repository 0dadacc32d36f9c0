"""The knee and saturation of a latency-under-load sweep (scripts/latency_knee.py) on a hand-made hockey stick."""

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "latency_knee.py"


def _module():
    spec = importlib.util.spec_from_file_location("latency_knee", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_knee_is_the_last_load_within_twice_the_low_load_p99_and_saturation_the_best_rate() -> None:
    offered = [1e5, 2e5, 4e5, 8e5, 1.6e6]
    frame = pd.DataFrame({
        "variant": ["A"] * 5,
        "rate_total": offered,
        "produce_records_per_s": [1e5, 2e5, 4e5, 6e5, 5.5e5],  # saturates at 600k, then falls back
        "ack_latency_p50_us": [50, 52, 60, 400, 900],
        "ack_latency_p99_us": [100, 110, 190, 1000, 3000],  # 190 <= 2 x 100: the knee is at 400k
    })  # fmt: skip
    (row,) = _module().knee_table(frame).to_dict("records")
    assert row["saturation_records_per_s"] == 6e5
    assert (row["knee_records_per_s"], row["knee_p99_us"]) == (4e5, 190)
    assert (row["low_load_p99_us"], row["top_load_p99_us"]) == (100, 3000)
