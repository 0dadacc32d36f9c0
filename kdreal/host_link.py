"""A host process's link to the rendezvous across machines (:mod:`kdreal.cluster`), and a task's watcher.

The server side is :mod:`kdreal.rendezvous` (``hello-host``, ``report``, ``clock``,
``hello-watch``); the protocol is described there.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from kdreal.rendezvous import FRAMES
from kdreal.wire import CLOSED, hello, keepalive


class HostLink:
    """A host process's own connection to the rendezvous: outcome reports and the server's clock.

    ``watch=True`` makes a watcher's connection instead: it sends nothing after its hello,
    and its end (the server closing, or vanishing) tells the watcher that the run is over.
    """

    def __init__(self, address: tuple[str, int], host: str, token: bytes, *, watch: bool = False) -> None:
        self._sock = socket.create_connection(address)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        keepalive(self._sock)
        self._lock = threading.Lock()
        self.host = host
        try:
            if watch:
                self._sock.sendall(hello(token) + FRAMES.frame(("hello-watch", host)))
            else:
                self._sock.sendall(hello(token))
                self._call("hello-host", host)
        except BaseException:
            self._sock.close()
            raise

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def _call(self, *msg: Any) -> Any:
        with self._lock:
            FRAMES.send(self._sock, msg)
            reply = FRAMES.recv(self._sock)
        if reply is CLOSED:
            raise ConnectionError("rendezvous server closed the connection")
        kind, payload = reply
        if kind != "ok":
            raise RuntimeError(payload)
        return payload

    def report(self, role: str, status: str, payload: bytes) -> None:
        """Hand one role's outcome to the engine; returns once the server has queued it."""
        self._call("report", self.host, role, status, payload)

    def offset(self, samples: int = 16, wall: bool = False) -> tuple[int, int]:
        """The server's clock minus this host's, and its uncertainty (half the best round trip), in ns.

        NTP's rule: of several request/reply exchanges the one with the shortest round
        trip bounds the offset best; its midpoint is the estimate. The clock is
        ``perf_counter_ns`` (CLOCK_MONOTONIC: counts from boot, so two machines' differ by
        their boot times), or with ``wall`` ``time_ns`` (the clock chrony and PTP keep in step).
        """
        now = time.time_ns if wall else time.perf_counter_ns
        best: tuple[int, int] | None = None
        for _ in range(samples):
            t0 = now()
            server = int(self._call("clock")[1 if wall else 0])
            t1 = now()
            if best is None or t1 - t0 < best[1] * 2:
                best = (server - (t0 + t1) // 2, (t1 - t0) // 2)
        assert best is not None
        return best

    def close(self) -> None:
        self._sock.close()
