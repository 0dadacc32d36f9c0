"""The out-of-band rendezvous: a key-value store over TCP on 127.0.0.1.

kdreal's parent process runs a :class:`RendezvousServer`; every role process holds
one :class:`RendezvousClient` connection for its whole life and uses it for
:class:`kdlab.ops.Publish` (store a value once under a key) and
:class:`kdlab.ops.Lookup` (block until a key is published, then return its value).
Values travel pickled and are stored as bytes.

Like kdsim, the server detects deadlock: when every role that is still running
waits in a lookup for a key nobody published, no one can ever publish it, so all
those lookups fail with :class:`RendezvousDeadlock` naming who waits for what.
A role counts as running until its connection closes; a lookup whose key has been
published counts as waiting no longer, even before its thread wakes up.

Wire format: each message is a 4-byte big-endian length and a pickled tuple.
Requests ``("hello", role)``, ``("publish", key, value_bytes)``, ``("lookup", key,
timeout_s | None)``; replies ``("ok", payload)`` or ``(error_kind, message)``.
"""

from __future__ import annotations

import pickle
import socket
import socketserver
import struct
import threading
from typing import Any

_LEN = struct.Struct(">I")


class RendezvousDeadlock(RuntimeError):
    """Every running role waits for a key that nobody has published."""


def send_msg(sock: socket.socket, msg: tuple[Any, ...]) -> None:
    """Send one length-prefixed pickled message."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LEN.pack(len(data)) + data)


def recv_msg(sock: socket.socket) -> tuple[Any, ...] | None:
    """Receive one message, or None if the peer closed the connection."""
    head = recv_exact(sock, _LEN.size)
    if head is None:
        return None
    body = recv_exact(sock, _LEN.unpack(head)[0])
    if body is None:
        return None
    return pickle.loads(body)


def recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    """Exactly ``n`` bytes from ``sock``, or None if the peer closed the connection first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            return None
        got += k
    return buf


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


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        store = self.server.store
        role = "?"
        try:
            while (msg := recv_msg(self.request)) is not None:
                kind = msg[0]
                if kind == "hello":
                    role = msg[1]
                elif kind == "publish":
                    send_msg(self.request, self._publish(store, msg[1], msg[2]))
                elif kind == "lookup":
                    send_msg(self.request, self._lookup(store, role, msg[1], msg[2]))
                else:
                    send_msg(self.request, ("error", f"unknown rendezvous request {kind!r}"))
        except OSError:
            pass
        finally:
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

    def __init__(self, roles: int) -> None:
        self.store = _Store(roles)
        super().__init__(("127.0.0.1", 0), _Handler)


class RendezvousServer:
    """The parent's key-value store for ``roles`` role processes.

    The socket listens from construction on, so children forked before
    :meth:`start` can connect at once (the kernel queues them until it runs).
    """

    def __init__(self, roles: int) -> None:
        self._server = _Server(roles)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

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
        self._server.server_close()

    def close_in_child(self) -> None:
        """In a forked child: drop the inherited listening socket."""
        self._server.socket.close()


class RendezvousClient:
    """One role's connection to the rendezvous."""

    def __init__(self, address: tuple[str, int], role: str) -> None:
        self._sock = socket.create_connection(address)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_msg(self._sock, ("hello", role))

    def _call(self, *msg: Any) -> Any:
        send_msg(self._sock, msg)
        reply = recv_msg(self._sock)
        if reply is None:
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
        self._call("publish", key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))

    def lookup(self, key: str, timeout_s: float | None = None) -> Any:
        """Block until ``key`` is published (or deadlock, or ``timeout_s``), return its value."""
        return pickle.loads(self._call("lookup", key, timeout_s))

    def close(self) -> None:
        self._sock.close()
