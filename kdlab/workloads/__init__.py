"""Workloads: what a spec's ``workload:`` field can name.

A workload validates its own parameters and turns one sweep point into result
rows by running its datapath's roles on an engine.
"""

from __future__ import annotations

from typing import Any, Protocol

from kdlab.spec import ExperimentSpec, Point, SpecError


class Workload(Protocol):
    name: str

    def validate_spec(self, spec: ExperimentSpec, origin: str) -> None:
        """Raise SpecError naming the field if the spec's params or sweep are invalid."""

    def run_point(self, point: Point) -> list[dict[str, Any]]:
        """Run one point; return metric rows (without the common schema columns)."""


def _registry() -> dict[str, Workload]:
    from kdlab.workloads.artifact import ArtifactWorkload
    from kdlab.workloads.kafka import KafkaWorkload
    from kdlab.workloads.perftest import PerftestWorkload

    return {w.name: w for w in (PerftestWorkload(), KafkaWorkload(), ArtifactWorkload())}


def get_workload(name: str, origin: str = "<spec>") -> Workload:
    reg = _registry()
    if name not in reg:
        raise SpecError(f"{origin}: workload: unknown workload {name!r}; allowed: {', '.join(sorted(reg))}")
    return reg[name]


def workload_names() -> list[str]:
    return sorted(_registry())
