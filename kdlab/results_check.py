"""``kdlab results check``: find what would make a reader fail or lie, and move it aside.

It looks at every experiment folder of a results directory for

* parts that cannot be read (a truncated or empty file),
* foreign files (Parquet that is not a kdlab part, or a part of another experiment),
* temporary files a killed run left behind.

``repair=True`` moves bad parts to ``<experiment>/_quarantine/`` (readers and pyarrow skip
folders starting with ``_``) and deletes the leftover temporary files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdlab.results import QUARANTINE, part_problem, result_folders, stale_temps


@dataclass(frozen=True)
class Finding:
    path: Path
    problem: str
    action: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}" + (f" -> {self.action}" if self.action else "")


def check_results(results_dir: str | Path = "results", *, repair: bool = False) -> list[Finding]:
    """Every bad or foreign part and leftover temp file; with ``repair``, each is moved aside or removed."""
    findings: list[Finding] = []
    for folder in result_folders(results_dir):
        for path in sorted(folder.glob("*.parquet")):
            problem = part_problem(path)
            if problem is None:
                continue
            action = ""
            if repair:
                target = folder / QUARANTINE / path.name
                target.parent.mkdir(exist_ok=True)
                path.replace(target)
                action = f"moved to {target}"
            findings.append(Finding(path, problem, action))
        for tmp in stale_temps(folder):
            action = ""
            if repair:
                tmp.unlink(missing_ok=True)
                action = "removed"
            findings.append(Finding(tmp, "temporary file of a run that was killed while writing", action))
    return findings


__all__ = ["Finding", "check_results"]
