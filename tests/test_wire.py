"""kdreal's wire is safe: typed messages (never pickle), bounded frames, and a per-run token.

A foreign local process connects to a run's rendezvous and to its roles' listeners
and sends what an attacker would: a pickle whose ``__reduce__`` runs ``os.system``
(old framing, or after a hello with a wrong token), garbage, or nothing. Each such
connection is closed, nothing is executed (the marker file never appears) and the
run's result is unaffected. None of this needs RDMA: Apache Kafka on kdreal uses
sockets only. ``tests/real/test_wire_real.py`` repeats the attack on the RDMA systems.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kdlab import codec
from kdlab.kafka.apache import Fetch, FetchReply, Produce, ProduceAck
from kdlab.kafka.direct import SegmentInfo
from kdlab.verbs import QpEndpoint, RemoteBuffer
from kdreal import engine as engine_mod
from kdreal import sockets as sockets_mod
from kdreal import wire
from kdreal.rendezvous import MAX_FRAME, RendezvousClient, RendezvousServer

#: The foreign process: one connection per payload, then it reports which ones the server closed.
ATTACKER = r"""
import json, os, pickle, shlex, socket, struct, sys
marker, host, port, head, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
class Evil:
    def __reduce__(self):
        return (os.system, ("touch " + shlex.quote(marker),))
evil = pickle.dumps(("publish", "k", Evil()))
frame = struct.pack(head, len(evil)) + evil
wrong = b"kdreal\x00\x01" + bytes(32)
payloads = {"pickle": frame, "wrong_token": wrong + frame, "wrong_token_huge": wrong + struct.pack(head, 2**31),
            "garbage": os.urandom(4096), "hangup": b""}
conns = {}
for name, data in payloads.items():
    s = socket.create_connection((host, port))
    if data:
        s.sendall(data)
    else:
        s.close()
        continue
    conns[name] = s
print("sent", flush=True)
closed = {"hangup": True}
for name, s in conns.items():
    s.settimeout(60)
    try:
        while s.recv(65536):
            pass
        closed[name] = True
    except ConnectionResetError:
        closed[name] = True
    except OSError:
        closed[name] = False
with open(out, "w") as f:
    json.dump({"target": f"{host}:{port}", "closed": closed}, f)
