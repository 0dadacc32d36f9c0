"""Figures from result tables, with published reference values drawn in.

Each spec may name a figure kind; :func:`render` draws it from the experiment's rows
into ``paper_figures/<experiment>.{png,pdf}``. Sizes go on log-2 axes; references
from the spec are drawn as hollow markers with their label and source.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

from kdlab.spec import ExperimentSpec

plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 120})


def _bytes_label(v: float, _pos: object = None) -> str:
    for unit, n in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= n:
            return f"{v / n:g} {unit}"
    return f"{v:g} B"


def _size_axis(ax: Axes) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(_bytes_label))
    ax.tick_params(axis="x", labelrotation=45)


def _series(df: pd.DataFrame, by: list[str]) -> list[tuple[str, pd.DataFrame]]:
    by = [c for c in by if c in df.columns and df[c].nunique() > 1]
    if not by:
        return [("", df)]
    return [(" ".join(str(k) for k in (key if isinstance(key, tuple) else (key,))), g) for key, g in df.groupby(by)]


def _references(ax: Axes, spec: ExperimentSpec, metric: str) -> None:
    for ref in spec.references:
        if ref.metric != metric:
            continue
        xs, ys = zip(*ref.points, strict=True)
        ax.plot(xs, ys, "o", mfc="none", mec="black", ms=9, mew=1.5, label=f"{ref.label} ({ref.source})")
        if ref.tolerance:
            for x, y in ref.points:
                ax.plot([x, x], [y * (1 - ref.tolerance), y * (1 + ref.tolerance)], "k-", lw=1, alpha=0.6)


def perftest_latency(df: pd.DataFrame, spec: ExperimentSpec, ax: Axes) -> None:
    for label, g in _series(df, ["profile", "test"]):
        g = g.sort_values("size")
        line = ax.plot(g["size"], g["t_typical_us"], "-", marker=".", label=f"sim {label}".strip())[0]
        ax.fill_between(g["size"], g["t_min_us"], g["t_p999_us"], color=line.get_color(), alpha=0.15)
    _references(ax, spec, "t_typical_us")
    _size_axis(ax)
    ax.set_yscale("log")
    ax.set_xlabel("message size")
    ax.set_ylabel("latency, t_typical [us] (band: min..p99.9)")


def perftest_bandwidth(df: pd.DataFrame, spec: ExperimentSpec, ax: Axes) -> None:
    from kdsim.fabric import WireModel
    from kdsim.profile import load_profile

    for label, g in _series(df, ["profile", "test"]):
        g = g.sort_values("size")
        ax.plot(g["size"], g["bw_avg_gbps"], "-", marker=".", label=f"sim {label}".strip())
    for name in sorted(df["profile"].unique()):
        wire = WireModel.from_profile(load_profile(name))
        ax.axhline(wire.goodput_gbps(wire.mtu * 256), ls="--", lw=1, color="grey")
        ax.annotate(
            f"{name}: link goodput after headers",
            (df["size"].min(), wire.goodput_gbps(wire.mtu * 256)),
            textcoords="offset points",
            xytext=(0, 3),
            fontsize=8,
            color="grey",
        )
    _references(ax, spec, "bw_avg_gbps")
    _size_axis(ax)
    ax.set_xlabel("message size")
    ax.set_ylabel("BW average [Gb/s]")


def perftest_msgrate(df: pd.DataFrame, spec: ExperimentSpec, ax: Axes) -> None:
    for label, g in _series(df, ["profile", "test", "post_list"]):
        g = g.sort_values("qps")
        ax.plot(g["qps"], g["msg_rate_mpps"], "-", marker="o", label=f"sim {label}".strip())
    for name in sorted(df["profile"].unique()):
        from kdsim.profile import load_profile

        entries = load_profile(name).nic.qpc_cache_entries
        ax.axvline(entries, ls=":", color="grey")
        ax.annotate(
            f"{name}: QP-context cache\n{entries} entries",
            (entries, ax.get_ylim()[1] * 0.9),
            fontsize=8,
            color="grey",
            ha="right",
        )
    _references(ax, spec, "msg_rate_mpps")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("queue pairs (served round robin by the client threads)")
    ax.set_ylabel("message rate [Mpps]")


FIGURES: dict[str, Callable[[pd.DataFrame, ExperimentSpec, Axes], None]] = {
    "perftest_latency": perftest_latency,
    "perftest_bandwidth": perftest_bandwidth,
    "perftest_msgrate": perftest_msgrate,
}


def lines(df: pd.DataFrame, spec: ExperimentSpec, axes: list[Axes]) -> None:
    """Generic line panels: each ``y`` metric against ``x``, a line per ``by`` group."""
    fig_spec = spec.figure
    assert not isinstance(fig_spec, str) and fig_spec is not None
    for ax, metric in zip(axes, fig_spec.y, strict=True):
        for label, g in _series(df, fig_spec.by):
            g = g.sort_values(fig_spec.x)
            ax.plot(g[fig_spec.x], g[metric], "-", marker="o", ms=3, label=label or metric)
        _references(ax, spec, metric)
        if fig_spec.logx:
            ax.set_xscale("log", base=fig_spec.logx)
            if fig_spec.x.endswith("bytes"):
                ax.xaxis.set_major_formatter(FuncFormatter(_bytes_label))
                ax.tick_params(axis="x", labelrotation=45)
        if fig_spec.logy:
            ax.set_yscale("log")
        ax.set_xlabel(fig_spec.x)
        ax.set_ylabel(metric)
        ax.legend(fontsize=7, loc="best")


def render(df: pd.DataFrame, spec: ExperimentSpec, out_dir: str | Path = "paper_figures") -> list[Path]:
    """Draw the spec's figure from its rows; -> the PNG and PDF paths."""
    if not spec.figure:
        return []
    if not isinstance(spec.figure, str):
        n = len(spec.figure.y)
        fig, axs = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
        lines(df, spec, list(axs[0]))
        fig.suptitle(spec.description or spec.name, fontsize=10)
        return _save(fig, spec, out_dir)
    if spec.figure not in FIGURES:
        raise ValueError(f"figure {spec.figure!r} unknown; known: {', '.join(FIGURES)}")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    FIGURES[spec.figure](df, spec, ax)
    ax.set_title(spec.description or spec.name, fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, spec, out_dir)


def _save(fig: plt.Figure, spec: ExperimentSpec, out_dir: str | Path) -> list[Path]:
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{spec.name}.png", out / f"{spec.name}.pdf"]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths
