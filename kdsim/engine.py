"""kdsim's engine: runs datapath roles on a SimPy model of hosts, NICs and links.

Each role is driven by one SimPy process that feeds the role's generator the result
of every operation it yields. CPU time a role spends (posting, polling, copying) is
kept as *debt*, time the thread is ahead of the simulator clock: it is paid with a
single timer only when the thread must wait for something, so a run of posts costs
no events. A thread never observes the world before its own time: a waiter is
woken no earlier than ``now + debt``.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import numpy as np
import simpy

from kdlab import ops
from kdlab.program import Role
from kdlab.verbs import CompletionQueue, DeviceInfo, QpCap, QueuePair
from kdsim.fabric import Fabric
from kdsim.gc import Heap
from kdsim.idle_poll import idle_poll
from kdsim.memory import HostMemory, MemoryMeter, SimMr
from kdsim.profile import Profile, load_profile
from kdsim.queues import QpState, SimCq, SimQp, Waiter
from kdsim.rnic import Rnic
from kdsim.sockets import TCP_WINDOW_BYTES, ConnScan, Selector, SimConn, SocketLayer
from kdsim.storage import HostStorage
from kdsim.sync import SyncLayer
from kdsim.timeline import ServerPool
from kdsim.transport import RcTransport

#: Python's youngest-generation collection threshold while a simulation runs (the default is 700 allocations).
GC_YOUNG_THRESHOLD = 100_000
#: A receive on at least this many connections goes through their selector (kdsim.sockets.Selector).
SELECT_MIN = 4
#: IBTA encoding of the RNR NAK timer (``min_rnr_timer``) in milliseconds (vol. 1, table 45).
RNR_TIMER_MS = (
    655.36, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32, 0.48, 0.64, 0.96, 1.28, 1.92,
    2.56, 3.84, 5.12, 7.68, 10.24, 15.36, 20.48, 30.72, 40.96, 61.44, 81.92, 122.88, 163.84, 245.76,
    327.68, 491.52,
)  # fmt: skip


class SimulationError(RuntimeError):
    """A role failed, or the roles cannot make progress (deadlock)."""


class VerbsError(RuntimeError):
    """A verb was called in a way the verbs API rejects (as ibv_* would return an error)."""


@dataclass
class RoleState:
    """A role's thread: its host, CPU debt and accounting."""

    name: str
    host: str
    debt: float = 0.0
    busy_ns: float = 0.0
    ops: int = 0  # operations it yielded
    waiting_for: str = ""
    done: bool = False
    cpu_jitter: Jitter | None = None  # draws CPU costs (profile host.cpu_sigma > 0)
    wake_jitter: Jitter | None = None  # draws wake-ups (profile host.wakeup_sigma > 0)
    # a wait's time limit (a timeout, an idle wait's end), through one timer per thread (SimEngine._deadline)
    deadline_waiter: Waiter | None = None
    deadline_at: float = 0.0
    armed_at: float = float("inf")  # when the thread's earliest pending deadline timer fires


class Jitter:
    """Lognormal draws of one role's costs of one family: median the profile's cost, ``sigma`` the width.

    Each (seed, role, family) has a stream of its own, seeded by a stable hash (not Python's
    salted ``hash``): a role's draws depend only on the run's seed, its name and how many costs
    it has drawn, never on the order events of other roles run in, nor on the process or worker
    that runs the point.
    """

    __slots__ = ("_buf", "_i", "_rng", "sigma")

    BLOCK = 256  # draws made at a time (numpy per call is slow); a fixed size keeps the sequence fixed

    def __init__(self, seed: int, role: str, family: str, sigma: float) -> None:
        digest = hashlib.blake2b(f"kdsim/{seed}/{role}/{family}".encode(), digest_size=16).digest()
        self._rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))
        self.sigma = sigma
        self._buf: list[float] = []
        self._i = 0

    def __call__(self, ns: float) -> float:
        """``ns`` times a lognormal factor of median 1 (0 stays 0, and draws nothing)."""
        if ns <= 0.0:
            return ns
        i = self._i
        if i == len(self._buf):
            self._buf = np.exp(self.sigma * self._rng.standard_normal(self.BLOCK)).tolist()
            i = 0
        self._i = i + 1
        return ns * self._buf[i]


@dataclass
class RunStats:
    """What a run did, for benchmarks and reports."""

    sim_time_ns: float = 0.0
    work_requests: int = 0
    transport_events: int = 0
    role_cpu_busy_ns: dict[str, float] = field(default_factory=dict)
    utilisation: dict[str, dict[str, float]] = field(default_factory=dict)
    operations: int = 0  # datapath operations handled (the Python-level work of a run)
    gc_pauses: dict[str, int] = field(default_factory=dict)  # young collections per JVM host (host.gc_young_bytes)
    #: With ``probe_every_ns``: (simulated ns, process CPU s, SimPy events so far, operations so far, events
    #: pending) at each probe, so a benchmark can measure a steady window instead of a run's start-up and drain
    probes: list[tuple[float, float, int, int, int]] = field(default_factory=list)
    model_peak_bytes: int = 0  # the most bytes every host's MRs held at once (kdsim.memory.MemoryMeter)
    spine_utilisation: dict[str, float] = field(default_factory=dict)  # racks: the busiest spine link, up and down


