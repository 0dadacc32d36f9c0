"""The same verbs sequences on kdsim and on real verbs (Soft-RoCE): same bytes, same completions.

Every ``engine`` test runs twice: on kdsim in the default suite, and on kdreal with
the ``rdma`` marker (inside the testbed: ``python -m kdreal.testbed run python -m
pytest -m rdma``). The responder fills its MR with a background byte first, so a
test sees both what an operation wrote and that nothing outside its range changed.
"""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from kdlab.datapaths.perftest import PerftestConfig
from kdlab.datapaths.perftest import roles as perftest_roles
from kdlab.ops import Lookup, PollCq, PostRecv, PostSend, Publish, QueryDevice, ReadMem, RegMr, WriteMem
from kdlab.verbs import Opcode, RecvWR, SendWR, WcOpcode, WcStatus, WorkCompletion
from tests.helpers import make_rc_pair, setup_rc, wait_n

MR = 8192
FILL = 0xEE
SETUP = {"mr_bytes": MR, "cq_depth": 256}
RECV_AT = 4096  # where the responder's receive buffers start


def wc_tuple(wc: WorkCompletion) -> tuple[Any, ...]:
    """The fields both engines define for a completion (byte_len only on success)."""
    return (wc.wr_id, WcStatus(wc.status), WcOpcode(wc.opcode) if wc.ok else None, wc.byte_len if wc.ok else None,
            wc.imm_data)  # fmt: skip


def responder(side, recvs: int = 0, mode: str = "busy"):
    """Fill the MR, post ``recvs`` receives, announce; wait for them and the requester; -> memory, WCs."""
    yield WriteMem(side.mr, 0, bytes([FILL]) * MR)
    if recvs:
        yield PostRecv(side.qp, [RecvWR(100 + i, [side.mr.sge(RECV_AT + 1024 * i, 1024)]) for i in range(recvs)])
    yield Publish("responder.ready", True)
    wcs = yield from wait_n(side.recv_cq, recvs, mode)
    yield Lookup("requester.done")
    return {"mem": (yield ReadMem(side.mr, 0, MR)), "wcs": [wc_tuple(w) for w in wcs]}


def requester(side, make_wrs, local: bytes = b"", n_wcs: int = 1):
    """Wait for the responder, write ``local`` at offset 0, post ``make_wrs(side)``; -> WCs, local bytes."""
    yield Lookup("responder.ready")
    if local:
        yield WriteMem(side.mr, 0, local)
    yield PostSend(side.qp, make_wrs(side))
    wcs = yield from wait_n(side.send_cq, n_wcs)
    mem = yield ReadMem(side.mr, 0, 256)
    yield Publish("requester.done", True)
    return {"wcs": [wc_tuple(w) for w in wcs], "local": mem}


def run_pair(engine, make_wrs, *, local: bytes = b"", n_wcs: int = 1, recvs: int = 0, mode: str = "busy"):
    roles = make_rc_pair(
        requester, responder, requester_args={"make_wrs": make_wrs, "local": local, "n_wcs": n_wcs},
        responder_args={"recvs": recvs, "mode": mode}, **SETUP,
    )  # fmt: skip
    out = engine.run(roles)
    return out["requester"], out["responder"]


def background(**writes: tuple[int, bytes]) -> bytes:
    mem = bytearray([FILL]) * MR
    for off, data in writes.values():
        mem[off : off + len(data)] = data
    return bytes(mem)


# --- one-sided --------------------------------------------------------------------------------


@pytest.mark.parametrize("inline", [False, True])
def test_write_moves_exactly_the_posted_bytes(engine, inline: bool) -> None:
    data = random.Random(1).randbytes(100)
    off = 1001  # unaligned on purpose

    def wrs(side):
        return SendWR(7, Opcode.RDMA_WRITE, [side.mr.sge(0, len(data))], remote_addr=side.peer.addr + off,
                      rkey=side.peer.rkey, inline=inline)  # fmt: skip

    req, resp = run_pair(engine, wrs, local=data)
    assert req["wcs"] == [(7, WcStatus.SUCCESS, WcOpcode.RDMA_WRITE, len(data), None)]
    assert resp["mem"] == background(w=(off, data))


