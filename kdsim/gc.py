"""Stop-the-world young collections of a host's JVM, driven by what its threads allocate.

A Java process allocates in its young generation (eden) until it is full; then the collector
stops every application thread of the process for a pause, and allocation starts over. kdsim
models exactly that and nothing finer (docs/variability.md, "Garbage collection"):

* datapaths declare the allocations that grow with the data they move, ``Compute("alloc", n)``:
  a Kafka broker's heap buffer for each request it reads (``NetworkReceive``), a client's
  serialised records, a consumer's fetched and deserialised records. KafkaDirect's RDMA paths
  allocate no heap for the data, so its brokers collect far less often: a mechanism, not a factor;
* every ``host.gc_young_bytes`` allocated, the process pauses for ``host.gc_pause_ns``, starting
  when the allocating thread allocates (pauses of one process do not overlap);
* a thread of the process does no CPU work inside a pause: work that would start in one starts at
  its end, and a thread woken inside one runs at its end. The kernel and the NIC go on: packets
  arrive, RDMA writes land, sockets fill;
* ``host.gc_young_bytes`` 0 turns the model off: allocations are not counted and nothing pauses.

Pauses follow from the allocation, so they come more often as load grows, and near saturation the
backlog a pause leaves takes longer to drain: the tail grows toward saturation, as in a queue with
server vacations.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field


@dataclass
class Heap:
    """One host process's young generation: bytes allocated since the last collection, and its pauses.

    A thread may run ahead of the simulator's clock while it never waits (kdsim's CPU debt), so a pause can be
    started at a time later than another thread's next piece of work: every pause's start is kept, in order
    (pauses do not overlap), and looked up by time. Pauses are booked in the order the simulator reaches the
    allocations: one started by a thread that ran ahead may be booked before one that a thread behind it starts,
    which then waits for it (an error bounded by the run-ahead of the host's threads).
    """

    young_bytes: int
    pause_ns: float
    used: int = 0
    starts: list[float] = field(default_factory=list)  # every pause's start, in order

    @property
    def pauses(self) -> int:
        return len(self.starts)

    def allocate(self, t: float, nbytes: int) -> None:
        """``nbytes`` allocated at time ``t``; a full eden starts a pause at ``t`` (or after the last one)."""
        self.used += nbytes
        while self.used >= self.young_bytes:
            self.used -= self.young_bytes
            last_end = self.starts[-1] + self.pause_ns if self.starts else t
            self.starts.append(max(t, last_end))

    def resume_at(self, t: float) -> float:
        """When a thread that wants to run at ``t`` may: after every pause holding it (back-to-back pauses are
        one stop)."""
        starts, pause = self.starts, self.pause_ns
        i = bisect_right(starts, t) - 1
        while 0 <= i < len(starts) and starts[i] <= t < starts[i] + pause:
            t = starts[i] + pause
            i += 1
        return t

    def stopped_ns(self, a: float, b: float) -> float:
        """How much of ``[a, b]`` the process spent paused (a spinning thread was not spinning then)."""
        starts, pause = self.starts, self.pause_ns
        total = 0.0
        for i in range(max(0, bisect_right(starts, a) - 1), len(starts)):
            start = starts[i]
            if start >= b:
                break
            total += max(0.0, min(b, start + pause) - max(a, start))
        return total

    def paused_share(self, now: float) -> float:
        """The share of the run the process spent stopped (pauses still running at ``now`` count in full)."""
        return self.pauses * self.pause_ns / now if now > 0 else 0.0
