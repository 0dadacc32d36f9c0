"""Queues and notifications between the threads of one simulated process.

Items and notifications carry the time they happen (the putting thread's own time,
which may be ahead of the simulator clock); a waiting thread is woken at that time
and never sees an item before it was put.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import simpy

from kdsim.queues import Waiter


@dataclass(eq=False)
class SimQueue:
    """A FIFO of (time put, sequence, item), with waiting getters and putters."""

    name: str
    items: list[tuple[float, int, Any]] = field(default_factory=list)
    getters: list[Waiter] = field(default_factory=list)
    putters: list[Waiter] = field(default_factory=list)
    high_water: int = 0


class SyncLayer:
    """All named queues and notification keys of a run (names are global: prefix them per process)."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.queues: dict[str, SimQueue] = {}
        self.notify_waiters: dict[str, list[Waiter]] = {}
        self.seq = count()

    def queue(self, name: str) -> SimQueue:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = SimQueue(name)
        return q

    def put(self, q: SimQueue, item: Any, when: float) -> None:
        heapq.heappush(q.items, (when, next(self.seq), item))
        q.high_water = max(q.high_water, len(q.items))
        for waiter in q.getters:  # one item wakes one idle getter, not the whole pool
            if waiter.due == float("inf"):
                waiter.wake_at(self.env, when)
                break

    @staticmethod
    def take(q: SimQueue, now: float) -> tuple[bool, Any]:
        if q.items and q.items[0][0] <= now:
            return True, heapq.heappop(q.items)[2]
        return False, None

    def released(self, q: SimQueue, when: float) -> None:
        """An item left ``q``: a putter waiting for room may go on."""
        for waiter in q.putters:
            waiter.wake_at(self.env, when)

    def notify(self, key: str, when: float) -> None:
        for waiter in self.notify_waiters.pop(key, []):
            waiter.wake_at(self.env, when)
