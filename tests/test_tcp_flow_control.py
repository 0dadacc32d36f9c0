"""kdsim's TCP flow control: each connection's receive window bounds the bytes sent but not yet read.

A send blocks while the bytes the sender knows unread plus the new message would exceed
the window (a message alone on an empty connection always goes); a read frees its bytes
at the sender one ``tcp.latency_ns`` later (the ACK). So a slow reader slows its sender
to its read rate, and streams into one receiver interleave a window at a time.
"""

from __future__ import annotations

from bisect import bisect_right

import pytest

from kdlab.ops import Clock, Sleep, TcpAccept, TcpConnect, TcpListen, TcpRecv, TcpSend
from kdlab.program import Role
from kdsim.engine import SimEngine, SimulationError
from kdsim.profile import load_profile
from kdsim.sockets import TCP_WINDOW_BYTES

PROFILE = load_profile("eth-10g")
TCP = PROFILE.tcp


def _wire_ns(nbytes: int) -> float:
    frames = max(1, -(-nbytes // (TCP.mtu_bytes - 52)))
    return (nbytes + frames * TCP.frame_overhead_bytes) * 8 / TCP.data_rate_gbps


def _reader(service: str, n: int, pause_ns: float):
    conn = yield TcpAccept((yield TcpListen(service)))
    times = []
    for _ in range(n):
        yield TcpRecv(conn)
        times.append((yield Clock()))
        if pause_ns:
            yield Sleep(pause_ns)  # a slow application: it reads a message, then works on it
    return times


def _streamer(service: str, n: int, nbytes: int):
    """Sends ``n`` messages back to back, never waiting for anything but the socket."""
    conn = yield TcpConnect(service)
    times = []
    for i in range(n):
        yield TcpSend(conn, i, nbytes)
        times.append((yield Clock()))
    return times


def _run(window: int, *, senders: int = 1, n: int = 60, nbytes: int = 64_000, pause_ns: float = 0.0) -> dict:
    roles = []
    for i in range(senders):
        roles.append(Role(f"reader{i}", "r", _reader, {"service": f"svc{i}", "n": n, "pause_ns": pause_ns}))
        roles.append(Role(f"sender{i}", f"s{i}", _streamer, {"service": f"svc{i}", "n": n, "nbytes": nbytes}))
    return SimEngine(PROFILE, tcp_window_bytes=window).run(roles)


def test_default_window_is_linux_tcp_rmem_max() -> None:
    assert TCP_WINDOW_BYTES == 6291456  # ip-sysctl.rst, tcp_rmem max
    assert SimEngine(PROFILE).tcp_window_bytes == TCP_WINDOW_BYTES


def test_a_slow_reader_slows_a_streaming_sender_to_its_read_rate() -> None:
    nbytes, n, pause = 64_000, 60, 500_000.0  # a read every 0.5 ms; the link could carry one per ~52 us
    window = 4 * nbytes
    out = _run(window, n=n, nbytes=nbytes, pause_ns=pause)
    sent, read = out["sender0"], out["reader0"]
    # The reader's pace: one message per pause (plus its small CPU costs).
    read_gap = (read[-1] - read[10]) / (n - 1 - 10)
    assert read_gap == pytest.approx(pause, rel=0.05)
    # Past the first window, the sender sends at the reader's pace, not its link's.
    send_gap = (sent[-1] - sent[10]) / (n - 1 - 10)
    assert send_gap == pytest.approx(read_gap, rel=0.01)
    assert send_gap > 5 * _wire_ns(nbytes)
    # It never has more than the window sent and unread: when it has sent message i,
    # the reader has read all but window/nbytes of messages 0..i.
    for i, t in enumerate(sent):
        unread = (i + 1) - bisect_right(read, t)
        assert unread * nbytes <= window
    # ...and the window is used: it runs up to a full window ahead.
    assert max((i + 1) - bisect_right(read, t) for i, t in enumerate(sent)) * nbytes == window
    # With the default (6 MiB) window the same sender streams everything at its link's rate.
    free = _run(TCP_WINDOW_BYTES, n=n, nbytes=nbytes, pause_ns=pause)
    assert free["sender0"][-1] < 2 * n * _wire_ns(nbytes)
    assert free["reader0"] == pytest.approx(read, rel=1e-3)  # the reader paces itself either way


def test_a_message_larger_than_the_window_goes_alone() -> None:
    nbytes, n = 50_000, 10
    out = _run(10_000, n=n, nbytes=nbytes)  # every message is 5 windows
    sent, read = out["sender0"], out["reader0"]
    for i in range(1, n):
        # message i waits until message i-1 was read and its ACK came back
        assert sent[i] >= read[i - 1] + TCP.latency_ns - 1_000
        assert bisect_right(read, sent[i]) >= i  # nothing else unread when it goes


def test_streaming_senders_into_one_receiver_interleave() -> None:
    senders, n, nbytes = 4, 200, 64_000
    d = _wire_ns(nbytes)
    out = _run(4 * nbytes, senders=senders, n=n, nbytes=nbytes)
    received = [out[f"reader{i}"] for i in range(senders)]
    everything = sorted(t for ts in received for t in ts)
    # the receiver's link carries them all back to back...
    assert everything[-1] - everything[0] == pytest.approx((len(everything) - 1) * d, rel=0.02)
    # ...and each stream gets about 1/N of it over the time they all run, not one after another
    start, end = max(ts[0] for ts in received), min(ts[-1] for ts in received)
    assert end - start > 0.9 * (everything[-1] - everything[0])
    for ts in received:
        got = sum(start < t <= end for t in ts)
        assert got * d / (end - start) == pytest.approx(1 / senders, rel=0.05)
    # Without a window (as before flow control) the first stream is served before the others start.
    unbounded = _run(1 << 40, senders=senders, n=n, nbytes=nbytes)
    firsts = [unbounded[f"reader{i}"] for i in range(senders)]
    assert firsts[0][-1] < min(ts[0] for ts in firsts[1:])


def test_a_sender_into_a_receiver_that_never_reads_deadlocks_with_a_reason() -> None:
    def idle(service: str):
        yield TcpAccept((yield TcpListen(service)))
        yield Sleep(1e9)

    roles = [
        Role("idle", "r", idle, {"service": "svc"}),
        Role("sender", "s", _streamer, {"service": "svc", "n": 10, "nbytes": 64_000}),
    ]
    with pytest.raises(SimulationError, match="receive window"):
        SimEngine(PROFILE, tcp_window_bytes=128_000).run(roles)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_bytes"):
        SimEngine(PROFILE, tcp_window_bytes=0).run([])
