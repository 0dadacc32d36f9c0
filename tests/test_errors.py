"""Error completions: NAKs for keys, bounds, rights and alignment; local protection; flushes."""

from __future__ import annotations

import pytest

from kdlab.ops import Lookup, PostRecv, PostSend, Publish, ReadMem, WaitCq, WriteMem
from kdlab.verbs import SGE, Access, Opcode, RecvWR, SendWR, WcOpcode, WcStatus
from tests.helpers import idle_until, make_rc_pair, run_sim, wait_n

MR = 1 << 16
PATTERN = bytes(range(256)) * (MR // 256)


def _guarded_responder(side, n_recv: int = 0, recv_bytes: int = 64):
    """Fill memory with a pattern, optionally post receives; -> memory and receive WCs at the end."""
    yield WriteMem(side.mr, 0, PATTERN)
    if n_recv:
        yield PostRecv(side.qp, [RecvWR(100 + i, [side.mr.sge(0, recv_bytes)]) for i in range(n_recv)])
    yield Publish("responder.ready", True)
    yield Lookup("requester.done")
    return (yield ReadMem(side.mr, 0, MR)), (yield WaitCq(side.recv_cq, 16)) if n_recv else []


def _post_and_wait(wrs_of_side, n_wcs: int | None = None):
    """A requester body: build WRs from the side, post them as one list, wait for their WCs."""

    def body(side):
        yield WriteMem(side.mr, 0, b"\xab" * 4096)
        yield Lookup("responder.ready")
        wrs = wrs_of_side(side)
        yield PostSend(side.qp, wrs)
        wcs = yield from wait_n(side.send_cq, len(wrs) if n_wcs is None else n_wcs)
        yield Publish("requester.done", True)
        return wcs

    return body


def _write(side, wr_id: int = 1, length: int = 64, offset: int = 0, rkey: int | None = None) -> SendWR:
    return SendWR(wr_id, Opcode.RDMA_WRITE, [side.mr.sge(0, length)], remote_addr=side.peer.addr + offset,
                  rkey=side.peer.rkey if rkey is None else rkey)  # fmt: skip


def _run(requester, responder_access: Access | None = None, **resp_args):
    roles = make_rc_pair(
        requester, _guarded_responder, mr_bytes=MR, responder_args=resp_args,
        responder_setup={"access": responder_access} if responder_access is not None else {},
    )  # fmt: skip
    res, engine = run_sim(roles)
    return res["requester"], res["responder"], engine


def test_wrong_rkey_gives_remote_access_error() -> None:
    wcs, (mem, _), _ = _run(_post_and_wait(lambda side: [_write(side, rkey=side.peer.rkey + 1000)]))
    assert [(wc.status, wc.opcode) for wc in wcs] == [(WcStatus.REM_ACCESS_ERR, WcOpcode.RDMA_WRITE)]
    assert mem == PATTERN


@pytest.mark.parametrize("offset", [MR - 10, -8, MR])
def test_out_of_bounds_write_gives_remote_access_error_and_leaves_memory_alone(offset: int) -> None:
    wcs, (mem, _), _ = _run(_post_and_wait(lambda side: [_write(side, offset=offset)]))
    assert [wc.status for wc in wcs] == [WcStatus.REM_ACCESS_ERR]
    assert mem == PATTERN


def test_read_without_remote_read_right_gives_remote_access_error() -> None:
    def reads(side):
        return [SendWR(1, Opcode.RDMA_READ, [side.mr.sge(0, 64)], remote_addr=side.peer.addr, rkey=side.peer.rkey)]

    no_read = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_ATOMIC
    wcs, (mem, _), _ = _run(_post_and_wait(reads), responder_access=no_read)
    assert [(wc.status, wc.opcode) for wc in wcs] == [(WcStatus.REM_ACCESS_ERR, WcOpcode.RDMA_READ)]
    # ... while a WRITE to the same region is allowed
    wcs, (mem, _), _ = _run(_post_and_wait(lambda side: [_write(side)]), responder_access=no_read)
    assert [wc.status for wc in wcs] == [WcStatus.SUCCESS]
    assert mem[:64] == b"\xab" * 64 and mem[64:] == PATTERN[64:]


def test_write_without_remote_write_right_gives_remote_access_error() -> None:
    wcs, (mem, _), _ = _run(_post_and_wait(lambda side: [_write(side)]), responder_access=Access.REMOTE_READ)
    assert [wc.status for wc in wcs] == [WcStatus.REM_ACCESS_ERR]
    assert mem == PATTERN


@pytest.mark.parametrize("opcode", [Opcode.ATOMIC_FETCH_AND_ADD, Opcode.ATOMIC_CMP_AND_SWP], ids=lambda o: o.name)
def test_misaligned_atomic_gives_remote_invalid_request_error(opcode: Opcode) -> None:
    def atomics(side):
        return [SendWR(1, opcode, [side.mr.sge(0, 8)], remote_addr=side.peer.addr + 4, rkey=side.peer.rkey,
                       compare_add=PATTERN[4] | PATTERN[5] << 8, swap=7)]  # fmt: skip

    wcs, (mem, _), _ = _run(_post_and_wait(atomics))
    assert [wc.status for wc in wcs] == [WcStatus.REM_INV_REQ_ERR]
    assert mem == PATTERN


def test_after_a_remote_error_later_work_requests_are_flushed() -> None:
    def wrs(side):
        return [
            _write(side, 1, offset=0),
            _write(side, 2, offset=MR),  # out of bounds: NAK, the QP goes to error
            _write(side, 3, offset=128),
            SendWR(4, Opcode.RDMA_READ, [side.mr.sge(0, 64)], remote_addr=side.peer.addr, rkey=side.peer.rkey),
            _write(side, 5, offset=256),
        ]

    def requester(side):
        wcs = yield from _post_and_wait(wrs)(side)
        # a WR posted after the error is known is flushed as well
        yield PostSend(side.qp, _write(side, 6, offset=512))
        return wcs + (yield from wait_n(side.send_cq, 1))

    wcs, (mem, _), _ = _run(requester)
    assert [(wc.wr_id, wc.status) for wc in wcs] == [
        (1, WcStatus.SUCCESS),
        (2, WcStatus.REM_ACCESS_ERR),
        (3, WcStatus.WR_FLUSH_ERR),
        (4, WcStatus.WR_FLUSH_ERR),
        (5, WcStatus.WR_FLUSH_ERR),
        (6, WcStatus.WR_FLUSH_ERR),
    ]
    assert [wc.opcode for wc in wcs] == [WcOpcode.RDMA_WRITE] * 3 + [WcOpcode.RDMA_READ] + [WcOpcode.RDMA_WRITE] * 2
    # only the first WRITE took effect: the flushed ones never touched the responder's memory
    assert mem[:64] == b"\xab" * 64
    assert mem[64:] == PATTERN[64:]


def test_unsignaled_work_requests_still_report_their_errors() -> None:
    def wrs(side):
        bad, flushed = _write(side, 1, rkey=0), _write(side, 2)
        bad.signaled = flushed.signaled = False
        return [bad, flushed]

    wcs, _, _ = _run(_post_and_wait(wrs))
    assert [(wc.wr_id, wc.status) for wc in wcs] == [(1, WcStatus.REM_ACCESS_ERR), (2, WcStatus.WR_FLUSH_ERR)]


@pytest.mark.parametrize("what", ["bad_lkey", "outside_mr"])
def test_bad_local_sge_gives_local_protection_error(what: str) -> None:
    def wrs(side):
        if what == "bad_lkey":
            sge = SGE(side.mr.addr, 64, side.mr.lkey + 999)
        else:
            sge = SGE(side.mr.addr + side.mr.length - 32, 64, side.mr.lkey)
        bad = SendWR(1, Opcode.RDMA_WRITE, [sge], remote_addr=side.peer.addr, rkey=side.peer.rkey)
        return [bad, _write(side, 2)]

    wcs, (mem, _), _ = _run(_post_and_wait(wrs))
    assert [(wc.wr_id, wc.status) for wc in wcs] == [(1, WcStatus.LOC_PROT_ERR), (2, WcStatus.WR_FLUSH_ERR)]
    assert mem == PATTERN


def test_read_into_a_bad_local_buffer_gives_local_protection_error() -> None:
    def wrs(side):
        sge = SGE(side.mr.addr, 64, side.mr.lkey + 999)
        return [SendWR(1, Opcode.RDMA_READ, [sge], remote_addr=side.peer.addr, rkey=side.peer.rkey)]

    wcs, _, _ = _run(_post_and_wait(wrs))
    assert [(wc.status, wc.opcode) for wc in wcs] == [(WcStatus.LOC_PROT_ERR, WcOpcode.RDMA_READ)]


def test_send_larger_than_the_receive_buffer_fails_on_both_sides() -> None:
    def sends(side):
        return [SendWR(1, Opcode.SEND, [side.mr.sge(0, 128)])]

    wcs, (_, rwcs), _ = _run(_post_and_wait(sends), n_recv=1, recv_bytes=64)
    assert [(wc.status, wc.opcode) for wc in wcs] == [(WcStatus.REM_INV_REQ_ERR, WcOpcode.SEND)]
    assert [(wc.wr_id, wc.status) for wc in rwcs] == [(100, WcStatus.LOC_LEN_ERR)]


def test_send_that_fits_the_receive_buffer_exactly_succeeds() -> None:
    wcs, (mem, rwcs), _ = _run(
        _post_and_wait(lambda side: [SendWR(1, Opcode.SEND, [side.mr.sge(0, 64)])]), n_recv=1, recv_bytes=64
    )
    assert [wc.status for wc in wcs] == [WcStatus.SUCCESS]
    assert [(wc.wr_id, wc.status, wc.byte_len) for wc in rwcs] == [(100, WcStatus.SUCCESS, 64)]
    assert mem[:64] == b"\xab" * 64


def test_bytes_delivered_counts_only_bytes_that_reached_the_responder() -> None:
    def wrs(side):
        return [_write(side, 1, offset=MR), _write(side, 2)]  # NAK, then flushed: nothing delivered

    wcs, (mem, _), engine = _run(_post_and_wait(wrs))
    assert [wc.status for wc in wcs] == [WcStatus.REM_ACCESS_ERR, WcStatus.WR_FLUSH_ERR]
    assert mem == PATTERN
    assert engine.transport.bytes_delivered == 0


def test_rnr_exceeded_send_bytes_stay_out_of_memory() -> None:
    def requester(side):
        yield WriteMem(side.mr, 0, b"\xcd" * 64)
        yield PostSend(side.qp, SendWR(1, Opcode.SEND, [side.mr.sge(0, 64)]))
        wcs = yield from wait_n(side.send_cq, 1)
        yield Publish("requester.done", True)
        return wcs

    def responder(side):
        yield from idle_until("requester.done")
        return (yield ReadMem(side.mr, 0, 4096))

    res, _ = run_sim(make_rc_pair(requester, responder, rnr_retry=0))
    assert [wc.status for wc in res["requester"]] == [WcStatus.RNR_RETRY_EXC_ERR]
    assert res["responder"] == bytes(4096)
