"""Calibrate a profile from measured microbenchmarks, and say how well it fits.

Give measured perftest points (from kdreal, or the real perftest tools), a base
profile, the parameters to fit and which points to fit on. The fit minimises the
relative error of the simulated values on the fit points (``scipy.optimize``
least squares over the logarithms of the parameters, so they stay positive); every
other measured point is held out and predicted. The result is a new profile file
that records what it was fitted on and the error point by point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import yaml
from scipy.optimize import least_squares

from kdlab.datapaths.perftest import HALF_RTT_TESTS, PerftestConfig, merge_bandwidth, roles
from kdlab.perftest_report import bandwidth_stats, latency_stats
from kdsim.engine import SimEngine
from kdsim.profile import SECTIONS, Profile, param_info

#: The metric each test is judged by.
METRIC = {"lat": "t_typical_us", "bw": "bw_avg_gbps"}


@dataclass(frozen=True)
class Measurement:
    """One measured point: a perftest test at one size (and QP count) and its value."""

    test: str
    size: int
    value: float
    qps: int = 1
    source: str = ""

    @property
    def metric(self) -> str:
        return METRIC[self.test.rsplit("_", 1)[1]]

    @property
    def label(self) -> str:
        return f"{self.test} {self.size} B" + (f" x{self.qps} QPs" if self.qps > 1 else "")


def simulate(profile: Profile, m: Measurement, iterations: int | None = None) -> float:
    """The simulated value of a measured point's metric on ``profile``."""
    is_lat = m.test.endswith("_lat")
    n = iterations or (60 if is_lat else 400)
    cfg = PerftestConfig(m.test, size=m.size, iterations=n, qps=m.qps, tx_depth=1 if is_lat else 128)
    results = SimEngine(profile).run(roles(cfg))
    if is_lat:
        half = 2.0 if m.test in HALF_RTT_TESTS else 1.0
        return latency_stats(s / half / 1000 for s in results["client"]["samples_ns"])["t_typical_us"]
    out = merge_bandwidth([v for k, v in sorted(results.items()) if k.startswith("client")])
    return bandwidth_stats(
        out["messages"], out["msg_bytes"], out["t_first_post_ns"], out["t_last_completion_ns"],
        out["block_posted_ns"], out["block_completed_ns"], out["cq_mod"],
    )["bw_avg_gbps"]  # fmt: skip


@dataclass
class FitResult:
    profile: Profile
    values: dict[str, float]
    table: list[dict[str, Any]]

    def held_out_max_error(self) -> float:
        errs = [abs(r["error_pct"]) for r in self.table if r["role"] == "held out"]
        return max(errs) if errs else float("nan")


#: Common scales of the fitted parameters tried before the local search (see :func:`fit_profile`).
SCAN = (0.25, 0.5, 1.0, 2.0, 4.0)


