"""kdsim's TCP charges the receiver's link too: N senders into one receiver share its rate (incast).

A message crosses the sender's uplink, then the receiver's downlink; the two are a
pipeline, so one flow alone is timed exactly as before (serialisation + latency) and
only a shared receiver queues.
"""

from __future__ import annotations

from itertools import count, pairwise

import pytest
import simpy

from kdlab.ops import Clock, TcpAccept, TcpConnect, TcpListen, TcpRecv, TcpSend
from kdlab.program import Role
from kdsim.engine import SimEngine
from kdsim.profile import load_profile
from kdsim.sockets import SimConn, SocketLayer

PROFILE = load_profile("eth-10g")
TCP = PROFILE.tcp


def _wire_ns(nbytes: int) -> float:
    frames = max(1, -(-nbytes // (TCP.mtu_bytes - 52)))
    return (nbytes + frames * TCP.frame_overhead_bytes) * 8 / TCP.data_rate_gbps


def _layer() -> SocketLayer:
    return SocketLayer(simpy.Environment(), PROFILE, count())


def _connect(layer: SocketLayer, host: str, service: str, receiver: str = "r") -> SimConn:
    if service not in layer.listeners:
        layer.listen(service, receiver)
    conn = layer.connect(service, host, 0.0)
    assert conn is not None
    return conn


def test_one_flow_is_timed_by_serialisation_and_latency_alone() -> None:
    # Messages of mixed sizes, some sent while the link is still busy (they queue at the
    # sender) and some after it went idle: each arrives at the closed form.
    layer = _layer()
    conn = _connect(layer, "a", "svc")
    sends = [(0.0, 1_000_000), (10.0, 64), (5e5, 9000), (3e6, 1), (3e6 + 1.0, 4_000_000), (2e7, 1448)]
    free = 0.0
    for when, nbytes in sends:
        free = max(when, free) + _wire_ns(nbytes)
        assert layer.send(conn, None, nbytes, when) == pytest.approx(free + TCP.latency_ns, rel=1e-12)
    # the receiver's link carried the same bytes, and was never the bottleneck
    assert layer.downlinks["r"].busy_ns == pytest.approx(layer.uplinks["a"].busy_ns)


def test_two_flows_from_different_senders_to_different_receivers_do_not_interfere() -> None:
    layer = _layer()
    ab = _connect(layer, "a", "svc-b", receiver="b")
    cd = _connect(layer, "c", "svc-d", receiver="d")
    n = 1_000_000
    assert layer.send(ab, None, n, 0.0) == layer.send(cd, None, n, 0.0) == _wire_ns(n) + TCP.latency_ns


def _incast(n_senders: int, messages: int, nbytes: int) -> dict[int, list[float]]:
    """Senders on hosts s0..s{N-1} each stream ``messages`` into host r, sending as fast
    as their own link allows; the sends are made in time order, as the simulator does."""
    layer = _layer()
    conns = [_connect(layer, f"s{i}", f"svc{i}") for i in range(n_senders)]
    d = _wire_ns(nbytes)
    arrivals: dict[int, list[float]] = {i: [] for i in range(n_senders)}
    for k in range(messages):
        for i, conn in enumerate(conns):
            arrivals[i].append(layer.send(conn, None, nbytes, k * d))
    return arrivals


@pytest.mark.parametrize("n_senders", [2, 4, 8])
def test_senders_into_one_receiver_share_its_link(n_senders: int) -> None:
    nbytes, messages = 64_000, 200
    arrivals = _incast(n_senders, messages, nbytes)
    d = _wire_ns(nbytes)
    everything = sorted(t for ts in arrivals.values() for t in ts)
    # The aggregate never exceeds the receiver's rate: any k messages take >= (k-1)
    # serialisations to arrive (one link delivers them one after another).
    gaps = [b - a for a, b in pairwise(everything)]
    assert min(gaps) >= d * (1 - 1e-9)
    # ...and the receiver's link is the bottleneck: it is busy all the time.
    span = everything[-1] - everything[0]
    assert (len(everything) - 1) * d == pytest.approx(span, rel=1e-9)
    # Each sender gets about 1/N of it, measured over the time they all send.
    end = min(ts[-1] for ts in arrivals.values())
    start = max(ts[0] for ts in arrivals.values())
    rate = 1 / d  # messages per ns the receiver's link carries
    for ts in arrivals.values():
        got = sum(start < t <= end for t in ts)
        assert got / (end - start) == pytest.approx(rate / n_senders, rel=0.03)
    # A message alone would take d + latency; the last one waits for everyone's.
    assert everything[-1] == pytest.approx(n_senders * messages * d + TCP.latency_ns, rel=1e-9)


def test_link_utilisation_is_reported_for_both_directions() -> None:
    layer = _layer()
    nbytes, messages, n_senders = 64_000, 100, 4
    conns = [_connect(layer, f"s{i}", f"svc{i}") for i in range(n_senders)]
    d = _wire_ns(nbytes)
    last = 0.0
    for k in range(messages):
        for conn in conns:
            last = layer.send(conn, None, nbytes, k * d)
    util = layer.utilisation(last)
    # each sender's uplink carries 1/N of what the receiver's downlink does
    assert util["r"]["tcp_downlink"] == pytest.approx(n_senders * util["s0"]["tcp_uplink"])
    assert util["r"]["tcp_downlink"] == pytest.approx(n_senders * messages * d / last)
    assert 0.99 < util["r"]["tcp_downlink"] <= 1.0
    assert "tcp_downlink" not in util["s0"] and "tcp_uplink" not in util["r"]


# --- through the engine: client threads on their own hosts, each with a thread at the receiver


def _sink(service: str, n: int):
    conn = yield TcpAccept((yield TcpListen(service)))
    times = []
    for _ in range(n):
        yield TcpRecv(conn)
        times.append((yield Clock()))
        yield TcpSend(conn, "ack", 64)
    return times


def _source(service: str, n: int, nbytes: int):
    conn = yield TcpConnect(service)
    t0 = yield Clock()
    for i in range(n):
        yield TcpSend(conn, i, nbytes)
        yield TcpRecv(conn)  # one request in flight, as a Kafka producer with one in flight
    return t0, (yield Clock())


def _engine_run(n_senders: int, n: int, nbytes: int) -> tuple[dict, SimEngine]:
    roles = []
    for i in range(n_senders):
        roles.append(Role(f"sink{i}", "r", _sink, {"service": f"svc{i}", "n": n}))
        roles.append(Role(f"src{i}", f"s{i}", _source, {"service": f"svc{i}", "n": n, "nbytes": nbytes}))
    engine = SimEngine(PROFILE)
    return engine.run(roles), engine


def test_one_sender_through_the_engine_is_unchanged_by_the_receivers_link() -> None:
    nbytes = 1_000_000
    out, _ = _engine_run(1, 1, nbytes)
    host = PROFILE.host
    t0 = out["src0"][0]
    send_cpu = host.syscall_ns + nbytes * TCP.send_ns_per_byte
    recv_cpu = host.syscall_ns + nbytes * TCP.recv_ns_per_byte
    expected = send_cpu + _wire_ns(nbytes) + TCP.latency_ns + recv_cpu
    assert out["sink0"][0] - t0 == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("n_senders", [2, 4, 8])
def test_producers_into_one_broker_share_its_link(n_senders: int) -> None:
    nbytes, n = 1_000_000, 40
    out, engine = _engine_run(n_senders, n, nbytes)
    alone, _ = _engine_run(1, n, nbytes)
    goodput = nbytes / _wire_ns(nbytes)  # payload bytes per ns the receiver's link carries
    # One sender with one request in flight leaves the link idle between requests
    # (its CPU, the latency, the ack) and gets ~70% of it; two or more fill it.
    rate_alone = (n - 1) * nbytes / (alone["sink0"][-1] - alone["sink0"][0])
    assert 0.5 * goodput < rate_alone < 0.9 * goodput
    # Received bytes per sender over the time all of them are sending.
    received = [out[f"sink{i}"] for i in range(n_senders)]
    start, end = max(ts[0] for ts in received), min(ts[-1] for ts in received)
    per_sender = [sum(start < t <= end for t in ts) * nbytes / (end - start) for ts in received]
    assert sum(per_sender) <= goodput * (1 + 1e-9)  # never more than the receiver's link
    assert sum(per_sender) > 0.95 * goodput
    for r in per_sender:
        assert r == pytest.approx(goodput / n_senders, rel=0.03)
    sim_ns = engine.stats.sim_time_ns
    util = engine.sockets.utilisation(sim_ns)
    assert util["r"]["tcp_downlink"] > 0.9
    assert engine.sockets.downlinks["r"].busy_ns > n_senders * n * _wire_ns(nbytes) * 0.999
