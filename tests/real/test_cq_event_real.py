"""Event-mode CQ waits on real verbs: the first CQ of a process can be slept on, and sleeping frees the GIL.

A KafkaDirect broker's first verbs call is its RDMA thread's ``CreateCq``. Opening the
device there made a second ``[infinibandevent]`` descriptor (the context's async
events) appear next to the completion channel's, the channel's went unrecognised, and
an idle event-mode wait blocked in pyverbs' ``get_cq_event`` holding the GIL: the
broker's other threads (the handler that must answer a produce, a follower's
handler that must ack a push) never ran again and producers timed out on their ack.
"""

from __future__ import annotations

import threading
import time

import pytest

from kdreal.testbed import HOW_TO_RUN, has_rdma

pytestmark = pytest.mark.rdma


@pytest.fixture
def verbs():
    if not has_rdma():
        pytest.skip(f"no RDMA device: {HOW_TO_RUN}")
    from kdreal.verbs import Verbs

    v = Verbs("host0", timeout_s=5.0)
    yield v
    v.close()


def test_the_first_cq_of_a_fresh_context_has_its_channel_descriptor(verbs) -> None:
    cq = verbs.create_cq(16)  # the device is not open yet: this call opens it
    assert verbs._cqs[cq.cq_id].fd is not None
    cq2 = verbs.create_cq(16)
    assert verbs._cqs[cq2.cq_id].fd not in (None, verbs._cqs[cq.cq_id].fd)


def test_an_idle_event_wait_lets_the_other_threads_run(verbs) -> None:
    cq = verbs.create_cq(16)
    assert verbs._cqs[cq.cq_id].fd is not None  # else the wait below could hold the GIL for good
    outcome: list[BaseException] = []

    def sleeper() -> None:
        try:
            verbs.wait_cq(cq, 1, "event", 1.0)
        except BaseException as err:  # the timeout is the expected outcome
            outcome.append(err)

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    ticks, end = 0, time.monotonic() + 0.5
    while time.monotonic() < end:  # this thread keeps running while the other sleeps on the channel
        ticks += 1
        time.sleep(0.01)
    thread.join(5.0)
    assert not thread.is_alive()
    assert ticks >= 10
    assert len(outcome) == 1 and isinstance(outcome[0], TimeoutError)
