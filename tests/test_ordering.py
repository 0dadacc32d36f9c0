"""Per-QP ordering of RC: effects and completions come in post order, per QP."""

from __future__ import annotations

import random

from kdlab.ops import Clock, Lookup, PostRecv, PostSend, Publish, WaitCq
from kdlab.verbs import Opcode, RecvWR, SendWR, WcOpcode, WcStatus
from tests.helpers import make_rc_pair, run_sim, wait_n

N = 300


def _mixed_wrs(side, rng: random.Random, n: int, qp_index: int = 0) -> list[SendWR]:
    """WRITE_WITH_IMM and SEND (some inline) of random sizes; imm_data = (qp, seq)."""
    wrs = []
    for i in range(n):
        size = rng.choice([0, 8, 64, 100, 1000, 4096, 9000, 40_000])
        opcode = rng.choice([Opcode.RDMA_WRITE_WITH_IMM, Opcode.SEND_WITH_IMM])
        inline = size <= side.qp.cap.max_inline_data and rng.random() < 0.5
        sges = [side.mr.sge(0, size)] if size else []
        wrs.append(SendWR(qp_index << 16 | i, opcode, sges, remote_addr=side.peer.addr, rkey=side.peer.rkey,
                          imm_data=qp_index << 16 | i, inline=inline))  # fmt: skip
    return wrs


def _receiver(side, n: int, n_qps: int = 1):
    for qp in side.qps:
        yield PostRecv(qp, [RecvWR(j, [side.mr.sge(0, 40_000)]) for j in range(n)])
    yield Publish("recvs.posted", True)
    return (yield from wait_n(side.recv_cq, n * n_qps))


def test_many_messages_on_one_qp_arrive_and_complete_in_post_order() -> None:
    def requester(side):
        rng = random.Random(7)
        wrs = _mixed_wrs(side, rng, N)
        yield Lookup("recvs.posted")
        i = 0
        while i < N:  # post lists of random length, interleaved with single posts
            k = rng.randint(1, 8)
            yield PostSend(side.qp, wrs[i : i + k] if k > 1 else wrs[i])
            i += k
        return (yield from wait_n(side.send_cq, N)), wrs

    res, _ = run_sim(make_rc_pair(requester, _receiver, responder_args={"n": N}))
    send_wcs, wrs = res["requester"]
    assert [wc.wr_id for wc in send_wcs] == list(range(N))
    assert all(wc.status is WcStatus.SUCCESS for wc in send_wcs)
    recv_wcs = res["responder"]
    assert [wc.imm_data for wc in recv_wcs] == list(range(N))
    assert [wc.wr_id for wc in recv_wcs] == list(range(N))  # receive WRs are consumed in order too
    want_opcode = {Opcode.RDMA_WRITE_WITH_IMM: WcOpcode.RECV_RDMA_WITH_IMM, Opcode.SEND_WITH_IMM: WcOpcode.RECV}
    assert [(wc.opcode, wc.byte_len) for wc in recv_wcs] == [(want_opcode[w.opcode], w.length) for w in wrs]


def test_small_inline_send_does_not_overtake_a_large_write_on_the_same_qp() -> None:
    def requester(side):
        big = SendWR(1, Opcode.RDMA_WRITE_WITH_IMM, [side.mr.sge(0, 200_000)], remote_addr=side.peer.addr,
                     rkey=side.peer.rkey, imm_data=1)  # fmt: skip
        small = SendWR(2, Opcode.SEND_WITH_IMM, [side.mr.sge(0, 16)], imm_data=2, inline=True)
        yield Lookup("recvs.posted")
        yield PostSend(side.qp, big)
        yield PostSend(side.qp, small)
        return [wc.wr_id for wc in (yield from wait_n(side.send_cq, 2))]

    def responder(side):
        yield PostRecv(side.qp, [RecvWR(i, [side.mr.sge(0, 64)]) for i in range(2)])
        yield Publish("recvs.posted", True)
        seen = []
        while len(seen) < 2:
            wcs = yield WaitCq(side.recv_cq, 1)
            t = yield Clock()
            seen += [(wc.imm_data, t) for wc in wcs]
        return seen

    res, _ = run_sim(make_rc_pair(requester, responder))
    assert res["requester"] == [1, 2]
    (imm1, t1), (imm2, t2) = res["responder"]
    assert (imm1, imm2) == (1, 2)
    # The 200 KB write holds the link for ~16 us; the small send must land after it, not beside it.
    assert t2 > t1
    assert t1 > 15_000


