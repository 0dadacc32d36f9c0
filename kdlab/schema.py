"""The result schema shared by both engines.

Every row carries the common columns below, then the workload's parameter and
metric columns. The schema is versioned; a change adds a line to the history.

History:
    1 (2026-11): first version: experiment, workload, engine, profile and its fingerprint,
       overrides, seed, code version and commit, point key, config, timing.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

SCHEMA_VERSION = 1

#: Common columns, in order, with their meaning.
COMMON_COLUMNS: dict[str, str] = {
    "experiment": "spec name",
    "workload": "workload kind (perftest, ...)",
    "engine": "sim or real",
    "profile": "hardware profile name (sim) or device (real)",
    "profile_fingerprint": "hash of every profile value used",
    "profile_overrides": "JSON of profile parameters the sweep changed",
    "seed": "random seed of the run",
    "kdlab_version": "package version",
    "git_commit": "commit of the code that ran ('unknown' outside a checkout)",
    "point_key": "hash of the full config and code version: the cache key",
    "config_json": "the full point config as JSON",
    "created_utc": "when the row was computed",
    "wall_s": "wall-clock seconds the point took",
    "schema_version": "this schema's version",
}


@functools.cache
def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        )  # fmt: skip
        diff = subprocess.run(
            ["git", "-C", str(root), "diff", "HEAD", "--", "kdlab", "kdsim", "kdreal"],
            capture_output=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not dirty.stdout.strip():
        return out.stdout.strip()
    # uncommitted changes: the hash of the code diff keeps cached results apart per working tree
    import hashlib

    return f"{out.stdout.strip()}+dirty-{hashlib.sha256(diff.stdout).hexdigest()[:8]}"


def code_version() -> str:
    from kdlab import __version__

    return f"{__version__}@{git_commit()}"
