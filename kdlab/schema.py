"""The result schema shared by both engines.

Every row carries the common columns below, then the workload's parameter and
metric columns. The schema is versioned; a change adds a line to the history.

History:
    1 (2026-11): first version: experiment, workload, engine, profile and its fingerprint,
       overrides, seed, code version and commit, point key, config, timing.
    2 (2026-11): the point key hashes the resolved profile values and the code fingerprint
       (content of the source files) instead of the profile's name and the git commit; new
       columns code_fingerprint, profile_values, run_id. Rows of version 1 belong to no
       current code fingerprint: readers return them only when asked for all versions.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

SCHEMA_VERSION = 2

#: Common columns, in order, with their meaning.
COMMON_COLUMNS: dict[str, str] = {
    "experiment": "spec name",
    "workload": "workload kind (perftest, ...)",
    "engine": "sim or real",
    "profile": "hardware profile name (sim) or device (real)",
    "profile_fingerprint": "hash of every profile value used (after base: and overrides)",
    "profile_values": "JSON of every profile value used (sim; {} on real hardware)",
    "profile_overrides": "JSON of profile parameters the sweep changed",
    "seed": "random seed of the run",
    "kdlab_version": "package version",
    "git_commit": "commit of the code that ran, for people ('unknown' outside a checkout); not part of the key",
    "code_fingerprint": "hash of the content of every kdlab/kdsim/kdreal source file that ran",
    "point_key": "hash of the resolved config and the code fingerprint: the cache key",
    "config_json": "the full point config as JSON",
    "run_id": "one id per computation of a point (its rows share it)",
    "created_utc": "when the row was computed",
    "wall_s": "wall-clock seconds the point took",
    "schema_version": "this schema's version",
}


@functools.cache
def git_commit() -> str:
    """The checkout's commit, with ``+dirty`` if tracked files changed: for people, not a cache key."""
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
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
