"""The engine itself: driving role generators, errors thrown in, deadlock, time."""

from __future__ import annotations

import pytest

from kdlab.ops import (
    Clock,
    CreateCq,
    CreateQp,
    Lookup,
    PollCq,
    PostSend,
    Publish,
    QueryDevice,
    RegMr,
    Sleep,
    SpinUntil,
    WaitCq,
    WriteMem,
)
from kdlab.program import Role
from kdlab.verbs import Opcode, QpCap, SendWR
from kdsim.engine import SimEngine, SimulationError, VerbsError
from tests.helpers import PROFILE, idle_until, make_rc_pair, run_sim, sim_profile, wait_n


def run_one(body, host: str = "a"):
    res, engine = run_sim([Role("solo", host, body)])
    return res["solo"], engine


def test_role_yielding_a_non_operation_gets_a_type_error_thrown_in() -> None:
    def body():
        try:
            yield 42
        except TypeError as err:
            caught = str(err)
        t = yield Clock()  # the role carries on after handling it
        return caught, t

    (msg, t), _ = run_one(body)
    assert "42" in msg and "not an operation" in msg and "solo" in msg
    assert t == 0.0


def test_unhandled_error_in_a_role_fails_the_run_naming_the_role() -> None:
    def body():
        yield Sleep(-1.0)  # a ValueError thrown into the role, not handled there

    with pytest.raises(SimulationError, match=r"role 'solo' failed.*Sleep\.duration_ns must be >= 0"):
        run_one(body)


def test_verbs_misuse_is_thrown_into_the_role_as_verbs_error() -> None:
    def body():
        cq = yield CreateCq(16)
        qp = yield CreateQp(cq, cq)
        mr = yield RegMr(64)
        try:
            yield PostSend(qp, SendWR(1, Opcode.SEND, [mr.sge(0, 8)]))
        except VerbsError as err:
            return str(err)
        return None

    msg, _ = run_one(body)
    assert msg is not None and "before ConnectQp" in msg


def test_inline_cap_beyond_the_device_is_refused() -> None:
    def body():
        dev = yield QueryDevice()
        cq = yield CreateCq(16)
        try:
            yield CreateQp(cq, cq, QpCap(max_inline_data=dev.max_inline_data + 1))
        except VerbsError as err:
            return dev.max_inline_data, str(err)
        return dev.max_inline_data, ""

    (limit, msg), _ = run_one(body)
    assert limit == sim_profile().nic.max_inline_bytes
    assert "max_inline_data" in msg and str(limit) in msg


def test_deadlock_is_reported_with_the_waiting_roles() -> None:
    def waiter(key: str):
        yield Lookup(key)

    roles = [Role("alice", "a", waiter, {"key": "from-bob"}), Role("bob", "b", waiter, {"key": "from-alice"})]
    with pytest.raises(SimulationError) as info:
        SimEngine(PROFILE).run(roles)
    msg = str(info.value)
    assert "deadlock" in msg
    assert "alice" in msg and "bob" in msg and "from-bob" in msg and "from-alice" in msg


def test_role_names_must_be_unique() -> None:
    def body():
        yield Clock()

    with pytest.raises(ValueError, match="unique"):
        SimEngine(PROFILE).run([Role("x", "a", body), Role("x", "b", body)])


def test_publish_and_lookup_pass_values_between_roles() -> None:
    def producer():
        yield Sleep(500.0)
        yield Publish("k", {"answer": 42})
        try:
            yield Publish("k", 0)
        except ValueError as err:
            return str(err)

    def consumer():
        value = yield Lookup("k")
        return value, (yield Clock())

    res, _ = run_sim([Role("p", "a", producer), Role("c", "b", consumer)])
    assert res["c"] == ({"answer": 42}, 500.0)
    assert "already published" in res["p"]


