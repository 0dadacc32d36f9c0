"""Bytes conservation: the simulated RC transport moves exactly the posted bytes."""

from __future__ import annotations

import random

import pytest

from kdlab.ops import Lookup, PostRecv, PostSend, Publish, ReadMem, RegMr, WriteMem
from kdlab.verbs import Opcode, RecvWR, SendWR, WcOpcode, WcStatus
from tests.helpers import make_rc_pair, run_sim, wait_n

MR = 1 << 18
FILL = 0xEE
#: Sizes around the interesting edges: tiny, inline-able, one MTU (4096), MTU + 1, many packets.
SIZES = [1, 100, 4096, 4097, 10_000, 65_539]


def _payloads(seed: int, sizes: list[int]) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in sizes]


def _targets(sizes: list[int]) -> list[int]:
    """Disjoint, deliberately unaligned target offsets with gaps between them."""
    offs, at = [], 7
    for n in sizes:
        offs.append(at)
        at += n + 1000 + 3
    assert at < MR
    return offs


def _filled_responder(side, expect_recv: int = 0):
    """Fill the MR with a pattern, post receives, announce, wait; -> its memory and recv WCs."""
    yield WriteMem(side.mr, 0, bytes([FILL]) * MR)
    if expect_recv:  # WRITE_WITH_IMM consumes a receive WR but writes no bytes through it
        yield PostRecv(side.qp, [RecvWR(i) for i in range(expect_recv)])
    yield Publish("responder.filled", True)
    wcs = yield from wait_n(side.recv_cq, expect_recv)
    yield Lookup("requester.done")
    return {"mem": (yield ReadMem(side.mr, 0, MR)), "wcs": wcs}


def _expected(payloads: list[bytes], offsets: list[int]) -> bytearray:
    want = bytearray([FILL]) * MR
    for p, off in zip(payloads, offsets, strict=True):
        want[off : off + len(p)] = p
    return want


@pytest.mark.parametrize("opcode", [Opcode.RDMA_WRITE, Opcode.RDMA_WRITE_WITH_IMM], ids=lambda o: o.name)
def test_write_moves_exactly_the_posted_bytes(opcode: Opcode) -> None:
    payloads = _payloads(1, SIZES)
    offsets = _targets(SIZES)
    with_imm = opcode is Opcode.RDMA_WRITE_WITH_IMM

    def requester(side):
        yield Lookup("responder.filled")
        wrs, src = [], 0
        for i, (p, off) in enumerate(zip(payloads, offsets, strict=True)):
            yield WriteMem(side.mr, src, p)
            wrs.append(
                SendWR(
                    i,
                    opcode,
                    [side.mr.sge(src, len(p))],
                    remote_addr=side.peer.addr + off,
                    rkey=side.peer.rkey,
                    imm_data=0x1000 + i,
                )
            )
            src += len(p)
        yield PostSend(side.qp, wrs)
        wcs = yield from wait_n(side.send_cq, len(wrs))
        yield Publish("requester.done", True)
        return wcs

    roles = make_rc_pair(
        requester, _filled_responder,
        responder_args={"expect_recv": len(SIZES) if with_imm else 0},
    )  # fmt: skip
    res, engine = run_sim(roles)
    assert [wc.status for wc in res["requester"]] == [WcStatus.SUCCESS] * len(SIZES)
    assert [wc.byte_len for wc in res["requester"]] == SIZES
    assert res["responder"]["mem"] == _expected(payloads, offsets)
    assert engine.transport.bytes_delivered == sum(SIZES)
    if with_imm:
        wcs = res["responder"]["wcs"]
        assert [(wc.opcode, wc.imm_data, wc.byte_len) for wc in wcs] == [
            (WcOpcode.RECV_RDMA_WITH_IMM, 0x1000 + i, n) for i, n in enumerate(SIZES)
        ]


def test_multi_sge_write_gathers_from_two_regions_in_order() -> None:
    rng = random.Random(2)
    parts = [rng.randbytes(n) for n in (3000, 1, 5000)]
    target = 123

    def requester(side):
        other = yield RegMr(8192)
        yield WriteMem(side.mr, 10, parts[0])
        yield WriteMem(other, 77, parts[1])
        yield WriteMem(side.mr, 20_000, parts[2])
        sges = [side.mr.sge(10, 3000), other.sge(77, 1), side.mr.sge(20_000, 5000)]
        yield Lookup("responder.filled")
        yield PostSend(
            side.qp, SendWR(9, Opcode.RDMA_WRITE, sges, remote_addr=side.peer.addr + target, rkey=side.peer.rkey)
        )
        wcs = yield from wait_n(side.send_cq, 1)
        yield Publish("requester.done", True)
        return wcs

    res, engine = run_sim(make_rc_pair(requester, _filled_responder))
    (wc,) = res["requester"]
    assert wc.status is WcStatus.SUCCESS and wc.byte_len == 8001
    assert res["responder"]["mem"] == _expected([b"".join(parts)], [target])
    assert engine.transport.bytes_delivered == 8001


