"""DuckDB views over a results folder: one view per experiment, one row per point.

The views hold what :func:`kdlab.results.load_results` returns (the newest computation of
each point by the current code, or by any code with ``all_versions``), so SQL, figures and
notebooks see the same rows. View names need no quoting: ``kafka-produce`` is
``kafka_produce`` (the folder's own name works too, quoted).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from kdlab.results import experiment_folders, load_results


def view_name(experiment: str) -> str:
    """An SQL identifier for an experiment: '-' and '.' become '_'."""
    return re.sub(r"[^A-Za-z0-9_]", "_", experiment)


def connect(results_dir: str | Path = "results", *, all_versions: bool = False) -> tuple[Any, str]:
    """A DuckDB connection with a view per experiment; -> (connection, a line on what was left out)."""
    import duckdb

    con = duckdb.connect()
    other = superseded = 0
    for folder in experiment_folders(results_dir):
        got = load_results(results_dir, folder.name, all_versions=all_versions)
        other += got.other_versions
        superseded += got.superseded
        con.register(f"_rows_{view_name(folder.name)}", got.frame)
        con.execute(f'create view {view_name(folder.name)} as select * from "_rows_{view_name(folder.name)}"')
        if view_name(folder.name) != folder.name:
            con.execute(f'create view "{folder.name}" as select * from "_rows_{view_name(folder.name)}"')
    parts = []
    if other:
        parts.append(f"{other} row(s) of other code versions or profile values (--all-versions includes them)")
    if superseded:
        parts.append(f"{superseded} row(s) of older computations of the same points")
    return con, ("left out " + " and ".join(parts)) if parts else ""


__all__ = ["connect", "view_name"]