"""


def start_attack(address: tuple[str, int], head: str, spy_dir: Path) -> subprocess.Popen:
    """Start the foreign process against ``address``; return once its connections are made and sent."""
    out = spy_dir / f"attack.{address[1]}.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", ATTACKER, str(spy_dir / "PWNED"), address[0], str(address[1]), head, str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    proc.stdout.close()
    _attackers.append(proc)
    assert line == "sent", "the foreign process could not connect"
    return proc


_attackers: list[subprocess.Popen] = []


def attack_results(spy_dir: Path, expected: int) -> list[dict[str, Any]]:
    """The reports of ``expected`` foreign processes (those of role processes may still be writing)."""
    while _attackers:
        _attackers.pop().wait(60)
    deadline = time.monotonic() + 60
    while len(files := sorted(spy_dir.glob("attack.*.json"))) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.1)  # the last one to appear: let it finish its write
    return [json.loads(p.read_text()) for p in files]


def install_attackers(monkeypatch: pytest.MonkeyPatch, spy_dir: Path) -> None:
    """Attack the rendezvous of the next RealEngine run and every listener its roles open.

    The rendezvous is attacked as it is made (before the role processes fork and
    connect), a listener before ``TcpListen`` returns (before any role can look it up
    and connect): the foreign connections are the first the run has to accept.
    """

    class AttackedServer(RendezvousServer):
        def __init__(self, roles: int, token: bytes | None = None) -> None:
            super().__init__(roles, token)
            start_attack(self.address, ">I", spy_dir)

    listen = sockets_mod.SocketTable.listen

    def attacked_listen(self: Any, service: str) -> Any:
        listener, address = listen(self, service)
        start_attack(address, ">Q", spy_dir)
        return listener, address

    monkeypatch.setattr(engine_mod, "RendezvousServer", AttackedServer)
    monkeypatch.setattr(sockets_mod.SocketTable, "listen", attacked_listen)


def check_attacks_failed(spy_dir: Path, listeners: int) -> None:
    assert not (spy_dir / "PWNED").exists(), "a foreign payload was executed"
    results = attack_results(spy_dir, 1 + listeners)
    assert len(results) == 1 + listeners  # the rendezvous and every listener were attacked
    for r in results:
        assert all(r["closed"].values()), f"{r['target']} left foreign connections open: {r['closed']}"


# --- codec ----------------------------------------------------------------------------------------


def test_codec_round_trips_what_kdreal_exchanges() -> None:
    values = [
        None, True, 7, -(1 << 63), 2.5, "é", b"\x00\xff", [1, [2]], {"b": 1, 3: (4, None)}, (), ("segment", 0),
        ([QpEndpoint("a", 17, 5, "::1", 0)], RemoteBuffer(1 << 40, 0x1234, 8192)),
        Produce(0, b"batch", 8, -1), ProduceAck(1, 42, "CORRUPT_MESSAGE"), Fetch(0, 10, 1 << 20, 1, 500e6, "b1"),
        FetchReply(0, [b"x" * 1000, b"yz"], 7, 9), SegmentInfo(0, 1_000_000, 1 << 30, 99, 16384, 128, 0, 0),
    ]  # fmt: skip
    for value in values:
        back = codec.decode(codec.encode(value))
        assert back == value and type(back) is type(value)
    assert codec.decode(codec.encode(bytearray(b"ab"))) == b"ab"
    assert codec.decode(codec.encode(memoryview(b"cd"))) == b"cd"


def test_codec_refuses_unregistered_types_and_never_unpickles(tmp_path: Path) -> None:
    import pickle

    class NotAMessage:
        pass

    for value in (NotAMessage(), {1, 2}, lambda: 0, 1 << 64):
        with pytest.raises(codec.CodecError):
            codec.encode(value)
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    import msgpack

    forged = msgpack.packb(msgpack.ExtType(2, msgpack.packb(["posix.system", [f"touch {marker}"]])))
    for data in (pickle.dumps(Evil()), pickle.dumps(("publish", "k", Evil()))[:20], forged, b"\xc1", os.urandom(64)):
        with contextlib.suppress(codec.CodecError):
            codec.decode(data)
    assert not marker.exists()
    with pytest.raises(codec.CodecError, match="not registered"):
        codec.decode(forged)
    wrong_fields = msgpack.packb(msgpack.ExtType(2, msgpack.packb(["RemoteBuffer", [1, 2]])))
    with pytest.raises(codec.CodecError, match="3 fields"):
        codec.decode(wrong_fields)


# --- frames and hellos ----------------------------------------------------------------------------


def test_frames_over_the_limit_are_refused_on_both_ends() -> None:
    framing = wire.Framing(">I", 100)
    with pytest.raises(wire.WireError, match="exceeds"):
        framing.frame(b"x" * 200)
    a, b = socket.socketpair()
    with a, b:
        a.sendall(framing.head.pack(1 << 30))  # a peer claiming a 1 GiB frame: refused before reading it
        with pytest.raises(wire.WireError, match="exceeds"):
            framing.recv(b)
        a.sendall(framing.head.pack(3) + b"\xc1\xc1\xc1")  # msgpack's never-used byte: garbage
        with pytest.raises(wire.WireError, match="undecodable"):
            framing.recv(b)


def test_a_hello_must_carry_the_token() -> None:
    token = wire.new_token()
    for sent, ok in ((wire.hello(token), True), (wire.hello(wire.new_token()), False), (b"kdreal", False)):
        a, b = socket.socketpair()
        with a, b:
            a.sendall(sent)
            if len(sent) < len(wire.hello(token)):
                a.shutdown(socket.SHUT_WR)
            if ok:
                wire.check_hello(b, token, 1.0)
            else:
                with pytest.raises(wire.WireError):
                    wire.check_hello(b, token, 1.0)
    a, b = socket.socketpair()
    with a, b, pytest.raises(wire.WireError, match="no hello"):
        wire.check_hello(b, token, 0.1)  # a peer that says nothing does not hold the server


# --- a foreign process against a rendezvous and a run ---------------------------------------------


def test_the_rendezvous_refuses_foreign_connections_and_keeps_serving(tmp_path: Path) -> None:
    server = RendezvousServer(roles=2)  # a second, absent role: a lookup of a missing key times out
    server.start()
    try:
        start_attack(server.address, ">I", tmp_path).wait(60)  # it waits until each connection was closed
        client = RendezvousClient(server.address, "r", server.token)
        client.publish("k", ("value", 1))
        assert client.lookup("k") == ("value", 1)
        # Had the foreign connections counted as roles that ended, this would be a "deadlock".
        with pytest.raises(TimeoutError):
            client.lookup("missing", timeout_s=0.2)
        with pytest.raises(wire.WireError, match="exceeds"):
            client.publish("big", b"x" * MAX_FRAME)
        client.close()
        intruder = RendezvousClient(server.address, "intruder", wire.new_token())
        try:
            with pytest.raises(ConnectionError):
                intruder.lookup("k")
        finally:
            intruder.close()
    finally:
        server.close()
    check_attacks_failed(tmp_path, listeners=0)


def test_a_kafka_run_on_kdreal_is_unaffected_by_a_foreign_process(tmp_path: Path, monkeypatch) -> None:
    from kdlab.kafka.cluster import build
    from kdlab.kafka.params import KafkaParams
    from kdlab.workloads.kafka import delivery_ok
    from kdreal.engine import RealEngine

    p = KafkaParams(
        system="kafka", replication_factor=2, producers=2, partitions=2, consumers=2, acks=-1,
        records_per_producer=200, record_bytes=100, batch_bytes=1024, network_threads=1, io_threads=1,
    )  # fmt: skip
    install_attackers(monkeypatch, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    out = RealEngine(timeout_s=30.0, run_timeout_s=120.0, data_dir=str(data)).run(build(p))
    assert [out[f"consumer{i}"]["records"] for i in (0, 1)] == [out[f"producer{i}"]["records"] for i in (0, 1)]
    assert delivery_ok(out, p)
    check_attacks_failed(tmp_path, listeners=2)  # each broker's network thread
    logs = "".join(f.read_text() for f in data.glob("*.log"))
    for broker in ("b0", "b1"):  # TcpAccept refused them (they came first) and went on to the real clients
        assert logs.count(f"refused a connection to '{broker}.net0'") == 5
