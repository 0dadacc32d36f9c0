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
    """A poster that WRITEs at Poisson times and a reaper thread that timestamps completions."""

    def poster(side):
        yield Publish("cq", side.send_cq)
        rng = random.Random(seed)
        target = (yield Clock()) + 10_000.0
        posted = []
        for i in range(n):
            target += rng.expovariate(rate_per_ns)
            now = yield Clock()
            yield Sleep(max(0.0, target - now))
            posted.append((yield Clock()))
            yield PostSend(side.qp, SendWR(i, Opcode.RDMA_WRITE, [side.mr.sge(0, SIZE)],
                                           remote_addr=side.peer.addr, rkey=side.peer.rkey))  # fmt: skip
        yield Publish("requester.done", True)
        return posted

    def reaper():
        cq = yield Lookup("cq")
        done: dict[int, float] = {}
        while len(done) < n:
            wcs = yield WaitCq(cq, 1)
            t = yield Clock()
            for wc in wcs:
                assert wc.ok, wc
                done[wc.wr_id] = t
        return done

    roles = make_rc_pair(poster, lambda side: idle_until("requester.done"))
    return [*roles, Role("reaper", "a", reaper)]


def _latencies(rate_per_ns: float, n: int, seed: int) -> list[float]:
    res, engine = run_sim(_poisson_writes(rate_per_ns, n, seed), overrides=FAST_HOST)
    posted, done = res["requester"], res["reaper"]
    assert engine.transport.bytes_delivered == n * SIZE
    return [done[i] - posted[i] for i in range(n)]


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_end_to_end_write_latency_follows_md1_on_the_bottleneck_link(rho: float) -> None:
    service = WireModel.from_profile(sim_profile(overrides=FAST_HOST)).message_ns(SIZE, RETH_BYTES)
    # Unloaded: WRITEs a millisecond apart. The first pays the QP-context misses, the rest not.
    idle = _latencies(1e-6, 4, seed=0)
    unloaded = idle[-1]
    assert idle[1:] == pytest.approx([unloaded] * 3, abs=1e-6)
    n = 20_000
    lat = _latencies(rho / service, n, seed=int(rho * 10))
    assert min(lat) == pytest.approx(unloaded, abs=1.0)  # never faster than an idle system
    extra = sum(lat) / n - unloaded
    assert extra == pytest.approx(md1_wait(rho, service), rel=0.10)