def fit_profile(
    base: Profile,
    measured: Sequence[Any],
    params: Sequence[str],
    fit_on: Sequence[str],
    name: str,
    simulate: Callable[[Profile, Any], float] = simulate,
    max_nfev: int = 200,
) -> FitResult:
    """Fit ``params`` of ``base`` to the measured points whose label is in ``fit_on``.

    A measured point has ``label``, ``metric`` and ``value``; ``simulate(profile, m)``
    gives its simulated value (default: perftest points, :class:`Measurement`).
    """
    fit_points = [m for m in measured if m.label in fit_on]
    if len(fit_points) < len(params):
        raise ValueError(f"fitting {len(params)} parameters needs at least as many fit points, got {len(fit_points)}")
    x0 = np.log([base.get(p) or 1.0 for p in params])

    def candidate(logx: np.ndarray) -> Profile:
        values = {}
        for p, v in zip(params, np.exp(logx), strict=True):
            values[p] = round(float(v)) if "int" in str(_field_type(p)) else float(v)
        return base.with_overrides(values)

    def residuals(logx: np.ndarray) -> np.ndarray:
        prof = candidate(logx)
        return np.array([math.log(simulate(prof, m) / m.value) for m in fit_points])

    # within a factor e^10 (~22000) of the base values: room to fit a software device from a hardware profile,
    # not enough to run the model into overflow
    bounds = (x0 - 10.0, x0 + 10.0)
    # the model is not smooth in its costs (threads that share cores fall into and out of step), so a local
    # search from the base values can stop in a dip far from the fit: start from the best of a coarse scan of
    # one common scale of every parameter (x1/4 to x4: five runs of the points)
    starts = [x0 + math.log(k) for k in SCAN]
    x0 = min(starts, key=lambda x: float(np.sum(residuals(x) ** 2)))
    sol = least_squares(residuals, x0, bounds=bounds, diff_step=0.05, xtol=1e-4, ftol=1e-4, max_nfev=max_nfev)
    fitted = candidate(sol.x)
    values = {p: fitted.get(p) for p in params}
    table = []
    for m in measured:
        sim = simulate(fitted, m)
        row = {
            "point": m.label, "role": "fit" if m in fit_points else "held out", "metric": m.metric,
            "measured": m.value, "simulated": sim, "error_pct": 100 * (sim / m.value - 1),
        }  # fmt: skip
        if hasattr(m, "spread_pct"):  # repeated measurements: how much they disagree among themselves
            row["runs"], row["spread_pct"] = m.runs, m.spread_pct
        table.append(row)
    profile = Profile(
        name=name,
        description=f"{base.description} Calibrated: {', '.join(params)} fitted to measured runs.",
        link=fitted.link, switch=fitted.switch, pcie=fitted.pcie, nic=fitted.nic, tcp=fitted.tcp, host=fitted.host,
        storage=fitted.storage,
        sources=dict(base.sources), fit={"parameters": list(params), "fitted_on": list(fit_on)},
    )  # fmt: skip
    return FitResult(profile, values, table)


def _field_type(dotted: str) -> Any:
    section, _, name = dotted.partition(".")
    return next(f.type for f in SECTIONS[section].__dataclass_fields__.values() if f.name == name)


def profile_yaml(result: FitResult, data_source: str) -> str:
    """A profile file for the fitted profile: fitted values tagged M, the rest keep their sources."""
    prof = result.profile
    doc: dict[str, Any] = {"name": prof.name, "description": prof.description}
    doc["fit"] = {
        "parameters": list(result.values),
        "data": data_source,
        "points": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in result.table],
        "held_out_max_error_pct": round(result.held_out_max_error(), 2),
    }
    for section in SECTIONS:
        entries = {}
        for key, value in prof.as_dict().items():
            sec, _, pname = key.partition(".")
            if sec != section:
                continue
            if key in result.values:
                entries[pname] = {
                    "value": value,
                    "tag": "M",
                    "source": f"fitted to {data_source} ({param_info(key)['unit']})",
                }
            else:
                src = prof.sources[key]
                entries[pname] = {"value": value, "tag": src.tag, "source": src.text}
        doc[section] = entries
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def overlay_figure(result: FitResult, measured: Sequence[Measurement], path: str) -> list[str]:
    """Measured points and the calibrated simulation's curves, one panel per metric (PNG + PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests = sorted({m.test for m in measured})
    panels = [("t_typical_us", "latency, t_typical [us]"), ("bw_avg_gbps", "BW average [Gb/s]")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for i, test in enumerate(t for t in tests if METRIC[t.rsplit("_", 1)[1]] == metric):
            pts = sorted((m for m in measured if m.test == test), key=lambda m: m.size)
            color = f"C{i}"
            sizes = [2**k for k in range(1, 17)]
            sim = [simulate(result.profile, Measurement(test, s, 1.0)) for s in sizes]
            ax.plot(sizes, sim, "-", color=color, label=f"sim {test} ({result.profile.name})")
            fit = [m for m in pts if any(r["point"] == m.label and r["role"] == "fit" for r in result.table)]
            held = [m for m in pts if m not in fit]
            ax.plot([m.size for m in held], [m.value for m in held], "o", mfc="none", color=color,
                    label=f"measured {test} (held out)")  # fmt: skip
            ax.plot([m.size for m in fit], [m.value for m in fit], "s", color=color, label=f"measured {test} (fit)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("message size [B]")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Calibrated {result.profile.name}: fitted {', '.join(result.values)}", fontsize=10)
    return save_figure(fig, path)


def save_figure(fig: Any, path: str) -> list[str]:
    """Write ``fig`` as PATH.png and PATH.pdf, close it, and return the two paths."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = [path + ".png", path + ".pdf"]
    for p in out:
        fig.savefig(p)
    plt.close(fig)
    return out
