"""TCP and RDMA traffic of one host share its link when the profile says so (``tcp.shares_rdma_link``: IPoIB)."""

from __future__ import annotations

from typing import Any

import pytest

from kdlab.ops import Clock, Lookup, PostSend, Publish, Sleep, TcpAccept, TcpConnect, TcpListen, TcpRecv, TcpSend
from kdlab.program import Role
from kdlab.verbs import Opcode, SendWR
from tests.helpers import idle_until, make_rc_pair, run_sim, sim_profile, wait_n

WRITE = 8 << 20  # 8 MiB: ~0.68 ms on the EDR wire


def _writer(side: Any) -> Any:
    wr = SendWR(1, Opcode.RDMA_WRITE, [side.mr.sge(0, WRITE)], remote_addr=side.peer.addr, rkey=side.peer.rkey)
    yield PostSend(side.qp, wr)
    yield Publish("posted", True)
    yield from wait_n(side.send_cq, 1)
    yield Publish("done", True)


def _tcp_sender() -> Any:
    conn = yield TcpConnect("svc")
    yield Lookup("posted")
    yield Sleep(20_000.0)  # the WRITE is on the wire by now
    yield TcpSend(conn, (yield Clock()), 65536)


def _tcp_receiver() -> Any:
    conn = yield TcpAccept((yield TcpListen("svc")))
    _, sent = yield TcpRecv(conn)
    return (yield Clock()) - sent


def _took(shared: int) -> float:
    roles = make_rc_pair(_writer, lambda side: idle_until("done"), mr_bytes=WRITE)
    roles += [Role("tcp_a", "a", _tcp_sender), Role("tcp_b", "b", _tcp_receiver)]
    out, eng = run_sim(roles, overrides={"tcp.shares_rdma_link": shared}, switch=True)
    assert (eng.sockets.uplinks["a"] is eng.fabric.uplink["a"]) == bool(shared)  # one link, so one busy count
    assert (eng.sockets.downlinks["b"] is eng.fabric.downlink["b"]) == bool(shared)
    return out["tcp_b"]


def test_a_tcp_message_waits_behind_rdma_on_a_shared_link_and_not_on_a_separate_one() -> None:
    prof = sim_profile()
    rdma_wire_us = WRITE * 8 / prof.link.data_rate_gbps / 1e3
    alone, shared = _took(0) / 1e3, _took(1) / 1e3
    assert alone < 80  # its copies in and out, its wire time, the latency and the receiver's wake-up
    # on the shared link it waits for the rest of the WRITE (which began ~20 us before it), then goes
    assert shared == pytest.approx(alone + rdma_wire_us - 20, rel=0.05)