def test_write_with_imm_delivers_the_posted_immediate(engine) -> None:
    data = random.Random(2).randbytes(300)
    imm = 0xDEADBEEF  # high bit set, four different bytes: any byte swap would show

    def wrs(side):
        return SendWR(8, Opcode.RDMA_WRITE_WITH_IMM, [side.mr.sge(0, len(data))], remote_addr=side.peer.addr + 64,
                      rkey=side.peer.rkey, imm_data=imm)  # fmt: skip

    req, resp = run_pair(engine, wrs, local=data, recvs=1)
    assert req["wcs"] == [(8, WcStatus.SUCCESS, WcOpcode.RDMA_WRITE, len(data), None)]
    assert resp["wcs"] == [(100, WcStatus.SUCCESS, WcOpcode.RECV_RDMA_WITH_IMM, len(data), imm)]
    assert resp["mem"] == background(w=(64, data))


def test_read_fetches_exactly_the_remote_bytes(engine) -> None:
    # The responder's MR is all FILL; the requester reads 200 of those bytes into its offset 16.
    def wrs(side):
        return SendWR(9, Opcode.RDMA_READ, [side.mr.sge(16, 200)], remote_addr=side.peer.addr + 333,
                      rkey=side.peer.rkey)  # fmt: skip

    req, resp = run_pair(engine, wrs, local=bytes(256))
    assert req["wcs"] == [(9, WcStatus.SUCCESS, WcOpcode.RDMA_READ, 200, None)]
    assert req["local"] == bytes(16) + bytes([FILL]) * 200 + bytes(40)
    assert resp["mem"] == background()


def test_post_list_chains_wrs_and_signals_only_the_last(engine) -> None:
    parts = [bytes([i]) * 50 for i in (1, 2, 3)]

    def wrs(side):
        return [
            SendWR(i, Opcode.RDMA_WRITE, [side.mr.sge(50 * i, 50)], remote_addr=side.peer.addr + 1000 * i,
                   rkey=side.peer.rkey, signaled=i == 2)
            for i in range(3)
        ]  # fmt: skip

    req, resp = run_pair(engine, wrs, local=b"".join(parts))
    assert req["wcs"] == [(2, WcStatus.SUCCESS, WcOpcode.RDMA_WRITE, 50, None)]
    assert resp["mem"] == background(a=(0, parts[0]), b=(1000, parts[1]), c=(2000, parts[2]))


# --- two-sided --------------------------------------------------------------------------------


@pytest.mark.parametrize(("opcode", "mode"), [(Opcode.SEND, "busy"), (Opcode.SEND_WITH_IMM, "event")])
def test_send_lands_in_the_posted_receive(engine, opcode: Opcode, mode: str) -> None:
    data = random.Random(3).randbytes(777)
    imm = 0x01020304 if opcode is Opcode.SEND_WITH_IMM else 0

    def wrs(side):
        return SendWR(5, opcode, [side.mr.sge(0, len(data))], imm_data=imm)

    req, resp = run_pair(engine, wrs, local=data, recvs=1, mode=mode)
    assert req["wcs"] == [(5, WcStatus.SUCCESS, WcOpcode.SEND, len(data), None)]
    assert resp["wcs"] == [(100, WcStatus.SUCCESS, WcOpcode.RECV, len(data), imm or None)]
    assert resp["mem"] == background(r=(RECV_AT, data))


# --- atomics ----------------------------------------------------------------------------------


