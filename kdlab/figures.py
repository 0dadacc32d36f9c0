"""Figures from result tables, drawn as a paper prints them, with published reference values drawn in.

Each spec may name a figure; :func:`render` draws it from the experiment's rows into
``paper_figures/<experiment>.{png,pdf}`` (:func:`draw` returns the figure without saving it).
What every figure follows:

* **Axis labels in words with units** from :data:`LABELS` (column -> words, unit), never a column
  name; a unit steps up (µs -> ms, records/s -> M records/s) when the values are large.
  Sizes go on log-2 axes with B/KiB/MiB tick labels. A figure column missing from the table
  is drawn under its own name with a warning (the tests fail on it).
* **One colour and marker per system**: :data:`STYLE` keys every variant label of the
  experiments (and perftest's operations and profiles) to one Okabe-Ito colour (colour-blind
  safe), marker and line style; any other label gets a fixed style from its name.
* **Paper sizes**: one panel is a column wide (:data:`COLUMN_IN`), several a page
  (:data:`PAGE_IN`); 7-8 pt text; constrained layout with the title (wrapped to the width) and
  the legend above the panels, the notes and published values below them, so nothing is
  clipped or overlaps.
* **Integer ticks** on an integer axis that is not a size (replication factor, partitions).
* **Repeated runs** (several seeds, e.g. the testbed's three measured runs per point) are
  drawn as the median with a band from the smallest to the largest run; the legend says so.
* **A p99 panel only where it differs from the median**: a ``*_p99_*`` panel whose ``*_p50_*``
  twin is in the same figure is left out when the two differ by less than
  :data:`P99_SAME_AS_P50` everywhere; the legend says so.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from kdlab.figure_style import (
    _OPS,
    LABELS,
    PROFILE_NAMES,
    REFERENCE_STYLE,
    STYLE,
    UnlabelledColumn,
    axis_label,
    is_size,
    label_of,
    style_for,
)
from kdlab.spec import ExperimentSpec, FigureSpec

#: Figure widths in inches: one column of a two-column paper, and the full text width.
COLUMN_IN = 3.4
PAGE_IN = 7.0
#: Height of the panels, and of an x axis's tick labels and label below them (title, legend and notes add theirs).
PANEL_IN = 2.0
X_AXIS_IN = 0.6
#: Font sizes in points: titles and axis labels; tick labels, legends and notes.
FONT_PT = 8
SMALL_PT = 7
#: A p99 panel is left out when max |p99 / p50 - 1| over the figure's rows is below this.
P99_SAME_AS_P50 = 0.05
#: A log x axis with at most this many distinct values gets a tick at each value.
FEW_TICKS = 8
#: PNG resolution (the PDF is vector).
PNG_DPI = 200


def _display(column: str, value: object) -> str:
    if column == "profile":
        return PROFILE_NAMES.get(str(value), str(value))
    if column == "test":
        return _OPS.get(str(value).rsplit("_", 1)[0], str(value))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if column in ("variant", "system"):
        return str(value)
    words = label_of(column)[0] if column in LABELS else column
    return f"{words} {_bytes_label(value) if is_size(column) else value}"


def _series(df: pd.DataFrame, by: list[str], keep_constant: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """One (label, rows) per group of ``by`` (columns that do not vary are left out of the label).

    ``keep_constant``: a single series is still named after its ``by`` value (its system).
    """
    present = [c for c in by if c in df.columns]
    varying = [c for c in present if df[c].nunique(dropna=False) > 1]
    if not varying:
        if keep_constant and present and df[present[0]].nunique() == 1:
            return [(_display(present[0], df[present[0]].iloc[0]), df)]
        return [("", df)]
    out = []
    for key, g in df.groupby(varying, sort=True, dropna=False):
        parts = key if isinstance(key, tuple) else (key,)
        out.append((", ".join(_display(c, v) for c, v in zip(varying, parts, strict=True)), g))
    order = {label: i for i, label in enumerate(STYLE)}
    return sorted(out, key=lambda item: (order.get(item[0], len(order)), item[0]))


# --- ticks ---------------------------------------------------------------------------------------


def _number(v: float) -> str:
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e7:
        return str(int(v))
    return f"{v:g}"


def _bytes_label(v: float, _pos: object = None) -> str:
    """1 KiB, 4 MiB for multiples of the unit; 1000 B, 8000 B (not 7.8125 KiB) for sizes that are not."""
    for unit, n in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= n and (v % n == 0 or v >= 10 * n):
            return f"{v / n:.4g} {unit}"
    return f"{v:g} B"


def _integer_valued(values: pd.Series) -> bool:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return len(v) > 0 and bool(np.all(np.isclose(v, np.round(v))))


def _log_formatters(axis: Axis) -> None:
    """Plain numbers on a log axis; minor ticks labelled (at 2x and 5x) only where it spans under two decades."""
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _number(v)))

    def minor(v: float, _pos: object = None) -> str:
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or hi / lo >= 100:
            return ""
        mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
        return _number(v) if round(mantissa, 6) in (2.0, 5.0) else ""

    axis.set_minor_formatter(FuncFormatter(minor))


def _x_axis(ax: Axes, column: str, values: pd.Series, logx: int | None) -> None:
    """Sizes: B/KiB/MiB ticks; integers: integer ticks; a log axis with few values: a tick at each."""
    distinct = sorted(pd.to_numeric(values, errors="coerce").dropna().unique())
    if logx:
        ax.set_xscale("log", base=logx)
        if 1 < len(distinct) <= FEW_TICKS:
            ax.xaxis.set_major_locator(FixedLocator(distinct))
        elif logx == 2:
            ax.xaxis.set_major_locator(LogLocator(base=2, numticks=8))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if is_size(column):
        ax.xaxis.set_major_formatter(FuncFormatter(_bytes_label))
        ax.tick_params(axis="x", labelrotation=45)
    elif logx:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _number(v)))
    elif _integer_valued(values):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _y_axis(ax: Axes, logy: bool) -> None:
    if logy:
        ax.set_yscale("log")
        _log_formatters(ax.yaxis)


# --- drawing -------------------------------------------------------------------------------------


def _draw(ax: Axes, g: pd.DataFrame, x: str, y: str, label: str, factor: float = 1.0) -> int:
    """One series: the median over repeated runs at each x, a min..max band where there are several.

    Repeated runs are rows at one x that differ in their seed; rows that differ in more (a swept
    parameter the figure's ``by`` leaves out) are reported with a warning, as a median would hide it.
    -> the most runs at one x.
    """
    rows = g[[x, y, *(["seed"] if "seed" in g.columns else [])]].dropna(subset=[x, y])
    if not len(rows):
        return 0
    by_x = (rows[y] * factor).groupby(rows[x], sort=True)
    med, n = by_x.median(), by_x.size()
    if "seed" in rows.columns and (rows.groupby(x)["seed"].nunique() < n).any():
        warnings.warn(f"{label or y}: rows at one {x} differ in more than their seed; name the column that "
                      "varies in the figure's `by`", stacklevel=3)  # fmt: skip
    style = style_for(label)
    ax.plot(med.index, med.to_numpy(), color=style.color, marker=style.marker, ls=style.linestyle, ms=3.5,
            lw=1.2, label=label)  # fmt: skip
    if n.max() > 1:
        ax.fill_between(med.index, by_x.min().to_numpy(), by_x.max().to_numpy(), color=style.color, alpha=0.2,
                        lw=0)  # fmt: skip
    return int(n.max())


def _references(ax: Axes, spec: ExperimentSpec, metric: str, factor: float = 1.0) -> None:
    for ref in spec.references:
        if ref.metric != metric:
            continue
        xs, ys = zip(*ref.points, strict=True)
        label = textwrap.fill(f"{ref.label} ({ref.source})", 60)
        ax.plot(xs, [y * factor for y in ys], label=label, **REFERENCE_STYLE)
        if ref.tolerance:
            for x, y in ref.points:
                ax.plot([x, x], [y * factor * (1 - ref.tolerance), y * factor * (1 + ref.tolerance)], "k-", lw=0.8,
                        alpha=0.6, label="_tolerance")  # fmt: skip


@dataclass
class _Notes:
    """What the legend's title says about the figure: repeated runs, bands, left-out panels."""

    runs: int = 1
    lines: list[str] | None = None

    def add(self, text: str) -> None:
        self.lines = [*(self.lines or []), text]

    def title(self) -> str | None:
        out = list(self.lines or [])
        if self.runs > 1:
            out.insert(0, f"Lines: median of {self.runs} runs; bands: smallest to largest run")
        return "\n".join(out) or None


def perftest_latency(df: pd.DataFrame, spec: ExperimentSpec, ax: Axes, notes: _Notes) -> None:
    label, factor = axis_label("t_typical_us", df["t_typical_us"])
    series = _series(df, ["profile", "test"])
    for name, g in series:
        notes.runs = max(notes.runs, _draw(ax, g, "size", "t_typical_us", name or "simulated", factor))
    spread = {"t_min_us", "t_p999_us"} <= set(df.columns) and bool((df["t_p999_us"] > df["t_min_us"] * 1.01).any())
    if notes.runs == 1 and spread:  # one run per point: the band is the spread of its samples
        for name, g in series:
            g = g.sort_values("size")
            ax.fill_between(g["size"], g["t_min_us"] * factor, g["t_p999_us"] * factor,
                            color=style_for(name or "simulated").color, alpha=0.15, lw=0)  # fmt: skip
        notes.add("Bands: minimum to p99.9 of the samples")
    _references(ax, spec, "t_typical_us", factor)
    _x_axis(ax, "size", df["size"], 2)
    _y_axis(ax, True)
    ax.set_xlabel(axis_label("size")[0])
    ax.set_ylabel(label)


def perftest_bandwidth(df: pd.DataFrame, spec: ExperimentSpec, ax: Axes, notes: _Notes) -> None:
    from kdsim.fabric import WireModel
    from kdsim.profile import load_profile

    for name, g in _series(df, ["profile", "test"]):
        notes.runs = max(notes.runs, _draw(ax, g, "size", "bw_avg_gbps", name or "simulated"))
    profiles = sorted(df["profile"].unique())
    for i, name in enumerate(profiles):
        wire = WireModel.from_profile(load_profile(name))
        goodput = wire.goodput_gbps(wire.mtu * 256)
        ax.axhline(goodput, ls="--", lw=0.8, color="grey")
        text = "link goodput after headers"
        if len(profiles) > 1:
            text = f"{PROFILE_NAMES.get(name, name)}: {text}"
        ax.annotate(text, (0.02, goodput), xycoords=("axes fraction", "data"), textcoords="offset points",
                    xytext=(0, -2 - 9 * i), va="top", fontsize=SMALL_PT - 1, color="dimgrey")  # fmt: skip
    _references(ax, spec, "bw_avg_gbps")
    _x_axis(ax, "size", df["size"], 2)
    ax.set_xlabel(axis_label("size")[0])
    ax.set_ylabel(axis_label("bw_avg_gbps", df["bw_avg_gbps"])[0])


def perftest_msgrate(df: pd.DataFrame, spec: ExperimentSpec, ax: Axes, notes: _Notes) -> None:
    from kdsim.profile import load_profile

    for name, g in _series(df, ["profile", "test", "post_list"]):
        notes.runs = max(notes.runs, _draw(ax, g, "qps", "msg_rate_mpps", name or "simulated"))
    for i, name in enumerate(sorted(df["profile"].unique())):
        entries = load_profile(name).nic.qpc_cache_entries
        colour = style_for(PROFILE_NAMES.get(name, name)).color
        ax.axvline(entries, ls=":", lw=1, color=colour)
        ax.annotate(f"QP-context\ncache: {entries}", (entries, 0.03 + 0.12 * i), xycoords=("data", "axes fraction"),
                    textcoords="offset points", xytext=(-3, 0), ha="right", va="bottom", fontsize=SMALL_PT - 1,
                    color=colour)  # fmt: skip
    _references(ax, spec, "msg_rate_mpps")
    _x_axis(ax, "qps", df["qps"], 2)
    ax.set_xlabel(f"{axis_label('qps')[0]} (served round robin)")
    ax.set_ylabel(axis_label("msg_rate_mpps", df["msg_rate_mpps"])[0])


FIGURES: dict[str, Callable[[pd.DataFrame, ExperimentSpec, Axes, _Notes], None]] = {
    "perftest_latency": perftest_latency,
    "perftest_bandwidth": perftest_bandwidth,
    "perftest_msgrate": perftest_msgrate,
}
#: The columns each named figure draws: (x, [y, ...]).
FIGURE_COLUMNS: dict[str, tuple[str, list[str]]] = {
    "perftest_latency": ("size", ["t_typical_us", "t_min_us", "t_p999_us"]),
    "perftest_bandwidth": ("size", ["bw_avg_gbps"]),
    "perftest_msgrate": ("qps", ["msg_rate_mpps"]),
}


def figure_columns(spec: ExperimentSpec) -> tuple[str, list[str]]:
    """The spec's figure's x column and y columns (every one needs a label in :data:`LABELS`)."""
    if spec.figure is None:
        raise ValueError(f"{spec.name} has no figure")
    if isinstance(spec.figure, str):
        if spec.figure not in FIGURE_COLUMNS:
            raise ValueError(f"figure {spec.figure!r} unknown; known: {', '.join(FIGURES)}")
        return FIGURE_COLUMNS[spec.figure]
    return spec.figure.x, list(spec.figure.y)


def _twin_p50(metric: str) -> str | None:
    for tail in ("_p99_", "_p999_"):
        if tail in metric:
            return metric.replace(tail, "_p50_")
    return None


def p99_differs(df: pd.DataFrame, metric: str, p50: str) -> bool:
    """Whether ``metric`` (a p99) differs from its median ``p50`` by :data:`P99_SAME_AS_P50` or more anywhere."""
    if metric not in df.columns or p50 not in df.columns:
        return True
    a, b = pd.to_numeric(df[metric], errors="coerce"), pd.to_numeric(df[p50], errors="coerce")
    ok = a.notna() & b.notna() & (b > 0)
    if not ok.any():
        return True
    return bool(((a[ok] / b[ok] - 1).abs() >= P99_SAME_AS_P50).any())


def panels(df: pd.DataFrame, fig_spec: FigureSpec) -> tuple[list[str], list[str]]:
    """The y metrics to draw, one panel each, and a note per panel left out."""
    keep, notes = [], []
    for metric in fig_spec.y:
        p50 = _twin_p50(metric)
        if p50 in fig_spec.y and not p99_differs(df, metric, p50):
            words = label_of(metric)[0]
            notes.append(f"{words}: within {P99_SAME_AS_P50:.0%} of the median everywhere, not drawn")
            continue
        keep.append(metric)
    return keep, notes


def lines(df: pd.DataFrame, spec: ExperimentSpec, axes: list[Axes], metrics: list[str], notes: _Notes) -> None:
    """Generic line panels: each metric against ``x``, a line per ``by`` group."""
    fig_spec = spec.figure
    assert isinstance(fig_spec, FigureSpec)
    x = fig_spec.x
    for ax, metric in zip(axes, metrics, strict=True):
        ylabel, factor = axis_label(metric, df[metric] if metric in df.columns else (), fig_spec.labels.get(metric))
        if metric in df.columns:
            for label, g in _series(df, fig_spec.by, keep_constant=True):
                notes.runs = max(notes.runs, _draw(ax, g, x, metric, label or label_of(metric)[0], factor))
        _references(ax, spec, metric, factor)
        _x_axis(ax, x, df[x] if x in df.columns else pd.Series(dtype=float), fig_spec.logx)
        _y_axis(ax, fig_spec.logy is True or (isinstance(fig_spec.logy, list) and metric in fig_spec.logy))
        ax.set_xlabel(axis_label(x, (), fig_spec.labels.get(x))[0])
        ax.set_ylabel(ylabel)


def _legend(fig: Figure, axes: list[Axes], title: str, notes: _Notes) -> None:
    """Above the panels: the title and a legend of the series; below: the notes and published references.

    The title is the upper legend's title: constrained layout makes room for a suptitle or for an
    outside legend at the top, not for both (they would overlap).
    """
    series: dict[str, Line2D] = {}
    refs: dict[str, Line2D] = {}
    for ax in axes:
        for line in ax.get_lines():
            label = str(line.get_label())
            if label.startswith("_"):
                continue
            (refs if line.get_color() == "black" and line.get_linestyle() == "None" else series)[label] = line
    width = fig.get_figwidth()
    longest = max((len(k) for k in series), default=10)
    per_row = max(1, int(width * 72 / (SMALL_PT * 0.6) // (longest + 8)))
    ncols = min(len(series) or 1, per_row)
    top = fig.legend(list(series.values()), list(series), loc="outside upper center", ncols=ncols, fontsize=SMALL_PT,
                     title=title, title_fontsize=FONT_PT, frameon=False, handlelength=2.2, columnspacing=1.2,
                     borderpad=0.2)  # fmt: skip
    top.get_title().set_multialignment("center")
    lines_of_text = title.count("\n") + 1
    header = lines_of_text * FONT_PT * 1.3 / 72 + math.ceil(len(series) / ncols) * SMALL_PT * 1.7 / 72 + 0.1
    footer = 0.0
    if refs or notes.title():
        note = "\n".join(_wrap(fig, line, SMALL_PT, width - 0.2) for line in (notes.title() or "").splitlines())
        bottom = fig.legend(list(refs.values()), list(refs), loc="outside lower center", ncols=1, fontsize=SMALL_PT,
                            title=note or None, title_fontsize=SMALL_PT, frameon=False, borderpad=0.2)  # fmt: skip
        bottom.get_title().set_multialignment("center")
        text_lines = note.count("\n") + 1 + sum(k.count("\n") + 1 for k in refs)
        footer = text_lines * SMALL_PT * 1.5 / 72 + 0.1
    fig.set_figheight(PANEL_IN + X_AXIS_IN + header + footer)


def _wrap(fig: Figure, text: str, fontsize: float, width_in: float) -> str:
    """``text`` broken into lines no wider than ``width_in`` at ``fontsize``, measured with the figure's renderer."""
    renderer = fig.canvas.get_renderer()
    font = FontProperties(size=fontsize)
    limit = width_in * renderer.dpi

    def fits(line: str) -> bool:
        return renderer.get_text_width_height_descent(line, font, ismath=False)[0] <= limit

    lines: list[str] = []
    for word in text.split():
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return "\n".join(lines)


def _title(fig: Figure, spec: ExperimentSpec) -> str:
    return _wrap(fig, spec.description or spec.name, FONT_PT, fig.get_figwidth() - 0.2)


def _new_figure(n_panels: int) -> tuple[Figure, list[Axes]]:
    width = COLUMN_IN if n_panels == 1 else PAGE_IN
    fig = Figure(figsize=(width, PANEL_IN + X_AXIS_IN), layout="constrained")  # not pyplot's: nothing global
    FigureCanvasAgg(fig)
    axs = fig.subplots(1, n_panels, squeeze=False)
    for ax in axs[0]:
        ax.tick_params(labelsize=SMALL_PT, which="both")
        ax.grid(True, alpha=0.3, lw=0.5)
    return fig, list(axs[0])


def draw(df: pd.DataFrame, spec: ExperimentSpec) -> Figure:
    """The spec's figure drawn from its rows (not saved; :func:`render` saves and closes it)."""
    if not spec.figure:
        raise ValueError(f"{spec.name} has no figure")
    notes = _Notes()
    if isinstance(spec.figure, str):
        if spec.figure not in FIGURES:
            raise ValueError(f"figure {spec.figure!r} unknown; known: {', '.join(FIGURES)}")
        fig, axes = _new_figure(1)
        FIGURES[spec.figure](df, spec, axes[0], notes)
    else:
        metrics, left_out = panels(df, spec.figure)
        fig, axes = _new_figure(len(metrics))
        lines(df, spec, axes, metrics, notes)
        for text in left_out:
            notes.add(text)
    for ax in axes:
        for label in (ax.xaxis.label, ax.yaxis.label):
            label.set_fontsize(FONT_PT)
    _legend(fig, axes, _title(fig, spec), notes)
    return fig


def render(df: pd.DataFrame, spec: ExperimentSpec, out_dir: str | Path = "paper_figures") -> list[Path]:
    """Draw the spec's figure from its rows; -> the PNG and PDF paths."""
    if not spec.figure:
        return []
    fig = draw(df, spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{spec.name}.png", out / f"{spec.name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=PNG_DPI)
    return paths


__all__ = [
    "COLUMN_IN", "FIGURES", "LABELS", "P99_SAME_AS_P50", "PAGE_IN", "STYLE", "UnlabelledColumn", "axis_label", "draw",
    "figure_columns", "is_size", "label_of", "panels", "render", "style_for",
]  # fmt: skip
