"""Experiment specs: a human-written YAML file, validated, expanded into sweep points.

A spec names a workload, its base parameters, a sweep grid and seeds::

    name: perftest-send-lat
    workload: perftest
    profile: cx4-edr-100g
    params: {test: send_lat, iterations: 1000, tx_depth: 1}
    sweep:
      size: {pow2: [2, 1048576]}
    seeds: [1]

A sweep axis whose values are mappings sets several parameters at once (a *variant*,
e.g. ``{variant: KD shared, system: kafkadirect, produce_mode: shared}``).
Every error names the field and what it allows, e.g.
``experiments/x.yaml: params.size: must be >= 1 (got 0)``. Sweep keys may name a
workload parameter (``size``) or a profile parameter (``profile.nic.qpc_cache_entries``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kdlab.hosts import ClusterSpec, HostsError, make_cluster, spec_fields

ENGINES = ("sim", "real")
#: The most points a spec may expand to; above ``--yes``'s threshold (see the runner) a run asks first.
MAX_POINTS = 1_000_000


class SpecError(ValueError):
    """A spec is malformed; the message names the field and the allowed values."""


class Pow2(BaseModel):
    """``{pow2: [lo, hi]}``: lo, 2*lo, 4*lo, ... up to hi (both powers of two)."""

    model_config = ConfigDict(extra="forbid")
    pow2: tuple[int, int]

    def count(self) -> int:
        lo, hi = self.pow2
        return max(0, hi.bit_length() - lo.bit_length() + 1) if lo >= 1 and hi >= lo else 0

    def values(self) -> list[int]:
        lo, hi = self.pow2
        if lo < 1 or hi < lo or lo & (lo - 1) or hi & (hi - 1):
            raise SpecError(f"pow2: [{lo}, {hi}] must be powers of two with 1 <= lo <= hi")
        out, v = [], lo
        while v <= hi:
            out.append(v)
            v *= 2
        return out


class Range(BaseModel):
    """``{range: [start, stop, step]}``: start, start+step, ... <= stop."""

    model_config = ConfigDict(extra="forbid")
    range: tuple[float, float, float]

    def count(self) -> int:
        """How many values the axis has, computed without making them."""
        start, stop, step = self.range
        if not all(math.isfinite(v) for v in self.range):
            raise SpecError(f"range: [{start}, {stop}, {step}] must be finite numbers")
        if step <= 0 or stop < start:
            raise SpecError(f"range: [{start}, {stop}, {step}] needs step > 0 and stop >= start")
        return int((stop - start) / step + 1e-9) + 1

    def values(self) -> list[float]:
        n = self.count()
        if n > MAX_POINTS:
            raise SpecError(f"range: {self.range} has {n:.3g} values; at most {MAX_POINTS:,} points are allowed")
        start, _, step = self.range
        return [start + i * step for i in range(n)]


SweepAxis = list[Any] | Pow2 | Range


class Reference(BaseModel):
    """A published value to draw beside the results (an anchor, a paper's claim)."""

    model_config = ConfigDict(extra="forbid")
    label: str
    source: str
    x_param: str
    metric: str
    points: list[tuple[float, float]] = Field(min_length=1)
    tolerance: float | None = Field(default=None, gt=0, description="relative, e.g. 0.1 for 10%")
    where: dict[str, Any] = Field(default_factory=dict)


class FigureSpec(BaseModel):
    """A line figure: ``y`` metrics (one panel each) against ``x``, one line per ``by``."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["lines"] = "lines"
    x: str
    y: list[str] = Field(min_length=1)
    by: list[str] = Field(default_factory=list)
    logx: int | None = Field(default=2, description="log base of the x axis, or null for linear")
    logy: bool | list[str] = Field(default=False, description="log y axes: all panels, or the metrics named")
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="axis label words per column, in place of kdlab.figures.LABELS' (the unit is added from there)",
    )


class ExperimentSpec(BaseModel):
    """The validated form of an experiment file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    workload: str
    engine: Literal["sim", "real"] = "sim"
    profile: str = "cx4-edr-100g"
    switch: bool | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, SweepAxis] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [1], min_length=1)
    figure: str | FigureSpec | None = None
    references: list[Reference] = Field(default_factory=list)
    main: bool = Field(default=True, description="part of `kdlab reproduce`")
    hosts: list[dict[str, Any]] | Literal["testbed"] | None = Field(
        default=None, description="engine real: the machines (kdlab.hosts); 'testbed': kdlab testbed run --hosts N"
    )
    scheduler: str | None = Field(default=None, description="engine real with hosts: the Dask scheduler")
    placement: dict[str, str] = Field(default_factory=dict, description="simulated host -> host name")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if any(s < 0 for s in v):
            raise ValueError("seeds must be >= 0")
        return v


