"""IdlePoll (kdsim/idle_poll.py): a caught-up reader's polls are not simulated one by one, yet it returns at
the poll that would see the change and the skipped polls' work is still charged."""

from __future__ import annotations

from typing import Any

import pytest

from kdlab.ops import Clock, IdlePoll, PostSend, Publish, Sleep, WriteMem
from kdlab.verbs import Opcode, SendWR
from tests.helpers import make_rc_pair, run_sim, wait_n

INTERVAL, CHANGE_AT = 20_000.0, 1_000_000.0  # polls every 20 us; the remote bytes change 1 ms in


def _reader(side: Any, until: float = 1e12) -> Any:
    read = SendWR(1, Opcode.RDMA_READ, [side.mr.sge(0, 64)], remote_addr=side.peer.addr, rkey=side.peer.rkey)
    yield PostSend(side.qp, read)
    yield from wait_n(side.send_cq, 1)  # the first READ: what the polls compare with
    t0 = yield Clock()
    polls = yield IdlePoll([(side.qp, read)], t0 + INTERVAL, INTERVAL, until)
    back = yield Clock()
    again = yield IdlePoll([(side.qp, read)], back + INTERVAL, INTERVAL, until)  # nothing re-read: still differs?
    return t0, polls, back, again, (yield Clock())


def _writer(side: Any, at: float) -> Any:
    t0 = yield Clock()
    yield Sleep(at - t0)
    yield WriteMem(side.mr, 0, b"\x01" * 8)  # what the reader polls for
    yield Publish("written", True)


def _run(until: float = 1e12) -> tuple[dict, Any]:
    roles = make_rc_pair(_reader, _writer, requester_args={"until": until}, responder_args={"at": CHANGE_AT})
    return run_sim(roles, switch=True)


def test_it_returns_at_the_first_poll_after_the_change_and_counts_the_polls_before() -> None:
    out, eng = _run()
    t0, polls, back, again, after = out["requester"]
    # the local copy is stale (the remote bytes differ): no wait past the first poll, which sees the change
    assert again == 0 and after == pytest.approx(back + INTERVAL)
    first = t0 + INTERVAL
    expected = first + INTERVAL * max(0, -(-(CHANGE_AT - first) // INTERVAL))  # first grid point >= the change
    assert back == pytest.approx(expected)
    assert polls == round((expected - first) / INTERVAL)
    assert polls > 40
    # the polls' load is charged: the reader's link carried a request per poll, the writer's a response
    wire = eng.fabric.wire
    assert eng.fabric.uplink["a"].busy_ns > polls * wire.message_ns(0, 16)
    assert eng.fabric.uplink["b"].busy_ns > polls * wire.message_ns(64, 4)
    assert eng.stats.work_requests >= polls + 1


def test_it_gives_up_at_until() -> None:
    out, _ = _run(until=500_000.0)
    t0, polls, back, _, _ = out["requester"]
    assert back == pytest.approx(500_000.0) and polls == round((500_000.0 - t0 - INTERVAL) / INTERVAL + 0.5)


def test_a_deregistered_region_refuses_remote_access() -> None:
    """DeregMr: the region's keys stop working, so a later READ of it completes in error, as on an RNIC."""
    from kdlab.ops import DeregMr, Lookup
    from kdlab.verbs import WcStatus

    def reader(side: Any) -> Any:
        yield Lookup("gone")
        read = SendWR(1, Opcode.RDMA_READ, [side.mr.sge(0, 64)], remote_addr=side.peer.addr, rkey=side.peer.rkey)
        yield PostSend(side.qp, read)
        return (yield from wait_n(side.send_cq, 1))[0].status

    def owner(side: Any) -> Any:
        yield DeregMr(side.mr)
        yield Publish("gone", True)
        yield Lookup("read")

    roles = make_rc_pair(reader, owner)
    from kdlab.program import Role

    def done() -> Any:
        yield Sleep(1e6)
        yield Publish("read", True)

    out, eng = run_sim([*roles, Role("t", "a", done)])
    assert out["requester"] is WcStatus.REM_ACCESS_ERR
    assert eng.memories["b"].registered_bytes < 1 << 18
