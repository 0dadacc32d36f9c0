"""Fit a profile's one free latency parameter to its anchor measurement.

A profile's ``fit`` section names the parameter (``nic.pipeline_ns``: the NIC's fixed
per-message latency, the one number no datasheet gives) and the anchor, a perftest
latency measured on that hardware. Every other number comes from its own source;
the fit finds the value that makes the anchor's simulated ``t_typical`` equal the
measured one, by bisection (latency grows monotonically with the parameter).
The anchor's held-out points then test the model.
"""

from __future__ import annotations

from typing import Any

from kdlab.datapaths.perftest import HALF_RTT_TESTS, PerftestConfig, roles
from kdlab.perftest_report import latency_stats
from kdsim.engine import SimEngine
from kdsim.profile import Profile, load_profile


def simulated_latency_us(profile: Profile, test: str, size: int, iterations: int = 50) -> float:
    """Simulated perftest ``t_typical`` (us) of a latency test."""
    cfg = PerftestConfig(test, size=size, iterations=iterations, tx_depth=1)
    out = SimEngine(profile).run(roles(cfg))["client"]
    half = 2.0 if test in HALF_RTT_TESTS else 1.0
    return latency_stats(s / half / 1000 for s in out["samples_ns"])["t_typical_us"]


def fit_anchor(name: str, lo: float = 0.0, hi: float = 2000.0, tol_ns: float = 0.05) -> dict[str, Any]:
    """Bisect the fitted parameter so the anchor test matches; -> value and residuals."""
    profile = load_profile(name)
    fit = profile.fit
    try:
        param, anchor = fit["parameter"], fit["anchor"]
    except (KeyError, TypeError):
        raise ValueError(f"profile {name!r} has no fit.parameter/fit.anchor to calibrate") from None
    target = float(anchor["t_typical_us"])

    def latency(value: float) -> float:
        return simulated_latency_us(profile.with_overrides({param: value}), anchor["test"], int(anchor["size"]))

    if latency(lo) > target:
        return {"parameter": param, "value": lo, "note": f"anchor already exceeded at {lo} ns: {latency(lo):.4f} us"}
    while hi - lo > tol_ns:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if latency(mid) < target else (lo, mid)
    value = round((lo + hi) / 2, 2)
    out: dict[str, Any] = {"parameter": param, "value": value, "anchor_us": target, "fitted_us": latency(value)}
    for point in fit.get("held_out_points", []):
        got = simulated_latency_us(profile.with_overrides({param: value}), point["test"], int(point["size"]))
        out[f"held_out {point['test']} {point['size']} B"] = (
            f"sim {got:.3f} us vs measured {point['t_typical_us']} us ({100 * (got / point['t_typical_us'] - 1):+.1f}%)"
        )
    return out
