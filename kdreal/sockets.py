"""Real TCP sockets for kdlab's socket operations (TcpListen, TcpAccept, TcpConnect, TcpSend, TcpRecv).

A listener binds an ephemeral port on the host's address and publishes it at the
rendezvous under ``tcp:<service>``, so a connecting role finds it by name. A
connection starts with the run's hello (:mod:`kdreal.wire`): ``TcpAccept`` closes
and logs a connection that does not carry the run's token and waits for the next.
A message travels as one frame: an 8-byte big-endian length (at most
:data:`MAX_FRAME` bytes), then the message encoded by :mod:`kdlab.codec`.
``TcpRecv`` on several connections waits with ``select`` and reads one whole frame
from the first readable connection (rotating, so that none starves).

Fetch responses marked ``zero_copy`` carry the batch bytes after the encoded header
(the message with no batches) as separate buffers of one ``sendmsg`` call
(scatter-gather from the log's memory, without joining them into one buffer first);
the frame's length has its top bit set, and the body starts with the batch count and
sizes.
"""

from __future__ import annotations

import dataclasses
import select
import socket
import struct
import threading
import time
from itertools import count
from typing import Any

from kdlab.codec import encode
from kdlab.verbs import Connection, Listener
from kdreal.wire import HELLO_TIMEOUT_S, Framing, WireError, check_hello, decode_body, hello, recv_exact, refuse

#: Largest message: a fetch response or produce request of any configured size fits.
MAX_FRAME = 1 << 30
_ZERO_COPY = 1 << 63
_FRAMES = Framing(">Q", MAX_FRAME)
_BATCHES = struct.Struct(">I")


class SocketTable:
    """The sockets of one host process, behind the handles the datapath sees; ``token``: the run's."""

    def __init__(self, host: str, token: bytes, address: str = "127.0.0.1") -> None:
        self.host = host
        self.address = address
        self._hello = hello(token)
        self._token = token
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
        """The next connection that proves the run's token (others are closed and logged)."""
        sock = self._listeners[listener.listener_id]
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if left is not None and not select.select([sock], [], [], left)[0]:
                raise TimeoutError(f"TcpAccept: no connection to {listener.service!r} within {timeout_s} s")
            conn, _ = sock.accept()
            try:
                check_hello(conn, self._token, HELLO_TIMEOUT_S)
            except OSError as err:  # WireError included
                refuse(conn, f"{listener.service!r} on {self.host}", err)
                continue
            return self._add(conn, listener.service, "?")

    def connect(self, service: str, address: tuple[str, int]) -> Connection:
        sock = socket.create_connection(address)
        sock.sendall(self._hello)
        return self._add(sock, service, "?")

    def _add(self, sock: socket.socket, service: str, peer: str) -> Connection:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            cid = next(self._ids)
            self._conns[cid] = sock
        return Connection(cid, self.host, peer, service)

    def send(self, conn: Connection, message: Any, zero_copy: bool) -> None:
        sock = self._sock(conn)
        batches = getattr(message, "batches", None) if zero_copy else None
        if batches and dataclasses.is_dataclass(message):  # the header without the batches; they follow as they lie
            header = encode(dataclasses.replace(message, batches=[]))
            sizes = b"".join(_BATCHES.pack(len(b)) for b in batches)
            parts = [_BATCHES.pack(len(batches)), sizes, header, *batches]
            total = _FRAMES.check_length(sum(len(x) for x in parts))
            _sendmsg_all(sock, [_FRAMES.head.pack(total | _ZERO_COPY), *parts])
        else:
            sock.sendall(_FRAMES.frame(message))

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
    """One whole message, or ``_EOF`` if the peer closed the connection before it began.

    A frame over :data:`MAX_FRAME`, cut short or not a message raises :class:`WireError`.
    """
    first = sock.recv(_FRAMES.head.size)
    if not first:
        return _EOF
    head = first + (_recv_exact(sock, _FRAMES.head.size - len(first), conn) if len(first) < _FRAMES.head.size else b"")
    (length,) = _FRAMES.head.unpack(head)
    body = memoryview(_recv_exact(sock, _FRAMES.check_length(length & ~_ZERO_COPY), conn))
    if not length & _ZERO_COPY:
        return decode_body(body)
    (n,) = _BATCHES.unpack_from(body, 0) if len(body) >= 4 else (-1,)
    if not 0 <= n <= (len(body) - 4) // 4:
        raise WireError(f"TcpRecv: a frame of {len(body)} B cannot hold {n} batches ({conn.service})")
    sizes = struct.unpack_from(f">{n}I", body, 4)
    at = 4 + 4 * n
    header_len = len(body) - at - sum(sizes)
    if header_len < 0:
        raise WireError(f"TcpRecv: batches of {sum(sizes)} B overrun a frame of {len(body)} B ({conn.service})")
    header = decode_body(body[at : at + header_len])
    if not (dataclasses.is_dataclass(header) and hasattr(header, "batches")):
        raise WireError(f"TcpRecv: a zero-copy frame's header is a {type(header).__name__}, not a message with batches")
    at += header_len
    batches = []
    for size in sizes:
        batches.append(bytes(body[at : at + size]))
        at += size
    return dataclasses.replace(header, batches=batches)


def _recv_exact(sock: socket.socket, n: int, conn: Connection) -> bytearray:
    buf = recv_exact(sock, n)
    if buf is None:
        raise ConnectionError(f"TcpRecv: the peer closed connection {conn.conn_id} ({conn.service})")
    return buf
