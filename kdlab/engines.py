"""Engine factory: the one place that knows which engine package implements which name."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdlab.program import Engine

if TYPE_CHECKING:
    from kdlab.hosts import ClusterSpec
    from kdlab.spec import Point


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run here (no RDMA device for ``real``)."""


def make_engine(
    name: str, profile: str, *, seed: int = 0, overrides: dict[str, float] | None = None, switch: bool | None = None,
    cluster: ClusterSpec | None = None,
) -> Engine:  # fmt: skip
    """An engine ready to run one program: ``sim`` (kdsim) or ``real`` (kdreal; on ``cluster``'s machines)."""
    if name == "sim":
        from kdsim.engine import SimEngine
        from kdsim.profile import load_profile

        return SimEngine(load_profile(profile).with_overrides(overrides or {}), seed=seed, switch=switch)
    if name == "real":
        if cluster is None:
            require_engine("real")
        from kdreal.engine import RealEngine  # type: ignore[import-not-found]

        engine: Any = RealEngine(cluster=cluster)
        return engine
    raise ValueError(f"engine must be one of 'sim', 'real'; got {name!r}")


def point_engine(point: Point) -> Engine:
    """The engine a sweep point runs on: its engine, profile, overrides, seed and switch."""
    return make_engine(point.engine, point.profile, seed=point.seed, overrides=dict(point.profile_overrides),
                       switch=point.switch, cluster=point.cluster)  # fmt: skip


def require_engine(name: str) -> None:
    """Raise :class:`EngineUnavailable`, saying where to run, if engine ``name`` cannot run here."""
    if name != "real":
        return
    try:
        from kdreal.engine import RealEngine  # type: ignore[import-not-found]  # noqa: F401
        from kdreal.testbed import has_rdma
    except ImportError as err:
        raise EngineUnavailable(f"the real engine (kdreal) cannot be loaded: {err}") from err
    if not has_rdma():
        raise EngineUnavailable(
            "engine 'real' needs an RDMA device (pyverbs and at least one verbs device), and this machine has "
            "none; run it in the Soft-RoCE testbed: kdlab testbed run -- .venv/bin/kdlab run --engine real SPEC"
        )
