"""The runner: one sweep loop for the library, the CLI and notebooks.

``run_experiment(spec)`` expands a spec into points, skips the points whose results are
already in ``results/`` (each point is keyed by a hash of its resolved config, every profile
value included, and the code fingerprint: see :mod:`kdlab.provenance`), runs the rest in
parallel (a local process pool, or a Dask cluster: pass ``executor="dask://HOST:PORT"`` or a
``distributed.Client``) with a progress bar,
stamps every row with the common schema columns, writes them as Parquet parts as it
goes (so a killed sweep resumes where it stopped), and returns all rows as a
DataFrame. A failed point is reported with its config and error and does not sink the
rest; :class:`SweepFailed` is raised at the end if any failed. An interrupt (Ctrl-C) writes
the points already finished before it propagates. A sweep of more than ``max_points`` points
to compute (default 10,000) is refused with its size and an estimate of its run time, unless
the caller says yes (``max_points=None``, ``kdlab run --yes``).
"""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from kdlab.provenance import code_fingerprint, point_key, profile_hash, resolved_profile
from kdlab.results import load_results, remove_stale_temps, write_part
from kdlab.schema import SCHEMA_VERSION, git_commit
from kdlab.spec import ExperimentSpec, Point, SpecError, expand, load_spec

#: Above this many points to compute, a sweep runs only when the caller says yes.
CONFIRM_POINTS = 10_000


class SweepTooLarge(SpecError):
    """A sweep has more points to compute than the caller allowed without confirmation."""


@dataclass
class PointFailure:
    """A point that raised: its error in one line, and the traceback for ``--debug``."""

    point: Point
    error: str
    trace: str = ""

    def __str__(self) -> str:
        return f"{self.point.experiment} {json.dumps(self.point.config(), default=str)}: {self.error}"


