"""Check results against the published values a spec cites (its ``references``)."""

from __future__ import annotations

import pandas as pd

from kdlab.spec import ExperimentSpec


def check_references(df: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """One row per reference point: published value, simulated value, relative error, pass."""
    rows = []
    for ref in spec.references:
        sel = df
        for col, value in ref.where.items():
            sel = sel[sel[col] == value]
        for x, y in ref.points:
            match = sel[sel[ref.x_param] == x]
            got = float(match[ref.metric].iloc[0]) if len(match) else float("nan")
            err = (got - y) / y
            rows.append(
                {
                    "experiment": spec.name,
                    "reference": ref.label,
                    "source": ref.source,
                    ref.x_param if ref.x_param == "size" else "x": x,
                    "metric": ref.metric,
                    "published": y,
                    "simulated": got,
                    "error_pct": 100 * err,
                    "tolerance_pct": None if ref.tolerance is None else 100 * ref.tolerance,
                    "ok": None if ref.tolerance is None else bool(abs(err) <= ref.tolerance),
                }
            )
    return pd.DataFrame(rows)
