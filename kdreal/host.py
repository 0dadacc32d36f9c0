"""What the roles of one host share in kdreal: a lock, named queues and notifications.

The roles of one host run as threads of one process. They keep kdsim's rule that the
datapath code between two ``yield``\\ s runs atomically with respect to the host's
other roles: a role thread holds the host lock while it executes datapath code and
gives it up only while an operation blocks (a CQ wait, a socket, a sleep, a queue).
Shared Python state (a broker's logs, its purgatory) therefore needs no locks of its
own, exactly as under kdsim. Queues and notifications wait on conditions built on
the host lock, so a put or a notify between two yields is never missed. Queue and
notification names belong to one host here (they are global in kdsim): only the
roles of one host may meet on a queue.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class _Queue:
    def __init__(self, lock: threading.Lock) -> None:
        self.items: deque[Any] = deque()
        self.nonempty = threading.Condition(lock)
        self.room = threading.Condition(lock)


class HostRuntime:
    """The host lock, and the in-process queues and notification keys of kdlab.ops."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}
        self._keys: dict[str, tuple[threading.Condition, list[int]]] = {}

    # All methods below are called with the host lock held.

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue(self.lock)
        return q

    def put(self, name: str, item: Any, capacity: int | None, timeout_s: float | None) -> None:
        """Append ``item``; wait (lock released) while the queue holds ``capacity`` items."""
        q = self._queue(name)
        if capacity is not None and not q.room.wait_for(lambda: len(q.items) < capacity, timeout_s):
            raise TimeoutError(f"QueuePut: queue {name!r} stayed full ({capacity} items) for {timeout_s} s")
        q.items.append(item)
        q.nonempty.notify()

    def get(self, name: str, timeout_s: float | None) -> Any:
        """The oldest item, waiting at most ``timeout_s`` (None: forever); None on a time-out."""
        q = self._queue(name)
        if not q.items and (timeout_s == 0 or not q.nonempty.wait_for(lambda: bool(q.items), timeout_s)):
            return None
        item = q.items.popleft()
        q.room.notify()
        return item

    def notify(self, key: str) -> None:
        cond, generation = self._key(key)
        generation[0] += 1
        cond.notify_all()

    def wait_notify(self, key: str, timeout_s: float | None) -> bool:
        """Wait for the next :meth:`notify` of ``key``; False after ``timeout_s``."""
        cond, generation = self._key(key)
        seen = generation[0]
        return cond.wait_for(lambda: generation[0] != seen, timeout_s)

    def _key(self, key: str) -> tuple[threading.Condition, list[int]]:
        entry = self._keys.get(key)
        if entry is None:
            entry = self._keys[key] = (threading.Condition(self.lock), [0])
        return entry


class Unlocked:
    """``with Unlocked(lock):`` runs a blocking call with the host lock given up."""

    __slots__ = ("lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock

    def __enter__(self) -> None:
        self.lock.release()

    def __exit__(self, *exc: object) -> None:
        self.lock.acquire()


def gil_friendly_pause(shared: bool) -> None:
    """In a busy-wait loop of a process with several role threads, let the others run.

    CPython hands the GIL over only every ``sys.getswitchinterval()`` (5 ms) to a
    thread that never blocks, which would add milliseconds to every completion that
    another thread of the host is waiting for.
    """
    if shared:
        time.sleep(0)
