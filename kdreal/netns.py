"""Entering a network namespace (``ip netns add NAME``) from Python.

Python 3.11 has no ``os.setns``, so this calls libc's ``setns(2)`` through ctypes.
The namespace applies to the calling thread and to every thread and process it
creates afterwards: call it first, before any socket, thread or verbs resource.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: ``CLONE_NEWNET`` from <sched.h>: the namespace type setns(2) is asked to join.
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"


def enter_netns(name: str) -> None:
    """Move this thread into the network namespace ``name``; OSError naming it if that fails."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    path = os.path.join(NETNS_DIR, name)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)
