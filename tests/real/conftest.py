"""Fixtures for kdreal tests: engines that run the same role bodies.

``engine`` runs each test body twice: on kdsim (``SimEngine("cx4-edr-100g")``, in the
default suite) and on kdreal (``RealEngine()``, marked ``rdma``: it needs a verbs
device and is skipped without one; run it inside the testbed).
"""

from __future__ import annotations

from typing import Any

import pytest

from kdreal.testbed import HOW_TO_RUN, has_rdma

ENGINES = ["sim", pytest.param("real", marks=pytest.mark.rdma)]


def make_engine(name: str) -> Any:
    """A fresh engine by name; skips the test when ``real`` has no device here."""
    if name == "sim":
        from kdsim.engine import SimEngine

        return SimEngine("cx4-edr-100g")
    if not has_rdma():
        pytest.skip(f"no RDMA device: {HOW_TO_RUN}")
    from kdreal.engine import RealEngine

    return RealEngine(timeout_s=30.0, run_timeout_s=120.0)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Any:
    return make_engine(request.param)


@pytest.fixture
def real_engine() -> Any:
    return make_engine("real")