class SimEngine:
    """Execute roles on modelled hardware. One engine instance runs one program."""

    name = "sim"

    def __init__(
        self,
        profile: Profile | str,
        *,
        seed: int = 0,
        switch: bool | None = None,
        tcp_window_bytes: int = TCP_WINDOW_BYTES,
        probe_every_ns: float = 0.0,
    ) -> None:
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.tcp_window_bytes = tcp_window_bytes  # each TCP connection's receive window (kdsim/sockets.py)
        self._host = self.profile.host
        self.seed = seed
        self.switch = switch
        self.stats = RunStats()
        self.probe_every_ns = probe_every_ns

    # --- running ------------------------------------------------------------------

    def run(self, roles: Sequence[Role], until_ns: float | None = None) -> dict[str, Any]:
        names = [r.name for r in roles]
        if len(set(names)) != len(names):
            raise ValueError(f"role names must be unique, got {names}")
        env = self.env = simpy.Environment()
        hosts = sorted({r.host for r in roles})
        profile = self.profile
        keys = count(0x100)
        self.meter = MemoryMeter()  # the bytes every host's MRs hold: the run's memory report
        self.memories = {h: HostMemory(h, keys, self.meter) for h in hosts}
        self.nics = {h: Rnic(h, profile) for h in hosts}
        self.fabric = Fabric(profile, hosts, self.switch) if len(hosts) > 1 else None
        self.transport = RcTransport(env, profile, self.fabric, self.nics, self.memories)  # type: ignore[arg-type]
        self._cqs: dict[int, SimCq] = {}
        self._qps: dict[tuple[str, int], SimQp] = {}
        self._mrs: dict[tuple[str, int], SimMr] = {}
        self._mapped: set[tuple[str, int]] = set()  # MRs registered over a file (RegMr.path)
        self._ids = count(1)
        self.sockets = SocketLayer(env, profile, self._ids, self.tcp_window_bytes)
        if profile.tcp.shares_rdma_link and self.fabric is not None:  # IPoIB: TCP and RDMA queue on one link
            self.sockets.uplinks = self.fabric.uplink
            if self.fabric.switched:  # back to back, the peer's uplink is the only link towards a host
                self.sockets.downlinks = self.fabric.downlink
            if self.fabric.leaf_of:
                self.sockets.spine = self.fabric
        self.sync = SyncLayer(env)
        storage = profile.storage
        modelled = storage.device_write_gbps > 0  # 0: no device, FileWrite and FileRead cost nothing
        self.storage = {h: HostStorage(h, storage) for h in hosts} if modelled else {}
        self._conns: dict[int, SimConn] = {}
        self._published: dict[str, Any] = {}
        self._lookups: dict[str, list[simpy.Event]] = {}
        self._states = {r.name: RoleState(r.name, r.host) for r in roles}
        host = self._host
        for st in self._states.values():  # width 0: no generator, no draw, the profile's costs exactly
            if host.cpu_sigma:
                st.cpu_jitter = Jitter(self.seed, st.name, "cpu", host.cpu_sigma)
            if host.wakeup_sigma:
                st.wake_jitter = Jitter(self.seed, st.name, "wakeup", host.wakeup_sigma)
        young = host.gc_young_bytes  # 0: no collections, allocations are not even counted
        self.heaps = {h: Heap(young, host.gc_pause_ns) for h in hosts} if young else {}
        self._process_cores = {h: [0.0] * host.process_cores for h in hosts} if host.process_cores else {}
        self._machine = ServerPool("machine", host.machine_cores).servers if host.machine_cores else None
        self._shared_cores = bool(host.process_cores or host.machine_cores)
        if self._machine is not None and profile.nic.on_host_cores:
            for nic in self.nics.values():  # a software RNIC: its work runs on the machine's cores
                nic.pus.servers = self._machine
        results: dict[str, Any] = {}
        procs = {r.name: env.process(self._drive(r, self._states[r.name], results)) for r in roles}
        if self.probe_every_ns > 0:
            env.process(self._probe(env, self.probe_every_ns, [procs[r.name] for r in roles if not r.daemon]))
        # Python's cyclic collector scans every live object now and then, and a large cluster's model holds millions:
        # collect young objects ~100x less often while the simulation runs (results do not depend on it)
        thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
        # and never scan the cluster built so far (hosts, queue pairs, roles): its cost would grow with it (a caller's
        # own frozen objects stay frozen)
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            self._run_env(env, roles, procs, until_ns)
        finally:
            if freeze:
                gc.unfreeze()
            gc.set_threshold(*thresholds)
        for name, proc in procs.items():
            if proc.triggered and not proc.ok:  # pragma: no cover - SimPy re-raises first
                raise SimulationError(f"role {name!r} failed: {proc.value}")
        daemons = {r.name for r in roles if r.daemon}
        stuck = [s for s in self._states.values() if not s.done and s.name not in daemons]
        if stuck and until_ns is None:
            detail = ", ".join(f"{s.name} waiting for {s.waiting_for or 'nothing'}" for s in stuck)
            raise SimulationError(f"deadlock: no events left but roles have not finished: {detail}")
        self._collect_stats(env.now)
        return results

    @staticmethod
    def _run_env(env: simpy.Environment, roles: Sequence[Role], procs: dict[str, Any], until_ns: float | None) -> None:
        workers = [procs[r.name] for r in roles if not r.daemon]
        # the run ends with its last worker: daemons (servers) are stopped then, and timers still queued (a probe's,
        # a thread's deadline) do not lengthen it
        if until_ns is None and workers:
            try:
                env.run(until=simpy.AllOf(env, workers))
            except RuntimeError as err:
                if "No scheduled events left" not in str(err):
                    raise  # otherwise: a deadlock, reported below with what each role waits for
        else:
            env.run(until=until_ns)

    def _probe(self, env: simpy.Environment, every_ns: float, workers: list) -> Generator[simpy.Event, Any, None]:
        """Record the run's cost so far every ``every_ns`` until the workers end; an observer, it changes nothing."""
        states = self._states.values()
        i = 0
        while True:
            while i < len(workers) and workers[i].triggered:  # each worker looked at until it ends, not each probe
                i += 1
            if i == len(workers) or not env._queue:  # all ended, or nothing else can happen (a deadlock, reported)
                return
            ops = sum(s.ops for s in states)
            pending = len(env._queue)  # type: ignore[attr-defined]
            self.stats.probes.append((env.now, time.process_time(), next(env._eid), ops, pending))  # type: ignore[attr-defined]
            yield env.timeout(every_ns)

    def _collect_stats(self, now: float) -> None:
        st = self.stats
        st.sim_time_ns = now
        st.operations = sum(s.ops for s in self._states.values())
        st.transport_events = self.transport.events
        st.model_peak_bytes = self.meter.peak
        st.role_cpu_busy_ns = {s.name: s.busy_ns for s in self._states.values()}
        st.utilisation = {h: nic.utilisation(now) for h, nic in self.nics.items()}
        for h, store in self.storage.items():
            st.utilisation.setdefault(h, {}).update(store.utilisation(now))
        for h, heap in self.heaps.items():
            if heap.pauses:
                st.gc_pauses[h] = heap.pauses
                st.utilisation.setdefault(h, {})["gc_paused"] = heap.paused_share(now)
        if self.fabric is not None:
            for h, link in self.fabric.uplink.items():
                st.utilisation.setdefault(h, {})["uplink"] = link.busy_ns / now if now else 0.0
            st.spine_utilisation = self.fabric.utilisation(now)

    def _drive(self, role: Role, st: RoleState, results: dict[str, Any]) -> Generator[simpy.Event, Any, None]:
        gen = role.body(**role.args)
        handlers = self._handlers
        op_ns = self._host.op_ns
        value: Any = None
        exc: BaseException | None = None
        while True:
            try:
                op = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration as stop:
                results[role.name] = stop.value
                break
            except Exception as err:
                raise SimulationError(f"role {role.name!r} failed: {err!r}") from err
            exc = None
            st.ops += 1
            handler = handlers.get(type(op))
            if handler is None:
                exc = TypeError(f"role {role.name!r} yielded {op!r}, which is not an operation of kdlab.ops")
                continue
            if op_ns and type(op) not in _FILE_OPS:  # file ops stand for kernel work a write or sendfile does
                self._cpu(st, op_ns)
            try:
                value = handler(self, op, st)
            except (VerbsError, ValueError, KeyError) as err:
                exc = err
                continue
            while type(value) is _Block:  # resume may decide to wait again (a spurious wake-up)
                block: _Block = value
                st.waiting_for = block.what
                yield block.event
                st.waiting_for = ""
                resume, block.resume = block.resume, None  # a resume closure names its block: no cycle left behind
                value = resume(st)
                if self.heaps:  # woken inside its process's collection pause: it runs when the pause ends
                    self._stopped(st)
        if st.debt:
            yield self.env.timeout(st.debt)
            st.debt = 0.0
        st.done = True

    # --- time ---------------------------------------------------------------------

    def _cpu(self, st: RoleState, ns: float) -> None:
        if self.heaps:
            self._stopped(st)
        if st.cpu_jitter is not None:
            ns = st.cpu_jitter(ns)
        st.busy_ns += ns
        if not self._shared_cores:  # every thread its own core: the common, fast case
            st.debt += ns
            return
        own = self._process_cores.get(st.host)
        machine = self._machine
        # The thread needs a core of its process (``process_cores``: one for a CPython
        # process) and one of the machine (``machine_cores``: hosts sharing a VM, whose
        # software RNIC may run on the same cores): FIFO on the process's cores, then
        # the machine core that frees first (an idle gap on it may take the work).
        now = self.env.now
        start = now + st.debt
        i = 0
        if own is not None:
            i = min(range(len(own)), key=lambda k: (max(start, own[k]), -own[k]))
            start = max(start, own[i])
        end = start + ns
        if machine is not None:
            core = min(machine, key=lambda t: max(start, t.end))
            end = core.reserve(start, ns)[1]
        if own is not None:
            own[i] = end
        st.debt = end - now

    def _spun_ns(self, st: RoleState, since: float) -> float:
        """CPU a thread burnt spinning from ``since`` to now: not while its process was stopped for a collection."""
        spun = self.env.now - since
        heap = self.heaps.get(st.host) if self.heaps else None
        return spun - heap.stopped_ns(since, self.env.now) if heap is not None and heap.pauses else spun

    def _deadline(self, st: RoleState, waiter: Waiter, when: float) -> None:
        """``waiter.wake_at(when)`` for a wait's time limit, through the thread's one deadline timer.

        A timer of its own for each timed wait would stay in the event queue until its time even when the wait
        ended early (a reply within a poll's timeout): thousands of stale events per thread in a long run. The
        thread's pending timer is kept if it fires no later, and re-armed then.
        """
        at = waiter.claim(self.env, when)
        if at is not None:
            st.deadline_waiter, st.deadline_at = waiter, at
            self._arm(st, at)

    def _arm(self, st: RoleState, when: float) -> None:
        if st.armed_at <= when:  # a timer of the thread fires first: it re-arms for this wait
            return
        st.armed_at = when
        self.env.timeout(when - self.env.now).callbacks.append(lambda _ev: self._deadline_fired(st, when))

    def _deadline_fired(self, st: RoleState, at: float) -> None:
        if at != st.armed_at:  # superseded by an earlier timer
            return
        st.armed_at = float("inf")
        waiter = st.deadline_waiter
        if waiter is None or waiter.event.triggered:
            return
        if st.deadline_at > self.env.now:  # the current wait ends later: one timer for it
            self._arm(st, st.deadline_at)
        else:
            waiter.event.succeed()

    def _stopped(self, st: RoleState) -> None:
        """A thread of a JVM host whose time falls inside the host's collection pause moves to its end."""
        now = self.env.now
        st.debt = self.heaps[st.host].resume_at(now + st.debt) - now

    @staticmethod
    def _wake(st: RoleState, ns: float) -> float:
        """A wake-up of ``ns`` (the profile's median), drawn when the profile gives wake-ups a width."""
        return ns if st.wake_jitter is None else st.wake_jitter(ns)

    def _wait_until(self, st: RoleState, at: float, what: str, value: Any = None) -> _Block:
        """Park the thread until ``at`` (a wait, no CPU), then resume it there with ``value``."""
        if value is None:
            resume = _resume_clear_debt  # the common case (sleeps, device reads): no closure per wait
        else:

            def resume(st: RoleState) -> Any:
                st.debt = 0.0
                return value

        block = self._block(st, what, resume)
        block.waiter.wake_at(self.env, at)
        return block

    def _block(self, st: RoleState, what: str, resume: Any) -> _Block:
        """Park the thread; the waiter is not woken before the thread's own time."""
        ev = self.env.event()
        waiter = Waiter(ev, self.env.now + st.debt)
        return _Block(ev, waiter, what, resume)

    # --- resources ----------------------------------------------------------------

    def _query_device(self, op: ops.QueryDevice, st: RoleState) -> DeviceInfo:
        nic = self.profile.nic
        return DeviceInfo(f"sim:{self.profile.name}", nic.max_inline_bytes, nic.max_rd_atomic)

    def _reg_mr(self, op: ops.RegMr, st: RoleState) -> Any:
        mr = self.memories[st.host].register(op.length, op.access)
        self._mrs[st.host, mr.handle.lkey] = mr
        if op.path is not None:
            self._mapped.add((st.host, mr.handle.lkey))
        return mr.handle

    def _dereg_mr(self, op: ops.DeregMr, st: RoleState) -> None:
        self.memories[st.host].deregister(op.mr.lkey)
        self._mrs.pop((st.host, op.mr.lkey), None)
        self._mapped.discard((st.host, op.mr.lkey))

    def _create_cq(self, op: ops.CreateCq, st: RoleState) -> CompletionQueue:
        if op.depth < 1:
            raise ValueError(f"CreateCq.depth must be >= 1, got {op.depth}")
        handle = CompletionQueue(next(self._ids), op.depth, st.host)
        self._cqs[handle.cq_id] = SimCq(handle, self.env)
        return handle

    def _create_qp(self, op: ops.CreateQp, st: RoleState) -> QueuePair:
        cap = op.cap
        if cap.max_inline_data > self.profile.nic.max_inline_bytes:
            raise VerbsError(
                f"QpCap.max_inline_data = {cap.max_inline_data} exceeds the NIC's "
                f"{self.profile.nic.max_inline_bytes} B (profile nic.max_inline_bytes)"
            )
        qpn = next(self._ids)
        handle = QueuePair(qpn, st.host, op.send_cq, op.recv_cq, cap)
        self._qps[st.host, qpn] = SimQp(handle, st.host, self._cqs[op.send_cq.cq_id], self._cqs[op.recv_cq.cq_id], cap)
        return handle

    def _connect_qp(self, op: ops.ConnectQp, st: RoleState) -> None:
        qp = self._qps[st.host, op.qp.qp_num]
        try:
            peer = self._qps[op.remote.host, op.remote.qp_num]
        except KeyError:
            raise VerbsError(f"ConnectQp: no QP {op.remote.qp_num} on host {op.remote.host!r}") from None
        qp.peer = peer
        qp.state = QpState.RTS
        qp.rnr_retry = op.rnr_retry
        qp.rnr_timer_ns = RNR_TIMER_MS[op.min_rnr_timer] * 1e6

    # --- the data path -------------------------------------------------------------

    def _post_send(self, op: ops.PostSend, st: RoleState) -> None:
        qp = self._qps[st.host, op.qp.qp_num]
        wrs = op.wrs
        if type(wrs) is not list:
            wrs = [wrs]
        if qp.state is QpState.INIT:
            raise VerbsError(f"PostSend on QP {qp.qp_num} before ConnectQp (QP state INIT)")
        host = self._host
        cost = host.post_ns + host.post_wr_ns * (len(wrs) - 1)
        self._cpu(st, cost)
        t = self.env.now + st.debt
        nic = self.nics[st.host]
        if len(wrs) == 1:
            at_nic = t + nic.write_ns  # BlueFlame: the WQE (and inline data) travel with the doorbell
        else:
            at_nic = t + nic.write_ns + nic.dma_read_ns  # doorbell, then the NIC fetches the WQE list
        max_inline = qp.cap.max_inline_data
        transport = self.transport
        for wr in wrs:
            if wr.inline and wr.length > max_inline:
                raise VerbsError(
                    f"SendWR {wr.wr_id}: inline payload of {wr.length} B exceeds the QP's "
                    f"max_inline_data of {max_inline} B"
                )
            transport.post(qp, wr, at_nic)
        self.stats.work_requests += len(wrs)

    def _post_recv(self, op: ops.PostRecv, st: RoleState) -> None:
        qp = self._qps[st.host, op.qp.qp_num]
        wrs = op.wrs if isinstance(op.wrs, list) else [op.wrs]
        if len(qp.recv_queue) + len(wrs) > qp.cap.max_recv_wr:
            raise VerbsError(f"PostRecv: receive queue of QP {qp.qp_num} full (max_recv_wr {qp.cap.max_recv_wr})")
        self._cpu(st, self.profile.host.post_ns)
        qp.recv_queue.extend(wrs)

    def _poll_cq(self, op: ops.PollCq, st: RoleState) -> list:
        self._cpu(st, self.profile.host.poll_ns)
        return self._cqs[op.cq.cq_id].pop_ready(self.env.now + st.debt, op.max_entries)

    def _wait_cq(self, op: ops.WaitCq, st: RoleState) -> Any:
        cq = self._cqs[op.cq.cq_id]
        host = self.profile.host
        ready = cq.pop_ready(self.env.now + st.debt, op.max_entries)
        if ready:
            self._cpu(st, host.poll_ns)
            return ready
        busy = op.mode == "busy"

        def resume(st: RoleState) -> list:
            cq.waiter = None
            if busy:
                st.busy_ns += self._spun_ns(st, block.waiter.not_before)
                jitter = st.cpu_jitter  # a spinning core's miss is CPU work
                wake_cost = host.cache_miss_ns if jitter is None else jitter(host.cache_miss_ns)
            else:
                wake_cost = self._wake(st, host.wakeup_ns)
            st.debt = wake_cost  # a wake-up takes time; only busy polling burns the CPU
            if busy:
                st.busy_ns += wake_cost
            self._cpu(st, host.poll_ns)
            return cq.pop_ready(self.env.now + st.debt, op.max_entries)

        block = self._block(st, f"a completion on CQ {cq.handle.cq_id} ({op.mode} mode)", resume)
        cq.waiter = block.waiter
        nxt = cq.next_time()
        if nxt is not None:
            block.waiter.wake_at(self.env, nxt)
        if op.timeout_ns is not None:
            self._deadline(st, block.waiter, self.env.now + st.debt + op.timeout_ns)
        return block

    # --- host memory -------------------------------------------------------------

    def _mr(self, st: RoleState, handle: Any) -> SimMr:
        try:
            return self._mrs[st.host, handle.lkey]
        except KeyError:
            raise VerbsError(f"memory region {handle} is not registered on host {st.host!r}") from None

    def _read_mem(self, op: ops.ReadMem, st: RoleState) -> bytes:
        mr = self._mr(st, op.mr)
        self._bounds(mr, op.offset, op.length, "ReadMem")
        if (st.host, op.mr.lkey) in self._mapped:
            # A mapped file (a Kafka segment) is read in place, as a JVM MappedByteBuffer slice is:
            # no copy; the pass over the bytes is the Compute that models it (the CRC check).
            self._cpu(st, self._host.cache_miss_ns)
        else:
            self._cpu(st, self._copy_ns(op.length))
        return bytes(mr.data[op.offset : op.offset + op.length])

    def _write_mem(self, op: ops.WriteMem, st: RoleState) -> None:
        mr = self._mr(st, op.mr)
        self._bounds(mr, op.offset, len(op.data), "WriteMem")
        self._cpu(st, self._copy_ns(len(op.data)))
        HostMemory.write(mr, mr.handle.addr + op.offset, op.data)

    def _spin_until(self, op: ops.SpinUntil, st: RoleState) -> Any:
        mr = self._mr(st, op.mr)
        self._bounds(mr, op.offset, len(op.value), "SpinUntil")
        if mr.data[op.offset : op.offset + len(op.value)] == op.value:
            self._cpu(st, self.profile.host.cache_miss_ns)
            return None
        miss = self.profile.host.cache_miss_ns

        def resume(st: RoleState) -> None:
            st.busy_ns += self._spun_ns(st, block.waiter.not_before)
            st.debt = 0.0
            self._cpu(st, miss)

        block = self._block(st, f"memory at offset {op.offset} of MR {op.mr.lkey}", resume)
        mr.watchers.append((op.offset, op.value, lambda: block.waiter.wake_at(self.env, self.env.now)))
        return block

    @staticmethod
    def _bounds(mr: SimMr, offset: int, length: int, what: str) -> None:
        if offset < 0 or offset + length > mr.handle.length:
            raise ValueError(f"{what}: bytes [{offset}, {offset + length}) lie outside the {mr.handle.length} B MR")

    def _copy_ns(self, nbytes: int) -> float:
        return nbytes * 8.0 / self.profile.host.memcpy_gbps

    def _compute(self, op: ops.Compute, st: RoleState) -> None:
        if op.kind == "alloc":  # heap allocation of a JVM process: no CPU here, it may start a collection
            heap = self.heaps.get(st.host)
            if heap is not None:
                heap.allocate(self.env.now + st.debt, op.nbytes)
                self._stopped(st)
            return
        if op.kind in WAIT_KINDS:  # a wait, not CPU work: the thread's time moves on, no core is used
            st.debt += self._wake(st, WAIT_KINDS[op.kind](self, op.nbytes))
            return
        if op.kind not in COMPUTE_KINDS:
            known = sorted({*COMPUTE_KINDS, *WAIT_KINDS, "alloc"})
            raise ValueError(f"Compute.kind {op.kind!r} is not modelled; known kinds: {known}")
        self._cpu(st, COMPUTE_KINDS[op.kind](self, op.nbytes))

    def _file_write(self, op: ops.FileWrite, st: RoleState) -> Any:
        store = self.storage.get(st.host)
        if store is None:
            return 0
        t = self.env.now + st.debt
        at, token = store.write(t, op.nbytes)
        if at <= t:
            return token
        return self._wait_until(st, at, f"write-back to make room for {op.nbytes} B (dirty limit)", token)

    def _file_flush(self, op: ops.FileFlush, st: RoleState) -> Any:
        store = self.storage.get(st.host)
        if store is None:
            return None
        t = self.env.now + st.debt
        at = store.flushed_at(t)
        if at <= t:
            return None
        return self._wait_until(st, at, "an fsync of the log (write-back of what was written)")

    def _file_read(self, op: ops.FileRead, st: RoleState) -> Any:
        store = self.storage.get(st.host)
        if store is None:
            return None
        miss = store.missed(op.extents)
        if not miss:
            return None
        done = store.read(self.env.now + st.debt, miss)
        return self._wait_until(st, done, f"a device read of {miss} B")

    def _sleep(self, op: ops.Sleep, st: RoleState) -> Any:
        if op.duration_ns < 0:
            raise ValueError(f"Sleep.duration_ns must be >= 0, got {op.duration_ns}")
        return self._wait_until(st, self.env.now + st.debt + op.duration_ns, f"a sleep of {op.duration_ns} ns")

    def _clock(self, op: ops.Clock, st: RoleState) -> float:
        return self.env.now + st.debt

    # --- sockets --------------------------------------------------------------------

    def _tcp_listen(self, op: ops.TcpListen, st: RoleState) -> Any:
        return self.sockets.listen(op.service, st.host)

    def _tcp_accept(self, op: ops.TcpAccept, st: RoleState) -> Any:
        listener = self.sockets.listeners[op.listener.service]
        now = self.env.now + st.debt
        if listener.pending and listener.pending[0][0] <= now:
            return self._accepted(listener, st)

        def resume(st: RoleState) -> Any:
            listener.waiters.remove(block.waiter)
            st.debt = 0.0
            return self._accepted(listener, st)

        block = self._block(st, f"a connection to {op.listener.service!r}", resume)
        listener.waiters.append(block.waiter)
        if listener.pending:
            block.waiter.wake_at(self.env, listener.pending[0][0])
        return block

    def _accepted(self, listener: Any, st: RoleState) -> Any:
        _, conn = listener.pending.popleft()
        self._conns[conn.handle.conn_id] = conn
        self._cpu(st, self._host.syscall_ns)
        return conn.handle

    def _tcp_connect(self, op: ops.TcpConnect, st: RoleState) -> Any:
        conn = self.sockets.connect(op.service, st.host, self.env.now + st.debt)
        if conn is not None:
            self._conns[conn.handle.conn_id] = conn
            self._cpu(st, self._host.syscall_ns)
            return conn.handle

        def resume(st: RoleState) -> Any:
            st.debt = 0.0
            return self._tcp_connect(op, st)

        block = self._block(st, f"a listener for {op.service!r}", resume)
        self.sockets.connect_waiters.setdefault(op.service, []).append(block.waiter)
        return block

    def _tcp_send(self, op: ops.TcpSend, st: RoleState) -> Any:
        tcp = self.profile.tcp
        per_byte = 0.0 if op.zero_copy else tcp.send_ns_per_byte
        self._cpu(st, self._host.syscall_ns + op.nbytes * per_byte)
        return self._tcp_put(op, st)

    def _tcp_put(self, op: ops.TcpSend, st: RoleState) -> Any:
        """Send once the receive window has room; otherwise wait, once, for the ACK that makes room."""
        conn = self._conns[op.conn.conn_id]
        sockets = self.sockets
        if sockets.room(conn, op.nbytes, self.env.now + st.debt):
            sockets.send(conn, op.message, op.nbytes, self.env.now + st.debt)
            return None

        def resume(st: RoleState) -> Any:
            st.debt = self._wake(st, self._host.wakeup_ns)  # a sender asleep in the kernel is woken by the ACK
            return self._tcp_put(op, st)

        block = self._block(st, f"room in the receive window of connection {op.conn.conn_id}", resume)
        sockets.wait_room(conn, op.nbytes, block.waiter)
        return block

    def _tcp_recv(self, op: ops.TcpRecv, st: RoleState) -> Any:
        handles = op.conns if isinstance(op.conns, list | tuple) else [op.conns]
        if len(handles) >= SELECT_MIN:  # many connections: their selector, no work per connection
            source: ConnScan | Selector = self.sockets.selector(handles, self._conns)
        else:
            source = ConnScan([self._conns[h.conn_id] for h in handles])
        got = source.ready(self.env.now + st.debt)
        if got is not None:
            return self._received(got, st)

        def resume(st: RoleState) -> Any:
            source.unwatch(block.waiter)
            st.debt = self._wake(st, self._host.wakeup_ns)
            got = source.ready(self.env.now + st.debt)
            return None if got is None else self._received(got, st)

        block = self._block(st, f"a message on {len(handles)} connection(s)", resume)
        source.watch(block.waiter, self.env)
        if op.timeout_ns is not None:
            self._deadline(st, block.waiter, self.env.now + st.debt + op.timeout_ns)
        return block

    def _received(self, got: tuple[SimConn, Any], st: RoleState) -> tuple[Any, Any]:
        conn, (message, nbytes) = got[0], got[1]
        self._cpu(st, self._host.syscall_ns + nbytes * self.profile.tcp.recv_ns_per_byte)
        self.sockets.consumed(conn, nbytes, self.env.now + st.debt)  # the copy out frees the window
        return conn.handle, message

    # --- queues and notifications ---------------------------------------------------

    def _queue_put(self, op: ops.QueuePut, st: RoleState) -> Any:
        q = self.sync.queue(op.queue)
        if op.capacity is None or len(q.items) < op.capacity:
            self.sync.put(q, op.item, self.env.now + st.debt)
            return None

        def resume(st: RoleState) -> Any:
            q.putters.remove(block.waiter)
            st.debt = self._wake(st, self._host.queue_wakeup_ns)  # a parked thread is woken (a futex), no interrupt
            return self._queue_put(op, st)

        block = self._block(st, f"room in queue {op.queue!r}", resume)
        q.putters.append(block.waiter)
        return block

    def _queue_get(self, op: ops.QueueGet, st: RoleState) -> Any:
        q = self.sync.queue(op.queue)
        ok, item = self.sync.take(q, self.env.now + st.debt)
        if ok:
            self.sync.released(q, self.env.now + st.debt)
            return item

        def resume(st: RoleState) -> Any:
            q.getters.remove(block.waiter)
            st.debt = 0.0
            ok, item = self.sync.take(q, self.env.now)
            if ok:
                self.sync.released(q, self.env.now)
                st.debt = self._wake(st, self._host.queue_wakeup_ns)  # handed work while parked: a futex wake
                return item
            if op.timeout_ns is None:  # another thread took it first: wait again
                return self._queue_get(op, st)
            return None

        block = self._block(st, f"an item in queue {op.queue!r}", resume)
        q.getters.append(block.waiter)
        if q.items:
            block.waiter.wake_at(self.env, q.items[0][0])
        if op.timeout_ns is not None:
            self._deadline(st, block.waiter, self.env.now + st.debt + op.timeout_ns)
        return block

    def _notify(self, op: ops.Notify, st: RoleState) -> None:
        self.sync.notify(op.key, self.env.now + st.debt)

    def _wait_notify(self, op: ops.WaitNotify, st: RoleState) -> Any:
        def resume(st: RoleState) -> bool:
            waiters = self.sync.notify_waiters.get(op.key, [])
            if block.waiter in waiters:
                waiters.remove(block.waiter)  # timed out: still registered
                st.debt = 0.0
                return False
            st.debt = self._wake(st, self._host.notify_ns)
            return True

        block = self._block(st, f"a notification on {op.key!r}", resume)
        self.sync.notify_waiters.setdefault(op.key, []).append(block.waiter)
        if op.timeout_ns is not None:
            self._deadline(st, block.waiter, self.env.now + st.debt + op.timeout_ns)
        return block

    # --- rendezvous ----------------------------------------------------------------

    def _publish(self, op: ops.Publish, st: RoleState) -> None:
        if op.key in self._published:
            raise ValueError(f"Publish: key {op.key!r} was already published")
        self._published[op.key] = op.value
        for ev in self._lookups.pop(op.key, []):
            ev.succeed()

    def _lookup(self, op: ops.Lookup, st: RoleState) -> Any:
        if op.key in self._published:
            return self._published[op.key]
        if not op.wait:
            return None
        key = op.key

        def resume(st: RoleState) -> Any:
            return self._published[key]

        block = self._block(st, f"rendezvous key {key!r}", resume)
        self._lookups.setdefault(key, []).append(block.event)
        return block

    _handlers: dict[type, Any] = {
        ops.QueryDevice: _query_device,
        ops.RegMr: _reg_mr,
        ops.DeregMr: _dereg_mr,
        ops.CreateCq: _create_cq,
        ops.CreateQp: _create_qp,
        ops.ConnectQp: _connect_qp,
        ops.PostSend: _post_send,
        ops.PostRecv: _post_recv,
        ops.PollCq: _poll_cq,
        ops.WaitCq: _wait_cq,
        ops.ReadMem: _read_mem,
        ops.WriteMem: _write_mem,
        ops.SpinUntil: _spin_until,
        ops.Compute: _compute,
        ops.FileWrite: _file_write,
        ops.FileRead: _file_read,
        ops.FileFlush: _file_flush,
        ops.IdlePoll: idle_poll,
        ops.Sleep: _sleep,
        ops.Clock: _clock,
        ops.TcpListen: _tcp_listen,
        ops.TcpAccept: _tcp_accept,
        ops.TcpConnect: _tcp_connect,
        ops.TcpSend: _tcp_send,
        ops.TcpRecv: _tcp_recv,
        ops.QueuePut: _queue_put,
        ops.QueueGet: _queue_get,
        ops.Notify: _notify,
        ops.WaitNotify: _wait_notify,
        ops.Publish: _publish,
        ops.Lookup: _lookup,
    }


