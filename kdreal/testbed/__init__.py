"""The Soft-RoCE testbed: real RDMA verbs (``rdma_rxe``) inside a QEMU VM.

Use from a shell::

    python -m kdreal.testbed setup                          # once, as root
    python -m kdreal.testbed run python -m pytest -m rdma   # boot, run, exit code passes

or from Python with :func:`setup`, :func:`run` and :func:`has_rdma`. See
:mod:`kdreal.testbed.vm` for how the VM is built and booted.
"""

from __future__ import annotations

from kdreal.testbed.vm import (
    DEFAULT_CACHE,
    NO_EXIT_CODE,
    TestbedError,
    cache_dir,
    pyverbs_path,
    run,
    setup,
)

#: What a skipped RDMA test tells the reader to do.
HOW_TO_RUN = "run inside the testbed: python -m kdreal.testbed run python -m pytest -m rdma"


def has_rdma() -> bool:
    """True if pyverbs imports and lists at least one RDMA device.

    Opens no device and creates no verbs resource, so it is safe to call before
    :class:`kdreal.engine.RealEngine` forks its role processes.
    """
    try:
        from pyverbs.device import get_device_list

        return len(get_device_list()) > 0
    except Exception:  # ImportError, or PyverbsRDMAError on a kernel without RDMA
        return False


__all__ = [
    "DEFAULT_CACHE",
    "HOW_TO_RUN",
    "NO_EXIT_CODE",
    "TestbedError",
    "cache_dir",
    "has_rdma",
    "pyverbs_path",
    "run",
    "setup",
]
