"""Closed-form queueing: a single server fed with Poisson arrivals of fixed service time
is an M/D/1 queue, whose mean wait is Wq = rho / (2 mu (1 - rho)) (Pollaczek-Khinchine
with zero service-time variance)."""

from __future__ import annotations

import random

import pytest

from kdlab.ops import Clock, Lookup, PostSend, Publish, Sleep, WaitCq
from kdlab.program import Role
from kdlab.verbs import Opcode, SendWR
from kdsim.fabric import RETH_BYTES, Fabric, WireModel
from kdsim.timeline import Timeline
from tests.helpers import idle_until, make_rc_pair, run_sim, sim_profile


def md1_wait(rho: float, service: float) -> float:
    mu = 1.0 / service
    return rho / (2 * mu * (1 - rho))


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_timeline_is_an_md1_queue(rho: float) -> None:
    service, n = 10.0, 200_000
    rng = random.Random(42)
    lam = rho / service
    server = Timeline("server")
    t, total_wait = 0.0, 0.0
    for _ in range(n):
        t += rng.expovariate(lam)
        start, end = server.reserve(t, service)
        assert start >= t and end == start + service
        total_wait += start - t
    assert total_wait / n == pytest.approx(md1_wait(rho, service), rel=0.05)
    assert server.busy_ns == pytest.approx(n * service)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_fabric_link_is_an_md1_queue(rho: float) -> None:
    """Messages of one size through a back-to-back link: the wire is the server."""
    profile = sim_profile()
    fabric = Fabric(profile, ["a", "b"])
    wire = WireModel.from_profile(profile)
    size = 65536
    service = wire.message_ns(size, RETH_BYTES)
    first = wire.first_packet_ns(size, RETH_BYTES)
    lat = profile.link.propagation_ns
    rng = random.Random(43)
    t, total_wait, n = 0.0, 0.0, 60_000
    for _ in range(n):
        t += rng.expovariate(rho / service)
        first_in, last_in = fabric.send("a", "b", t, t, size, RETH_BYTES)
        start = first_in - first - lat
        assert last_in == pytest.approx(start + service + lat)
        total_wait += start - t
    assert total_wait / n == pytest.approx(md1_wait(rho, service), rel=0.05)


#: NIC, PCIe and host far faster than the link, so that the link is the only queue.
FAST_HOST = {"pcie.bandwidth_gbps": 100_000.0, "nic.tx_wqe_ns": 1.0, "nic.rx_ns": 1.0}
SIZE = 65536


def _poisson_writes(rate_per_ns: float, n: int, seed: int) -> list[Role]:
    """A poster that WRITEs at Poisson times and a reaper thread that timestamps completions.

    One warm-up WRITE (wr_id ``n``) goes first, so that every measured WRITE finds its QP
    context cached and the system idle.
    """

    def poster(side):
        yield Publish("cq", side.send_cq)

        def write(wr_id: int) -> PostSend:
            return PostSend(side.qp, SendWR(wr_id, Opcode.RDMA_WRITE, [side.mr.sge(0, SIZE)],
                                            remote_addr=side.peer.addr, rkey=side.peer.rkey))  # fmt: skip

        yield write(n)
        rng = random.Random(seed)
        target = (yield Clock()) + 100_000.0
        posted = []
        for i in range(n):
            target += rng.expovariate(rate_per_ns)
            now = yield Clock()
            yield Sleep(max(0.0, target - now))
            posted.append((yield Clock()))
            yield write(i)
        yield Publish("requester.done", True)
        return posted

    def reaper():
        cq = yield Lookup("cq")
        done: dict[int, float] = {}
        while len(done) < n + 1:
            wcs = yield WaitCq(cq, 1)
            t = yield Clock()
            for wc in wcs:
                assert wc.ok, wc
                done[wc.wr_id] = t
        return done

    roles = make_rc_pair(poster, lambda side: idle_until("requester.done"))
    return [*roles, Role("reaper", "a", reaper)]


def _run_writes(rate_per_ns: float, n: int, seed: int) -> tuple[list[float], list[float]]:
    """-> (post times, latencies) of the measured WRITEs."""
    res, engine = run_sim(_poisson_writes(rate_per_ns, n, seed), overrides=FAST_HOST)
    posted, done = res["requester"], res["reaper"]
    assert engine.transport.bytes_delivered == (n + 1) * SIZE
    return posted, [done[i] - posted[i] for i in range(n)]


def _lindley(arrivals: list[float], service: float) -> list[float]:
    """Waiting times of a FIFO single server, computed independently of kdsim."""
    waits, w = [], 0.0
    for k, a in enumerate(arrivals):
        if k:
            w = max(0.0, w + service - (a - arrivals[k - 1]))
        waits.append(w)
    return waits


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_end_to_end_write_latency_follows_md1_on_the_bottleneck_link(rho: float) -> None:
    service = WireModel.from_profile(sim_profile(overrides=FAST_HOST)).message_ns(SIZE, RETH_BYTES)
    _, idle = _run_writes(1e-6, 4, seed=1)  # a millisecond apart on average
    unloaded = idle[0]
    assert idle == pytest.approx([unloaded] * 4, abs=1e-6)
    n = 30_000
    posted, lat = _run_writes(rho / service, n, seed=1)
    extra = [x - unloaded for x in lat]
    # Message by message, the latency above the unloaded one is the link's FIFO wait ...
    waits = _lindley(posted, service)
    worst = max(abs(e - w) for e, w in zip(extra, waits, strict=True))
    assert worst < 5.0, f"latency deviates from the link's wait by up to {worst:.1f} ns"
    # ... and on average it is the M/D/1 mean wait.
    assert sum(extra) / n == pytest.approx(md1_wait(rho, service), rel=0.10)