@dataclass(frozen=True)
class Point:
    """One run of a sweep: a workload config on one engine, profile and seed."""

    experiment: str
    workload: str
    engine: str
    profile: str
    profile_overrides: tuple[tuple[str, float], ...]
    params: tuple[tuple[str, Any], ...]
    seed: int
    switch: bool | None = None
    cluster: ClusterSpec | None = None  # engine real across machines (kdlab.hosts)

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def config(self) -> dict[str, Any]:
        """Everything that determines the result (with the code version, its cache key)."""
        out = {
            "workload": self.workload,
            "engine": self.engine,
            "profile": self.profile,
            "profile_overrides": dict(self.profile_overrides),
            "params": dict(self.params),
            "seed": self.seed,
            "switch": self.switch,
        }
        if self.cluster is not None:
            out["cluster"] = self.cluster.summary()
        return out

    def key(self, fingerprint: str) -> str:
        """The cache key: the resolved config (every profile value) and the code fingerprint."""
        from kdlab.provenance import point_key

        return point_key(self, fingerprint)


def is_variant_axis(axis: Any) -> bool:
    """A sweep axis whose values are mappings of several parameters."""
    return isinstance(axis, list) and bool(axis) and all(isinstance(v, dict) for v in axis)


def format_validation_error(err: ValidationError, origin: str, model: type[BaseModel] | None = None) -> str:
    """pydantic's errors as ``origin: field: message (got value)``, naming allowed fields."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        msg = e["msg"]
        if e["type"] == "extra_forbidden" and model is not None and len(e["loc"]) == 1:
            msg = f"unknown field; allowed: {', '.join(model.model_fields)}"
        lines.append(f"{origin}: {loc or '<top>'}: {msg}{shown}")
    return "\n".join(lines)


def read_yaml(source: str | Path | Mapping[str, Any], what: str, error: type[Exception]) -> tuple[Any, str]:
    """The document in a YAML file, YAML text or mapping, and where it came from (for messages).

    A one-line string ending in ``.yaml``/``.yml``, or naming an existing file, is a
    path; a missing file or bad YAML raises ``error`` naming ``what`` it should be.
    """
    if isinstance(source, Mapping):
        return dict(source), f"<{what}>"
    path = Path(source)
    origin = f"<{what}>"
    if "\n" not in str(source) and (path.suffix in (".yaml", ".yml") or path.exists()):
        if not path.exists():
            raise error(f"{what} file {str(path)!r} does not exist")
        origin, text = str(path), path.read_text()
    else:
        text = str(source)
    try:
        return yaml.safe_load(text), origin
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise error(f"{origin}: not valid YAML{where}: {getattr(err, 'problem', None) or err}") from None


def load_spec(
    source: str | Path | dict[str, Any], engine: str | None = None, hosts: str | None = None
) -> ExperimentSpec:  # fmt: skip
    """Read and validate a spec from a YAML file, YAML text or a mapping.

    ``engine`` replaces the spec's engine; ``hosts`` its machines: ``testbed``, or a YAML
    file with ``hosts:``, ``scheduler:`` and optionally ``placement:`` (:mod:`kdlab.hosts`).
    """
    doc, origin = read_yaml(source, "spec", SpecError)
    if not isinstance(doc, dict):
        raise SpecError(f"{origin}: a spec is a mapping with at least 'name' and 'workload'")
    if engine is not None:
        doc = {**doc, "engine": engine}
    if hosts is not None:
        try:
            doc = {**doc, **spec_fields(hosts)}
        except HostsError as err:
            raise SpecError(str(err)) from None
    try:
        spec = ExperimentSpec.model_validate(doc)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, origin, ExperimentSpec)) from None
    _check_sweep_axes(spec, origin)
    _check_profile(spec, origin)
    spec_cluster(spec, origin)
    from kdlab.workloads import get_workload  # workloads validate their own params

    get_workload(spec.workload, origin).validate_spec(spec, origin)
    return spec


def axis_count(axis: SweepAxis) -> int:
    """Number of values of a sweep axis, without expanding it."""
    return axis.count() if isinstance(axis, Pow2 | Range) else len(axis)


def grid_size(spec: ExperimentSpec) -> int:
    """Number of points a spec expands to (sweep grid times seeds), without expanding it."""
    return math.prod(axis_count(a) for a in spec.sweep.values()) * len(spec.seeds)


def _check_finite(value: Any, where: str) -> None:
    """Reject NaN and infinities anywhere in a parameter value (they pass YAML and pydantic's floats)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{where}: must be a finite number (got {value})")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for v in value:
            _check_finite(v, where)


def _check_sweep_axes(spec: ExperimentSpec, origin: str) -> None:
    for key, value in spec.params.items():
        _check_finite(value, f"{origin}: params.{key}")
    for key, axis in spec.sweep.items():
        try:
            if isinstance(axis, Range):
                axis.count()
        except SpecError as err:
            raise SpecError(f"{origin}: sweep.{key}: {err}") from None
    total = grid_size(spec)
    if total > MAX_POINTS:
        sizes = ", ".join(f"{k}: {axis_count(a):,}" for k, a in spec.sweep.items())
        raise SpecError(f"{origin}: sweep: {total:,} points ({sizes}, seeds: {len(spec.seeds)}); "
                        f"at most {MAX_POINTS:,} are allowed")  # fmt: skip
    for key, axis in spec.sweep.items():
        if not isinstance(axis, Pow2 | Range):
            _check_finite(list(axis), f"{origin}: sweep.{key}")
        try:
            values = axis.values() if isinstance(axis, Pow2 | Range) else list(axis)
        except SpecError as err:
            raise SpecError(f"{origin}: sweep.{key}: {err}") from None
        if not values:
            raise SpecError(f"{origin}: sweep.{key}: needs at least one value")


def _check_profile(spec: ExperimentSpec, origin: str) -> None:
    """The profile must exist and swept profile parameters must be valid values."""
    from kdsim.profile import ProfileError, load_profile

    names = [spec.profile]
    if "profile" in spec.sweep:
        axis = spec.sweep["profile"]
        if not isinstance(axis, list):
            raise SpecError(f"{origin}: sweep.profile: give a list of profile names")
        names = axis
    try:
        profile = next(load_profile(n) for n in names)
    except ProfileError as err:
        raise SpecError(f"{origin}: profile: {err}") from None
    for key, axis in spec.sweep.items():
        if not key.startswith("profile."):
            continue  # workload parameters are checked by the workload
        values = axis.values() if isinstance(axis, Pow2 | Range) else list(axis)
        for value in values:
            try:
                profile.with_overrides({key.removeprefix("profile."): value})
            except ProfileError as err:
                raise SpecError(f"{origin}: sweep.{key}: {err}") from None


def spec_cluster(spec: ExperimentSpec, origin: str = "<spec>") -> ClusterSpec | None:
    """The machines a real-engine spec runs on (None: this machine); SpecError naming the field if invalid.

    A simulated spec's hosts are checked but not used: the simulation has its own hosts.
    """
    if spec.hosts == "testbed" and spec.engine != "real":
        return None
    try:
        cluster = make_cluster(spec.hosts, spec.scheduler, spec.placement, origin)
    except HostsError as err:
        raise SpecError(str(err)) from None
    return cluster if spec.engine == "real" else None


def expand(spec: ExperimentSpec) -> list[Point]:
    """The sweep grid times the seeds, in a stable order."""
    axes: list[tuple[str, list[Any]]] = []
    for key, axis in spec.sweep.items():
        values = axis.values() if isinstance(axis, Pow2 | Range) else list(axis)
        if not values:
            raise SpecError(f"sweep.{key}: needs at least one value")
        axes.append((key, values))
    points = []
    cluster = spec_cluster(spec)
    for combo in itertools.product(*(v for _, v in axes)):
        params = dict(spec.params)
        overrides: dict[str, float] = {}
        profile = spec.profile
        for (key, _), value in zip(axes, combo, strict=True):
            if isinstance(value, dict):  # a variant: several parameters set together
                params.update({k: v for k, v in value.items() if k != "profile"})
                profile = value.get("profile", profile)
            elif key == "profile":
                profile = value
            elif key.startswith("profile."):
                overrides[key.removeprefix("profile.")] = value
            else:
                params[key] = value
        for seed in spec.seeds:
            points.append(
                Point(
                    experiment=spec.name,
                    workload=spec.workload,
                    engine=spec.engine,
                    profile=profile,
                    profile_overrides=tuple(sorted(overrides.items())),
                    params=tuple(sorted(params.items())),
                    seed=seed,
                    switch=spec.switch,
                    cluster=cluster,
                )
            )
    return points


def validate_points(spec: ExperimentSpec, origin: str, model: type[BaseModel], workload: str) -> None:
    """Check a spec's sweep keys and every point's parameters against a workload's model."""
    for key, axis in spec.sweep.items():
        if key in ("profile", "variant") or key.startswith("profile.") or is_variant_axis(axis):
            continue  # a variant's keys are checked with the points below
        if key not in model.model_fields:
            allowed = ", ".join(model.model_fields)
            raise SpecError(f"{origin}: sweep.{key}: not a {workload} parameter; allowed: {allowed}, profile.*")
    try:
        for point in expand(spec):
            model.model_validate(point.params_dict)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, f"{origin}: params", model)) from None
