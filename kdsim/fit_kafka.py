"""Simulated vs measured Kafka runs: calibrate a profile on some measured points, predict the rest.

Measured rows are the result rows of experiments run with ``--engine real`` (each row
carries its full Kafka configuration); repeated runs of one configuration (seeds)
give one point, their median, with their spread as the measurement's noise. Each
configuration gives one point per metric its experiment plots (the spec's
``figure.y``: a throughput and a p50 latency). The simulated value of a point is
the same configuration run on kdsim with the candidate profile
(:class:`kdlab.workloads.kafka.KafkaWorkload`, so both engines' rows are computed
by the same code). :func:`kdsim.fit.fit_profile` does the fit;
every point not chosen for fitting is held out and predicted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from kdlab.kafka.params import KafkaParams
from kdlab.spec import Point
from kdsim.fit import FitResult, save_figure
from kdsim.profile import Profile, load_profile

#: Metrics judged when an experiment's figure names none.
DEFAULT_METRICS = ("produce_mb_per_s", "ack_latency_p50_us")


@dataclass(frozen=True)
class KafkaMeasurement:
    """One measured value: a Kafka configuration, one metric of its run, and where it comes from."""

    experiment: str
    point: str  # the configuration's label, e.g. "KafkaDirect exclusive, batch_bytes=4096"
    params: tuple[tuple[str, Any], ...]
    metric: str
    value: float
    x: str = ""  # the swept parameter, for plotting
    x_value: float = 0.0
    runs: int = 1  # measured runs (seeds) of this configuration; ``value`` is their median
    spread_pct: float = 0.0  # (max - min) / median of those runs: the measurement's own noise

    @property
    def label(self) -> str:
        return f"{self.experiment}: {self.point}"


def measurements(rows: pd.DataFrame, metrics: dict[str, Sequence[str]] | None = None) -> list[KafkaMeasurement]:
    """Measured points from result rows of ``engine == 'real'`` (one per row and metric).

    ``metrics`` maps an experiment to the metrics to judge (default: its figure's y
    columns when it names them in ``metrics``, else :data:`DEFAULT_METRICS`).
    """
    real = rows[rows["engine"] == "real"]
    if real.empty:
        raise ValueError("no measured rows (engine == 'real') to calibrate on")
    fields = set(KafkaParams.model_fields)
    out = []
    for exp, group in real.groupby("experiment", sort=True):
        configs = [json.loads(c)["params"] for c in group["config_json"]]
        varying = sorted(k for k in fields if len({json.dumps(c.get(k)) for c in configs}) > 1 and k != "variant")
        x = next((k for k in varying if k not in ("system", "produce_mode")), "")
        runs: dict[str, tuple[dict[str, Any], list[Any]]] = {}  # repeated runs (seeds) of one configuration
        for cfg, (_, row) in zip(configs, group.iterrows(), strict=True):
            runs.setdefault(json.dumps(cfg, sort_keys=True), (cfg, []))[1].append(row)
        for cfg, repeats in runs.values():
            params = KafkaParams.model_validate(cfg)
            name = cfg.get("variant") or params.system
            point = ", ".join([name, *(f"{k}={cfg[k]}" for k in varying if k not in ("system", "produce_mode"))])
            for metric in (metrics or {}).get(str(exp), DEFAULT_METRICS):
                values = [float(r.get(metric)) for r in repeats if r.get(metric) is not None and r.get(metric) > 0]
                if not values:
                    continue
                med = float(np.median(values))
                spread = 100 * (max(values) - min(values)) / med
                out.append(KafkaMeasurement(str(exp), point, tuple(sorted(cfg.items())), metric, med, x,
                                            float(cfg.get(x, 0) or 0), len(values), spread))  # fmt: skip
    return out


@lru_cache(maxsize=4096)
def _simulated_row(base: str, overrides: tuple[tuple[str, float], ...], params: tuple[tuple[str, Any], ...]) -> Any:
    from kdlab.workloads.kafka import KafkaWorkload

    point = Point("calibration", "kafka", "sim", base, overrides, params, 1)
    return KafkaWorkload().run_point(point)[0]


def simulator(base_name: str) -> Any:
    """``simulate(profile, m)`` for :func:`kdsim.fit.fit_profile`: kdsim's value of ``m.metric``.

    ``profile`` is ``base_name`` with overrides (as fitting makes them); runs are cached
    per configuration and overrides, so each metric of a point costs one run.
    """

    def simulate(profile: Profile, m: KafkaMeasurement) -> float:
        row = _simulated_row(base_name, profile.overrides, m.params)
        return float(row[m.metric])

    return simulate


def fit(
    base_name: str,
    measured: Sequence[KafkaMeasurement],
    params: Sequence[str],
    fit_on: Sequence[str],
    name: str,
) -> FitResult:
    """Fit ``params`` of profile ``base_name`` on the points labelled in ``fit_on``; predict the rest."""
    from kdsim.fit import fit_profile

    return fit_profile(load_profile(base_name), measured, params, fit_on, name, simulator(base_name), max_nfev=60)


def select(measured: Sequence[KafkaMeasurement], query: str) -> list[str]:
    """Labels of the fit points: ``"ends"`` takes the first and last point of every swept series (each
    experiment and variant), so the points between them are predicted; anything else is a pandas query
    over the Kafka parameters and ``experiment``, e.g. ``"experiment == 'testbed-batch-size'"``."""
    if query == "ends":
        series: dict[tuple[str, str], list[KafkaMeasurement]] = {}
        for m in measured:
            series.setdefault((m.experiment, m.point.split(",")[0]), []).append(m)
        ends = set()
        for pts in series.values():
            xs = sorted({m.x_value for m in pts})
            ends |= {m.label for m in pts if m.x_value in (xs[0], xs[-1])}
        return sorted(ends)
    frame = pd.DataFrame([{**dict(m.params), "experiment": m.experiment, "label": m.label} for m in measured])
    try:
        return sorted(set(frame.query(query)["label"]))
    except Exception as err:
        raise ValueError(f"--fit-on query {query!r} failed: {err}; columns: {', '.join(frame.columns)}") from err


def overlay_figure(result: FitResult, measured: Sequence[KafkaMeasurement], base_name: str, path: str) -> list[str]:
    """Per experiment and metric: measured points (fit: filled, held out: open) and the calibrated simulation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    simulate = simulator(base_name)
    calibrated = load_profile(base_name).with_overrides(result.values)
    panels = sorted({(m.experiment, m.metric) for m in measured})
    cols = 2
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.4 * rows), squeeze=False)
    fitted = {r["point"] for r in result.table if r["role"] == "fit"}
    for ax, (exp, metric) in zip(axes.flat, panels, strict=False):
        pts = [m for m in measured if m.experiment == exp and m.metric == metric]
        series = sorted({m.point.split(",")[0] for m in pts})
        for i, s in enumerate(series):
            ser = sorted((m for m in pts if m.point.split(",")[0] == s), key=lambda m: m.x_value)
            color = f"C{i}"
            ax.plot([m.x_value for m in ser], [simulate(calibrated, m) for m in ser], "-", color=color,
                    label=f"sim {s}")  # fmt: skip
            for m in ser:
                filled = m.label in fitted
                ax.plot([m.x_value], [m.value], "s" if filled else "o", color=color, mfc=color if filled else "none")
        ax.plot([], [], "ks", label="measured (fit)")
        ax.plot([], [], "ko", mfc="none", label="measured (held out)")
        ax.set_title(f"{exp}: {metric}", fontsize=9)
        ax.set_xlabel(pts[0].x if pts else "")
        if pts and pts[0].x.endswith(("bytes", "_us")) and min(m.x_value for m in pts) > 0:
            ax.set_xscale("log", base=2 if pts[0].x.endswith("bytes") else 10)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(f"kdreal measured vs kdsim ({result.profile.name}; fitted {', '.join(result.values)})", fontsize=10)
    return save_figure(fig, path)
