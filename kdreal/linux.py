"""Linux calls Python 3.11 lacks, through ctypes: entering a network namespace, dying with the parent.

:func:`enter_netns` calls ``setns(2)`` (Python 3.11 has no ``os.setns``). The namespace
applies to the calling thread and to every thread and process it creates afterwards:
call it first, before any socket, thread or verbs resource. :func:`die_with_parent`
calls ``prctl(PR_SET_PDEATHSIG)``, so a forked host process cannot outlive the Dask
worker that watches it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

#: ``CLONE_NEWNET`` from <sched.h>: the namespace type setns(2) is asked to join.
CLONE_NEWNET = 0x40000000
#: ``PR_SET_PDEATHSIG`` from <linux/prctl.h>: the signal the kernel sends when the parent exits.
PR_SET_PDEATHSIG = 1
NETNS_DIR = "/var/run/netns"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def enter_netns(name: str) -> None:
    """Move this thread into the network namespace ``name``; OSError naming it if that fails."""
    libc = _libc()
    path = os.path.join(NETNS_DIR, name)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (pid ``parent``) exits; exit now if it already has."""
    if _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent:  # the parent died between fork and prctl
        os._exit(1)