class SweepFailed(RuntimeError):
    """Some points of a sweep failed; the others' rows were written."""

    def __init__(self, failures: list[PointFailure], frame: pd.DataFrame) -> None:
        self.failures = failures
        self.frame = frame
        lines = "\n".join(f"  - {f}" for f in failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        super().__init__(f"{len(failures)} sweep point(s) failed:\n{lines}{more}")


def run_point(point: Point, fingerprint: str) -> list[dict[str, Any]]:
    """Run one point and return its rows with the common columns."""
    from kdlab import __version__
    from kdlab.workloads import get_workload

    values = resolved_profile(point)  # resolved before the run: the numbers this run uses
    t0 = time.perf_counter()
    rows = get_workload(point.workload).run_point(point)
    wall = time.perf_counter() - t0
    common = {
        "experiment": point.experiment,
        "workload": point.workload,
        "engine": point.engine,
        "profile": point.profile,
        "profile_fingerprint": profile_hash(values),
        "profile_values": json.dumps(values, sort_keys=True),
        "profile_overrides": json.dumps(dict(point.profile_overrides), sort_keys=True),
        "seed": point.seed,
        "kdlab_version": __version__,
        "git_commit": git_commit(),
        "code_fingerprint": fingerprint,
        "point_key": point_key(point, fingerprint, values),
        "config_json": json.dumps(point.config(), sort_keys=True, default=str),
        "run_id": uuid.uuid4().hex[:16],
        "created_utc": pd.Timestamp.now(tz="UTC").isoformat(),
        "wall_s": wall,
        "schema_version": SCHEMA_VERSION,
    }
    return [{**common, "row": i, **row} for i, row in enumerate(rows)]


def _run_point_safe(point: Point, version: str) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return run_point(point, version), None
    except Exception as err:  # reported with the point's config, never swallowed
        first = " ".join(str(err).split())
        return [], f"{type(err).__name__}: {first}\n{traceback.format_exc(limit=4)}"


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_points(
    points: list[Point],
    *,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "sweep",
    executor: Any = None,
    on_rows: Any = None,
) -> tuple[list[dict[str, Any]], list[PointFailure]]:
    """Run points in parallel; rows come back in point order.

    ``executor``: None or ``"local"`` for a process pool of ``workers`` (default: one
    per core, but one in all for measured points, engine ``real``); a
    ``distributed.Client`` or ``"dask://HOST:PORT"`` for a Dask cluster. ``on_rows(rows)``
    is called with each finished point's rows (the runner writes them as it goes).
    """
    version = code_fingerprint()
    # Measured points (engine real) run one at a time: parallel runs would share CPUs and the device.
    measured = workers is None and any(p.engine == "real" for p in points)
    results: list[list[dict[str, Any]]] = [[] for _ in points]
    failures: list[PointFailure] = []
    bar = tqdm(total=len(points), desc=desc, unit="pt", disable=not progress, leave=True)

    def done(i: int, rows: list[dict[str, Any]], err: str | None) -> None:
        results[i] = rows
        if err:
            line, _, trace = err.partition("\n")
            failures.append(PointFailure(points[i], line, trace))
        elif on_rows is not None:
            on_rows(rows)
        bar.update()

    try:
        if executor is not None and executor != "local":
            _run_on_dask(points, version, executor, done)
        elif (default_workers() if workers is None else workers) <= 1 or len(points) <= 1 or measured:
            for i, point in enumerate(points):
                done(i, *_run_point_safe(point, version))
        else:
            n = default_workers() if workers is None else workers
            pool = ProcessPoolExecutor(max_workers=min(n, len(points)))
            try:
                futures = {pool.submit(_run_point_safe, p, version): i for i, p in enumerate(points)}
                for fut in as_completed(futures):
                    done(futures[fut], *fut.result())
            finally:  # on an interrupt: drop the points not started instead of running them all
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
    failures.sort(key=lambda f: points.index(f.point))
    return [row for rows in results for row in rows], failures


def _run_on_dask(points: list[Point], version: str, executor: Any, done: Any) -> None:
    from distributed import Client
    from distributed import as_completed as dask_completed

    own = isinstance(executor, str)
    client = Client(executor.removeprefix("dask://")) if own else executor
    try:
        futures = client.map(_run_point_safe, points, version=version, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in dask_completed(futures):
            done(index[fut.key], *fut.result())
    finally:
        if own:
            client.close()


def run_experiment(
    spec: ExperimentSpec | str | Path | dict[str, Any],
    *,
    engine: str | None = None,
    workers: int | None = None,
    results_dir: str | Path | None = "results",
    progress: bool = True,
    executor: Any = None,
    recompute: bool = False,
    log: Any = None,
    max_points: int | None = CONFIRM_POINTS,
) -> pd.DataFrame:
    """Run a spec's sweep, computing only the points not already in ``results_dir``.

    ``max_points``: refuse (:class:`SweepTooLarge`) to compute more points than this; None
    computes any number.
    """
    if not isinstance(spec, ExperimentSpec):
        spec = load_spec(spec, engine=engine)
    elif engine is not None and engine != spec.engine:
        spec = spec.model_copy(update={"engine": engine})
    points = expand(spec)
    if any(p.engine == "real" and p.cluster is None for p in points):
        from kdlab.engines import require_engine

        require_engine("real")  # once, before the first point, instead of once per point (here: no cluster)
    fingerprint = code_fingerprint()
    profiles: dict[tuple[str, str, tuple[tuple[str, float], ...]], dict[str, float]] = {}
    for p in points:  # each distinct profile resolved once, not once per point
        profiles.setdefault((p.engine, p.profile, p.profile_overrides), resolved_profile(p))
    keys = [point_key(p, fingerprint, profiles[(p.engine, p.profile, p.profile_overrides)]) for p in points]
    cached: dict[str, list[dict[str, Any]]] = {}
    folder = Path(results_dir) / spec.name if results_dir is not None else None
    if folder is not None and folder.is_dir():
        remove_stale_temps(folder)
        if not recompute:
            old = load_results(results_dir, spec.name, fingerprint=fingerprint).frame  # type: ignore[arg-type]
            if len(old):
                for row in old[old["point_key"].isin(set(keys))].to_dict("records"):
                    cached.setdefault(row["point_key"], []).append(row)
    todo = [p for p, k in zip(points, keys, strict=True) if k not in cached]
    if max_points is not None and len(todo) > max_points:
        raise SweepTooLarge(f"{spec.name}: {len(todo):,} points to compute (more than {max_points:,}); "
                            f"{_estimate(results_dir, spec.name, len(todo), workers)}; "
                            "pass --yes (kdlab run) or max_points=None to run it")  # fmt: skip
    say = log if log is not None else (lambda msg: tqdm.write(msg) if progress else None)
    if cached:
        say(f"{spec.name}: {len(points) - len(todo)} of {len(points)} points already computed; computing {len(todo)}")
    writer = _PartWriter(results_dir, spec.name) if results_dir is not None else None
    try:
        rows, failures = run_points(todo, workers=workers, progress=progress and bool(todo), desc=spec.name,
                                    executor=executor, on_rows=writer.add if writer else None)  # fmt: skip
    finally:  # an interrupt still writes the points that finished
        if writer is not None:
            writer.flush()
    new: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        new.setdefault(row["point_key"], []).append(row)
    ordered = [r for k in keys for r in (cached.get(k) or new.get(k, []))]
    frame = pd.DataFrame(ordered)
    if failures:
        raise SweepFailed(failures, frame)
    return frame


def _estimate(results_dir: str | Path | None, experiment: str, n: int, workers: int | None) -> str:
    """A run-time estimate from earlier computations of this experiment, if any."""
    if results_dir is None or not (Path(results_dir) / experiment).is_dir():
        return "no earlier run of this experiment to estimate its time from"
    old = load_results(results_dir, experiment, all_versions=True).frame
    if "wall_s" not in old or not len(old):
        return "no earlier run of this experiment to estimate its time from"
    per_point = float(old.drop_duplicates("config_json")["wall_s"].median())
    n_workers = workers or default_workers()
    hours = per_point * n / n_workers / 3600
    return f"about {hours:.3g} h at {per_point:.3g} s a point (earlier runs) on {n_workers} worker(s)"


class _PartWriter:
    """Writes finished points' rows as Parquet parts every few seconds, so an interrupted sweep resumes."""

    def __init__(self, results_dir: str | Path, experiment: str, every_s: float = 5.0) -> None:
        self.results_dir, self.experiment, self.every_s = results_dir, experiment, every_s
        self.pending: list[dict[str, Any]] = []
        self.last = time.monotonic()

    def add(self, rows: list[dict[str, Any]]) -> None:
        self.pending.extend(rows)
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            write_part(self.pending, self.results_dir, self.experiment)
        self.pending = []
        self.last = time.monotonic()


def run_many(specs: Iterable[ExperimentSpec], **kwargs: Any) -> dict[str, pd.DataFrame]:
    """Run several specs one after the other (each sweep is parallel inside)."""
    return {spec.name: run_experiment(spec, **kwargs) for spec in specs}


__all__ = [
    "CONFIRM_POINTS", "SweepFailed", "SweepTooLarge", "git_commit", "run_experiment", "run_many", "run_point",
    "run_points",
]  # fmt: skip
