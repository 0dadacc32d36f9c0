"""perftest's microbenchmarks as engine-neutral datapath code.

The loops follow linux-rdma/perftest (``ib_{send,write,read,atomic}_{lat,bw}``):

* latency tests ping-pong one message (write, send) and report half the round trip,
  or time one request/response (read, atomic) and report the full round trip;
* bandwidth tests keep ``tx_depth`` work requests in flight per QP, signal every
  ``cq_mod``-th one, and post ``post_list`` WRs per doorbell; QPs are served round
  robin by one thread, as ``-q N`` does.

Each test is a pair of roles, ``client`` (the requester, host ``a``) and ``server``
(host ``b``), that meet over the rendezvous to exchange QP numbers and buffers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

from kdlab.ops import (
    Clock,
    ConnectQp,
    CreateCq,
    CreateQp,
    Lookup,
    PostRecv,
    PostSend,
    Publish,
    QueryDevice,
    RegMr,
    SpinUntil,
    WaitCq,
    WriteMem,
)
from kdlab.program import DatapathError, Role
from kdlab.verbs import ATOMIC_BYTES, MemoryRegion, Opcode, QpCap, RecvWR, SendWR, WorkCompletion

LATENCY_TESTS = ("send_lat", "write_lat", "read_lat", "atomic_lat")
BANDWIDTH_TESTS = ("send_bw", "write_bw", "read_bw", "atomic_bw")
TESTS = LATENCY_TESTS + BANDWIDTH_TESTS
#: perftest reports half the round trip for these, the full round trip for read/atomic.
HALF_RTT_TESTS = frozenset({"send_lat", "write_lat"})
#: perftest measures no BW peak (it keeps no per-WR times) above this many iterations per QP.
NO_PEAK_ITERS = 20000

Ops = Generator[Any, Any, Any]


@dataclass(frozen=True)
class PerftestConfig:
    """One perftest run; defaults are perftest's (``perftest_parameters.h``)."""

    test: str
    size: int = 65536
    iterations: int = 1000
    qps: int = 1
    tx_depth: int = 128
    rx_depth: int = 512
    cq_mod: int = 100
    post_list: int = 1
    inline_size: int | None = None  # None: the device's maximum for latency tests, 0 for bandwidth
    atomic: str = "fetch_add"  # or "cmp_swap"
    threads: int = 1  # client threads (bandwidth tests), each driving qps/threads QPs

    @property
    def is_latency(self) -> bool:
        return self.test in LATENCY_TESTS

    @property
    def opcode(self) -> Opcode:
        kind = self.test.split("_")[0]
        if kind == "atomic":
            return Opcode.ATOMIC_FETCH_AND_ADD if self.atomic == "fetch_add" else Opcode.ATOMIC_CMP_AND_SWP
        return {"send": Opcode.SEND, "write": Opcode.RDMA_WRITE, "read": Opcode.RDMA_READ}[kind]

    @property
    def msg_bytes(self) -> int:
        return ATOMIC_BYTES if self.test.startswith("atomic") else self.size


