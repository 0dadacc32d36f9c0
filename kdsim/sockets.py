"""TCP connections between simulated hosts, one event per message.

A message of ``nbytes`` is cut into ``ceil(nbytes / MSS)`` frames that take
``d = (nbytes + frames * frame_overhead) / rate`` on a link. It crosses two links,
each a FIFO server per host and direction at ``tcp.data_rate_gbps``: the sender's
uplink, then the receiver's downlink (the switch port towards the receiver). The two
form a pipeline: the last frame leaves the uplink at ``e = max(when, uplink free) + d``
and the receiver's downlink at ``max(e, downlink free + d)``, so an idle downlink adds
nothing and a single flow is timed as if only the sender's link existed, while N
senders into one receiver share its rate (incast; the switch buffer is taken to be
unbounded). The message arrives ``tcp.latency_ns`` (the two kernel stacks and the
wire) after its last frame left the downlink. A connection within one host crosses
only the sender's link, as before. ``uplinks`` and ``downlinks`` keep each link's busy
time; :meth:`SocketLayer.utilisation` reports both per host.

The links are computed schedules (:class:`~kdsim.timeline.Timeline`), served in the
order sends are reserved. Senders that wait between sends (for a response, as Kafka's
clients do) reserve in time order and share a receiver's link about equally; a thread
that streams many sends without ever waiting reserves them all at once, ahead of
senders the simulator reaches later, so the aggregate is still bounded by the
receiver's rate but the streams are served one after another rather than interleaved.

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
        #: Each host's link towards the network, and the network's link towards it.
        self.uplinks: dict[str, Timeline] = {}
        self.downlinks: dict[str, Timeline] = {}
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
        wire_ns = (nbytes + frames * self.frame_overhead) * self.ns_per_byte
        src, dst = conn.handle.host, peer.handle.host
        start, end = _link(self.uplinks, src, "{}.tcp").reserve(when, wire_ns)
        if dst != src:
            # The receiver's downlink serves the message from when its first frame can
            # reach it; its last frame leaves no earlier than it left the uplink.
            _, end = _link(self.downlinks, dst, "->{}.tcp").reserve(start, wire_ns, end)
        arrival = max(end + self.latency_ns, peer.last_arrival)  # TCP delivers in order
        peer.last_arrival = arrival
        heapq.heappush(peer.inbox, (arrival, next(self.seq), (message, nbytes)))
        for waiter in peer.waiters:
            waiter.wake_at(self.env, arrival)
        self.bytes_sent += nbytes
        return arrival

    def utilisation(self, now: float) -> dict[str, dict[str, float]]:
        """Per host, the busy fraction of its TCP uplink and downlink up to ``now``."""
        out: dict[str, dict[str, float]] = {}
        for kind, links in (("tcp_uplink", self.uplinks), ("tcp_downlink", self.downlinks)):
            for host, link in links.items():
                out.setdefault(host, {})[kind] = link.busy_ns / now if now else 0.0
        return out

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


def _link(links: dict[str, Timeline], host: str, name: str) -> Timeline:
    """``host``'s link in ``links``, made on first use (``name`` is formatted with the host)."""
    link = links.get(host)
    if link is None:
        link = links[host] = Timeline(name.format(host))
    return link
