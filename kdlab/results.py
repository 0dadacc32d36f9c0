"""Result files: Parquet parts under ``results/<experiment>/``, written atomically, read one row per point.

Each run of a sweep appends parts. A part is written to a temporary name in the same
directory (``.part-<pid>-*.tmp``) and renamed into place, so an interrupted or failed run
leaves no partial part; a temporary file whose writer died is removed by the next write.

Readers (:func:`read_results`, ``kdlab query``, figures, notebooks) return **one
computation per point**: rows computed by the current code (its fingerprint, see
:mod:`kdlab.provenance`) with the profile values the point's profile resolves to now, and
of those the newest computation of each point. Rows of other
code versions come back only with ``all_versions=True`` (then the newest per point config).
A part that cannot be read, or that belongs to no experiment of this folder, stops the read
with a :class:`ResultsError` naming it; ``kdlab results check --repair`` moves it aside.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from kdlab.spec import ExperimentSpec

#: Columns without which a Parquet file is not a kdlab result part.
REQUIRED_COLUMNS = ("experiment", "config_json", "created_utc")
#: Where ``kdlab results check --repair`` moves bad parts (pyarrow's dataset reader skips ``_`` folders).
QUARANTINE = "_quarantine"
_STALE_TMP_S = 24 * 3600


class ResultsError(RuntimeError):
    """A results folder or part cannot be used; the message names it and what to do."""


def write_part(rows: list[dict[str, Any]], results_dir: str | Path, experiment: str) -> Path | None:
    """Append ``rows`` as one new Parquet part of ``experiment``; -> its path."""
    if not rows:
        return None
    folder = Path(results_dir) / experiment
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(folder)
    frame = pd.DataFrame(rows)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    fd, tmp = tempfile.mkstemp(prefix=f".part-{os.getpid()}-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        final = folder / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(folder: Path) -> list[Path]:
    """Temporary part files in ``folder`` whose writer is gone (dead pid, no pid, or a day old)."""
    stale = []
    for tmp in folder.glob(".part-*.tmp"):
        pid = tmp.name.split("-")[1]
        old = time.time() - tmp.stat().st_mtime > _STALE_TMP_S
        if old or not pid.isdigit() or not _pid_alive(int(pid)):
            stale.append(tmp)
    return stale


def remove_stale_temps(folder: Path) -> int:
    """Remove what a killed run left half-written in ``folder``; -> how many files."""
    gone = 0
    for tmp in stale_temps(folder):
        tmp.unlink(missing_ok=True)
        gone += 1
    return gone


def _columns_problem(names: list[str]) -> str | None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    return f"foreign Parquet file: no column(s) {', '.join(missing)}" if missing else None


def _experiment_problem(path: Path, experiments: Any) -> str | None:
    if any(e != path.parent.name for e in experiments):
        return f"foreign part: its rows belong to experiment(s) {', '.join(map(str, experiments))}"
    return None


def _unreadable(err: Exception) -> str:
    return f"not readable as Parquet ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"


def part_problem(path: Path) -> str | None:
    """Why ``path`` is not a good result part of its folder's experiment, or None (reads two columns at most)."""
    if not (path.name.startswith("part-") and path.suffix == ".parquet"):
        return "not a result part (parts are named part-*.parquet)"
    try:
        import pyarrow.parquet as pq

        problem = _columns_problem(pq.read_schema(path).names)
        if problem:
            return problem
        experiments = pd.read_parquet(path, columns=["experiment"])["experiment"].unique()
    except Exception as err:  # truncated, empty or not Parquet at all
        return _unreadable(err)
    return _experiment_problem(path, experiments)


def _read_part(path: Path) -> pd.DataFrame:
    """A part's rows, read once; a part :func:`part_problem` would name raises :class:`ResultsError`."""
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # truncated, empty or not Parquet at all
        problem: str | None = _unreadable(err)
    else:
        problem = _columns_problem(list(frame.columns)) or _experiment_problem(path, frame["experiment"].unique())
    if problem:
        raise ResultsError(f"{path}: {problem}; `kdlab results check --repair` moves it aside")
    return frame


