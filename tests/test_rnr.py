"""Receiver-not-ready: a SEND that finds no receive WR is retried ``rnr_retry`` times."""

from __future__ import annotations

import pytest

from kdlab.ops import Clock, Lookup, PostRecv, PostSend, Publish, ReadMem, Sleep, WaitCq, WriteMem
from kdlab.verbs import Opcode, RecvWR, SendWR, WcOpcode, WcStatus
from tests.helpers import idle_until, make_rc_pair, run_sim, wait_n


def _send_once(side):
    yield WriteMem(side.mr, 0, bytes(range(64)))
    t0 = yield Clock()
    yield PostSend(side.qp, SendWR(1, Opcode.SEND, [side.mr.sge(0, 64)]))
    (wc,) = yield from wait_n(side.send_cq, 1)
    t1 = yield Clock()
    yield Publish("requester.done", True)
    return wc, t0, t1


@pytest.mark.parametrize("rnr_retry", range(7))
def test_send_without_receive_fails_with_rnr_retry_exceeded(rnr_retry: int) -> None:
    roles = make_rc_pair(_send_once, lambda side: idle_until("requester.done"), rnr_retry=rnr_retry)
    res, _ = run_sim(roles)
    wc, _, _ = res["requester"]
    assert wc.status is WcStatus.RNR_RETRY_EXC_ERR
    assert wc.wr_id == 1 and wc.opcode is WcOpcode.SEND


def test_each_rnr_retry_waits_one_rnr_timer() -> None:
    """The failure comes later by one timer period (plus a round trip) per allowed retry."""
    times = {}
    for retry in (0, 3, 6):
        res, _ = run_sim(make_rc_pair(_send_once, lambda side: idle_until("requester.done"), rnr_retry=retry))
        wc, t0, t1 = res["requester"]
        assert wc.status is WcStatus.RNR_RETRY_EXC_ERR
        times[retry] = t1 - t0
    step = (times[6] - times[0]) / 6
    assert times[3] - times[0] == pytest.approx(3 * step, rel=1e-6)
    assert step >= 640.0  # at least the timer itself


def test_rnr_timer_encoding_12_waits_0_64_ms() -> None:
    res, _ = run_sim(make_rc_pair(_send_once, lambda side: idle_until("requester.done"), rnr_retry=1, min_rnr_timer=12))
    wc, t0, t1 = res["requester"]
    assert wc.status is WcStatus.RNR_RETRY_EXC_ERR
    assert t1 - t0 >= 640_000.0  # IBTA vol. 1 table 45 (and ConnectQp's docstring): 12 = 0.64 ms


def test_rnr_retry_forever_delivers_once_the_receive_is_posted() -> None:
    late_ns = 20_000.0

    def responder(side):
        yield Sleep(late_ns)  # no receive posted while the SEND arrives
        t_post = yield Clock()
        yield PostRecv(side.qp, RecvWR(5, [side.mr.sge(1000, 64)]))
        wcs = yield WaitCq(side.recv_cq, 1)
        t_recv = yield Clock()
        yield Lookup("requester.done")
        return wcs, t_post, t_recv, (yield ReadMem(side.mr, 1000, 64))

    res, _ = run_sim(make_rc_pair(_send_once, responder, rnr_retry=7, min_rnr_timer=1))
    wc, t_send, t_done = res["requester"]
    (rwc,), t_post, t_recv, data = res["responder"]
    assert wc.status is WcStatus.SUCCESS
    assert (rwc.status, rwc.wr_id, rwc.byte_len) == (WcStatus.SUCCESS, 5, 64)
    assert data == bytes(range(64))
    assert t_send < t_post < t_recv  # the SEND was sent before the receive existed, landed after
    assert t_done > t_post
    # unloaded, the SEND would have been done in a few microseconds
    assert t_done - t_send > late_ns


def test_messages_behind_an_rnr_stalled_send_wait_for_it() -> None:
    """A WRITE_WITH_IMM posted after a stalled SEND must not take the SEND's receive WR."""

    def requester(side):
        yield PostSend(side.qp, [
            SendWR(1, Opcode.SEND_WITH_IMM, [side.mr.sge(0, 8)], imm_data=1),
            SendWR(2, Opcode.RDMA_WRITE_WITH_IMM, [side.mr.sge(0, 8)], remote_addr=side.peer.addr,
                   rkey=side.peer.rkey, imm_data=2),
        ])  # fmt: skip
        wcs = yield from wait_n(side.send_cq, 2)
        yield Publish("requester.done", True)
        return wcs

    def responder(side):
        yield Sleep(10_000.0)
        yield PostRecv(side.qp, [RecvWR(10, [side.mr.sge(0, 64)]), RecvWR(11, [side.mr.sge(64, 64)])])
        wcs = yield from wait_n(side.recv_cq, 2)
        yield Lookup("requester.done")
        return wcs

    res, _ = run_sim(make_rc_pair(requester, responder, min_rnr_timer=1))
    assert [(wc.wr_id, wc.status) for wc in res["requester"]] == [(1, WcStatus.SUCCESS), (2, WcStatus.SUCCESS)]
    assert [(wc.wr_id, wc.imm_data) for wc in res["responder"]] == [(10, 1), (11, 2)]
