"""Every experiment's figure, drawn as a paper prints it (issue 11 item 4).

Each spec under experiments/ that has a figure is drawn from a synthetic frame: the spec's own
sweep points (``expand``, so every variant, x value and seed is there) with made-up metric values
(p99 above p50, runs of different seeds a few percent apart). The testbed's measured runs, which
ship in results/, are drawn too. Then, on each drawn figure: no text outside the figure, no title,
axis label, legend or panel overlapping another, axis labels in words (no column names), integer
ticks on integer axes, one point per x on every line (repeated runs as median and band), and across
all figures one colour and marker per series label.
"""

from __future__ import annotations

import itertools
import re
import zlib
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from kdlab import figures
from kdlab.figures import LABELS, STYLE, UnlabelledColumn, draw, figure_columns, label_of, render
from kdlab.spec import ExperimentSpec, FigureSpec, expand

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p for p in (ROOT / "experiments").rglob("*.yaml") if "figure" in p.read_text())
RESULTS = ROOT / "results"
#: Text boxes may touch: overlaps smaller than this many pixels are not counted.
SLACK_PX = 1.0


def _spec(path: Path) -> ExperimentSpec:
    """The spec as the figures see it (its workload's own checks are other tests' business)."""
    return ExperimentSpec.model_validate(yaml.safe_load(path.read_text()))


def _figure_specs() -> list[ExperimentSpec]:
    return [s for s in map(_spec, SPECS) if s.figure]


def synthetic_frame(spec: ExperimentSpec) -> pd.DataFrame:
    """The spec's points with made-up, positive metric values: every figure column, p99 = 1.6 p50."""
    x, ys = figure_columns(spec)
    rows = []
    for point in expand(spec):
        row = {**point.params_dict, "profile": point.profile, "seed": point.seed, "engine": point.engine}
        series = zlib.crc32(repr((row.get("variant"), row.get("profile"), row.get("test"))).encode()) % 5 + 1
        xv = float(row.get(x, 1) or 1)
        base = 10.0 * series * (1 + np.log2(max(xv, 1.0)) / 4) * (1 + 0.04 * (point.seed - 1))
        for y in ys:
            twin = figures._twin_p50(y)
            if twin is not None:
                row[y] = 1.6 * base
            elif y == "t_min_us":
                row[y] = 0.9 * base
            else:
                row[y] = base
        rows.append(row)
    return pd.DataFrame(rows)


def _measured(spec: ExperimentSpec) -> pd.DataFrame | None:
    from kdlab.results import load_results, rows_of_spec

    if not (RESULTS / spec.name).is_dir():
        return None
    frame = rows_of_spec(load_results(RESULTS, spec.name, all_versions=True).frame, spec)
    return frame if len(frame) else None


@pytest.fixture(scope="module")
def drawn() -> dict[str, tuple[ExperimentSpec, Figure]]:
    """Every figure, drawn once: '<spec>' from the synthetic frame, '<spec> measured' from results/."""
    out: dict[str, tuple[ExperimentSpec, Figure]] = {}
    for spec in _figure_specs():
        out[spec.name] = (spec, draw(synthetic_frame(spec), spec))
        measured = _measured(spec)
        if measured is not None:
            out[f"{spec.name} measured"] = (spec, draw(measured, spec))
    for _, fig in out.values():
        fig.draw_without_rendering()
    yield out
    for _, fig in out.values():
        plt.close(fig)


def test_there_are_figures_to_check() -> None:
    names = {s.name for s in _figure_specs()}
    assert {"kafka-produce", "kafka-produce-latency", "kafka-consume", "kafka-consume-latency"} <= names


def test_every_figure_column_has_a_label_in_words() -> None:
    missing = []
    for spec in _figure_specs():
        x, ys = figure_columns(spec)
        for column in [x, *ys]:
            try:
                label_of(column, strict=True)
            except UnlabelledColumn:
                missing.append(f"{spec.name}: {column}")
    assert not missing, "figure columns without an axis label in kdlab.figures.LABELS: " + ", ".join(missing)
    for column, (words, unit) in LABELS.items():
        assert "_" not in words and words[0].isupper(), (column, words)
        assert "_" not in unit, (column, unit)