def _current_rows(frame: pd.DataFrame, fingerprint: str | None) -> pd.Series:
    """Rows computed by the current code with the profile values the point resolves to now."""
    from kdlab.provenance import code_fingerprint

    if "code_fingerprint" not in frame:
        return pd.Series(False, index=frame.index)
    current = frame["code_fingerprint"] == (fingerprint or code_fingerprint())
    if not {"engine", "profile", "profile_overrides", "profile_fingerprint"} <= set(frame.columns):
        return current
    sim = frame["engine"] == "sim"
    now = {(p, o): _profile_hash_now(p, o)
           for p, o in frame.loc[sim & current, ["profile", "profile_overrides"]].drop_duplicates().values}  # fmt: skip
    values_now = [
        now.get((p, o)) == f if s else True
        for p, o, f, s in zip(frame["profile"], frame["profile_overrides"], frame["profile_fingerprint"], sim,
                              strict=True)
    ]  # fmt: skip
    return current & pd.Series(values_now, index=frame.index)


def _profile_hash_now(profile: str, overrides: str) -> str | None:
    """The hash of a profile's values as its files say now; None if it can no longer be loaded."""
    import json

    from kdlab.provenance import profile_hash, profile_values
    from kdsim.profile import ProfileError

    try:
        return profile_hash(profile_values(profile, json.loads(overrides)))
    except (ProfileError, OSError, ValueError):
        return None


@dataclass
class ResultSet:
    """The rows a reader returns, and how many it left out and why."""

    frame: pd.DataFrame
    other_versions: int = 0
    superseded: int = 0


def result_folders(results_dir: str | Path) -> list[Path]:
    """The experiment folders of ``results_dir`` (not ``_quarantine`` and the like); an error if it is missing."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ResultsError(f"no results folder {str(root)!r} here; run from the project root or pass --results-dir")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def experiment_folders(results_dir: str | Path) -> list[Path]:
    """Folders of ``results_dir`` that hold result parts."""
    return [p for p in result_folders(results_dir) if any(p.glob("part-*.parquet"))]


def load_results(
    results_dir: str | Path = "results",
    experiment: str | None = None,
    *,
    all_versions: bool = False,
    fingerprint: str | None = None,
) -> ResultSet:
    """One computation per point of one experiment (or all), with the counts it left out."""
    root = Path(results_dir)
    folders = [root / experiment] if experiment else experiment_folders(root)
    parts = [f for folder in folders if folder.is_dir() for f in sorted(folder.glob("part-*.parquet"))]
    if not parts:
        return ResultSet(pd.DataFrame())
    frame = pd.concat([_read_part(p) for p in parts], ignore_index=True)
    other = 0
    if not all_versions:
        current = _current_rows(frame, fingerprint)
        other = int((~current).sum())
        frame = frame[current]
    run = frame["run_id"] if "run_id" in frame else pd.Series(index=frame.index, dtype=object)
    frame = frame.assign(_run=run.fillna(frame["created_utc"]).astype(str))
    frame = frame.sort_values(["created_utc", "_run"], kind="stable")
    newest = frame.groupby("config_json", sort=False)["_run"].transform("last")
    keep = frame["_run"] == newest
    out = frame[keep].drop(columns="_run").reset_index(drop=True)
    return ResultSet(out, other_versions=other, superseded=int((~keep).sum()))


def rows_of_spec(frame: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    """The rows of the points ``spec`` has now: an edited spec's old points stay in its folder, not in its figure."""
    from kdlab.spec import expand

    if not len(frame) or "config_json" not in frame:
        return frame
    wanted = {json.dumps(pt.config(), sort_keys=True, default=str) for pt in expand(spec)}
    return frame[frame["config_json"].isin(wanted)].reset_index(drop=True)


def read_results(
    results_dir: str | Path = "results", experiment: str | None = None, *, all_versions: bool = False
) -> pd.DataFrame:
    """The rows of one experiment (or all): per point, the newest computation by the current code.

    ``all_versions=True`` also returns points computed by other code versions (the newest
    computation per point config), e.g. measured runs kept as data.
    """
    return load_results(results_dir, experiment, all_versions=all_versions).frame
