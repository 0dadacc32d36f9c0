"""The runner: one sweep loop for the library, the CLI and notebooks.

``run_experiment(spec)`` expands a spec into points, runs them on a local process pool
(parallel sweep points, never a split single run) with a progress bar, stamps every
row with the common schema columns, writes the rows as one Parquet part, and returns
them as a DataFrame. A failed point is reported with its config and error and does not
sink the rest of the sweep; :class:`SweepFailed` is raised at the end if any failed.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from kdlab.engines import profile_fingerprint
from kdlab.results import write_part
from kdlab.schema import SCHEMA_VERSION, code_version, git_commit
from kdlab.spec import ExperimentSpec, Point, expand, load_spec


@dataclass
class PointFailure:
    point: Point
    error: str

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


def run_point(point: Point, version: str) -> list[dict[str, Any]]:
    """Run one point and return its rows with the common columns."""
    from kdlab.workloads import get_workload

    t0 = time.perf_counter()
    rows = get_workload(point.workload).run_point(point)
    wall = time.perf_counter() - t0
    from kdlab import __version__

    common = {
        "experiment": point.experiment,
        "workload": point.workload,
        "engine": point.engine,
        "profile": point.profile,
        "profile_fingerprint": profile_fingerprint(point.profile) if point.engine == "sim" else "",
        "profile_overrides": json.dumps(dict(point.profile_overrides), sort_keys=True),
        "seed": point.seed,
        "kdlab_version": __version__,
        "git_commit": version.partition("@")[2],
        "point_key": point.key(version),
        "config_json": json.dumps(point.config(), sort_keys=True, default=str),
        "created_utc": pd.Timestamp.now(tz="UTC").isoformat(),
        "wall_s": wall,
        "schema_version": SCHEMA_VERSION,
    }
    return [{**common, "row": i, **row} for i, row in enumerate(rows)]


def _run_point_safe(point: Point, version: str) -> tuple[list[dict[str, Any]], str | None]:
    try:
        return run_point(point, version), None
    except Exception as err:  # reported with the point's config, never swallowed
        return [], f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=4)}"


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def run_points(
    points: list[Point], *, workers: int | None = None, progress: bool = True, desc: str = "sweep"
) -> tuple[list[dict[str, Any]], list[PointFailure]]:
    """Run points on a local process pool; rows come back in point order."""
    version = code_version()
    workers = default_workers() if workers is None else workers
    results: list[list[dict[str, Any]]] = [[] for _ in points]
    failures: list[PointFailure] = []
    bar = tqdm(total=len(points), desc=desc, unit="pt", disable=not progress, leave=True)
    try:
        if workers <= 1 or len(points) <= 1:
            for i, point in enumerate(points):
                rows, err = _run_point_safe(point, version)
                results[i] = rows
                if err:
                    failures.append(PointFailure(point, err))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(points))) as pool:
                futures = {pool.submit(_run_point_safe, p, version): i for i, p in enumerate(points)}
                for fut in as_completed(futures):
                    i = futures[fut]
                    rows, err = fut.result()
                    results[i] = rows
                    if err:
                        failures.append(PointFailure(points[i], err))
                    bar.update()
    finally:
        bar.close()
    failures.sort(key=lambda f: points.index(f.point))
    return [row for rows in results for row in rows], failures


def run_experiment(
    spec: ExperimentSpec | str | Path | dict[str, Any],
    *,
    engine: str | None = None,
    workers: int | None = None,
    results_dir: str | Path | None = "results",
    progress: bool = True,
) -> pd.DataFrame:
    """Run a spec's sweep; write one Parquet part to ``results_dir`` (unless None)."""
    if not isinstance(spec, ExperimentSpec):
        spec = load_spec(spec, engine=engine)
    elif engine is not None and engine != spec.engine:
        spec = spec.model_copy(update={"engine": engine})
    points = expand(spec)
    rows, failures = run_points(points, workers=workers, progress=progress, desc=spec.name)
    if results_dir is not None:
        write_part(rows, results_dir, spec.name)
    frame = pd.DataFrame(rows)
    if failures:
        raise SweepFailed(failures, frame)
    return frame


def run_many(specs: Iterable[ExperimentSpec], **kwargs: Any) -> dict[str, pd.DataFrame]:
    """Run several specs one after the other (each sweep is parallel inside)."""
    return {spec.name: run_experiment(spec, **kwargs) for spec in specs}


__all__ = ["SweepFailed", "git_commit", "run_experiment", "run_many", "run_point", "run_points"]
