"""Engine factory: the one place that knows which engine package implements which name."""

from __future__ import annotations

from typing import Any

from kdlab.program import Engine


class EngineUnavailable(RuntimeError):
    """The requested engine cannot run here (no RDMA device for ``real``)."""


def make_engine(
    name: str, profile: str, *, seed: int = 0, overrides: dict[str, float] | None = None, switch: bool | None = None
) -> Engine:
    """An engine ready to run one program: ``sim`` (kdsim) or ``real`` (kdreal)."""
    if name == "sim":
        from kdsim.engine import SimEngine
        from kdsim.profile import load_profile

        return SimEngine(load_profile(profile).with_overrides(overrides or {}), seed=seed, switch=switch)
    if name == "real":
        try:
            from kdreal.engine import RealEngine  # type: ignore[import-not-found]
            from kdreal.testbed import has_rdma
        except ImportError as err:
            raise EngineUnavailable(f"the real engine (kdreal) cannot be loaded: {err}") from err
        if not has_rdma():
            raise EngineUnavailable(
                "engine 'real' needs an RDMA device (pyverbs and at least one verbs device), and this machine has "
                "none; run it in the Soft-RoCE testbed: kdlab testbed run -- .venv/bin/kdlab run --engine real SPEC"
            )
        engine: Any = RealEngine()
        return engine
    raise ValueError(f"engine must be one of 'sim', 'real'; got {name!r}")


def profile_fingerprint(name: str) -> str:
    """A short hash of a profile's values, so results record exactly which numbers ran."""
    import hashlib
    import json

    from kdsim.profile import load_profile

    values = load_profile(name).as_dict()
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
