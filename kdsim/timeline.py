"""Servers whose schedule is computed, not simulated event by event.

A :class:`Timeline` is a single non-preemptive server (a link direction, a PCIe
direction, a NIC processing unit). A job asks for it with :meth:`Timeline.reserve`
giving the time it arrives and how long it holds the server; the timeline answers
when the job starts and ends. Because the answer is computed at once, a message
crossing five servers costs five additions and no simulator events: this is how
kdsim keeps to one event per message.

Jobs usually arrive in time order, and then the timeline is an exact FIFO queue
(the Lindley recursion). A job may also be reserved for a time before jobs that
were reserved earlier in wall-clock order (an inline message overtaking a message
that still waits for its DMA read); it then takes the first idle gap that fits,
so the server never idles while work is waiting.

``min_end`` expresses cut-through: a stage cannot finish before the previous stage
delivered the last packet plus that packet's own transmission time here.
"""

from __future__ import annotations

from bisect import bisect_right

#: Idle gaps remembered per server; older ones are forgotten (they lie in the past).
MAX_GAPS = 32


class Timeline:
    """A single server with a computed schedule. Times are in nanoseconds."""

    __slots__ = ("busy_ns", "end", "gap_ends", "gap_starts", "name")

    def __init__(self, name: str = "") -> None:
        self.name = name
        #: When the last reserved job ends; the server is free from here on.
        self.end = 0.0
        #: Idle intervals before ``end`` that later jobs may fill, sorted and disjoint, as two parallel lists
        #: (so the first gap that ends after an arrival is found by bisection, not by a scan).
        self.gap_starts: list[float] = []
        self.gap_ends: list[float] = []
        #: Total time reserved, for utilisation.
        self.busy_ns = 0.0

    @property
    def gaps(self) -> list[tuple[float, float]]:
        """The idle intervals ``(start, end)`` later jobs may fill."""
        return list(zip(self.gap_starts, self.gap_ends, strict=True))

    def reserve(self, arrival: float, duration: float, min_end: float = 0.0) -> tuple[float, float]:
        """Hold the server for ``duration`` from the first idle time >= ``arrival``.

        Returns ``(start, end)`` with ``end = max(start + duration, min_end)``; the
        server is held until ``end``.
        """
        self.busy_ns += duration
        if arrival >= self.end:
            if arrival > self.end:
                starts = self.gap_starts
                starts.append(self.end)
                self.gap_ends.append(arrival)
                if len(starts) > MAX_GAPS:
                    # The oldest gaps are almost surely in the past by now.
                    del starts[: MAX_GAPS // 2], self.gap_ends[: MAX_GAPS // 2]
            end = arrival + duration
            if min_end > end:
                end = min_end
            self.end = end
            return arrival, end
        if self.gap_ends and self.gap_ends[-1] > arrival:
            slot = self._fill_gap(arrival, duration, min_end)
            if slot is not None:
                return slot
        start = self.end
        end = start + duration
        if min_end > end:
            end = min_end
        self.end = end
        return start, end

    def _fill_gap(self, arrival: float, duration: float, min_end: float) -> tuple[float, float] | None:
        """The first gap ending after ``arrival`` that holds the job, split around it; None if none does."""
        starts, ends = self.gap_starts, self.gap_ends
        for i in range(bisect_right(ends, arrival), len(ends)):
            g0, g1 = starts[i], ends[i]
            start = g0 if g0 > arrival else arrival
            end = start + duration
            if min_end > end:
                end = min_end
            if end <= g1:
                # the gap's idle rest, before and after the job, stays in place (the lists stay sorted)
                pieces = ([(g0, start)] if start > g0 else []) + ([(end, g1)] if end < g1 else [])
                starts[i : i + 1] = [a for a, _ in pieces]
                ends[i : i + 1] = [b for _, b in pieces]
                return start, end
        return None


class ServerPool:
    """``k`` identical servers (a NIC's processing units); a key pins a job to one.

    Pinning keeps a queue pair's work requests on one unit, so they leave in the
    order they were posted, as on the hardware.
    """

    __slots__ = ("servers",)

    def __init__(self, name: str, count: int) -> None:
        self.servers = [Timeline(f"{name}[{i}]") for i in range(count)]

    def reserve(self, key: int, arrival: float, duration: float) -> tuple[float, float]:
        servers = self.servers
        return servers[key % len(servers)].reserve(arrival, duration)

    @property
    def busy_ns(self) -> float:
        return sum(s.busy_ns for s in self.servers)
