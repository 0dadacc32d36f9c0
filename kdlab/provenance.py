"""What a result depends on: the code that computed it and the fully resolved configuration.

A sweep point's cache key is a hash of

* its resolved configuration: workload parameters, engine, seed, switch, and, for the
  simulator, every profile value after ``base:`` resolution and overrides (so editing one
  number of a profile file, or adding a new profile file, changes the key); and
* the *code fingerprint*: a hash of the content of every Python source file of the
  packages that compute results (``kdlab``, ``kdsim``, ``kdreal``), tracked by git or not.

Documentation, notebooks, tests, benchmarks and profile comments do not enter the key, so
editing them recomputes nothing; no git state is consulted.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdlab.spec import Point

#: The packages whose source computes results.
CODE_PACKAGES = ("kdlab", "kdsim", "kdreal")
_ROOT = Path(__file__).resolve().parent.parent


def source_files(root: Path = _ROOT) -> list[Path]:
    """The Python source files of the result-computing packages under ``root``, sorted."""
    files: list[Path] = []
    for package in CODE_PACKAGES:
        files.extend(p for p in (root / package).rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(files)


def fingerprint_of(root: Path) -> str:
    """A short hash of the source files under ``root`` (relative path and bytes of each)."""
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """The fingerprint of this installation's kdlab, kdsim and kdreal sources, tracked by git or not.

    Computed once per process, as the code a process runs is the code it imported: after
    editing the source, restart the notebook kernel (as for the edit to take effect).
    """
    return fingerprint_of(_ROOT)


def profile_values(profile: str, overrides: dict[str, float]) -> dict[str, float]:
    """Every value of simulator profile ``profile`` (a name or a file) after ``base:`` and ``overrides``."""
    from kdsim.profile import load_profile

    return load_profile(profile).with_overrides(overrides).as_dict()


def resolved_profile(point: Point) -> dict[str, float]:
    """Every profile value the point runs with (sim), after ``base:`` and overrides; {} on real hardware."""
    return profile_values(point.profile, dict(point.profile_overrides)) if point.engine == "sim" else {}


def profile_hash(values: dict[str, float]) -> str:
    """A short hash of resolved profile values ('' for none)."""
    if not values:
        return ""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


def point_key(point: Point, fingerprint: str, profile_values: dict[str, float] | None = None) -> str:
    """The cache key: a hash of the resolved configuration and the code fingerprint."""
    config = point.config()
    config["profile_values"] = resolved_profile(point) if profile_values is None else profile_values
    blob = json.dumps({**config, "code": fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


__all__ = [
    "CODE_PACKAGES",
    "code_fingerprint",
    "fingerprint_of",
    "point_key",
    "profile_hash",
    "profile_values",
    "resolved_profile",
    "source_files",
]