def test_an_unlabelled_column_is_a_clear_error() -> None:
    with pytest.raises(UnlabelledColumn, match=r"no axis label for column 'frobs_per_s'.*LABELS"):
        label_of("frobs_per_s", strict=True)


def test_every_variant_of_every_figure_has_its_own_style() -> None:
    missing = set()
    for spec in _figure_specs():
        for axis in spec.sweep.values():
            if isinstance(axis, list):
                missing |= {v["variant"] for v in axis if isinstance(v, dict) and "variant" in v} - set(STYLE)
        if "variant" in spec.params:
            missing |= {spec.params["variant"]} - set(STYLE)
    assert not missing, f"variants without a style in kdlab.figures.STYLE: {sorted(missing)}"
    styles = [(s.color.lower(), s.marker, s.linestyle) for s in STYLE.values()]
    systems = ["Kafka", "OSU RDMA Kafka", "KafkaDirect exclusive", "KafkaDirect shared", "KafkaDirect slots",
               "KafkaDirect no slots"]  # fmt: skip
    assert len({STYLE[s].color for s in systems}) == len(systems), "each system its own colour"
    assert len(set(styles)) >= len(systems)


def _texts(fig: Figure) -> list:
    """Titles, axis labels, legend entries and titles, annotations."""
    out = [fig._suptitle] if fig._suptitle else []
    out += list(fig.texts)
    for legend in fig.legends:
        out += [*legend.texts, legend.get_title()]
    for ax in fig.axes:
        out += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend():
            out += [*ax.get_legend().texts, ax.get_legend().get_title()]
    unique = {id(t): t for t in out if t is not None}.values()  # the title is one of fig.texts too
    return [t for t in unique if t.get_visible() and t.get_text().strip()]


def _inside(inner: Bbox, outer: Bbox) -> bool:
    return (inner.x0 >= outer.x0 - SLACK_PX and inner.y0 >= outer.y0 - SLACK_PX and inner.x1 <= outer.x1 + SLACK_PX
            and inner.y1 <= outer.y1 + SLACK_PX)  # fmt: skip


def _overlap(a: Bbox, b: Bbox) -> bool:
    return min(a.x1, b.x1) - max(a.x0, b.x0) > SLACK_PX and min(a.y1, b.y1) - max(a.y0, b.y0) > SLACK_PX


def _cases() -> list[str]:
    names = []
    for spec in _figure_specs():
        names.append(spec.name)
        if (RESULTS / spec.name).is_dir():
            names.append(f"{spec.name} measured")
    return names


def layout_problems(fig: Figure) -> list[str]:
    """What a reader would see as broken: text outside the figure, texts or blocks overlapping, column names."""
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    out = []
    texts = _texts(fig)
    for text in texts:
        if not _inside(text.get_window_extent(renderer), page):
            out.append(f"{text.get_text()!r} outside the figure")
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            box = axis.get_tightbbox(renderer)
            if box is not None and not _inside(box, page):
                out.append(f"{axis.axis_name} tick labels outside the figure")
        for text in ax.texts:
            if not _inside(text.get_window_extent(renderer), ax.bbox):
                out.append(f"{text.get_text()!r} outside its panel")
        for label in (ax.get_xlabel(), ax.get_ylabel()):
            if not label or re.search(r"\w_\w", label):
                out.append(f"axis label {label!r} is empty or a column name")
    for a, b in itertools.combinations(texts, 2):
        if _overlap(a.get_window_extent(renderer), b.get_window_extent(renderer)):
            out.append(f"{a.get_text()!r} overlaps {b.get_text()!r}")
    blocks = [("title", fig._suptitle.get_window_extent(renderer))] if fig._suptitle else []
    blocks += [(f"legend {i}", legend.get_window_extent(renderer)) for i, legend in enumerate(fig.legends)]
    blocks += [(f"panel {i}", ax.get_tightbbox(renderer)) for i, ax in enumerate(fig.axes)]
    for (na, a), (nb, b) in itertools.combinations(blocks, 2):
        if _overlap(a, b):
            out.append(f"{na} overlaps {nb}")
    return out


