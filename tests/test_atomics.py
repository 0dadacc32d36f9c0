"""Atomics: FETCH_AND_ADD and CMP_AND_SWP on 8 aligned bytes, serialised per address."""

from __future__ import annotations

from kdlab.ops import Lookup, PostSend, Publish, ReadMem, WriteMem
from kdlab.program import Role
from kdlab.verbs import Opcode, SendWR, WcOpcode, WcStatus
from tests.helpers import idle_until, make_rc_pair, run_sim, setup_rc, wait_n

COUNTER_OFFSET = 64


def _u64(b: bytes) -> int:
    return int.from_bytes(b, "little")


def test_fetch_and_add_from_two_hosts_through_a_switch_serialises_on_the_counter() -> None:
    per_host, window = 300, 24  # more than max_rd_atomic in flight: some wait for credits

    def adder(name: str, add: int):
        def body():
            side = yield from setup_rc(name, f"counter.{name}")
            yield Lookup("counter.ready")
            posted, done = 0, 0
            while done < per_host:
                batch = []
                while posted < per_host and posted - done < window:
                    batch.append(SendWR(posted, Opcode.ATOMIC_FETCH_AND_ADD, [side.mr.sge(8 * posted, 8)],
                                        remote_addr=side.peer.addr + COUNTER_OFFSET, rkey=side.peer.rkey,
                                        compare_add=add))  # fmt: skip
                    posted += 1
                if batch:
                    yield PostSend(side.qp, batch)
                for wc in (yield from wait_n(side.send_cq, 1)):
                    assert (wc.status, wc.opcode, wc.byte_len, wc.wr_id) == (
                        WcStatus.SUCCESS,
                        WcOpcode.FETCH_ADD,
                        8,
                        done,
                    )
                    done += 1
            raw = yield ReadMem(side.mr, 0, 8 * per_host)
            olds = [_u64(raw[8 * i : 8 * i + 8]) for i in range(per_host)]
            yield Publish(f"{name}.done", True)
            return olds

        return body

    def counter():
        # one MR, one QP per requester
        first = yield from setup_rc("counter.a1", "a1")
        yield from setup_rc("counter.c1", "c1", mr=first.mr)
        yield WriteMem(first.mr, COUNTER_OFFSET, (1000).to_bytes(8, "little"))
        yield WriteMem(first.mr, COUNTER_OFFSET + 8, b"\x77" * 8)
        yield Publish("counter.ready", True)
        yield Lookup("a1.done")
        yield Lookup("c1.done")
        return (yield ReadMem(first.mr, COUNTER_OFFSET - 8, 24))

    roles = [Role("a1", "a", adder("a1", 1)), Role("counter", "b", counter), Role("c1", "c", adder("c1", 1))]
    res, engine = run_sim(roles)
    assert engine.fabric is not None and engine.fabric.switched  # three hosts: a star around a switch
    before, value, after = (res["counter"][i : i + 8] for i in (0, 8, 16))
    assert _u64(value) == 1000 + 2 * per_host
    assert before == bytes(8) and after == b"\x77" * 8  # the neighbours of the counter are untouched
    olds = res["a1"] + res["c1"]
    assert len(set(olds)) == len(olds) == 2 * per_host  # every add saw a different value
    assert sorted(olds) == list(range(1000, 1000 + 2 * per_host))
    # each host's own adds were applied in its post order
    assert res["a1"] == sorted(res["a1"]) and res["c1"] == sorted(res["c1"])
    # the two hosts' adds really interleaved on the counter
    assert min(res["c1"]) < max(res["a1"]) and min(res["a1"]) < max(res["c1"])


def test_compare_and_swap_swaps_only_on_a_match() -> None:
    def requester(side):
        yield Lookup("counter.ready")

        def cas(wr_id: int, compare: int, swap: int) -> SendWR:
            return SendWR(wr_id, Opcode.ATOMIC_CMP_AND_SWP, [side.mr.sge(8 * wr_id, 8)],
                          remote_addr=side.peer.addr + COUNTER_OFFSET, rkey=side.peer.rkey,
                          compare_add=compare, swap=swap)  # fmt: skip

        yield PostSend(side.qp, [cas(0, 5, 9), cas(1, 5, 11), cas(2, 9, 2**64 - 1)])
        wcs = yield from wait_n(side.send_cq, 3)
        raw = yield ReadMem(side.mr, 0, 24)
        olds = [_u64(raw[i : i + 8]) for i in (0, 8, 16)]
        yield Publish("requester.done", True)
        return wcs, olds

    def responder(side):
        yield WriteMem(side.mr, COUNTER_OFFSET, (5).to_bytes(8, "little"))
        yield Publish("counter.ready", True)
        yield from idle_until("requester.done")
        return _u64((yield ReadMem(side.mr, COUNTER_OFFSET, 8)))

    res, _ = run_sim(make_rc_pair(requester, responder))
    wcs, olds = res["requester"]
    assert [(wc.status, wc.opcode) for wc in wcs] == [(WcStatus.SUCCESS, WcOpcode.COMP_SWAP)] * 3
    assert olds == [5, 9, 9]  # match -> swapped; no match -> unchanged; match again -> swapped
    assert res["responder"] == 2**64 - 1


def test_fetch_and_add_wraps_modulo_2_to_the_64() -> None:
    def requester(side):
        yield Lookup("counter.ready")
        yield PostSend(side.qp, SendWR(0, Opcode.ATOMIC_FETCH_AND_ADD, [side.mr.sge(0, 8)],
                                       remote_addr=side.peer.addr, rkey=side.peer.rkey, compare_add=3))  # fmt: skip
        (wc,) = yield from wait_n(side.send_cq, 1)
        old = _u64((yield ReadMem(side.mr, 0, 8)))
        yield Publish("requester.done", True)
        return wc.status, old

    def responder(side):
        yield WriteMem(side.mr, 0, (2**64 - 2).to_bytes(8, "little"))
        yield Publish("counter.ready", True)
        yield from idle_until("requester.done")
        return _u64((yield ReadMem(side.mr, 0, 8)))

    res, _ = run_sim(make_rc_pair(requester, responder))
    assert res["requester"] == (WcStatus.SUCCESS, 2**64 - 2)
    assert res["responder"] == 1
