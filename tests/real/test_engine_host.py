"""RealEngine's process and rendezvous machinery, with roles that use no verbs (runs anywhere)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from kdlab.ops import (
    Clock,
    Compute,
    Lookup,
    Notify,
    Publish,
    QueueGet,
    QueuePut,
    Sleep,
    TcpAccept,
    TcpConnect,
    TcpListen,
    TcpRecv,
    TcpSend,
    WaitNotify,
)
from kdlab.program import Role
from kdreal.engine import RealEngine, RoleError
from kdreal.rendezvous import RendezvousClient, RendezvousServer


def engine() -> RealEngine:
    return RealEngine(timeout_s=5.0, run_timeout_s=30.0)


def test_roles_exchange_values_and_return_results() -> None:
    def producer():
        yield Lookup("consumer.started")  # (roles start at different times: forking takes a while)
        yield Sleep(20e6)  # so the consumer's lookup has to wait at least this long
        yield Publish("numbers", [1, 2, 3])
        yield Compute("copy", 100)
        return "produced"

    def consumer():
        t0 = yield Clock()
        yield Publish("consumer.started", True)
        got = yield Lookup("numbers")
        t1 = yield Clock()
        return got, t1 - t0

    out = engine().run([Role("p", "a", producer), Role("c", "b", consumer)])
    assert out["p"] == "produced"
    got, waited_ns = out["c"]
    assert got == [1, 2, 3]
    assert waited_ns >= 20e6


def test_roles_of_one_host_share_a_process_and_other_hosts_do_not() -> None:
    def whoami():
        yield Clock()
        return os.getpid()

    out = engine().run([Role("x", "a", whoami), Role("y", "a", whoami), Role("z", "b", whoami)])
    assert out["x"] == out["y"]
    assert len({out["x"], out["z"], os.getpid()}) == 3


def test_queues_and_notifications_between_threads_of_one_host() -> None:
    def worker():
        got = []
        while (item := (yield QueueGet("jobs"))) is not None:
            got.append(item)
        yield Notify("done")
        return got

    def boss():
        for i in range(50):
            yield QueuePut("jobs", i, capacity=4)  # waits for room: the worker must keep taking
        yield QueuePut("jobs", None)
        return (yield WaitNotify("done", timeout_ns=5e9))

    out = engine().run([Role("w", "a", worker), Role("b", "a", boss)])
    assert out == {"w": list(range(50)), "b": True}


def test_daemons_are_stopped_when_the_other_roles_finish_and_their_failure_fails_the_run() -> None:
    def server():
        while True:
            yield QueueGet("never")

    def client():
        yield Sleep(1e6)
        return "done"

    def failing_daemon():
        yield Sleep(1e6)
        raise RuntimeError("daemon broke")

    def slow_client():
        yield Sleep(3e9)

    assert engine().run([Role("s", "a", server, daemon=True), Role("c", "b", client)]) == {"c": "done"}
    with pytest.raises(RoleError, match="daemon broke"):
        engine().run([Role("d", "a", failing_daemon, daemon=True), Role("c", "b", slow_client)])


def test_tcp_messages_arrive_whole_and_in_order_between_hosts() -> None:
    from kdlab.kafka.apache import FetchReply

    def server():
        listener = yield TcpListen("svc")
        conn = yield TcpAccept(listener)
        got = []
        for _ in range(3):
            _, msg = yield TcpRecv([conn])
            got.append(msg)
        yield TcpSend(conn, FetchReply(0, [b"x" * 100_000, b"yz"], 7, 9), 0, zero_copy=True)
        return got

    def client():
        conn = yield TcpConnect("svc")
        for msg in ("a", {"b": 1}, b"c" * 200_000):
            yield TcpSend(conn, msg, 0)
        _, reply = yield TcpRecv(conn)
        return reply

    out = engine().run([Role("s", "a", server), Role("c", "b", client)])
    assert out["s"] == ["a", {"b": 1}, b"c" * 200_000]
    assert out["c"] == FetchReply(0, [b"x" * 100_000, b"yz"], 7, 9)


def test_a_failing_role_fails_the_run_with_its_name_and_traceback() -> None:
    def broken_datapath():
        yield Clock()
        raise KeyError("no such slot")

    def waiter():
        yield Lookup("never")

    with pytest.raises(RoleError, match="role 'broken'") as info:
        engine().run([Role("broken", "a", broken_datapath), Role("waiter", "b", waiter)])
    assert "broken_datapath" in info.value.detail and "no such slot" in info.value.detail


def test_deadlock_is_detected_instead_of_hanging() -> None:
    def wait_for(key: str):
        yield Lookup(key)

    t0 = time.monotonic()
    with pytest.raises(RoleError, match="deadlock"):
        engine().run([Role("a", "a", wait_for, {"key": "x"}), Role("b", "b", wait_for, {"key": "y"})])
    assert time.monotonic() - t0 < 10


def test_failed_operations_are_raised_inside_the_role() -> None:
    def careful():
        yield Publish("k", 1)
        caught = []
        try:
            yield Publish("k", 2)
        except ValueError as err:
            caught.append(type(err).__name__)
        try:
            yield "not an operation"
        except TypeError:
            caught.append("TypeError")
        try:
            yield Sleep(-1)
        except ValueError:
            caught.append("ValueError")
        return caught

    assert engine().run([Role("r", "a", careful)]) == {"r": ["ValueError", "TypeError", "ValueError"]}


def test_a_role_that_dies_or_returns_garbage_fails_the_run() -> None:
    def dies():
        yield Clock()
        os._exit(3)

    def unpicklable():
        yield Clock()
        return threading.Lock()

    with pytest.raises(RoleError, match="exited with code 3"):
        engine().run([Role("d", "a", dies)])
    with pytest.raises(RoleError, match="role 'u'"):
        engine().run([Role("u", "a", unpicklable)])


def test_role_names_must_be_unique() -> None:
    def body():
        yield Clock()

    with pytest.raises(ValueError, match="unique"):
        engine().run([Role("r", "a", body), Role("r", "b", body)])


def test_rendezvous_lookup_times_out() -> None:
    server = RendezvousServer(roles=2)  # a second, absent role keeps this from being a deadlock
    server.start()
    try:
        client = RendezvousClient(server.address, "alone", server.token)
        client.publish("here", {"v": 1})
        assert client.lookup("here") == {"v": 1}
        with pytest.raises(TimeoutError):
            client.lookup("missing", timeout_s=0.2)
        client.close()
    finally:
        server.close()


def test_a_crashed_host_process_fails_the_run_with_its_log() -> None:
    import ctypes
    import sys

    def crashes():
        yield Clock()
        print("last words", file=sys.stderr, flush=True)
        ctypes.string_at(0)  # a segmentation fault, as a verbs library bug would cause

    with pytest.raises(RoleError, match="exited with code -11") as info:
        engine().run([Role("c", "a", crashes)])
    assert "last words" in info.value.detail and "Fatal Python error" in info.value.detail


def test_a_crash_does_not_leave_the_run_waiting_for_the_roles_it_strands() -> None:
    def crashes():
        yield Clock()
        os._exit(5)

    def waits_for_it():
        yield Lookup("never published")  # it would wait for the crashed role forever

    def other():
        yield Sleep(60e9)

    t0 = time.monotonic()
    with pytest.raises(RoleError, match="exited with code 5"):
        RealEngine(timeout_s=60, run_timeout_s=120).run(
            [Role("c", "a", crashes), Role("w", "b", waits_for_it), Role("o", "c", other)]
        )
    assert time.monotonic() - t0 < 15