def test_the_layout_check_sees_clipped_and_overlapping_text() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(3.4, 2.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([1, 2], [1, 2], label="Kafka")
    ax.set_xlabel("record_bytes")
    ax.text(4.0, 0.5, "beyond the right edge", transform=ax.transAxes, in_layout=False)
    fig.suptitle("A title")
    fig.legend(loc="outside upper center")  # constrained layout puts it on the title
    fig.draw_without_rendering()
    problems = "\n".join(layout_problems(fig))
    assert "'beyond the right edge' outside the figure" in problems
    assert "axis label 'record_bytes'" in problems
    assert "title overlaps legend 0" in problems


@pytest.mark.parametrize("case", _cases())
def test_figure_prints(case: str, drawn: dict[str, tuple[ExperimentSpec, Figure]]) -> None:
    if case not in drawn:
        pytest.skip("no measured rows")
    spec, fig = drawn[case]
    # a paper's sizes (a column or the text width); nothing clipped, nothing overlapping, labels in words
    assert fig.get_figwidth() in (figures.COLUMN_IN, figures.PAGE_IN)
    assert layout_problems(fig) == []

    # integer ticks on an integer axis that is not a size
    x, _ = figure_columns(spec)
    frame = synthetic_frame(spec) if not case.endswith("measured") else _measured(spec)
    if not figures.is_size(x) and figures._integer_valued(frame[x]):
        for ax in fig.axes:
            lo, hi = sorted(ax.get_xlim())
            ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
            assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), (x, ticks)

    # one point per x on every line: repeated runs are a median with a band, not a zig-zag through the seeds
    by = list(getattr(spec.figure, "by", None) or [])
    keys = dict.fromkeys(c for c in ("variant", "profile", "test", *by, x) if c in frame.columns)
    runs = frame.groupby(list(keys)).size().max()
    for ax in fig.axes:
        for line in ax.get_lines():
            xs = np.asarray(line.get_xdata(), dtype=float)
            if str(line.get_label()).startswith("_") or len(xs) < 2:
                continue
            assert np.all(np.diff(xs) > 0), f"{line.get_label()}: x not increasing {xs}"
        if runs > 1:
            assert any(isinstance(c, PolyCollection) for c in ax.collections), "repeated runs without a band"
    if runs > 1:
        assert any(f"median of {runs} runs" in (lg.get_title().get_text() or "") for lg in fig.legends)


def test_each_series_label_has_one_colour_and_marker_in_all_figures(drawn) -> None:
    seen: dict[str, set[tuple[str, str]]] = {}
    for _, fig in drawn.values():
        for ax in fig.axes:
            for line in ax.get_lines():
                label = str(line.get_label())
                if label.startswith("_"):
                    continue
                colour = to_hex(line.get_color())
                seen.setdefault(label, set()).add((colour, str(line.get_marker())))
    assert "Kafka" in seen and "KafkaDirect exclusive" in seen
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twice, f"series drawn in more than one colour or marker: {twice}"


def _latency_spec(y: list[str], seeds: list[int] | None = None) -> ExperimentSpec:
    return ExperimentSpec(
        name="t-latency",
        description="Producer latency at low load",
        workload="kafka",
        seeds=seeds or [1],
        sweep={
            "variant": [
                {"variant": "Kafka", "system": "kafka"},
                {"variant": "KafkaDirect exclusive", "system": "kafkadirect"},
            ],
            "record_bytes": [16, 256, 4096],
        },
        figure=FigureSpec(x="record_bytes", y=y, by=["variant"]),
    )


def _legend_title(fig: Figure) -> str:
    return "\n".join(lg.get_title().get_text() for lg in fig.legends)


