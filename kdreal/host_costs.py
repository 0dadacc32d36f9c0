"""Measure the host costs of kdreal itself, so that kdsim can model this implementation.

kdreal's datapaths are Python: every operation pays the interpreter and the engine's
dispatch, a host's threads share one core (the GIL), sockets encode their messages (msgpack).
This measures, on the machine it runs on (the testbed VM, or a host with an RNIC),
with real roles on :class:`~kdreal.engine.RealEngine`:

* ``host.op_ns``: one operation (``yield Clock()``) through the engine;
* ``host.post_ns`` / ``host.poll_ns``: a PostSend of an 8-byte WRITE / an empty
  PollCq, less one operation;
* ``host.memcpy_gbps``: ReadMem of 1 MiB; ``host.crc32c_gbps``: CRC-32C of 1 MiB;
* ``host.syscall_ns``: a TcpSend of a small message, less one operation;
* ``tcp.send_ns_per_byte``: the extra time of a 64 KiB TcpSend, per byte;
* ``host.wakeup_ns``: half a QueuePut/QueueGet ping-pong between two threads of one
  host, less two operations;
* ``host.cache_miss_ns``: what a busy CQ wait costs kdreal on this machine beyond
  spinning: with more host processes than cores kdreal yields the CPU after every
  empty poll (``RealEngine(cq_wait="auto")``), so this is the extra time of such a
  wait;
* ``tcp.latency_ns``: half a TcpSend/TcpRecv ping-pong between two hosts, less the
  CPU costs and the wake-up the simulation charges on top of it.

Each value is the median of several rounds. ``python -m kdreal.host_costs --csv F
--profile-out P`` writes the measurements and a kdsim profile (``base:
rxe-qemu-tcg``, whose network numbers were fitted to the perftest tools) whose host
and TCP numbers cite this measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from kdlab.ops import (
    Clock,
    ConnectQp,
    CreateCq,
    CreateQp,
    PollCq,
    PostSend,
    QueueGet,
    QueuePut,
    ReadMem,
    RegMr,
    TcpAccept,
    TcpConnect,
    TcpListen,
    TcpRecv,
    TcpSend,
    WaitCq,
)
from kdlab.program import Role
from kdlab.verbs import Opcode, QpCap, SendWR
from kdreal.engine import RealEngine

N = 2000
BIG = 1 << 20


def _ops(n: int) -> Any:
    t0 = yield Clock()
    for _ in range(n):
        yield Clock()
    t1 = yield Clock()
    return (t1 - t0) / (n + 1)


def _verbs(n: int) -> Any:
    cq = yield CreateCq(256)
    a = yield CreateQp(cq, cq, QpCap(256, 16))
    b = yield CreateQp(cq, cq, QpCap(256, 16))
    yield ConnectQp(a, b.endpoint())
    yield ConnectQp(b, a.endpoint())
    mr = yield RegMr(BIG)
    wr = SendWR(1, Opcode.RDMA_WRITE, [mr.sge(0, 8)], remote_addr=mr.addr + 64, rkey=mr.rkey, signaled=False)
    post, poll, copy = [], [], []
    for i in range(n):
        wr.signaled = i % 16 == 15
        t0 = yield Clock()
        yield PostSend(a, wr)
        t1 = yield Clock()
        post.append(t1 - t0)
        if wr.signaled:
            yield WaitCq(cq, 16)
            t0 = yield Clock()
            yield PollCq(cq, 16)
            t1 = yield Clock()
            poll.append(t1 - t0)
    signaled = SendWR(2, Opcode.RDMA_WRITE, [mr.sge(0, 8)], remote_addr=mr.addr + 64, rkey=mr.rkey)
    waits = []
    for _ in range(200):
        t0 = yield Clock()
        yield PostSend(a, signaled)
        yield WaitCq(cq, 1)
        t1 = yield Clock()
        waits.append(t1 - t0)
    for _ in range(20):
        t0 = yield Clock()
        yield ReadMem(mr, 0, BIG)
        t1 = yield Clock()
        copy.append(t1 - t0)
    return statistics.median(post), statistics.median(poll), statistics.median(copy), statistics.median(waits)


def _tcp_server(n: int) -> Any:  # the ping-pong's echo side
    listener = yield TcpListen("costs")
    conn = yield TcpAccept(listener)
    for _ in range(n):
        _, msg = yield TcpRecv(conn)
        yield TcpSend(conn, msg, 0)
    return None


def _tcp_client(n: int) -> Any:
    conn = yield TcpConnect("costs")
    small, big, rtt = [], [], []
    payload = bytes(64 * 1024)
    for i in range(n):
        t0 = yield Clock()
        yield TcpSend(conn, b"x" * 64 if i % 2 == 0 else payload, 0)
        t1 = yield Clock()
        (small if i % 2 == 0 else big).append(t1 - t0)
        yield TcpRecv(conn)
        t2 = yield Clock()
        if i % 2 == 0:
            rtt.append(t2 - t0)
    return statistics.median(small), statistics.median(big), statistics.median(rtt)


def tcp_roles(n: int, server_host: str = "s", client_host: str = "c") -> list[Role]:
    """The TCP ping-pong: ``n`` messages, 64 B and 64 KiB in turn; the client returns medians (small, big, rtt)."""
    return [Role("server", server_host, _tcp_server, {"n": n}), Role("client", client_host, _tcp_client, {"n": n})]


def tcp_latency_ns(rtt: float, op: float, syscall: float, wake: float) -> float:
    """One way = sender (op + syscall) + latency + wake-up + receiver (op + syscall): the latency, from a round trip."""
    return max(0.0, rtt / 2 - 2 * (op + syscall) - max(0.0, wake))


def _ping(n: int) -> Any:
    rtt = []
    for _ in range(n):
        t0 = yield Clock()
        yield QueuePut("ping", 1)
        yield QueueGet("pong")
        t1 = yield Clock()
        rtt.append(t1 - t0)
    return statistics.median(rtt)


def _pong(n: int) -> Any:
    for _ in range(n):
        yield QueueGet("ping")
        yield QueuePut("pong", 1)
    return None


def _crc_ns_per_byte() -> float:
    from kdlab.kafka.records import crc32c

    data = bytes(BIG)
    times = []
    for _ in range(20):
        t0 = time.perf_counter_ns()
        crc32c(data)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / BIG


def measure(rounds: int = 3, device: str | None = None) -> dict[str, float]:
    """Every cost, the median over ``rounds`` runs (ns, or Gb/s for the bandwidths), on ``device``."""
    engine = RealEngine(device, timeout_s=60, run_timeout_s=600)
    spinning = RealEngine(device, timeout_s=60, run_timeout_s=600, cq_wait="spin")
    yielding = RealEngine(device, timeout_s=60, run_timeout_s=600, cq_wait="yield")
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        op = engine.run([Role("ops", "a", _ops, {"n": N})])["ops"]
        post, poll, copy, spin_wait = spinning.run([Role("verbs", "b", _verbs, {"n": N // 2})])["verbs"]
        yield_wait = yielding.run([Role("verbs", "b", _verbs, {"n": N // 2})])["verbs"][3]
        tcp = engine.run(tcp_roles(400))
        small, big, rtt = tcp["client"]
        queues = engine.run([Role("ping", "h", _ping, {"n": 400}), Role("pong", "h", _pong, {"n": 400})])
        wake = queues["ping"] / 2 - 2 * op
        syscall = max(0.0, small - op)
        got = {
            "host.op_ns": op,
            "host.post_ns": max(0.0, post - op),
            "host.poll_ns": max(0.0, poll - op),
            "host.memcpy_gbps": BIG * 8 / copy,
            "host.crc32c_gbps": 8 / _crc_ns_per_byte(),
            "host.syscall_ns": syscall,
            "host.wakeup_ns": max(0.0, wake),
            "host.queue_wakeup_ns": max(0.0, wake),  # the same wait: kdreal's queues wait on a threading.Condition
            "host.notify_ns": max(0.0, wake),  # notifications wait on a Condition on the same host lock
            "host.cache_miss_ns": max(0.0, yield_wait - spin_wait),
            "tcp.send_ns_per_byte": max(0.0, (big - small) / (64 * 1024 - 64)),
            "tcp.latency_ns": tcp_latency_ns(rtt, op, syscall, wake),
        }
        for k, v in got.items():
            samples.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in samples.items()}


HOW = {
    "host.op_ns": "one `yield Clock()` through kdreal's engine",
    "host.post_ns": "PostSend of an 8 B RDMA WRITE, less one operation",
    "host.poll_ns": "an empty PollCq, less one operation",
    "host.memcpy_gbps": "ReadMem of 1 MiB from a registered MR",
    "host.crc32c_gbps": "google-crc32c over 1 MiB",
    "host.syscall_ns": "TcpSend of a 64 B message (msgpack, sendall), less one operation",
    "host.wakeup_ns": "half a QueuePut/QueueGet ping-pong between two threads of one host, less two operations",
    "host.queue_wakeup_ns": "the measurement of host.wakeup_ns: kdreal's queues wait on a threading.Condition"
    " (kdreal/host.py)",
    "host.notify_ns": "the measurement of host.wakeup_ns: kdreal's notifications wait on a threading.Condition on the"
    " same host lock as its queues (kdreal/host.py)",
    "host.cache_miss_ns": "a signaled WRITE waited for by polling and yielding the CPU, less the same waited for by"
    " spinning: kdreal's busy CQ waits yield when the host processes outnumber the cores (cq_wait=auto), as in the"
    " testbed",
    "tcp.send_ns_per_byte": "(TcpSend of 64 KiB - TcpSend of 64 B) / bytes",
    "tcp.latency_ns": "half a 64 B TcpSend/TcpRecv ping-pong between two hosts, less both ends' CPU and the wake-up",
}


TESTBED_DESCRIPTION = (
    "kdreal (Python datapaths on pyverbs) in the Soft-RoCE testbed VM (QEMU TCG, 2 vCPUs). Network and NIC: "
    "rxe-qemu-tcg (fitted to the perftest tools). Host and TCP costs: measured from kdreal itself "
    "(results/measured/{csv}). A functional testbed, not a performance reference."
)


def profile_yaml(
    costs: dict[str, float], csv_name: str, where: str, cores: int, *, name: str = "kdreal-rxe-tcg",
    base: str = "rxe-qemu-tcg", description: str = TESTBED_DESCRIPTION, generated_by: str | None = None,
    how: dict[str, str] | None = None, nic_on_host: bool = True,
) -> str:  # fmt: skip
    """A kdsim profile for kdreal on this machine (or cluster): ``base``'s network, these host costs.

    ``how`` adds to each parameter's source (a cluster: over how many hosts); ``nic_on_host``
    says the RNIC is software (Soft-RoCE) whose work shares the hosts' cores.
    """
    day = datetime.date.today().isoformat()
    lines = [
        f"# Generated by: {generated_by or f'python -m kdreal.host_costs --csv {csv_name}'} (in {where}, {day})",
        f"name: {name}",
        f"description: {json.dumps(description.format(csv=csv_name))}",
        f"base: {base}",
    ]
    sections: dict[str, list[str]] = {"host": [], "tcp": []}
    for key, value in costs.items():
        section, param = key.split(".")
        src = f"measured: {HOW[key]} ({(how or {}).get(key, 'median of rounds')}; results/measured/{csv_name})"
        sections[section].append(f'  {param}: {{value: {value:.6g}, tag: M, source: "{src}"}}')
    sections["host"].append(
        "  request_ns: {value: 0.0, tag: A, source: \"kdreal brokers do no work at Compute('request'): the Python "
        'request handling runs between operations and is counted by op_ns"}'
    )
    sections["host"].append(
        '  handoff_ns: {value: 0.0, tag: V, source: "kdreal runs the threads these hand-offs join as one role and one '
        "thread (a producer's application and I/O sides, a broker thread and its response send, kdlab/kafka): "
        'nothing is handed off"}'
    )
    sections["host"].append(
        "  append_ns: {value: 0.0, tag: A, source: \"kdreal brokers do no work at Compute('append'): the Python append "
        'runs between operations and is counted by op_ns"}'
    )
    sections["host"].append(
        "  append_record_ns: {value: 0.0, tag: A, source: \"kdreal brokers do no work at Compute('append'): kdreal "
        'validates a batch by its CRC, without iterating records"}'
    )
    for name, what in (
        ("producer_record_ns", "send path"),
        ("consumer_record_ns", "record parsing"),
        ("consumer_fetch_ns", "fetch building"),
    ):
        sections["host"].append(
            f'  {name}: {{value: 0.0, tag: A, source: "kdreal clients do no work at this Compute: the Python {what} '
            'runs between operations and is counted by op_ns"}'
        )  # fmt: skip
    sections["host"].append(
        '  gc_young_bytes: {value: 0, tag: V, source: "CPython frees by reference counting; its cyclic collector '
        'is not a stop-the-world young collection of a sized eden (docs.python.org/3/library/gc.html)"}'
    )
    sections["host"].append(
        '  gc_pause_ns: {value: 0.0, tag: V, source: "no young collections (host.gc_young_bytes 0)"}'
    )
    sections["host"].append(
        '  process_cores: {value: 1, tag: V, source: "CPython executes one thread of a process at a time (the GIL; '
        "docs.python.org/3/glossary.html#term-global-interpreter-lock); kdreal runs a host's roles as threads\"}"
    )
    sections["host"].append(
        f'  machine_cores: {{value: {cores}, tag: V, source: "os.cpu_count() where this ran: the testbed VM has as '
        f"many vCPUs as the host has cores (kdreal/testbed/vm.py, QEMU -smp); a run's brokers and clients are all "
        f'its processes"}}'
    )
    sections["tcp"].append(
        '  recv_ns_per_byte: {value: 0.0, tag: A, source: "counted in send_ns_per_byte: the ping-pong measures '
        'both ends (recv_into, decode) together"}'
    )
    sections["tcp"].append(
        '  data_rate_gbps: {value: 1000.0, tag: A, source: "loopback: no wire; the time is the per-byte CPU of '
        'send_ns_per_byte"}'
    )
    if nic_on_host:
        sections["nic"] = [
            "  on_host_cores: {value: 1, tag: V, source: \"Soft-RoCE (rdma_rxe) does the RNIC's work in the kernel, on "
            'the same vCPUs as the brokers and clients (linux drivers/infiniband/sw/rxe)"}'
        ]
    for section, entries in sections.items():
        lines.append(f"{section}:")
        lines.extend(entries)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", default="results/measured/kdreal-host-costs.csv")
    ap.add_argument("--profile-out", default=None, help="write a kdsim profile with these costs")
    ap.add_argument("--where", default="the kdlab testbed VM")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default=None, help="verbs device (default: the first listed)")
    args = ap.parse_args(argv)
    costs = measure(args.rounds, args.device)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w") as f:
        f.write("parameter,value,how\n")
        for k, v in costs.items():
            f.write(f'{k},{v:.6g},"{HOW[k]}"\n')
            print(f"{k:24s} {v:12.4g}   {HOW[k]}")
    if args.profile_out:
        Path(args.profile_out).write_text(profile_yaml(costs, Path(args.csv).name, args.where, os.cpu_count() or 1))
        print(f"wrote {args.profile_out}")


if __name__ == "__main__":
    main()
