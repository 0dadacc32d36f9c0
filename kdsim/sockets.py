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

Each connection has a receive buffer and window-based flow control. The window is
the bytes sent on it but not yet read by the receiving thread (not yet ``TcpRecv``'d),
as the sender knows them: a read frees its bytes at the sender ``tcp.latency_ns``
later (the ACK that carries the window update; ACKs are cumulative, so the freed
window reaches the sender in order). A send blocks while those bytes plus the new
message would exceed the window, except on an empty connection, so a message larger
than the window still goes. A blocked sender is one wait, woken once, when the read
that opens the window has been acknowledged. The window is ``window_bytes``
(:data:`TCP_WINDOW_BYTES` unless a :class:`SocketLayer` or
:class:`~kdsim.engine.SimEngine` is given another). So a slow receiver slows its
senders to its read rate, and a sender that streams without waiting runs at most one
window ahead of its receiver: streams into one receiver are served a window at a time
in turn, interleaving over times longer than N windows at the link's rate, rather
than one after another. The window is the receiver's buffer only: no send buffer,
slow start, congestion window, loss or retransmission is modelled, and the switch
buffer is still unbounded.

The CPU cost is charged to the threads that send and receive: a system call per
message plus a per-byte copy on each side (none for a zero-copy ``sendfile``); a
sender that had to wait for the window pays a wake-up as a receiver does. Messages on
one connection arrive in order.
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

#: The receive window of a connection in bytes: Linux's autotuned receive buffer maximum,
#: ``net.ipv4.tcp_rmem`` max = 6291456 (Documentation/networking/ip-sysctl.rst, tcp_rmem:
#: "min default max", default 131072, max 6291456; the kernel grows a connection's buffer up
#: to max as the flow needs it). [V] A profile parameter would be the place for it.
TCP_WINDOW_BYTES = 6 * 1024 * 1024


@dataclass(eq=False)
class SimConn:
    """One end of a connection: the messages arriving at it, and who waits for them."""

    handle: Connection
    peer: SimConn | None = None
    inbox: list[tuple[float, int, Any]] = field(default_factory=list)
    waiters: list[Waiter] = field(default_factory=list)
    last_arrival: float = 0.0
    #: Flow control of the bytes arriving at this end (its receive buffer), in cumulative
    #: bytes: put on the wire by the peer, read here, and known read at the peer; ``acks``
    #: are (time the peer learns of a read, bytes read up to it) not yet applied there.
    sent: int = 0
    read: int = 0
    acked: int = 0
    acks: deque[tuple[float, int]] = field(default_factory=deque)
    last_ack: float = 0.0
    #: A sender blocked on the window, and the ``acked`` count that lets it send.
    blocked: Waiter | None = None
    blocked_until: int = 0
    #: The selectors (sets of connections read together) this connection is in.
    selectors: list[Selector] = field(default_factory=list)

    def next_time(self) -> float | None:
        return self.inbox[0][0] if self.inbox else None


class Selector:
    """Connections read together (a network thread's): every message arrived on any of them, in one heap.

    The earliest message on any of the connections is the top of the heap, found without looking at each
    connection, and a thread waiting on them waits here, not on every connection. An entry whose message was read
    through another receive (one connection alone) is dropped when it comes to the top.
    """

    __slots__ = ("conns", "heap", "rebuild_at", "waiters")

    def __init__(self, conns: list[SimConn]) -> None:
        self.conns = conns
        self.heap: list[tuple[float, int, SimConn]] = []
        self._rebuild()
        self.waiters: list[Waiter] = []
        for c in conns:
            c.selectors.append(self)

    def _rebuild(self) -> None:
        """The heap from the messages now in the connections' inboxes (entries read elsewhere dropped)."""
        self.heap = [(t, seq, c) for c in self.conns for t, seq, _ in c.inbox]
        heapq.heapify(self.heap)
        self.rebuild_at = 2 * len(self.heap) + 64

    def push(self, entry: tuple[float, int, SimConn]) -> None:
        """A message arrived on one of the connections."""
        heapq.heappush(self.heap, entry)
        if len(self.heap) > self.rebuild_at:  # messages read through other receives pile up: drop them
            self._rebuild()

    def _top(self) -> tuple[float, int, SimConn] | None:
        heap = self.heap
        while heap:
            top = heap[0]
            inbox = top[2].inbox
            if inbox and inbox[0][1] == top[1]:
                return top
            heapq.heappop(heap)  # read through another receive
        return None

    def ready(self, now: float) -> tuple[SimConn, Any] | None:
        """The earliest message already arrived on any connection, removed from its inbox (as ``ConnScan.ready``)."""
        top = self._top()
        if top is None or top[0] > now:
            return None
        heapq.heappop(self.heap)
        conn = top[2]
        return conn, heapq.heappop(conn.inbox)[2]

    def watch(self, waiter: Waiter, env: simpy.Environment) -> None:
        """Wake ``waiter`` at the next message's arrival on any of the connections."""
        self.waiters.append(waiter)
        top = self._top()
        if top is not None:
            waiter.wake_at(env, top[0])

    def unwatch(self, waiter: Waiter) -> None:
        self.waiters.remove(waiter)


class ConnScan:
    """A few connections read together, looked at one by one (a selector is not worth keeping for them)."""

    __slots__ = ("conns",)

    def __init__(self, conns: list[SimConn]) -> None:
        self.conns = conns

    def ready(self, now: float) -> tuple[SimConn, Any] | None:
        """The earliest message already arrived on any of the connections, removed from its inbox."""
        best = None
        for c in self.conns:
            if c.inbox and c.inbox[0][0] <= now and (best is None or c.inbox[0] < best.inbox[0]):
                best = c
        if best is None:
            return None
        return best, heapq.heappop(best.inbox)[2]

    def watch(self, waiter: Waiter, env: simpy.Environment) -> None:
        for c in self.conns:
            c.waiters.append(waiter)
            nxt = c.next_time()
            if nxt is not None:
                waiter.wake_at(env, nxt)

    def unwatch(self, waiter: Waiter) -> None:
        for c in self.conns:
            c.waiters.remove(waiter)


@dataclass(eq=False)
class SimListener:
    handle: Listener
    pending: deque[tuple[float, SimConn]] = field(default_factory=deque)
    waiters: list[Waiter] = field(default_factory=list)


class SocketLayer:
    """Every host's TCP stack and the links TCP uses (its own timelines, e.g. IPoIB or Ethernet)."""

    def __init__(
        self, env: simpy.Environment, profile: Profile, ids: count, window_bytes: int = TCP_WINDOW_BYTES
    ) -> None:
        if window_bytes < 1:
            raise ValueError(f"window_bytes must be >= 1, got {window_bytes}")
        tcp = profile.tcp
        self.env = env
        self.ids = ids
        self.seq = count()
        self.ns_per_byte = 8.0 / tcp.data_rate_gbps
        self.mss = tcp.mtu_bytes - 52  # IPv4 20 + TCP 20 + timestamps 12
        self.frame_overhead = tcp.frame_overhead_bytes
        self.latency_ns = tcp.latency_ns
        self.window_bytes = window_bytes
        #: Each host's link towards the network, and the network's link towards it.
        self.uplinks: dict[str, Timeline] = {}
        self.downlinks: dict[str, Timeline] = {}
        #: The RDMA fabric, when TCP shares its links and it has racks (kdsim.fabric.Fabric.spine_links).
        self.spine: Any = None
        self.listeners: dict[str, SimListener] = {}
        self.connect_waiters: dict[str, list[Waiter]] = {}
        self.bytes_sent = 0
        self._selectors: dict[tuple[int, ...], Selector] = {}
        self._by_list: dict[int, tuple[Any, list[Any], Selector]] = {}

    def selector(self, handles: list[Any] | tuple[Any, ...], by_id: dict[int, SimConn]) -> Selector:
        """The selector of the connections ``handles`` names: one per distinct set, made on first use.

        A thread that passes the same unchanged list each time (a network thread's) finds it without reading
        the list's ids (one C-level comparison with the list it passed last time).
        """
        hit = self._by_list.get(id(handles))
        if hit is not None and hit[0] is handles and hit[1] == handles:
            return hit[2]
        key = tuple(h.conn_id for h in handles)
        sel = self._selectors.get(key)
        if sel is None:
            sel = self._selectors[key] = Selector([by_id[k] for k in key])
        if len(self._by_list) >= 4096:  # lists made anew for each receive: forget them, the key finds the selector
            self._by_list.clear()
        self._by_list[id(handles)] = (handles, handles[:], sel)  # a copy to compare with (a tuple is its own)
        return sel

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
        if self.spine is not None and dst != src:  # TCP on the RDMA fabric's links, racks and all
            for tl in self.spine.spine_links(src, dst):
                start, end = tl.reserve(start, wire_ns, end)
        if dst != src:
            # The receiver's downlink serves the message from when its first frame can
            # reach it; its last frame leaves no earlier than it left the uplink.
            _, end = _link(self.downlinks, dst, "->{}.tcp").reserve(start, wire_ns, end)
        arrival = max(end + self.latency_ns, peer.last_arrival)  # TCP delivers in order
        peer.last_arrival = arrival
        seq = next(self.seq)
        heapq.heappush(peer.inbox, (arrival, seq, (message, nbytes)))
        for waiter in peer.waiters:
            waiter.wake_at(self.env, arrival)
        for sel in peer.selectors:
            sel.push((arrival, seq, peer))
            for waiter in sel.waiters:
                waiter.wake_at(self.env, arrival)
        peer.sent += nbytes
        self.bytes_sent += nbytes
        return arrival

    # --- flow control ---------------------------------------------------------------

    def _threshold(self, rcv: SimConn, nbytes: int) -> int:
        """The ``acked`` count from which ``nbytes`` more fit in ``rcv``'s window (all acked: the connection empty)."""
        return rcv.sent - max(self.window_bytes - nbytes, 0)

    def room(self, conn: SimConn, nbytes: int, when: float) -> bool:
        """Whether ``nbytes`` may be sent on ``conn`` at ``when``: the window the sender knows of has room."""
        rcv = conn.peer
        assert rcv is not None
        acks = rcv.acks
        while acks and acks[0][0] <= when:  # window updates that reached the sender by ``when``
            rcv.acked = acks.popleft()[1]
        return rcv.acked >= self._threshold(rcv, nbytes)

    def wait_room(self, conn: SimConn, nbytes: int, waiter: Waiter) -> None:
        """Wake ``waiter`` once, when the window has room for ``nbytes``: at an ACK already known, or a later read's."""
        rcv = conn.peer
        assert rcv is not None
        need = self._threshold(rcv, nbytes)
        for at, upto in rcv.acks:  # acknowledgements still on their way to the sender, in order
            if upto >= need:
                waiter.wake_at(self.env, at)
                return
        rcv.blocked, rcv.blocked_until = waiter, need

    def consumed(self, conn: SimConn, nbytes: int, when: float) -> None:
        """The receiving thread read ``nbytes`` from ``conn`` at ``when``: the sender learns it one latency later."""
        conn.read += nbytes
        at = max(when + self.latency_ns, conn.last_ack)  # cumulative ACKs arrive in order
        conn.last_ack = at
        conn.acks.append((at, conn.read))
        blocked = conn.blocked
        if blocked is not None and conn.read >= conn.blocked_until:
            conn.blocked = None
            blocked.wake_at(self.env, at)

    def utilisation(self, now: float) -> dict[str, dict[str, float]]:
        """Per host, the busy fraction of its TCP uplink and downlink up to ``now``."""
        out: dict[str, dict[str, float]] = {}
        for kind, links in (("tcp_uplink", self.uplinks), ("tcp_downlink", self.downlinks)):
            for host, link in links.items():
                out.setdefault(host, {})[kind] = link.busy_ns / now if now else 0.0
        return out


def _link(links: dict[str, Timeline], host: str, name: str) -> Timeline:
    """``host``'s link in ``links``, made on first use (``name`` is formatted with the host)."""
    link = links.get(host)
    if link is None:
        link = links[host] = Timeline(name.format(host))
    return link