@pytest.mark.parametrize("ratio, panels", [(1.01, 1), (1.049, 1), (1.051, 2), (1.5, 2)])
def test_p99_panel_only_where_it_differs_from_p50(ratio: float, panels: int) -> None:
    spec = _latency_spec(["ack_latency_p50_us", "ack_latency_p99_us"])
    df = synthetic_frame(spec)
    df["ack_latency_p99_us"] = df["ack_latency_p50_us"] * ratio
    fig = draw(df, spec)
    try:
        assert len(fig.axes) == panels
        assert fig.axes[0].get_ylabel() == "Produce latency, median (µs)"
        note = f"Produce latency, p99: within {figures.P99_SAME_AS_P50:.0%} of the median everywhere, not drawn"
        assert (note in " ".join(_legend_title(fig).split())) == (panels == 1)
        assert fig.get_figwidth() == (figures.COLUMN_IN if panels == 1 else figures.PAGE_IN)
        fig.draw_without_rendering()
        assert layout_problems(fig) == []  # the note is wrapped to the figure's width, not clipped
    finally:
        plt.close(fig)


def test_repeated_runs_are_the_median_with_a_min_max_band() -> None:
    spec = _latency_spec(["ack_latency_p50_us"], seeds=[1, 2, 3])
    df = synthetic_frame(spec)
    df["ack_latency_p50_us"] = df["record_bytes"] / 16 * df["seed"].map({1: 1.0, 2: 3.0, 3: 2.0})  # median: seed 3
    fig = draw(df, spec)
    try:
        ax = fig.axes[0]
        kafka = next(line for line in ax.get_lines() if line.get_label() == "Kafka")
        assert list(kafka.get_xdata()) == [16, 256, 4096]
        assert list(kafka.get_ydata()) == [2.0, 32.0, 512.0]
        band = next(c for c in ax.collections if isinstance(c, PolyCollection))
        ys = band.get_paths()[0].vertices[:, 1]
        assert ys.min() == pytest.approx(1.0) and ys.max() == pytest.approx(3 * 256)
        assert "Lines: median of 3 runs; bands: smallest to largest run" in _legend_title(fig)
    finally:
        plt.close(fig)


def test_units_step_up_with_the_values() -> None:
    assert figures.axis_label("ack_latency_p50_us", [8.0, 140.0]) == ("Produce latency, median (µs)", 1.0)
    assert figures.axis_label("ack_latency_p50_us", [15_000.0, 80_000.0]) == ("Produce latency, median (ms)", 1e-3)
    assert figures.axis_label("produce_records_per_s", [2.4e8]) == ("Producer throughput (M records/s)", 1e-6)
    assert figures.axis_label("record_bytes", [16, 65536]) == ("Record size", 1.0)
    assert figures.axis_label("replication_factor") == ("Replication factor", 1.0)


def test_render_writes_a_png_and_pdf_a_column_wide(tmp_path: Path) -> None:
    spec = _latency_spec(["ack_latency_p50_us"])
    paths = render(synthetic_frame(spec), spec, tmp_path)
    assert [p.name for p in paths] == ["t-latency.png", "t-latency.pdf"]
    _, width = plt.imread(paths[0]).shape[:2]
    assert width == round(figures.COLUMN_IN * figures.PNG_DPI)


def test_a_spec_may_name_its_axes_in_its_own_words() -> None:
    spec = _latency_spec(["latency_p50_us"])
    spec.figure.labels["latency_p50_us"] = "ProducerLatency, median"
    df = synthetic_frame(spec)
    fig = draw(df, spec)
    assert fig.axes[0].get_ylabel() == "ProducerLatency, median (µs)"


def test_log_y_on_the_panels_named() -> None:
    spec = _latency_spec(["ack_latency_p50_us", "produce_mb_per_s"])
    spec.figure.logy = ["ack_latency_p50_us"]
    fig = draw(synthetic_frame(spec), spec)
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "linear"]


def test_rows_that_differ_in_more_than_the_seed_are_not_silently_merged() -> None:
    spec = _latency_spec(["ack_latency_p50_us"])
    df = synthetic_frame(spec)
    twice = pd.concat([df, df.assign(acks=-1)])  # a second configuration at every x, same seed
    with pytest.warns(UserWarning, match="differ in more than their seed"):
        draw(twice, spec)


def test_size_ticks_read_as_sizes() -> None:
    labels = [figures._bytes_label(v) for v in (16, 1000, 1024, 8000, 65536, 1 << 20)]
    assert labels == ["16 B", "1000 B", "1 KiB", "8000 B", "64 KiB", "1 MiB"]
