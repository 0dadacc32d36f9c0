"""The RC transport: what happens to a work request between two simulated NICs.

A posted WR's request path (PU, payload DMA read, wire, switch, responder PU,
DMA write) is computed at once on the resources' timelines. One simulator event
fires at the responder when the request takes effect there (data visible, receive
WR consumed, atomic executed, READ data fetched); it applies the effect to real
bytes, decides errors and RNR, and computes the response path, which pushes the
requester's completion into its CQ with the time the CQE becomes visible.
So a WRITE costs one event, plus one to wake a thread that waits for it.

RC semantics kept: per-QP order of effects and completions; READ/atomic requests
limited per QP (``nic.max_rd_atomic``), with later WRs held behind them; RNR retry
when a SEND finds no receive posted (``rnr_retry`` 7 = forever); NAKs for bad keys,
bounds, rights and misaligned atomics, after which both QPs are in error and later
WRs complete with ``WR_FLUSH_ERR``.

Simplifications, stated: ACKs are not queued behind data on the wire (they are small
and coalesced by the NICs); READ response data is copied into the requester's buffer
when the responder reads it (it is only looked at after the completion); a retried
SEND after RNR does not take wire time again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import simpy

from kdlab.verbs import (
    ATOMIC_BYTES,
    ATOMIC_OPCODES,
    CARRIES_IMM,
    CONSUMES_RECV,
    REQUESTER_WC_OPCODE,
    Access,
    Opcode,
    SendWR,
    WcOpcode,
    WcStatus,
    WorkCompletion,
)
from kdsim.fabric import (
    AETH_BYTES,
    ATOMIC_ACK_ETH_BYTES,
    ATOMIC_ETH_BYTES,
    IMMDT_BYTES,
    RETH_BYTES,
    Fabric,
)
from kdsim.memory import HostMemory
from kdsim.profile import Profile
from kdsim.queues import QpState, SimQp
from kdsim.rnic import Rnic
from kdsim.timeline import Timeline

_READ_LIKE = frozenset({Opcode.RDMA_READ, *ATOMIC_OPCODES})
_CARRIES_DATA = frozenset({Opcode.RDMA_WRITE, Opcode.RDMA_WRITE_WITH_IMM, Opcode.SEND, Opcode.SEND_WITH_IMM})
_NEEDS = {
    Opcode.RDMA_WRITE: Access.REMOTE_WRITE,
    Opcode.RDMA_WRITE_WITH_IMM: Access.REMOTE_WRITE,
    Opcode.RDMA_READ: Access.REMOTE_READ,
    Opcode.ATOMIC_CMP_AND_SWP: Access.REMOTE_ATOMIC,
    Opcode.ATOMIC_FETCH_AND_ADD: Access.REMOTE_ATOMIC,
}
_EXTRA_HEADER = {
    Opcode.RDMA_WRITE: RETH_BYTES,
    Opcode.RDMA_WRITE_WITH_IMM: RETH_BYTES + IMMDT_BYTES,
    Opcode.SEND: 0,
    Opcode.SEND_WITH_IMM: IMMDT_BYTES,
    Opcode.RDMA_READ: RETH_BYTES,
    Opcode.ATOMIC_CMP_AND_SWP: ATOMIC_ETH_BYTES,
    Opcode.ATOMIC_FETCH_AND_ADD: ATOMIC_ETH_BYTES,
}
_U64 = (1 << 64) - 1


@dataclass(slots=True)
class Flight:
    """A request on its way: what the responder event needs to finish it."""

    qp: SimQp
    wr: SendWR
    data: bytes | None
    last_in: float
    atomic_end: float = 0.0
    retries: int = 0


class RcTransport:
    """Moves work requests between the NICs and memories of a simulated cluster."""

    def __init__(
        self,
        env: simpy.Environment,
        profile: Profile,
        fabric: Fabric,
        nics: dict[str, Rnic],
        memories: dict[str, HostMemory],
    ) -> None:
        self.env = env
        self.fabric = fabric
        self.nics = nics
        self.memories = memories
        self.max_rd_atomic = profile.nic.max_rd_atomic
        self.atomic_ns = profile.nic.atomic_ns
        self.cqe_bytes = profile.nic.cqe_bytes
        self.mtu = profile.link.mtu_bytes
        self.atomic_units: dict[tuple[str, int], Timeline] = {}
        self.bytes_delivered = 0
        self.events = 0
        self._timeout = simpy.Timeout
        # Event callbacks bound once: the hot path allocates no closures.
        self._arrive_cb = lambda ev: self._arrive(ev._value)
        self._retry_cb = lambda ev: self._retry(ev._value)

    # --- requester side -----------------------------------------------------------

    def post(self, qp: SimQp, wr: SendWR, at_nic: float) -> None:
        """A WQE reached the NIC at ``at_nic``: send it, or hold it behind READs."""
        wr = wr.copy()  # the WQE is a copy: the caller may reuse and change its WR at once
        if qp.state is QpState.ERROR or at_nic >= qp.error_at:
            self._complete(qp, wr, WcStatus.WR_FLUSH_ERR, max(at_nic, qp.error_at), 0)
            return
        if qp.held:
            qp.held.append((wr, at_nic))
            return
        if wr.opcode in _READ_LIKE:
            if qp.rd_outstanding >= self.max_rd_atomic:
                qp.held.append((wr, at_nic))
                return
            qp.rd_outstanding += 1
        self._issue(qp, wr, at_nic)

    def _issue(self, qp: SimQp, wr: SendWR, at_nic: float) -> None:
        op = wr.opcode
        nic = self.nics[qp.host]
        mem = self.memories[qp.host]
        peer = qp.peer
        assert peer is not None
        data = None
        if op in _CARRIES_DATA:
            sges = wr.sg_list
            if len(sges) == 1:  # HostMemory.gather, inlined for the common single-SGE case
                s = sges[0]
                smr = mem.by_lkey.get(s.lkey)
                if smr is not None and smr.contains(s.addr, s.length):
                    off = s.addr - smr.handle.addr
                    data = bytes(smr.data[off : off + s.length])
            else:
                data = mem.gather(sges, wr.length)
        elif not all(mem.local(s.addr, s.length, s.lkey) for s in wr.sg_list):
            data = None
        else:
            data = b""
        payload = wr.length if op in _CARRIES_DATA else 0
        t = nic.process(qp.qp_num, at_nic, nic.tx_wqe_ns + payload * nic.pu_ns_per_byte) + nic.pipeline_ns
        if data is None:  # a local SGE names the wrong lkey or lies outside its MR
            self._fail_requester(qp, wr, WcStatus.LOC_PROT_ERR, t)
            return
        if payload and not wr.inline:
            first_ready, last_ready = nic.dma_read(t, payload, min(payload, self.mtu))
        else:
            first_ready = last_ready = t
        first_in, last_in = self.fabric.send(qp.host, peer.host, first_ready, last_ready, payload, _EXTRA_HEADER[op])
        pnic = self.nics[peer.host]
        t_rx = pnic.process(peer.qp_num, first_in, pnic.rx_ns + payload * pnic.pu_ns_per_byte) + pnic.pipeline_ns
        flight = Flight(qp, wr, data, last_in)
        if op in ATOMIC_OPCODES:
            unit = self.atomic_units.get((peer.host, wr.remote_addr))
            if unit is None:
                unit = self.atomic_units[peer.host, wr.remote_addr] = Timeline("atomic")
            effect, flight.atomic_end = unit.reserve(t_rx, self.atomic_ns)
        elif op is Opcode.RDMA_READ:
            effect = t_rx
        else:
            effect = pnic.dma_write(t_rx, payload, last_in, self.fabric.wire.last_payload(payload))
        if effect < peer.last_effect:
            effect = peer.last_effect
        peer.last_effect = effect
        self._at(effect, self._arrive_cb, flight)

    def _at(self, when: float, callback: Callable[[simpy.Event], None], flight: Flight) -> None:
        """Schedule ``callback`` at ``when``: the one simulator event of a request."""
        self.events += 1
        env = self.env
        self._timeout(env, when - env.now, flight).callbacks.append(callback)

    def _complete(self, qp: SimQp, wr: SendWR, status: WcStatus, at_nic: float, byte_len: int) -> None:
        """Write the requester's CQE (always for errors, else only if signaled)."""
        if status is WcStatus.SUCCESS and not wr.signaled:
            return
        t = self.nics[qp.host].dma_write(at_nic, self.cqe_bytes)
        if t < qp.last_completion:
            t = qp.last_completion
        qp.last_completion = t
        opcode = REQUESTER_WC_OPCODE[wr.opcode]
        qp.send_cq.push(t, WorkCompletion(wr.wr_id, status, opcode, byte_len, None, qp.qp_num))

    def _fail_requester(self, qp: SimQp, wr: SendWR, status: WcStatus, at_nic: float) -> None:
        self._complete(qp, wr, status, at_nic, 0)
        qp.state = QpState.ERROR
        qp.error_at = min(qp.error_at, at_nic)
        if wr.opcode in _READ_LIKE:
            qp.rd_outstanding -= 1
        while qp.held:
            held, t = qp.held.popleft()
            self._complete(qp, held, WcStatus.WR_FLUSH_ERR, max(t, at_nic), 0)

    # --- responder side -----------------------------------------------------------

    def _arrive(self, flight: Flight) -> None:
        peer = flight.qp.peer
        assert peer is not None
        if peer.rnr_stalled or peer.inbound_backlog:
            peer.inbound_backlog.append(flight)
            return
        self._deliver(flight)
        self._drain(peer)

    def _deliver(self, flight: Flight) -> None:
        qp, wr = flight.qp, flight.wr
        peer = qp.peer
        assert peer is not None
        now = self.env.now
        if qp.state is QpState.ERROR or peer.state is QpState.ERROR:
            self._finish_read_like(qp, wr)
            self._complete(qp, wr, WcStatus.WR_FLUSH_ERR, max(now, qp.error_at), 0)
            return
        op = wr.opcode
        pmem = self.memories[peer.host]
        mr = None
        if op in _NEEDS:
            length = ATOMIC_BYTES if op in ATOMIC_OPCODES else wr.length
            mr, status = pmem.remote(wr.remote_addr, length, wr.rkey, _NEEDS[op])
            if mr is None:
                peer.state = QpState.ERROR
                self._nak(flight, status)
                return
        if op in CONSUMES_RECV:
            if not peer.recv_queue:
                self._rnr(flight)
                return
            rwr = peer.recv_queue.popleft()
            if wr.length > rwr.length and op is not Opcode.RDMA_WRITE_WITH_IMM:
                peer.state = QpState.ERROR
                self._push_recv(peer, rwr.wr_id, WcStatus.LOC_LEN_ERR, WcOpcode.RECV, 0, None)
                self._nak(flight, WcStatus.REM_INV_REQ_ERR)
                return
            if op is Opcode.RDMA_WRITE_WITH_IMM:
                pmem.write(mr, wr.remote_addr, flight.data)
                self.bytes_delivered += wr.length
                self._push_recv(peer, rwr.wr_id, WcStatus.SUCCESS, WcOpcode.RECV_RDMA_WITH_IMM, wr.length, wr.imm_data)
            else:
                ok = pmem.scatter(rwr.sg_list, flight.data)
                self.bytes_delivered += wr.length if ok else 0
                status = WcStatus.SUCCESS if ok else WcStatus.LOC_PROT_ERR
                imm = wr.imm_data if op in CARRIES_IMM else None
                self._push_recv(peer, rwr.wr_id, status, WcOpcode.RECV, wr.length, imm)
            self._ack(flight)
        elif op is Opcode.RDMA_WRITE:
            pmem.write(mr, wr.remote_addr, flight.data)
            self.bytes_delivered += wr.length
            self._ack(flight)
        elif op is Opcode.RDMA_READ:
            self._read_response(flight, pmem.read(mr, wr.remote_addr, wr.length))
        else:
            self._atomic(flight, mr)

    def _drain(self, peer: SimQp) -> None:
        while peer.inbound_backlog and not peer.rnr_stalled:
            self._deliver(peer.inbound_backlog.popleft())

    def _push_recv(
        self, peer: SimQp, wr_id: int, status: WcStatus, opcode: WcOpcode, byte_len: int, imm: int | None
    ) -> None:
        nic = self.nics[peer.host]
        # The CQE is written right behind the data on the same posted-write path.
        t = nic.dma_write(self.env.now - nic.write_ns, self.cqe_bytes)
        peer.recv_cq.push(t, WorkCompletion(wr_id, status, opcode, byte_len, imm, peer.qp_num))

    def _ack(self, flight: Flight) -> None:
        if not flight.wr.signaled:
            return  # an unsignaled success leaves no trace at the requester
        qp = flight.qp
        peer = qp.peer
        assert peer is not None
        leave = flight.last_in + self.nics[peer.host].pipeline_ns
        back = self.fabric.control(peer.host, qp.host, leave, AETH_BYTES)
        nic = self.nics[qp.host]
        self._complete(qp, flight.wr, WcStatus.SUCCESS, max(back, self.env.now) + nic.pipeline_ns, flight.wr.length)

    def _nak(self, flight: Flight, status: WcStatus) -> None:
        qp = flight.qp
        peer = qp.peer
        assert peer is not None
        back = self.fabric.control(peer.host, qp.host, self.env.now, AETH_BYTES)
        self._fail_requester(qp, flight.wr, status, back + self.nics[qp.host].pipeline_ns)

    def _rnr(self, flight: Flight) -> None:
        qp = flight.qp
        peer = qp.peer
        assert peer is not None
        if qp.rnr_retry != 7 and flight.retries >= qp.rnr_retry:
            self._nak(flight, WcStatus.RNR_RETRY_EXC_ERR)
            return
        flight.retries += 1
        peer.rnr_stalled = True
        rtt = 2 * (self.fabric.control(peer.host, qp.host, 0.0, AETH_BYTES))
        self._at(self.env.now + qp.rnr_timer_ns + rtt, self._retry_cb, flight)

    def _retry(self, flight: Flight) -> None:
        peer = flight.qp.peer
        assert peer is not None
        peer.rnr_stalled = False
        self._deliver(flight)
        self._drain(peer)

    def _read_response(self, flight: Flight, data: bytes) -> None:
        qp, wr = flight.qp, flight.wr
        peer = qp.peer
        assert peer is not None
        pnic, nic = self.nics[peer.host], self.nics[qp.host]
        n = len(data)
        start = self.env.now
        if pnic.pu_ns_per_byte:  # a software RNIC handles the response bytes on its processing unit
            start = pnic.process(peer.qp_num, start, n * pnic.pu_ns_per_byte)
        first, last = pnic.dma_read(start, n, min(n, self.mtu))
        first_in, last_in = self.fabric.send(
            peer.host, qp.host, first + pnic.pipeline_ns, last + pnic.pipeline_ns, n, AETH_BYTES
        )
        t = nic.process(qp.qp_num, first_in, nic.rx_ns + n * nic.pu_ns_per_byte) + nic.pipeline_ns
        done = nic.dma_write(t, n, last_in, self.fabric.wire.last_payload(n))
        self.memories[qp.host].scatter(wr.sg_list, data)
        self._finish_read_like(qp, wr, done)
        self._complete(qp, wr, WcStatus.SUCCESS, done - nic.write_ns, n)

    def _atomic(self, flight: Flight, mr) -> None:
        qp, wr = flight.qp, flight.wr
        peer = qp.peer
        assert peer is not None
        pmem = self.memories[peer.host]
        old = int.from_bytes(pmem.read(mr, wr.remote_addr, ATOMIC_BYTES), "little")
        if wr.opcode is Opcode.ATOMIC_FETCH_AND_ADD:
            new = (old + wr.compare_add) & _U64
        else:
            new = wr.swap if old == wr.compare_add else old
        if new != old:
            pmem.write(mr, wr.remote_addr, new.to_bytes(ATOMIC_BYTES, "little"))
        pnic, nic = self.nics[peer.host], self.nics[qp.host]
        first_in, _ = self.fabric.send(
            peer.host,
            qp.host,
            flight.atomic_end + pnic.pipeline_ns,
            flight.atomic_end + pnic.pipeline_ns,
            ATOMIC_BYTES,
            AETH_BYTES + ATOMIC_ACK_ETH_BYTES - ATOMIC_BYTES,
        )
        t = nic.process(qp.qp_num, first_in, nic.rx_ns) + nic.pipeline_ns
        done = nic.dma_write(t, ATOMIC_BYTES)
        self.memories[qp.host].scatter(wr.sg_list, old.to_bytes(ATOMIC_BYTES, "little"))
        self._finish_read_like(qp, wr, done)
        self._complete(qp, wr, WcStatus.SUCCESS, done - nic.write_ns, ATOMIC_BYTES)

    def _finish_read_like(self, qp: SimQp, wr: SendWR, done: float | None = None) -> None:
        """A READ/atomic credit frees at ``done``: release the WRs held behind it."""
        if wr.opcode not in _READ_LIKE:
            return
        qp.rd_outstanding -= 1
        release = self.env.now if done is None else done
        while qp.held and qp.state is not QpState.ERROR:
            held, posted = qp.held[0]
            if held.opcode in _READ_LIKE:
                if qp.rd_outstanding >= self.max_rd_atomic:
                    break
                qp.rd_outstanding += 1
            qp.held.popleft()
            self._issue(qp, held, max(posted, release))
