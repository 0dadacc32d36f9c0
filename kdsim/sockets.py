"""TCP connections between simulated hosts, one event per message.

A message of ``nbytes`` is cut into ``ceil(nbytes / MSS)`` frames that hold the
sender's link for ``(nbytes + frames * frame_overhead) / rate`` and arrive
``tcp.latency_ns`` (the two kernel stacks and the wire) after the last frame left.
The CPU cost is charged to the threads that send and receive: a system call per
message plus a per-byte copy on each side (none for a zero-copy ``sendfile``).
Messages on one connection arrive in order. TCP's flow and congestion control are
not modelled: the socket buffer is taken to be large enough.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import simpy

from kdlab.verbs import Connection, Listener
from kdsim.profile import Profile
from kdsim.queues import Waiter
from kdsim.timeline import Timeline


@dataclass(eq=False)
class SimConn:
    """One end of a connection: the messages arriving at it, and who waits for them."""

    handle: Connection
    peer: SimConn | None = None
    inbox: list[tuple[float, int, Any]] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)
    last_arrival: float = 0.0

    def next_time(self) -> float | None:
        return self.inbox[0][0] if self.inbox else None


@dataclass(eq=False)
class SimListener:
    handle: Listener
    pending: deque[tuple[float, SimConn]] = field(default_factory=deque)
    waiters: list[Waiter] = field(default_factory=list)


class SocketLayer:
    """Every host's TCP stack and the links TCP uses (its own timelines, e.g. IPoIB or Ethernet)."""

    def __init__(self, env: simpy.Environment, profile: Profile, ids: count) -> None:
        tcp = profile.tcp
        self.env = env
        self.ids = ids
        self.seq = count()
        self.ns_per_byte = 8.0 / tcp.data_rate_gbps
        self.mss = tcp.mtu_bytes - 52  # IPv4 20 + TCP 20 + timestamps 12
        self.frame_overhead = tcp.frame_overhead_bytes
        self.latency_ns = tcp.latency_ns
        self.uplinks: dict[str, Timeline] = {}
        self.listeners: dict[str, SimListener] = {}
        self.connect_waiters: dict[str, list[Waiter]] = {}
        self.bytes_sent = 0

    def listen(self, service: str, host: str) -> Listener:
        if service in self.listeners:
            raise ValueError(f"TcpListen: service {service!r} is already listening")
        handle = Listener(next(self.ids), service, host)
        self.listeners[service] = SimListener(handle)
        for waiter in self.connect_waiters.pop(service, []):
            waiter.wake_at(self.env, self.env.now)
        return handle

    def connect(self, service: str, host: str, when: float) -> SimConn | None:
        """Open a connection to ``service``; None if nobody listens yet."""
        listener = self.listeners.get(service)
        if listener is None:
            return None
        lhost = listener.handle.host
        client = SimConn(Connection(next(self.ids), host, lhost, service))
        server = SimConn(Connection(next(self.ids), lhost, host, service))
        client.peer, server.peer = server, client
        arrival = when + self.latency_ns  # the SYN; the handshake's other legs overlap the first send
        listener.pending.append((arrival, server))
        for waiter in listener.waiters:
            waiter.wake_at(self.env, arrival)
        return client

    def send(self, conn: SimConn, message: Any, nbytes: int, when: float) -> float:
        """Put a message on the wire at ``when``; -> when it is in the peer's socket."""
        peer = conn.peer
        assert peer is not None
        frames = max(1, -(-nbytes // self.mss))
        link = self.uplinks.get(conn.handle.host)
        if link is None:
            link = self.uplinks[conn.handle.host] = Timeline(f"{conn.handle.host}.tcp")
        _, end = link.reserve(when, (nbytes + frames * self.frame_overhead) * self.ns_per_byte)
        arrival = max(end + self.latency_ns, peer.last_arrival)  # TCP delivers in order
        peer.last_arrival = arrival
        heapq.heappush(peer.inbox, (arrival, next(self.seq), (message, nbytes)))
        for waiter in peer.waiters:
            waiter.wake_at(self.env, arrival)
        self.bytes_sent += nbytes
        return arrival

    @staticmethod
    def ready(conns: list[SimConn], now: float) -> tuple[SimConn, Any] | None:
        """The earliest message already arrived on any of ``conns``, removed from its inbox."""
        best = None
        for c in conns:
            if c.inbox and c.inbox[0][0] <= now and (best is None or c.inbox[0] < best.inbox[0]):
                best = c
        if best is None:
            return None
        return best, heapq.heappop(best.inbox)[2]