def roles(cfg: PerftestConfig) -> list[Role]:
    """The roles of a perftest run: a client and a server per thread.

    With ``threads`` > 1 (bandwidth tests), each client thread drives its own share of
    the QPs, as several perftest processes on one host would; the roles are named
    ``client``/``server`` for one thread and ``client<i>``/``server<i>`` otherwise.
    """
    if cfg.threads == 1:
        return [Role("client", "a", client, {"cfg": cfg}), Role("server", "b", server, {"cfg": cfg})]
    if cfg.is_latency or cfg.qps % cfg.threads:
        raise DatapathError(f"threads ({cfg.threads}) needs a bandwidth test and qps ({cfg.qps}) divisible by it")
    share = replace(cfg, qps=cfg.qps // cfg.threads, threads=1)
    out = []
    for t in range(cfg.threads):
        out.append(Role(f"client{t}", "a", client, {"cfg": share, "tag": str(t)}))
        out.append(Role(f"server{t}", "b", server, {"cfg": share, "tag": str(t)}))
    return out


# --- set-up ---------------------------------------------------------------------------


@dataclass
class Side:
    mr: MemoryRegion
    send_cq: Any
    recv_cq: Any
    qps: list[Any]
    peer_buf: Any
    inline: int


def _setup(cfg: PerftestConfig, me: str, peer: str) -> Ops:
    """Register one message slot per QP, create CQs and QPs, exchange, connect."""
    dev = yield QueryDevice()
    if cfg.inline_size is None:
        inline = dev.max_inline_data if cfg.is_latency else 0
    else:
        inline = cfg.inline_size
    slot = max(cfg.msg_bytes, ATOMIC_BYTES)
    mr = yield RegMr(slot * cfg.qps * 2)  # first half: what we send/read into; second: what peers target
    depth = max(cfg.tx_depth * cfg.qps, 16)
    send_cq = yield CreateCq(depth)
    recv_cq = yield CreateCq(max(cfg.rx_depth * cfg.qps, 16))
    cap = QpCap(max_send_wr=cfg.tx_depth, max_recv_wr=cfg.rx_depth, max_inline_data=inline)
    qps = []
    for _ in range(cfg.qps):
        qps.append((yield CreateQp(send_cq, recv_cq, cap)))
    yield Publish(me, ([qp.endpoint() for qp in qps], mr.remote(slot * cfg.qps)))
    peer_eps, peer_buf = yield Lookup(peer)
    for qp, ep in zip(qps, peer_eps, strict=True):
        yield ConnectQp(qp, ep)
    yield Publish(f"{me}.ready", True)
    yield Lookup(f"{peer}.ready")
    return Side(mr, send_cq, recv_cq, qps, peer_buf, inline)


def _check(wcs: list[WorkCompletion]) -> None:
    for wc in wcs:
        if not wc.ok:
            raise DatapathError(f"perftest: work completion failed: {wc}")


# --- roles ----------------------------------------------------------------------------


def client(cfg: PerftestConfig, tag: str = "") -> Ops:
    side = yield from _setup(cfg, f"client{tag}", f"server{tag}")
    if cfg.is_latency:
        result = yield from LATENCY_LOOPS[cfg.test](cfg, side, initiator=True)
    else:
        result = yield from _bandwidth(cfg, side)
    yield Publish(f"client{tag}.done", True)
    return result


def server(cfg: PerftestConfig, tag: str = "") -> Ops:
    side = yield from _setup(cfg, f"server{tag}", f"client{tag}")
    if cfg.test in ("send_lat", "write_lat"):
        yield from LATENCY_LOOPS[cfg.test](cfg, side, initiator=False)
    elif cfg.test == "send_bw":
        yield from _receive_all(cfg, side)
    yield Lookup(f"client{tag}.done")
    return None


def merge_bandwidth(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine the bandwidth results of several client threads into one run.

    The threads' posts and CQEs are merged in time order into the per-WR arrays of one
    run over all their QPs, as if one perftest process had driven them all: entry k of
    ``block_posted_ns`` is then the post of the k-th WR of the whole run, and entry k of
    ``block_completed_ns`` the CQE that brought the whole run's completions to k + 1.
    """
    if len(results) == 1:
        return results[0]
    total = sum(r["messages"] for r in results)
    peak = all(r["block_posted_ns"] for r in results)
    tposted: list[float | None] = [None] * total if peak else []
    tcompleted: list[float | None] = [None] * total if peak else []
    if peak:
        posts: list[tuple[float, int]] = []  # (time, WRs posted then)
        cqes: list[tuple[float, int]] = []  # (time, WRs completed then)
        for r in results:
            tp, tc = r["block_posted_ns"], r["block_completed_ns"]
            at = [k for k, t in enumerate(tp) if t is not None] + [len(tp)]
            posts += [(tp[k], nxt - k) for k, nxt in pairwise(at)]
            upto = [0] + [k + 1 for k, t in enumerate(tc) if t is not None]
            cqes += [(tc[k - 1], k - prev) for prev, k in pairwise(upto)]
        count = 0
        for t, wrs in sorted(posts, key=lambda e: e[0]):  # stable: a thread's own order on ties
            tposted[count] = t
            count += wrs
        count = 0
        for t, wrs in sorted(cqes, key=lambda e: e[0]):
            count += wrs
            tcompleted[count - 1] = t
    return {
        "t_first_post_ns": min(r["t_first_post_ns"] for r in results),
        "t_last_completion_ns": max(r["t_last_completion_ns"] for r in results),
        "block_posted_ns": tposted,
        "block_completed_ns": tcompleted,
        "messages": total,
        "msg_bytes": results[0]["msg_bytes"],
        "cq_mod": results[0]["cq_mod"],
    }


# --- latency --------------------------------------------------------------------------


def _write_lat(cfg: PerftestConfig, side: Side, initiator: bool) -> Ops:
    """Ping-pong RDMA WRITEs; each side spins on the last byte of its inbound slot."""
    n, size = cfg.iterations, cfg.size
    inbound = side.mr.length // 2
    wr = SendWR(
        0, Opcode.RDMA_WRITE, [side.mr.sge(0, size)],
        remote_addr=side.peer_buf.addr, rkey=side.peer_buf.rkey, inline=size <= side.inline,
    )  # fmt: skip
    post = PostSend(side.qps[0], wr)
    wait_send = WaitCq(side.send_cq, 1)
    samples = []
    for i in range(n):
        marker = bytes([i % 255 + 1])
        if initiator:
            t0 = yield Clock()
        else:
            yield SpinUntil(side.mr, inbound + size - 1, marker)
        yield WriteMem(side.mr, size - 1, marker)
        yield post
        _check((yield wait_send))
        if initiator:
            yield SpinUntil(side.mr, inbound + size - 1, marker)
            samples.append((yield Clock()) - t0)
    return {"samples_ns": samples}


def _send_lat(cfg: PerftestConfig, side: Side, initiator: bool) -> Ops:
    """Ping-pong SENDs; receives are posted ahead and re-posted as they are used."""
    n, size = cfg.iterations, cfg.size
    qp = side.qps[0]
    inbound = side.mr.length // 2
    recv = RecvWR(1, [side.mr.sge(inbound, max(size, 1))])
    yield PostRecv(qp, [recv] * min(cfg.rx_depth, n))
    posted = min(cfg.rx_depth, n)
    send = PostSend(qp, SendWR(0, Opcode.SEND, [side.mr.sge(0, size)], inline=size <= side.inline))
    wait_send, wait_recv = WaitCq(side.send_cq, 1), WaitCq(side.recv_cq, 1)
    samples = []
    for _ in range(n):
        if initiator:
            t0 = yield Clock()
        else:
            _check((yield wait_recv))
        yield send
        _check((yield wait_send))
        if initiator:
            _check((yield wait_recv))
            samples.append((yield Clock()) - t0)
        if posted < n:
            yield PostRecv(qp, recv)
            posted += 1
    return {"samples_ns": samples}


def _request_lat(cfg: PerftestConfig, side: Side, initiator: bool) -> Ops:
    """READ or atomic latency: one request, wait for its completion, repeat."""
    n = cfg.iterations
    op = cfg.opcode
    wr = SendWR(
        0, op, [side.mr.sge(0, cfg.msg_bytes)],
        remote_addr=side.peer_buf.addr, rkey=side.peer_buf.rkey,
        compare_add=1 if op is Opcode.ATOMIC_FETCH_AND_ADD else 0,
    )  # fmt: skip
    post, wait = PostSend(side.qps[0], wr), WaitCq(side.send_cq, 1)
    samples = []
    for _ in range(n):
        t0 = yield Clock()
        yield post
        _check((yield wait))
        samples.append((yield Clock()) - t0)
    return {"samples_ns": samples}


LATENCY_LOOPS = {
    "write_lat": _write_lat,
    "send_lat": _send_lat,
    "read_lat": _request_lat,
    "atomic_lat": _request_lat,
}


# --- bandwidth ------------------------------------------------------------------------


def _bandwidth(cfg: PerftestConfig, side: Side) -> Ops:
    """Keep ``tx_depth`` WRs in flight on every QP; one CQE per ``cq_mod`` WRs.

    Times are recorded as perftest's ``run_iter_bw`` does, for ``print_report_bw``:
    ``block_posted_ns[k]`` (perftest's ``tposted``) is the clock just before the post
    call that posts the run's k-th WR, counted over all QPs (one entry per post call;
    the other ``post_list - 1`` entries stay None), and ``block_completed_ns[k]``
    (``tcompleted``) the clock when a CQE brought the run's completed WRs to k + 1
    (None where no CQE did). With more than ``NO_PEAK_ITERS`` iterations per QP
    perftest keeps neither (no BW peak), and so the lists are empty.
    """
    nq, iters, plist = cfg.qps, cfg.iterations, cfg.post_list
    if iters % plist:
        raise DatapathError(f"iterations ({iters}) must be a multiple of post_list ({plist})")
    cq_mod = max(plist, min(cfg.cq_mod, cfg.tx_depth, iters))
    cq_mod = -(-cq_mod // plist) * plist  # the loop below signals on a post list's last WR
    op, size = cfg.opcode, cfg.msg_bytes
    slot = side.mr.length // (2 * nq)
    inline = size <= side.inline
    # Pre-built WR lists per QP: all unsignaled, and with the last one signaled.
    plain, signaled = [], []
    for q in range(nq):

        def wr(sig: bool, q: int = q) -> SendWR:
            return SendWR(
                q, op, [side.mr.sge(q * slot, size)], remote_addr=side.peer_buf.addr + q * slot,
                rkey=side.peer_buf.rkey, compare_add=1, signaled=sig, inline=inline,
            )  # fmt: skip

        base = [wr(False) for _ in range(plist - 1)]
        plain.append(PostSend(side.qps[q], [*base, wr(False)]))
        signaled.append(PostSend(side.qps[q], [*base, wr(True)]))
    scnt, ccnt = [0] * nq, [0] * nq
    covers: list[deque[int]] = [deque() for _ in range(nq)]  # WRs each outstanding CQE covers
    since_signal = [0] * nq
    total, totscnt, done = iters * nq, 0, 0
    peak = iters <= NO_PEAK_ITERS
    t_posted: list[float | None] = [None] * total if peak else []
    t_completed: list[float | None] = [None] * total if peak else []
    wait = WaitCq(side.send_cq, 64)
    t_first = None if peak else (yield Clock())
    now = t_first
    ready = deque(range(nq))  # QPs that may have room to post, in round-robin order
    queued = [True] * nq
    while done < total:
        while ready:
            q = ready.popleft()
            queued[q] = False
            while scnt[q] < iters and scnt[q] - ccnt[q] + plist <= cfg.tx_depth:
                if peak:
                    t = yield Clock()
                    t_posted[totscnt] = t
                    if t_first is None:
                        t_first = t
                scnt[q] += plist
                totscnt += plist
                since_signal[q] += plist
                if since_signal[q] >= cq_mod or scnt[q] == iters:
                    yield signaled[q]
                    covers[q].append(since_signal[q])
                    since_signal[q] = 0
                else:
                    yield plain[q]
        wcs = yield wait
        _check(wcs)
        now = yield Clock()
        for wc in wcs:
            q = wc.wr_id
            n = covers[q].popleft()
            ccnt[q] += n
            done += n
            if scnt[q] < iters and not queued[q]:
                ready.append(q)
                queued[q] = True
            if peak:
                t_completed[done - 1] = now
    return {
        "t_first_post_ns": t_first,
        "t_last_completion_ns": now,
        "block_posted_ns": t_posted,
        "block_completed_ns": t_completed,
        "messages": total,
        "msg_bytes": size,
        "cq_mod": cq_mod,
    }


def _receive_all(cfg: PerftestConfig, side: Side) -> Ops:
    """send_bw's server: keep receives posted on every QP and count the arrivals."""
    nq, iters = cfg.qps, cfg.iterations
    inbound = side.mr.length // 2
    slot = inbound // nq
    recvs = [RecvWR(q, [side.mr.sge(inbound + q * slot, max(cfg.size, 1))]) for q in range(nq)]
    depth = min(cfg.rx_depth, iters)
    for q in range(nq):
        yield PostRecv(side.qps[q], [recvs[q]] * depth)
    posted = [depth] * nq
    got = 0
    wait = WaitCq(side.recv_cq, 64)
    while got < nq * iters:
        wcs = yield wait
        _check(wcs)
        got += len(wcs)
        for wc in wcs:
            q = wc.wr_id
            if posted[q] < iters:
                yield PostRecv(side.qps[q], recvs[q])
                posted[q] += 1
    return None