def test_requester_completions_keep_post_order_across_reads_and_writes() -> None:
    """A large READ's completion comes later than a small WRITE's ACK would; order still holds."""

    def requester(side):
        wrs = []
        for i in range(40):
            if i % 3 == 0:
                wrs.append(SendWR(i, Opcode.RDMA_READ, [side.mr.sge(0, 32_768)], remote_addr=side.peer.addr,
                                  rkey=side.peer.rkey))  # fmt: skip
            else:
                wrs.append(SendWR(i, Opcode.RDMA_WRITE, [side.mr.sge(0, 8)], remote_addr=side.peer.addr,
                                  rkey=side.peer.rkey, inline=True))  # fmt: skip
        for wr in wrs:
            yield PostSend(side.qp, wr)
        wcs = yield from wait_n(side.send_cq, len(wrs))
        yield Publish("requester.done", True)
        return wcs

    def responder(side):
        yield Lookup("requester.done")

    res, _ = run_sim(make_rc_pair(requester, responder))
    wcs = res["requester"]
    assert [wc.wr_id for wc in wcs] == list(range(40))
    assert [wc.opcode for wc in wcs] == [WcOpcode.RDMA_READ if i % 3 == 0 else WcOpcode.RDMA_WRITE for i in range(40)]


def test_each_qp_stays_ordered_when_several_qps_share_one_cq() -> None:
    n_qps, per_qp = 4, 80

    def requester(side):
        rng = random.Random(11)
        streams = [_mixed_wrs(side, rng, per_qp, q) for q in range(n_qps)]
        yield Lookup("recvs.posted")
        pos = [0] * n_qps
        while any(p < per_qp for p in pos):  # interleave the QPs at random
            q = rng.choice([q for q in range(n_qps) if pos[q] < per_qp])
            k = min(rng.randint(1, 4), per_qp - pos[q])
            yield PostSend(side.qps[q], streams[q][pos[q] : pos[q] + k])
            pos[q] += k
        return (yield from wait_n(side.send_cq, n_qps * per_qp))

    roles = make_rc_pair(
        requester, _receiver, responder_args={"n": per_qp, "n_qps": n_qps}, n_qps=n_qps, shared_cq=True
    )
    res, _ = run_sim(roles)
    send_wcs, recv_wcs = res["requester"], res["responder"]
    assert len(send_wcs) == len(recv_wcs) == n_qps * per_qp
    recv_by_qp: dict[int, list[int]] = {}
    for wc in recv_wcs:
        assert wc.opcode in (WcOpcode.RECV, WcOpcode.RECV_RDMA_WITH_IMM)  # the shared CQ holds only receives here
        recv_by_qp.setdefault(wc.qp_num, []).append(wc.imm_data)
    assert sorted(recv_by_qp) == sorted({wc.qp_num for wc in recv_wcs}) and len(recv_by_qp) == n_qps
    for stream in recv_by_qp.values():
        q = stream[0] >> 16
        assert stream == [q << 16 | i for i in range(per_qp)]
    send_by_qp: dict[int, list[int]] = {}
    for wc in send_wcs:
        assert wc.status is WcStatus.SUCCESS
        send_by_qp.setdefault(wc.qp_num, []).append(wc.wr_id)
    assert len(send_by_qp) == n_qps
    for stream in send_by_qp.values():
        q = stream[0] >> 16
        assert stream == [q << 16 | i for i in range(per_qp)]
    # the streams really were interleaved on the shared CQs (else this test proves little)
    assert [wc.qp_num for wc in send_wcs[:per_qp]] != [send_wcs[0].qp_num] * per_qp
