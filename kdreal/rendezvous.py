"""The out-of-band rendezvous: a key-value store over TCP (127.0.0.1, or an address every host reaches).

kdreal's parent process runs a :class:`RendezvousServer`; every role process holds
one :class:`RendezvousClient` connection for its whole life and uses it for
:class:`kdlab.ops.Publish` (store a value once under a key) and
:class:`kdlab.ops.Lookup` (block until a key is published, then return its value).
The client encodes values with :mod:`kdlab.codec`; the server stores and returns
those bytes without decoding them.

Like kdsim, the server detects deadlock: when every role that is still running
waits in a lookup for a key nobody published, no one can ever publish it, so all
those lookups fail with :class:`RendezvousDeadlock` naming who waits for what.
A role counts as running until its connection closes; a lookup whose key has been
published counts as waiting no longer, even before its thread wakes up.

Wire format (:mod:`kdreal.wire`): a connection starts with the run's hello (magic and
token; a connection without it is closed, logged and otherwise ignored), then frames
of a 4-byte big-endian length (at most :data:`MAX_FRAME` bytes) and a msgpack array.
Requests ``("hello", role)``, ``("publish", key, value_bytes)``, ``("lookup", key,
timeout_s | None)`` (a timeout of 0 peeks); replies ``("ok", payload)`` or ``(error_kind, message)``.

Across hosts (:mod:`kdreal.cluster`) each host process also holds one *host* connection,
``("hello-host", host)`` (answered; a second one for the same host is refused), which never
counts as a role: on it the host reports each role's outcome, ``("report", host, role,
status, payload_bytes)`` (queued for the engine in :attr:`RendezvousServer.reports`, then
:data:`LINK_CLOSED` when the connection ends), and reads the server's clocks, ``("clock",)``
-> ``[perf_counter_ns, time_ns]``. A watcher's connection, ``("hello-watch", host)``, sends
nothing more. When the server closes it shuts every open connection, so a host that still
runs sees the end of the run; connections use TCP keepalive, so a vanished peer is noticed.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import socketserver
import threading
import time
from typing import Any

from kdlab.codec import decode, encode
from kdreal.wire import CLOSED, Framing, WireError, check_hello, hello, keepalive, new_token, refuse

#: Largest rendezvous frame: published values are endpoints and keys, but a report carries a role's results.
MAX_FRAME = 1 << 28
#: A report's role name that says a host's link closed: its process ended, or the run did.
LINK_CLOSED = "\0link-closed"


#: The rendezvous's framing (also kdreal.host_link's).
FRAMES = Framing(">I", MAX_FRAME)


class RendezvousDeadlock(RuntimeError):
    """Every running role waits for a key that nobody has published."""


class _Store:
    """Published values, waiting lookups and the deadlock rule, under one condition variable."""

    def __init__(self, roles: int) -> None:
        self.cond = threading.Condition()
        self.values: dict[str, bytes] = {}
        self.running = roles
        self.waiting: dict[int, tuple[str, str]] = {}  # id(handler) -> (role, key)
        self.deadlock: str | None = None

    def check_deadlock(self) -> None:
        """Call with the lock held: declare deadlock if every running role waits for an unpublished key.

        A waiter whose key was published has not yet run (it needs this lock) but is
        no longer stuck: counting it would call a deadlock between a publish and the
        wake-up of its reader.
        """
        stuck = sorted((role, key) for role, key in self.waiting.values() if key not in self.values)
        if self.running > 0 and len(stuck) >= self.running and self.deadlock is None:
            who = ", ".join(f"{role} waits for {key!r}" for role, key in stuck)
            self.deadlock = f"deadlock: every running role waits for an unpublished rendezvous key: {who}"
            self.cond.notify_all()


def _request(msg: Any) -> tuple[str, Any, Any]:
    """A well-formed request as ``(kind, arg1, arg2)``; ValueError otherwise."""
    if isinstance(msg, list | tuple) and msg:
        kind, args = msg[0], msg[1:]
        if kind in ("hello", "hello-host", "hello-watch") and len(args) == 1 and isinstance(args[0], str):
            return kind, args[0], None
        if kind == "clock" and not args:
            return kind, None, None
        if (
            kind == "report"
            and len(args) == 4
            and all(isinstance(a, str) for a in args[:3])
            and isinstance(args[3], bytes)
        ):
            return kind, tuple(args[:3]), args[3]
        if kind == "publish" and len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], bytes):
            return kind, args[0], args[1]
        if kind == "lookup" and len(args) == 2 and isinstance(args[0], str):
            timeout = args[1]
            if timeout is None or (isinstance(timeout, int | float) and not isinstance(timeout, bool)):
                return kind, args[0], timeout
    raise ValueError(f"malformed rendezvous request {str(msg)[:100]!r}")


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        if not self.server.register(self.request):  # the server is closing: nothing more to serve
            return
        try:
            try:
                check_hello(self.request, self.server.token)
            except OSError as err:  # WireError included: not a role of this run; it never counts as one
                refuse(self.request, "the rendezvous", err)
                return
            self._serve()
        finally:
            self.server.unregister(self.request)

    def _serve(self) -> None:
        store, server = self.server.store, self.server
        role = "?"
        counted = True  # a role's connection; a host's or a watcher's is not one
        host = None
        try:
            while (msg := FRAMES.recv(self.request)) is not CLOSED:
                try:
                    kind, arg, arg2 = _request(msg)
                except ValueError as err:
                    FRAMES.send(self.request, ("error", str(err)))
                    continue
                if kind == "hello":
                    role = arg
                elif kind == "hello-host":
                    role, counted = f"host {arg}", False
                    if not server.claim_host(arg):  # a second process for one host (a task run twice): refused
                        FRAMES.send(self.request, ("error", f"host {arg} is already connected"))
                        break
                    host = arg
                    FRAMES.send(self.request, ("ok", None))
                elif kind == "hello-watch":
                    role, counted = f"watcher of {arg}", False
                elif kind == "clock":
                    FRAMES.send(self.request, ("ok", [time.perf_counter_ns(), time.time_ns()]))
                elif kind == "report":
                    server.reports.put((*arg, arg2))
                    FRAMES.send(self.request, ("ok", None))
                elif kind == "publish":
                    FRAMES.send(self.request, self._publish(store, arg, arg2))
                else:
                    FRAMES.send(self.request, self._lookup(store, role, arg, arg2))
        except WireError as err:
            refuse(self.request, f"the rendezvous ({role})", err)
        except OSError:
            pass
        finally:
            if host is not None:  # its process ended (or the run did): every report it sent is queued before this
                server.reports.put((host, LINK_CLOSED, "", b""))
            if counted:
                with store.cond:
                    store.running -= 1
                    store.check_deadlock()

    @staticmethod
    def _publish(store: _Store, key: str, value: bytes) -> tuple[str, Any]:
        with store.cond:
            if key in store.values:
                return ("value", f"Publish: key {key!r} was already published")
            store.values[key] = value
            store.cond.notify_all()
        return ("ok", None)

    def _lookup(self, store: _Store, role: str, key: str, timeout: float | None) -> tuple[str, Any]:
        with store.cond:
            if key in store.values:
                return ("ok", store.values[key])
            if timeout is not None and timeout <= 0:  # a peek: it never waits, so it never counts as waiting
                return ("timeout", f"Lookup: key {key!r} is not published")
            store.waiting[id(self)] = (role, key)
            store.check_deadlock()
            try:
                found = store.cond.wait_for(lambda: key in store.values or store.deadlock is not None, timeout)
            finally:
                del store.waiting[id(self)]
            if key in store.values:
                return ("ok", store.values[key])
            if store.deadlock is not None:
                return ("deadlock", store.deadlock)
            assert not found
            return ("timeout", f"Lookup: key {key!r} not published within {timeout} s")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads: none outlive a run
    allow_reuse_address = True
    # Every role connects at once, before the server accepts (its processes are forked first). With
    # socketserver's default backlog of 5 the kernel answers the overflow with SYN cookies, and a
    # role's second segment, arriving before a dropped first one was retransmitted, was reset.
    request_queue_size = 4096

    def __init__(self, roles: int, token: bytes, host: str) -> None:
        self.store = _Store(roles)
        self.token = token
        self.reports: queue.Queue[tuple[str, str, str, bytes]] = queue.Queue()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._hosts: set[str] = set()
        self._closing = False
        super().__init__((host, 0), _Handler)

    def register(self, sock: socket.socket) -> bool:
        """Track an accepted connection so that :meth:`shut_all` reaches it; False once closing."""
        with self._lock:
            if self._closing:
                return False
            self._open.add(sock)
        keepalive(sock)
        return True

    def unregister(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def claim_host(self, host: str) -> bool:
        """True the first time ``host`` connects its host link in this run."""
        with self._lock:
            first = host not in self._hosts
            self._hosts.add(host)
            return first

    def shut_all(self) -> None:
        """Refuse new connections and shut every open one (a host still running learns that the run is over)."""
        with self._lock:
            self._closing = True
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class RendezvousServer:
    """The parent's key-value store for ``roles`` role processes that know ``token``.

    The socket listens from construction on, so children forked before
    :meth:`start` can connect at once (the kernel queues them until it runs).
    ``token`` (default: a fresh one) is the run's secret (:mod:`kdreal.wire`). ``host`` is
    the address it listens on: 127.0.0.1 for one machine, else one every host reaches.
    """

    def __init__(self, roles: int, token: bytes | None = None, host: str = "127.0.0.1") -> None:
        self._server = _Server(roles, new_token() if token is None else token, host)
        self._thread: threading.Thread | None = None

    @property
    def reports(self) -> queue.Queue[tuple[str, str, str, bytes]]:
        """``(host, role, status, payload)`` for every outcome reported on a host connection, in arrival order."""
        return self._server.reports

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def token(self) -> bytes:
        return self._server.token

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="kdreal-rendezvous", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving, wake any lookup still waiting, join the handler threads."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        store = self._server.store
        with store.cond:
            store.deadlock = store.deadlock or "the rendezvous closed: the run is over"
            store.cond.notify_all()
        self._server.shut_all()
        self._server.server_close()

    def close_in_child(self) -> None:
        """In a forked child: drop the inherited listening socket."""
        self._server.socket.close()


class RendezvousClient:
    """One role's connection to the rendezvous at ``address``, proving the run's ``token``."""

    def __init__(self, address: tuple[str, int], role: str, token: bytes) -> None:
        self._sock = socket.create_connection(address)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(hello(token) + FRAMES.frame(("hello", role)))

    def _call(self, *msg: Any) -> Any:
        FRAMES.send(self._sock, msg)
        reply = FRAMES.recv(self._sock)
        if reply is CLOSED:
            raise ConnectionError("rendezvous server closed the connection")
        kind, payload = reply
        if kind == "ok":
            return payload
        if kind == "value":
            raise ValueError(payload)
        if kind == "deadlock":
            raise RendezvousDeadlock(payload)
        if kind == "timeout":
            raise TimeoutError(payload)
        raise RuntimeError(payload)

    def publish(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``; ValueError if the key was published before."""
        self._call("publish", key, encode(value))

    def lookup(self, key: str, timeout_s: float | None = None) -> Any:
        """Block until ``key`` is published (or deadlock, or ``timeout_s``), return its value."""
        return decode(self._call("lookup", key, timeout_s))

    def peek(self, key: str) -> Any:
        """``key``'s value if it is published now, else None (never waits)."""
        try:
            return decode(self._call("lookup", key, 0.0))
        except TimeoutError:
            return None

    def close(self) -> None:
        self._sock.close()