#: Receive buffer layouts as (offset, length) pieces of the responder's MR; the multi-SGE
#: layout leaves a 100 B hole between its first two pieces that the data must skip.
RECV_LAYOUTS = {
    "one_sge": [(11, 70_000)],
    "three_sges": [(11, 50), (161, 4000), (4211, 66_000)],
}


@pytest.mark.parametrize("layout", sorted(RECV_LAYOUTS))
def test_send_scatters_exactly_the_payload_into_the_receive_buffers(layout: str) -> None:
    payloads = _payloads(3, SIZES)
    pieces = RECV_LAYOUTS[layout]

    def requester(side):
        wcs = []
        for i, p in enumerate(payloads):  # one at a time: the responder checks each landing
            yield Lookup(f"posted.{i}")
            yield WriteMem(side.mr, 0, p)
            yield PostSend(side.qp, SendWR(i, Opcode.SEND, [side.mr.sge(0, len(p))]))
            wcs += yield from wait_n(side.send_cq, 1)
        return wcs

    def responder(side):
        seen = []
        for i in range(len(payloads)):
            yield WriteMem(side.mr, 0, bytes([FILL]) * MR)
            yield PostRecv(side.qp, RecvWR(i, [side.mr.sge(off, n) for off, n in pieces]))
            yield Publish(f"posted.{i}", True)
            (wc,) = yield from wait_n(side.recv_cq, 1)
            seen.append((wc, (yield ReadMem(side.mr, 0, MR))))
        return seen

    res, engine = run_sim(make_rc_pair(requester, responder))
    assert [(wc.status, wc.byte_len) for wc in res["requester"]] == [(WcStatus.SUCCESS, n) for n in SIZES]
    for i, ((wc, mem), p) in enumerate(zip(res["responder"], payloads, strict=True)):
        assert (wc.wr_id, wc.status, wc.opcode, wc.byte_len, wc.imm_data) == (
            i,
            WcStatus.SUCCESS,
            WcOpcode.RECV,
            len(p),
            None,
        )
        want = bytearray([FILL]) * MR
        pos = 0
        for off, n in pieces:
            k = min(n, len(p) - pos)
            want[off : off + k] = p[pos : pos + k]
            pos += k
        assert mem == want, f"payload {i} ({len(p)} B) scattered wrongly"
    assert engine.transport.bytes_delivered == sum(SIZES)


def test_read_brings_back_exactly_the_remote_bytes_and_nothing_else() -> None:
    rng = random.Random(4)
    remote = rng.randbytes(MR)
    sizes = SIZES
    src = _targets(sizes)  # where to read from in the responder's MR
    dst = [MR - o - n for o, n in zip(src, sizes, strict=True)]  # where to land in the requester's MR

    def requester(side):
        yield WriteMem(side.mr, 0, bytes([FILL]) * MR)
        yield Lookup("responder.filled")
        wrs = [SendWR(i, Opcode.RDMA_READ, [side.mr.sge(d, n)], remote_addr=side.peer.addr + s, rkey=side.peer.rkey)
               for i, (s, d, n) in enumerate(zip(src, dst, sizes, strict=True))]  # fmt: skip
        yield PostSend(side.qp, wrs)
        wcs = yield from wait_n(side.send_cq, len(wrs))
        yield Publish("requester.done", True)
        return wcs, (yield ReadMem(side.mr, 0, MR))

    def responder(side):
        yield WriteMem(side.mr, 0, remote)
        yield Publish("responder.filled", True)
        yield Lookup("requester.done")
        return (yield ReadMem(side.mr, 0, MR))

    res, _ = run_sim(make_rc_pair(requester, responder))
    wcs, local = res["requester"]
    assert [(wc.status, wc.opcode, wc.byte_len) for wc in wcs] == [
        (WcStatus.SUCCESS, WcOpcode.RDMA_READ, n) for n in sizes
    ]
    want = bytearray([FILL]) * MR
    for s, d, n in zip(src, dst, sizes, strict=True):
        want[d : d + n] = remote[s : s + n]
    assert local == want
    assert res["responder"] == remote  # a READ leaves the remote memory alone