#: Operations that charge no ``host.op_ns``: they stand for the kernel's side of a write or sendfile.
_FILE_OPS = (ops.FileWrite, ops.FileRead, ops.FileFlush)


def _resume_clear_debt(st: RoleState) -> None:
    st.debt = 0.0


#: CPU cost models for :class:`kdlab.ops.Compute` kinds, in ns for ``nbytes``.
COMPUTE_KINDS: dict[str, Any] = {
    "copy": lambda eng, n: n * 8.0 / eng.profile.host.memcpy_gbps,
    "crc32c": lambda eng, n: n * 8.0 / eng.profile.host.crc32c_gbps,
    "syscall": lambda eng, n: eng.profile.host.syscall_ns,
    "request": lambda eng, n: eng.profile.host.request_ns,  # a Kafka request on the socket path only
    # a batch appended to a Kafka log; ``nbytes`` counts the records LogValidator iterates (0: a follower)
    "append": lambda eng, n: eng.profile.host.append_ns + n * eng.profile.host.append_record_ns,
    # a Kafka client's own work: ``nbytes`` counts records sent (serialiser, accumulator, callback) or delivered
    "produce_records": lambda eng, n: n * eng.profile.host.producer_record_ns,
    "consume_records": lambda eng, n: n * eng.profile.host.consumer_record_ns,
    "fetch_request": lambda eng, n: eng.profile.host.consumer_fetch_ns,  # a consumer builds one FetchRequest
}

#: :class:`kdlab.ops.Compute` kinds that are waits rather than CPU work (the thread is parked), in ns.
WAIT_KINDS: dict[str, Any] = {
    "handoff": lambda eng, n: eng.profile.host.handoff_ns,  # a hand-off to a parked thread the role stands for
}


class _Block:
    """A handler's answer meaning "wait for ``event``, then call ``resume``"."""

    __slots__ = ("event", "resume", "waiter", "what")

    def __init__(self, event: simpy.Event, waiter: Waiter, what: str, resume: Any) -> None:
        self.event = event
        self.waiter = waiter
        self.what = what
        self.resume = resume


__all__ = ["QpCap", "SimEngine", "SimulationError", "VerbsError"]
