"""Selective signaling (kdlab.sendq): every quarter-depth WR is signaled, reaped, and errors still surface."""

from __future__ import annotations

import pytest

from kdlab.ops import Publish
from kdlab.sendq import SendQueue
from kdlab.verbs import Opcode, SendWR
from tests.helpers import idle_until, make_rc_pair, run_sim

DEPTH = 64


def _writer(side, n: int, rkey_offset: int = 0):
    sq = SendQueue(side.qp, side.send_cq, DEPTH, "writer")
    most = 0
    for i in range(n):
        wr = SendWR(i, Opcode.RDMA_WRITE, [side.mr.sge(8 * (i % 64), 8)], remote_addr=side.peer.addr + 8 * (i % 64),
                    rkey=side.peer.rkey + rkey_offset)  # fmt: skip
        yield from sq.post(wr)
        most = max(most, sq.signaled)
    last = SendWR(n, Opcode.RDMA_WRITE, [side.mr.sge(0, 8)], remote_addr=side.peer.addr, rkey=side.peer.rkey)
    yield from sq.post(last, signaled=True)
    yield from sq.wait_for(n)
    yield Publish("writer.done", True)
    return most, sq.posted


def test_every_quarter_depth_wr_is_signaled_and_at_most_three_are_outstanding() -> None:
    roles = make_rc_pair(_writer, lambda side: idle_until("writer.done"), requester_args={"n": 1000})
    out, engine = run_sim(roles)
    most, posted = out["requester"]
    assert posted == 1001
    assert most <= 3
    assert engine.transport.bytes_delivered == 1001 * 8


def test_an_unsignaled_wr_that_fails_is_raised() -> None:
    roles = make_rc_pair(_writer, lambda side: idle_until("writer.done"), requester_args={"n": 40, "rkey_offset": 1})
    with pytest.raises(Exception, match=r"DatapathError.*a send on QP \d+ failed.*wr_id=0, status=REM_ACCESS_ERR"):
        run_sim(roles)  # WR 0 was not signaled; its error completion is reaped with the first signaled one
