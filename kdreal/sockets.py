"""Real TCP sockets for kdlab's socket operations (TcpListen, TcpAccept, TcpConnect, TcpSend, TcpRecv).

A listener binds an ephemeral port on the host's address and publishes it at the
rendezvous under ``tcp:<service>``, so a connecting role finds it by name. A
message travels as one frame: an 8-byte big-endian length, then the message
pickled. ``TcpRecv`` on several connections waits with ``select`` and reads one
whole frame from the first readable connection (rotating, so that none starves).

Fetch responses marked ``zero_copy`` carry the batch bytes after the pickled
header as separate buffers of one ``sendmsg`` call (scatter-gather from the log's
memory, without joining them into one buffer first).
"""

from __future__ import annotations

import pickle
import select
import socket
import struct
import threading
import time
from itertools import count
from typing import Any

from kdlab.verbs import Connection, Listener
from kdreal.rendezvous import recv_exact

_LEN = struct.Struct(">Q")
_BATCHES = struct.Struct(">I")


class SocketTable:
    """The sockets of one host process, behind the handles the datapath sees."""

    def __init__(self, host: str, address: str = "127.0.0.1") -> None:
        self.host = host
        self.address = address
        self._ids = count(1)
        self._listeners: dict[int, socket.socket] = {}
        self._conns: dict[int, socket.socket] = {}
        self._lock = threading.Lock()
        self._rotate = 0
        self._closed: set[int] = set()

    def listen(self, service: str) -> tuple[Listener, tuple[str, int]]:
        sock = socket.create_server((self.address, 0), backlog=128)
        with self._lock:
            lid = next(self._ids)
            self._listeners[lid] = sock
        return Listener(lid, service, self.host), sock.getsockname()[:2]

    def accept(self, listener: Listener, timeout_s: float | None) -> Connection:
        sock = self._listeners[listener.listener_id]
        if timeout_s is not None and not select.select([sock], [], [], timeout_s)[0]:
            raise TimeoutError(f"TcpAccept: no connection to {listener.service!r} within {timeout_s} s")
        conn, _ = sock.accept()
        return self._add(conn, listener.service, "?")

    def connect(self, service: str, address: tuple[str, int]) -> Connection:
        return self._add(socket.create_connection(address), service, "?")

    def _add(self, sock: socket.socket, service: str, peer: str) -> Connection:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            cid = next(self._ids)
            self._conns[cid] = sock
        return Connection(cid, self.host, peer, service)

    def send(self, conn: Connection, message: Any, zero_copy: bool) -> None:
        sock = self._sock(conn)
        batches = getattr(message, "batches", None) if zero_copy else None
        if batches:  # header pickled without the batches; the batches follow as they lie in memory
            header = pickle.dumps((type(message), {**vars(message), "batches": None}), pickle.HIGHEST_PROTOCOL)
            sizes = b"".join(_BATCHES.pack(len(b)) for b in batches)
            parts = [_BATCHES.pack(len(batches)), sizes, header, *batches]
            total = sum(len(x) for x in parts)
            _sendmsg_all(sock, [_LEN.pack(total | 1 << 63), *parts])
        else:
            blob = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
            sock.sendall(_LEN.pack(len(blob)) + blob)

    def recv(self, conns: Any, timeout_s: float | None) -> tuple[Connection, Any] | None:
        handles = list(conns) if isinstance(conns, list | tuple) else [conns]
        if not handles:
            if timeout_s is None:
                threading.Event().wait()
            time.sleep(timeout_s or 0)
            return None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            live = [h for h in handles if h.conn_id not in self._closed]
            if not live:  # every peer hung up: a server thread idles, anyone else has lost its peer
                if timeout_s is None:
                    threading.Event().wait()
                raise ConnectionError(f"TcpRecv: the peer closed connection(s) {[h.service for h in handles]}")
            socks = [self._sock(h) for h in live]
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select(socks, [], [], left)
            if not readable:
                return None
            self._rotate += 1
            order = sorted(range(len(socks)), key=lambda i: (i - self._rotate) % len(socks))
            i = next(i for i in order if socks[i] in readable)
            frame = _read_frame(socks[i], live[i])
            if frame is not _EOF:
                return live[i], frame
            self._closed.add(live[i].conn_id)  # the peer closed between messages: drop it, as a server does

    def _sock(self, conn: Connection) -> socket.socket:
        try:
            return self._conns[conn.conn_id]
        except KeyError:
            raise ValueError(f"connection {conn} does not belong to host {self.host!r}") from None

    def close(self) -> None:
        for sock in [*self._conns.values(), *self._listeners.values()]:
            sock.close()


def _sendmsg_all(sock: socket.socket, parts: list[bytes]) -> None:
    views = [memoryview(p) for p in parts if len(p)]
    while views:
        sent = sock.sendmsg(views[:512])
        while sent and views:
            if sent >= len(views[0]):
                sent -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][sent:]
                sent = 0


_EOF = object()


def _read_frame(sock: socket.socket, conn: Connection) -> Any:
    """One whole message, or ``_EOF`` if the peer closed the connection before it began."""
    first = sock.recv(_LEN.size)
    if not first:
        return _EOF
    head = first + (_recv_exact(sock, _LEN.size - len(first), conn) if len(first) < _LEN.size else b"")
    (length,) = _LEN.unpack(head)
    if not length >> 63:
        return pickle.loads(_recv_exact(sock, length, conn))
    body = memoryview(_recv_exact(sock, length & ~(1 << 63), conn))
    (n,) = _BATCHES.unpack_from(body, 0)
    sizes = [_BATCHES.unpack_from(body, 4 + 4 * i)[0] for i in range(n)]
    at = 4 + 4 * n
    header_len = len(body) - at - sum(sizes)
    cls, fields = pickle.loads(body[at : at + header_len])
    at += header_len
    batches = []
    for size in sizes:
        batches.append(bytes(body[at : at + size]))
        at += size
    return cls(**{**fields, "batches": batches})


def _recv_exact(sock: socket.socket, n: int, conn: Connection) -> bytearray:
    buf = recv_exact(sock, n)
    if buf is None:
        raise ConnectionError(f"TcpRecv: the peer closed connection {conn.conn_id} ({conn.service})")
    return buf