def test_atomics_return_the_old_value_and_update_remote(engine) -> None:
    at = 1024  # 8-byte aligned

    def atomic_requester(side):
        yield Lookup("responder.ready")
        faa = SendWR(1, Opcode.ATOMIC_FETCH_AND_ADD, [side.mr.sge(0, 8)], remote_addr=side.peer.addr + at,
                     rkey=side.peer.rkey, compare_add=5)  # fmt: skip
        cas_hit = SendWR(2, Opcode.ATOMIC_CMP_AND_SWP, [side.mr.sge(8, 8)], remote_addr=side.peer.addr + at,
                         rkey=side.peer.rkey, compare_add=105, swap=7)  # fmt: skip
        cas_miss = SendWR(3, Opcode.ATOMIC_CMP_AND_SWP, [side.mr.sge(16, 8)], remote_addr=side.peer.addr + at,
                          rkey=side.peer.rkey, compare_add=1, swap=9)  # fmt: skip
        wcs = []
        for wr in (faa, cas_hit, cas_miss):  # one at a time: each depends on the previous result
            yield PostSend(side.qp, wr)
            wcs += yield from wait_n(side.send_cq, 1)
        local = yield ReadMem(side.mr, 0, 24)
        yield Publish("requester.done", True)
        return {"wcs": [wc_tuple(w) for w in wcs], "local": struct.unpack("<3Q", local)}

    def atomic_responder(side):
        yield WriteMem(side.mr, 0, bytes([FILL]) * MR)
        yield WriteMem(side.mr, at, struct.pack("<Q", 100))
        yield Publish("responder.ready", True)
        yield Lookup("requester.done")
        return {"mem": (yield ReadMem(side.mr, 0, MR))}

    out = engine.run(make_rc_pair(atomic_requester, atomic_responder, **SETUP))
    req, resp = out["requester"], out["responder"]
    assert req["wcs"] == [
        (1, WcStatus.SUCCESS, WcOpcode.FETCH_ADD, 8, None),
        (2, WcStatus.SUCCESS, WcOpcode.COMP_SWAP, 8, None),
        (3, WcStatus.SUCCESS, WcOpcode.COMP_SWAP, 8, None),
    ]
    assert req["local"] == (100, 105, 7)
    assert resp["mem"] == background(v=(at, struct.pack("<Q", 7)))


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["wrong_rkey", "out_of_bounds"])
def test_bad_remote_access_fails_and_changes_nothing(engine, case: str) -> None:
    data = bytes(range(16))

    def wrs(side):
        if case == "wrong_rkey":
            addr, rkey = side.peer.addr + 100, side.peer.rkey + 0x10000
        else:  # the last 8 bytes of the MR and 8 beyond it
            addr, rkey = side.peer.addr + MR - 8, side.peer.rkey
        return SendWR(4, Opcode.RDMA_WRITE, [side.mr.sge(0, len(data))], remote_addr=addr, rkey=rkey)

    req, resp = run_pair(engine, wrs, local=data)
    assert [wc[:2] for wc in req["wcs"]] == [(4, WcStatus.REM_ACCESS_ERR)]
    assert resp["mem"] == background()


def test_poll_cq_returns_nothing_when_empty(engine) -> None:
    def poller():
        side = yield from setup_rc("requester", "responder", **SETUP)
        return (yield PollCq(side.send_cq)), (yield PollCq(side.recv_cq, 4))

    def idle():
        yield from setup_rc("responder", "requester", **SETUP)

    from kdlab.program import Role

    out = engine.run([Role("requester", "a", poller), Role("responder", "b", idle)])
    assert out["requester"] == ([], [])


# --- real only ----------------------------------------------------------------------------------


@pytest.mark.rdma
def test_query_device_reports_the_device(real_engine) -> None:
    from kdlab.program import Role

    def ask():
        return (yield QueryDevice())

    info = real_engine.run([Role("ask", "a", ask)])["ask"]
    assert info.name.startswith("rxe") or info.name
    assert info.max_inline_data > 0 and info.max_qp_rd_atom > 0 and info.max_cqe > 0


@pytest.mark.rdma
def test_file_backed_mr_is_the_file(real_engine, tmp_path) -> None:
    path = tmp_path / "segment"
    path.write_bytes(b"K" * 4096)
    data = b"written-by-the-peer"

    def owner():
        mr = yield RegMr(4096, path=str(path))
        side = yield from setup_rc("responder", "requester", mr=mr, cq_depth=64)
        before = yield ReadMem(side.mr, 0, 8)
        yield Publish("responder.ready", True)
        yield Lookup("requester.done")
        return before

    def writer():
        side = yield from setup_rc("requester", "responder", mr_bytes=4096, cq_depth=64)
        yield Lookup("responder.ready")
        yield WriteMem(side.mr, 0, data)
        yield PostSend(side.qp, SendWR(1, Opcode.RDMA_WRITE, [side.mr.sge(0, len(data))],
                                       remote_addr=side.peer.addr + 100, rkey=side.peer.rkey))  # fmt: skip
        wcs = yield from wait_n(side.send_cq, 1)
        yield Publish("requester.done", True)
        return wcs[0].ok

    from kdlab.program import Role

    out = real_engine.run([Role("requester", "a", writer), Role("responder", "b", owner)])
    assert out == {"requester": True, "responder": b"K" * 8}
    assert path.read_bytes() == b"K" * 100 + data + b"K" * (4096 - 100 - len(data))


@pytest.mark.rdma
@pytest.mark.parametrize("test", ["write_lat", "read_lat", "send_lat", "write_bw"])
def test_perftest_runs_on_real_verbs(real_engine, test: str) -> None:
    cfg = PerftestConfig(test, size=64, iterations=20, cq_mod=5, tx_depth=8)
    out = real_engine.run(perftest_roles(cfg))
    client = out["client"]
    if cfg.is_latency:
        assert len(client["samples_ns"]) == cfg.iterations
        assert all(s > 0 for s in client["samples_ns"])
    else:
        assert client["messages"] == cfg.iterations
        assert client["t_last_completion_ns"] > client["t_first_post_ns"]