@pytest.mark.parametrize("duration", [0.0, 1.0, 1234.5, 1e9])
def test_sleep_advances_the_clock_by_exactly_its_duration(duration: float) -> None:
    def body():
        mr = yield RegMr(1 << 16)
        yield WriteMem(mr, 0, bytes(1 << 16))  # some CPU time first, so the thread is ahead of the simulator
        t0 = yield Clock()
        yield Sleep(duration)
        t1 = yield Clock()
        yield Sleep(duration)
        return t0, t1, (yield Clock())

    (t0, t1, t2), engine = run_one(body)
    assert t0 > 0  # the copy cost time
    assert t1 - t0 == pytest.approx(duration, abs=1e-6) and t2 - t1 == pytest.approx(duration, abs=1e-6)
    assert engine.stats.sim_time_ns == t2


def test_cpu_work_moves_the_clock_by_its_cost() -> None:
    host = sim_profile().host

    def body():
        mr = yield RegMr(80_000)
        t0 = yield Clock()
        yield WriteMem(mr, 0, bytes(80_000))
        return (yield Clock()) - t0

    dt, _ = run_one(body)
    assert dt == pytest.approx(80_000 * 8.0 / host.memcpy_gbps)


def _ping(mode: str, size: int = 64):
    """Requester: one signaled WRITE; wait for its completion in ``mode``; -> post-to-seen time."""

    def body(side):
        t0 = yield Clock()
        yield PostSend(side.qp, SendWR(1, Opcode.RDMA_WRITE, [side.mr.sge(0, size)], remote_addr=side.peer.addr,
                                       rkey=side.peer.rkey))  # fmt: skip
        wcs = yield WaitCq(side.send_cq, 1, mode)
        t1 = yield Clock()
        assert [wc.ok for wc in wcs] == [True]
        yield Publish("requester.done", True)
        return t1 - t0

    return body


@pytest.mark.parametrize("wakeup_ns", [5000.0, 20_000.0])
def test_event_mode_wakes_later_than_busy_mode_by_the_wakeup_cost(wakeup_ns: float) -> None:
    over = {"host.wakeup_ns": wakeup_ns}
    took = {}
    for mode in ("busy", "event"):
        res, _ = run_sim(make_rc_pair(_ping(mode), lambda side: idle_until("requester.done")), overrides=over)
        took[mode] = res["requester"]
    host = sim_profile(overrides=over).host
    # busy polling sees the CQE after one cache miss; event mode after the wake-up instead
    assert took["event"] - took["busy"] == pytest.approx(wakeup_ns - host.cache_miss_ns, abs=1e-6)
    assert took["event"] - took["busy"] == pytest.approx(wakeup_ns, rel=0.05)


def test_busy_waiting_burns_cpu_while_event_waiting_does_not() -> None:
    """A longer wait (a 256 KiB WRITE instead of 64 B) costs a busy poller CPU, a sleeper none."""
    cpu, took = {}, {}
    for mode in ("busy", "event"):
        for size in (64, 1 << 18):
            roles = make_rc_pair(_ping(mode, size), lambda side: idle_until("requester.done"), mr_bytes=1 << 18)
            res, engine = run_sim(roles)
            cpu[mode, size] = engine.stats.role_cpu_busy_ns["requester"]
            took[mode, size] = res["requester"]
    longer = took["busy", 1 << 18] - took["busy", 64]
    assert longer > 15_000.0
    assert cpu["busy", 1 << 18] - cpu["busy", 64] == pytest.approx(longer, rel=0.01)
    assert cpu["event", 1 << 18] == pytest.approx(cpu["event", 64])


def test_poll_cq_does_not_wait_and_sees_completions_only_once_visible() -> None:
    def requester(side):
        yield PostSend(side.qp, SendWR(1, Opcode.RDMA_WRITE, [side.mr.sge(0, 64)], remote_addr=side.peer.addr,
                                       rkey=side.peer.rkey))  # fmt: skip
        early = yield PollCq(side.send_cq)
        t0 = yield Clock()
        yield Sleep(50_000.0)
        late = yield PollCq(side.send_cq)
        again = yield PollCq(side.send_cq)
        yield Publish("requester.done", True)
        return early, late, again, (yield Clock()) - t0

    res, _ = run_sim(make_rc_pair(requester, lambda side: idle_until("requester.done")))
    early, late, again, dt = res["requester"]
    assert early == [] and [wc.wr_id for wc in late] == [1] and again == []
    assert dt < 51_000.0  # PollCq cost a little CPU, never a wait


