"""Completion queues and RC queue pairs of the simulated NIC.

A completion is pushed into a :class:`SimCq` with the time its CQE becomes visible in
host memory, usually a time still in the future: the transport computes it when the
message is sent. A thread waiting on the CQ is woken at that time with one timer
event; completions that are not waited for cost no event at all.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from itertools import count
from typing import TYPE_CHECKING

from kdlab.verbs import CompletionQueue, QpCap, QueuePair, RecvWR, SendWR, WorkCompletion

if TYPE_CHECKING:
    import simpy


class Waiter:
    """A thread blocked until a condition holds, not woken before ``not_before``."""

    __slots__ = ("due", "event", "not_before")

    def __init__(self, event: simpy.Event, not_before: float) -> None:
        self.event = event
        self.not_before = not_before
        self.due = float("inf")

    def wake_at(self, env: simpy.Environment, when: float) -> None:
        """Make sure the waiter is woken no later than ``when`` (nor before not_before)."""
        at = self.claim(env, when)
        if at is not None:
            env.timeout(at - env.now).callbacks.append(self._fire)

    def claim(self, env: simpy.Environment, when: float) -> float | None:
        """Make ``when`` (not before not_before) the waiter's wake-up -> the time a timer must wake it, or None
        when none is needed: an earlier wake-up is already due, or it is woken now."""
        if when < self.not_before:
            when = self.not_before
        if when >= self.due or self.event.triggered:
            return None
        self.due = when
        if when <= env.now:
            self.event.succeed()
            return None
        return when

    def _fire(self, _timer: simpy.Event) -> None:
        if not self.event.triggered:
            self.event.succeed()


class SimCq:
    """A completion queue: a heap of (visible time, sequence, completion)."""

    __slots__ = ("entries", "env", "handle", "seq", "waiter")

    def __init__(self, handle: CompletionQueue, env: simpy.Environment) -> None:
        self.handle = handle
        self.env = env
        self.entries: list[tuple[float, int, WorkCompletion]] = []
        self.seq = count()
        self.waiter: Waiter | None = None

    def push(self, when: float, wc: WorkCompletion) -> None:
        heapq.heappush(self.entries, (when, next(self.seq), wc))
        if self.waiter is not None:
            self.waiter.wake_at(self.env, when)

    def pop_ready(self, now: float, max_entries: int) -> list[WorkCompletion]:
        entries = self.entries
        out: list[WorkCompletion] = []
        while entries and entries[0][0] <= now and len(out) < max_entries:
            out.append(heapq.heappop(entries)[2])
        return out

    def next_time(self) -> float | None:
        return self.entries[0][0] if self.entries else None


class QpState(Enum):
    INIT = "INIT"
    RTS = "RTS"
    ERROR = "ERROR"


@dataclass(eq=False)
class SimQp:
    """An RC queue pair: state, receive queue, read/atomic credits and ordering."""

    handle: QueuePair
    host: str
    send_cq: SimCq
    recv_cq: SimCq
    cap: QpCap
    state: QpState = QpState.INIT
    peer: SimQp | None = None
    rnr_retry: int = 7
    rnr_timer_ns: float = 0.0
    recv_queue: deque[RecvWR] = field(default_factory=deque)
    #: Outstanding READ/atomic requests, and WRs held behind the limit (with post times).
    rd_outstanding: int = 0
    held: deque[tuple[SendWR, float]] = field(default_factory=deque)
    #: Incoming messages waiting behind an RNR-stalled SEND, in arrival order.
    inbound_backlog: deque = field(default_factory=deque)
    rnr_stalled: bool = False
    #: Last responder-effect and completion times, to keep RC's per-QP order.
    last_effect: float = 0.0
    last_completion: float = 0.0
    #: Time from which the requester side is in error (later WRs are flushed).
    error_at: float = float("inf")

    @property
    def qp_num(self) -> int:
        return self.handle.qp_num
