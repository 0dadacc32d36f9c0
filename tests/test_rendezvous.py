"""kdreal's rendezvous under the timing that made the RDMA suite flaky (no RDMA needed).

* A role that publishes a key and at once looks up the next one, while the reader of
  the first has been notified but not yet run, is not a deadlock: the old rule counted
  that reader as waiting and failed runs with "requester waits for 'responder.ready',
  responder waits for 'requester.done'".
* Every role connects before the server accepts (the role processes are forked
  first): the listen backlog must hold them all; with socketserver's default of 5,
  the kernel's SYN cookies reset a role's connection at its first Publish.
"""

from __future__ import annotations

import threading
import time

from kdlab.ops import Lookup, Publish
from kdlab.program import Role
from kdreal.engine import RealEngine
from kdreal.rendezvous import RendezvousClient, RendezvousServer, _Store


def test_a_waiter_whose_key_is_published_is_not_stuck() -> None:
    store = _Store(roles=2)
    store.waiting[1] = ("requester", "responder.ready")
    store.values["responder.ready"] = b"\xc3"  # published; its reader has not woken up yet
    store.waiting[2] = ("responder", "requester.done")
    with store.cond:
        store.check_deadlock()
    assert store.deadlock is None
    del store.values["responder.ready"]
    with store.cond:
        store.check_deadlock()
    assert store.deadlock is not None and "requester waits for 'responder.ready'" in store.deadlock


def test_publish_then_lookup_in_lockstep_is_never_a_deadlock() -> None:
    n = 2000

    def ping():
        for i in range(n):
            yield Lookup(f"pong{i}")
            yield Publish(f"ping{i}", i)
        return n

    def pong():
        for i in range(n):
            yield Publish(f"pong{i}", i)  # and at once wait for the answer, as responder/requester do
            assert (yield Lookup(f"ping{i}")) == i
        return n

    out = RealEngine(timeout_s=10.0, run_timeout_s=60.0).run([Role("ping", "a", ping), Role("pong", "b", pong)])
    assert out == {"ping": n, "pong": n}


def test_every_role_may_connect_before_the_server_accepts() -> None:
    n = 64
    server = RendezvousServer(n)
    errors: list[str] = []

    def role(i: int) -> None:
        try:
            client = RendezvousClient(server.address, f"r{i}", server.token)
            client.publish(f"k{i}", i)  # a second segment right after the hello
            assert client.lookup(f"k{(i + 1) % n}") == (i + 1) % n
            client.close()
        except Exception as err:
            errors.append(repr(err))

    threads = [threading.Thread(target=role, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # all of them connect and send before anyone accepts
    server.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    server.close()
    assert not errors
    assert not any(t.is_alive() for t in threads)


def test_a_peek_returns_none_until_published_and_never_counts_as_waiting() -> None:
    def peeker():
        before = yield Lookup("late", wait=False)
        yield Publish("peeked", True)
        while (after := (yield Lookup("late", wait=False))) is None:  # polls; a waiting role would be a deadlock
            pass
        return before, after

    def publisher():
        yield Lookup("peeked")  # waits while the other only peeks: no deadlock is declared
        yield Publish("late", 5)
        return True

    out = RealEngine(timeout_s=10.0, run_timeout_s=60.0).run([Role("a", "a", peeker), Role("b", "b", publisher)])
    assert out == {"a": (None, 5), "b": True}
