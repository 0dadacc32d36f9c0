"""kdreal's wire: the run token, the hello that proves it, and bounded length-prefixed frames.

Every TCP connection of a run (a role to the rendezvous, a role to another role's
listener) begins with a hello: :data:`MAGIC` and the run's token, a random secret
the engine makes for each run (:func:`new_token`) and hands to the role processes it
forks. The accepting side reads exactly that many bytes, within
:data:`HELLO_TIMEOUT_S`, and compares them with :func:`hmac.compare_digest`; a
connection without the token is closed and reported on stderr (:func:`refuse`), and nothing it
sent is ever decoded. Only then do frames follow: a big-endian length and a body of
at most a stated size, whose values :mod:`kdlab.codec` encodes (msgpack, registered
message types only; never pickle). The one exception: across machines a host process
reports its roles' return values to the engine pickled, inside a frame, as Dask's own
tasks are (:mod:`kdreal.cluster`); the engine unpickles only what came after the token.
A frame over the limit, a truncated one or an undecodable body is a :class:`WireError`
(a :class:`ConnectionError`).
"""

from __future__ import annotations

import contextlib
import hmac
import secrets
import socket
import struct
import sys
from typing import Any

from kdlab.codec import CodecError, decode, encode

#: Bytes of a run token.
TOKEN_BYTES = 32
#: What a hello starts with: the protocol and its version.
MAGIC = b"kdreal\x00\x01"
#: Seconds an accepted connection has to send its hello.
HELLO_TIMEOUT_S = 10.0


class WireError(ConnectionError):
    """A peer without the token, or a frame that is too large, cut short or not a message."""


def new_token() -> bytes:
    """A fresh random run token."""
    return secrets.token_bytes(TOKEN_BYTES)


def hello(token: bytes) -> bytes:
    """What a connecting side sends first."""
    if len(token) != TOKEN_BYTES:
        raise ValueError(f"a run token has {TOKEN_BYTES} bytes, got {len(token)}")
    return MAGIC + token


def check_hello(sock: socket.socket, token: bytes, timeout_s: float | None = HELLO_TIMEOUT_S) -> None:
    """Read the peer's hello (within ``timeout_s``); :class:`WireError` unless it carries ``token``."""
    want = hello(token)
    old = sock.gettimeout()
    sock.settimeout(timeout_s)
    try:
        got = recv_exact(sock, len(want))
    except TimeoutError:
        raise WireError(f"no hello within {timeout_s} s") from None
    finally:
        sock.settimeout(old)
    if got is None:
        raise WireError("closed before its hello")
    if not hmac.compare_digest(bytes(got), want):
        raise WireError("wrong hello (not this run's token)")


def refuse(sock: socket.socket, what: str, err: Exception) -> None:
    """Close a connection that failed its hello or sent a bad frame, and say why on stderr.

    (A role process's stderr is its host log, which a failed run shows; the parent's
    is the user's terminal.)
    """
    try:
        host, port = sock.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:
        peer = "?"
    print(f"kdreal: refused a connection to {what} from {peer}: {err}", file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


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


class Framing:
    """Frames of a ``prefix``-packed length (a :class:`struct.Struct`) and at most ``limit`` body bytes."""

    def __init__(self, prefix: str, limit: int) -> None:
        self.head = struct.Struct(prefix)
        self.limit = limit

    def frame(self, value: Any) -> bytes:
        """``value`` encoded, with its length in front."""
        body = encode(value)
        if len(body) > self.limit:
            raise WireError(f"a {len(body)} B message exceeds the {self.limit} B frame limit")
        return self.head.pack(len(body)) + body

    def send(self, sock: socket.socket, value: Any) -> None:
        sock.sendall(self.frame(value))

    def check_length(self, length: int) -> int:
        if length > self.limit:
            raise WireError(f"a frame of {length} B exceeds the {self.limit} B limit")
        return length

    def recv_body(self, sock: socket.socket) -> bytearray | None:
        """One frame's body, or None if the peer closed the connection between frames."""
        head = recv_exact(sock, self.head.size)
        if head is None:
            return None
        length = self.check_length(self.head.unpack(head)[0])
        body = recv_exact(sock, length)
        if body is None:
            raise WireError(f"connection closed inside a frame of {length} B")
        return body

    def recv(self, sock: socket.socket) -> Any:
        """One decoded frame; :data:`CLOSED` if the peer closed the connection between frames."""
        body = self.recv_body(sock)
        return CLOSED if body is None else decode_body(body)


def decode_body(body: bytes | bytearray | memoryview) -> Any:
    try:
        return decode(body)
    except CodecError as err:
        raise WireError(str(err)) from None


#: What :meth:`Framing.recv` returns when the peer closed the connection between frames.
CLOSED: Any = type("Closed", (), {"__repr__": lambda self: "CLOSED"})()


def keepalive(sock: socket.socket, idle_s: int = 10, interval_s: int = 5, probes: int = 3) -> None:
    """TCP keepalive: a peer whose machine or network vanished (no FIN) is noticed within ~25 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for opt, value in (("TCP_KEEPIDLE", idle_s), ("TCP_KEEPINTVL", interval_s), ("TCP_KEEPCNT", probes)):
        if hasattr(socket, opt):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, opt), value)
