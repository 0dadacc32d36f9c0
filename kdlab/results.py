"""Result files: Parquet parts under ``results/<experiment>/``, written atomically.

Each run of a sweep appends one part file. A part is written to a temporary name in
the same directory and renamed into place, so an interrupted or failed run leaves
no partial file. Readers see the union of the parts (the newest rows per point config),
so ``pandas.read_parquet("results/<experiment>")`` and DuckDB's
``read_parquet('results/*/*.parquet')`` both work directly.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd


def write_part(rows: list[dict[str, Any]], results_dir: str | Path, experiment: str) -> Path | None:
    """Append ``rows`` as one new Parquet part of ``experiment``; -> its path."""
    if not rows:
        return None
    folder = Path(results_dir) / experiment
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        final = folder / f"part-{stamp}-{uuid.uuid4().hex[:12]}.parquet"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def read_results(results_dir: str | Path = "results", experiment: str | None = None) -> pd.DataFrame:
    """All rows of one experiment (or all): per point config, the newest computation's rows."""
    root = Path(results_dir)
    folders = [root / experiment] if experiment else sorted(p for p in root.iterdir() if p.is_dir())
    parts = [f for folder in folders if folder.is_dir() for f in sorted(folder.glob("part-*.parquet"))]
    if not parts:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    frame = frame.sort_values("created_utc", kind="stable")
    key = ["config_json", "row"] if "row" in frame.columns else ["config_json"]
    return frame.drop_duplicates(key, keep="last").reset_index(drop=True)
