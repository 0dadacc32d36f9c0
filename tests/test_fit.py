"""Calibration recovers known parameters and reports held-out errors point by point."""

import pytest
import yaml

from kdsim.fit import Measurement, fit_profile, profile_yaml, simulate
from kdsim.profile import load_profile, parse_profile


def test_fit_recovers_the_parameters_that_generated_the_measurements() -> None:
    base = load_profile("cx4-edr-100g")
    truth = base.with_overrides({"nic.pipeline_ns": 2500.0, "link.data_rate_gbps": 2.0})
    points = [("write_lat", 2), ("write_bw", 65536), ("read_lat", 2), ("send_bw", 65536)]
    measured = [Measurement(t, s, simulate(truth, Measurement(t, s, 1.0))) for t, s in points]
    result = fit_profile(
        base, measured, ["nic.pipeline_ns", "link.data_rate_gbps"], ["write_lat 2 B", "write_bw 65536 B"], "t"
    )
    assert result.values["nic.pipeline_ns"] == pytest.approx(2500.0, rel=0.01)
    assert result.values["link.data_rate_gbps"] == pytest.approx(2.0, rel=0.01)
    roles = {row["point"]: row["role"] for row in result.table}
    assert roles == {"write_lat 2 B": "fit", "write_bw 65536 B": "fit", "read_lat 2 B": "held out",
                     "send_bw 65536 B": "held out"}  # fmt: skip
    assert result.held_out_max_error() < 1.0


def test_fitted_profile_file_loads_and_tags_fitted_values() -> None:
    base = load_profile("cx4-edr-100g")
    measured = [Measurement("write_lat", 2, 5.0), Measurement("write_bw", 65536, 1.0)]
    result = fit_profile(base, measured, ["nic.pipeline_ns"], ["write_lat 2 B"], "fitted")
    doc = yaml.safe_load(profile_yaml(result, "unit test data"))
    prof = parse_profile(doc)
    assert prof.sources["nic.pipeline_ns"].tag == "M"
    assert prof.sources["link.data_rate_gbps"].tag == base.sources["link.data_rate_gbps"].tag
    assert doc["fit"]["points"][1]["role"] == "held out"


def test_too_few_fit_points_is_an_error() -> None:
    base = load_profile("cx4-edr-100g")
    with pytest.raises(ValueError, match="at least as many fit points"):
        fit_profile(base, [Measurement("write_lat", 2, 5.0)], ["nic.pipeline_ns", "link.data_rate_gbps"],
                    ["write_lat 2 B"], "x")  # fmt: skip


def test_kafka_calibration_recovers_a_host_cost_and_predicts_the_points_between_the_ends() -> None:
    """Measured rows made by kdsim itself with a known op_ns: the fit on the sweep's ends finds it again."""
    import json

    import pandas as pd

    from kdsim import fit_kafka

    base = "kdreal-rxe-tcg"
    truth = {"host.op_ns": 2.5 * load_profile(base).host.op_ns}
    rows = []
    for batch in (1024, 4096, 16384):
        params = {"system": "kafkadirect", "variant": "KD", "batch_bytes": batch, "records_per_producer": 300,
                  "consumers": 1, "segment_bytes": 1 << 20}  # fmt: skip
        row = fit_kafka._simulated_row(base, tuple(truth.items()), tuple(sorted(params.items())))
        rows.append({**row, "experiment": "t", "engine": "real", "config_json": json.dumps({"params": params})})
    measured = fit_kafka.measurements(pd.DataFrame(rows), {"t": ["produce_mb_per_s", "ack_latency_p50_us"]})
    assert len(measured) == 6
    chosen = fit_kafka.select(measured, "ends")
    assert chosen == ["t: KD, batch_bytes=1024", "t: KD, batch_bytes=16384"]
    result = fit_kafka.fit(base, measured, ["host.op_ns"], chosen, "t")
    assert result.values["host.op_ns"] == pytest.approx(truth["host.op_ns"], rel=0.02)
    held = [r for r in result.table if r["role"] == "held out"]
    assert len(held) == 2 and all(abs(r["error_pct"]) < 2 for r in held)