def test_spin_until_wakes_when_a_remote_write_lands() -> None:
    def requester(side):
        yield Lookup("spinning")
        yield Sleep(3000.0)
        t_post = yield Clock()
        yield WriteMem(side.mr, 0, b"\x01\x02\x03\x04")
        yield PostSend(side.qp, SendWR(1, Opcode.RDMA_WRITE, [side.mr.sge(0, 4)], remote_addr=side.peer.addr + 60,
                                       rkey=side.peer.rkey, inline=True))  # fmt: skip
        yield from wait_n(side.send_cq, 1)
        return t_post

    def responder(side):
        yield Publish("spinning", True)
        yield SpinUntil(side.mr, 60, b"\x01\x02\x03\x04")
        return (yield Clock())

    res, _ = run_sim(make_rc_pair(requester, responder))
    assert res["responder"] > res["requester"] > 0
    assert res["responder"] - res["requester"] < 5000.0  # one-way latency of a small inline WRITE


def test_op_ns_charges_every_operation_and_cores_are_shared_per_process_and_per_machine() -> None:
    from kdlab.ops import Clock, Compute
    from kdsim.profile import load_profile

    base = load_profile("cx4-edr-100g").with_overrides({"host.request_ns": 10_000.0})

    def worker(n: int):
        t0 = yield Clock()
        for _ in range(n):
            yield Compute("request")
        t1 = yield Clock()
        return t1 - t0

    def run(overrides: dict, hosts: tuple[str, str]) -> dict:
        roles = [Role("a", hosts[0], worker, {"n": 10}), Role("b", hosts[1], worker, {"n": 10})]
        return SimEngine(base.with_overrides(overrides)).run(roles)

    alone = run({}, ("h1", "h2"))
    assert alone == {"a": pytest.approx(100_000.0), "b": pytest.approx(100_000.0)}
    # op_ns: 11 operations after the first Clock, each 50 ns more
    assert run({"host.op_ns": 50.0}, ("h1", "h2"))["a"] == pytest.approx(100_000.0 + 11 * 50.0)
    # threads of one host on their own cores, then on one shared core (a CPython process)
    assert run({}, ("h", "h")) == alone
    shared = run({"host.process_cores": 1}, ("h", "h"))
    assert max(shared.values()) == pytest.approx(200_000.0, rel=0.01)
    assert run({"host.process_cores": 2}, ("h", "h")) == alone
    # hosts of one VM: separate hosts share the machine's cores
    assert max(run({"host.machine_cores": 1}, ("h1", "h2")).values()) == pytest.approx(200_000.0, rel=0.01)
    assert run({"host.machine_cores": 2}, ("h1", "h2")) == alone


@pytest.mark.parametrize("mode", ["busy", "event"])
def test_wait_cq_with_a_timeout_returns_empty_when_nothing_comes(mode: str) -> None:
    def body():
        cq = yield CreateCq(16)
        t0 = yield Clock()
        got = yield WaitCq(cq, 4, mode, timeout_ns=5000.0)
        t1 = yield Clock()
        return got, t1 - t0

    (got, waited), _ = run_one(body)
    assert got == []
    assert 5000.0 <= waited < 5000.0 + 10_000  # the time-out, plus at most a wake-up


def test_lookup_without_waiting_peeks() -> None:
    def early():
        return (yield Lookup("k", wait=False))

    def late():
        yield Sleep(1000.0)
        return (yield Lookup("k", wait=False))

    def publisher():
        yield Sleep(500.0)
        yield Publish("k", 7)

    res, _ = run_sim([Role("early", "a", early), Role("late", "a", late), Role("pub", "b", publisher)])
    assert (res["early"], res["late"]) == (None, 7)
