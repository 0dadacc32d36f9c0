"""kdsim's kernel TCP adds up to what was measured: a small ping-pong takes the round trip the source gives.

``tcp.latency_ns`` is the part of a one-way trip that kdsim does not charge elsewhere: the
sources' round trips (15-30 us, one way ~10 us; docs/kafka-host-sources.md sec. 3) include
the blocked receiver's wake-up and both ends' system calls, which kdsim charges as
``host.wakeup_ns`` and ``host.syscall_ns``. Counting the wake-up twice once gave 30.5 us.
"""

from __future__ import annotations

import pytest

from kdlab.ops import Clock, TcpAccept, TcpConnect, TcpListen, TcpRecv, TcpSend
from kdlab.program import Role
from kdsim.engine import SimEngine
from kdsim.profile import load_profile


def _echo(n: int):
    conn = yield TcpAccept((yield TcpListen("svc")))
    for _ in range(n):
        _, message = yield TcpRecv(conn)
        yield TcpSend(conn, message, 64)


def _ping(n: int):
    conn = yield TcpConnect("svc")
    rtts = []
    for i in range(n):
        t0 = yield Clock()
        yield TcpSend(conn, i, 64)
        yield TcpRecv(conn)
        rtts.append((yield Clock()) - t0)
    return rtts


@pytest.mark.parametrize("profile", ["cx4-edr-100g", "cx3-fdr-56g", "eth-10g", "eth-25g", "eth-100g"])
def test_a_small_tcp_ping_pong_takes_the_sources_round_trip(profile: str) -> None:
    rtts = SimEngine(load_profile(profile)).run(
        [Role("echo", "h1", _echo, {"n": 20}), Role("ping", "h2", _ping, {"n": 20})]
    )
    rtt_us = sorted(rtts["ping"])[10] / 1e3
    assert 15 <= rtt_us <= 30  # the sources' range
    assert rtt_us == pytest.approx(20.0, abs=1.5)  # one way ~10 us
