"""kdreal's engine: runs datapath roles on real RDMA verbs (pyverbs) and real sockets.

``RealEngine().run(roles)`` has :meth:`kdsim.engine.SimEngine.run`'s contract: it
runs every role to completion and returns each role's return value by name; daemon
roles (server threads) are stopped once every other role has finished. The roles
of one host run as threads of one process, forked (``multiprocessing`` 'fork')
before any verbs resource exists, so they share that host's device context,
protection domain, memory regions, CQs and QPs, its Python state (a broker's logs)
and its in-process queues (:mod:`kdreal.host`). Roles on different hosts share
nothing but the device and meet at a TCP rendezvous on 127.0.0.1 served by the
parent (:mod:`kdreal.rendezvous`); every connection proves the run's random token,
which the parent makes and its forked roles inherit (:mod:`kdreal.wire`). File-backed
MRs (``RegMr(path=...)``) live under a per-run data directory, removed after the run.

As in kdsim, the datapath code between two yields runs atomically with respect to
its host's other roles, an operation that fails is raised inside the role at its
``yield``, where the datapath may catch it, and an exception that leaves a role
(daemon or not) fails the run with :class:`RoleError`, which carries the role's
name and its traceback.
"""

from __future__ import annotations

import faulthandler
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kdlab import ops
from kdlab.program import Role
from kdreal.host import HostRuntime, Unlocked
from kdreal.outcomes import RoleError, Tally, group_by_host, read_text, with_log
from kdreal.rendezvous import RendezvousClient, RendezvousDeadlock, RendezvousServer
from kdreal.sockets import SocketTable
from kdreal.verbs import Verbs, VerbsError
from kdreal.wire import new_token


@dataclass(frozen=True)
class RealOptions:
    """What every role process needs to open and use the device."""

    device: str | None = None
    gid_index: int | None = None
    port: int = 1
    timeout_s: float = 30.0
    cq_wait: str = "auto"  # "spin", "yield", or "auto": spin only with fewer host processes than cores
    cores: int | None = None  # the machine's cores for "auto" (None: os.cpu_count())


def spin_allowed(cq_wait: str, processes: int, cores: int | None = None) -> bool:
    """Whether busy CQ waits may spin: ``auto`` spins only with fewer host processes than ``cores``.

    On an oversubscribed machine (the testbed VM: 2 vCPUs for brokers, clients and
    the Soft-RoCE kernel work) spinning threads starve the ones that would produce
    the completion, so busy waits give the CPU away (``sched_yield``) after every
    empty poll instead (``yield``).
    """
    if cq_wait not in ("auto", "spin", "yield"):
        raise ValueError(f"cq_wait must be 'auto', 'spin' or 'yield', got {cq_wait!r}")
    if cq_wait == "auto":
        return processes < (cores or os.cpu_count() or 1)
    return cq_wait == "spin"


class RealEngine:
    """Execute roles on a real RDMA device (Soft-RoCE in the testbed VM, or a NIC).

    ``device`` names the verbs device (default: the first one listed), ``gid_index``
    the source GID (default: the first IPv4-mapped GID, index 1 for rxe on ``lo``),
    ``timeout_s`` bounds every wait of a non-daemon role (CQ, memory spin, socket,
    completion event; daemons wait as long as the run), ``run_timeout_s`` the whole
    run. A rendezvous lookup waits without a limit, but fails at once with
    :class:`~kdreal.rendezvous.RendezvousDeadlock` when every running role waits for
    a key nobody published. ``data_dir`` holds file-backed MRs (default: a fresh
    temporary directory, removed after the run). ``cq_wait`` says how a busy
    ``WaitCq`` waits (:func:`spin_allowed`; event-mode waits always sleep). ``host_setup``
    (picklable, no arguments) runs in every host process before its roles start.

    With ``cluster`` (a :class:`kdlab.hosts.ClusterSpec`: hosts, a placement and a Dask
    scheduler) each simulated host's process runs on the machine the placement gives it,
    launched through Dask (:mod:`kdreal.cluster`); without it every process runs here.
    """

    name = "real"

    def __init__(
        self, device: str | None = None, gid_index: int | None = None, *, port: int = 1,
        timeout_s: float = 30.0, run_timeout_s: float | None = 600.0, data_dir: str | None = None,
        cq_wait: str = "auto", host_setup: Callable[[], None] | None = None, cluster: Any = None,
    ) -> None:  # fmt: skip
        spin_allowed(cq_wait, 1)  # validates
        self.options = RealOptions(device, gid_index, port, timeout_s, cq_wait)
        self.run_timeout_s = run_timeout_s
        self.data_dir = data_dir
        self.host_setup = host_setup
        self.cluster = cluster
        #: Per pair of machines of the last cluster run: clock offset estimates (see kdreal.cluster).
        self.clock_offsets: dict[str, dict[str, float]] = {}

    def run(self, roles: Sequence[Role]) -> dict[str, Any]:
        """Run each host's roles as threads of one process; return each role's return value by name."""
        by_host = group_by_host(roles)
        if self.cluster is not None:
            from kdreal.cluster import run_on_cluster

            return run_on_cluster(self, by_host)
        data_dir = self.data_dir or tempfile.mkdtemp(prefix="kdreal-")
        ctx = mp.get_context("fork")
        server = RendezvousServer(len(roles), new_token())  # the run's secret: its forked roles inherit it
        procs: dict[str, tuple[Any, mpc.Connection]] = {}
        try:
            for host, host_roles in by_host.items():
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=_local_host_main,
                    args=(host, host_roles, self.options, server, writer, data_dir, len(by_host), self.host_setup),
                    name=f"kdreal:{host}", daemon=True,
                )  # fmt: skip
                proc.start()
                writer.close()
                procs[host] = (proc, reader)
            server.start()
            try:
                return self._collect(by_host, procs)
            except RoleError as err:
                raise with_log(err, by_host, lambda host: read_text(os.path.join(data_dir, f"{host}.log"))) from None
        finally:
            for proc, reader in procs.values():
                if proc.is_alive():
                    proc.terminate()
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
                reader.close()
            server.close()
            if self.data_dir is None:
                shutil.rmtree(data_dir, ignore_errors=True)

    def _collect(self, by_host: dict[str, list[Role]], procs: dict[str, tuple[Any, mpc.Connection]]) -> dict[str, Any]:
        """Gather role outcomes from the host processes' pipes until the tally is complete."""
        tally = Tally(by_host, self.run_timeout_s)
        readers = {reader: host for host, (_, reader) in procs.items()}
        while readers and not tally.complete():
            ready = mpc.wait(list(readers), tally.time_left())
            if not ready:
                tally.timed_out()
                break
            for reader in ready:
                host = readers[reader]  # type: ignore[index]
                try:
                    name, status, payload = reader.recv()  # type: ignore[union-attr]
                except EOFError:
                    del readers[reader]  # type: ignore[arg-type]
                    proc = procs[host][0]
                    proc.join(5)
                    tally.host_ended(host, f"process exited with code {proc.exitcode} without a result")
                    continue
                tally.outcome(host, name, status, payload)
        return tally.result(hosts_left=bool(readers))


# --- inside a host process ------------------------------------------------------------------


def _local_host_main(
    host: str, roles: list[Role], options: RealOptions, server: RendezvousServer, conn: mpc.Connection,
    data_dir: str, processes: int, setup: Callable[[], None] | None,
) -> None:  # fmt: skip
    """A forked host process on this machine: outcomes go to the parent through ``conn``."""
    server.close_in_child()
    send_lock = threading.Lock()

    def report(name: str, outcome: tuple[str, Any]) -> None:
        with send_lock:
            try:
                conn.send((name, *outcome))
            except Exception:  # the return value does not pickle
                conn.send((name, "error", traceback.format_exc()))

    host_main(host, roles, options, server.address, server.token, report, data_dir, processes, setup)
    conn.close()


def host_main(
    host: str, roles: list[Role], options: RealOptions, rendezvous: tuple[str, int], token: bytes,
    report: Callable[[str, tuple[str, Any]], None], data_dir: str, processes: int,
    setup: Callable[[], None] | None = None, clock_offset_ns: int = 0, bind: str = "127.0.0.1",
) -> None:  # fmt: skip
    """Body of a host process: run each role in a thread, ``report`` each outcome as it comes.

    Outcomes are reported before a role's rendezvous connection closes, so that a failure
    reaches the engine before the roles it leaves waiting are declared deadlocked. The
    process ends when its last thread does; the engine stops daemons by ending it.
    ``clock_offset_ns`` is added to every ``Clock`` (a cluster's common time base); TCP
    listeners bind to ``bind``.
    """
    log = open(os.path.join(data_dir, f"{host}.log"), "w", buffering=1)  # noqa: SIM115 - the process's lifetime
    os.dup2(log.fileno(), 2)  # this host's stderr (and the verbs library's) goes to its log
    sys.stderr = log
    faulthandler.enable(log)  # a crash in the verbs library prints every thread's Python stack there
    if setup is not None:
        setup()
    runtime = HostRuntime()
    verbs = Verbs(host, options.device, options.gid_index, options.port, options.timeout_s)
    verbs.shared = len(roles) > 1
    verbs.spin = spin_allowed(options.cq_wait, processes, options.cores)
    sockets = SocketTable(host, token, bind)

    def run_role(role: Role) -> None:
        rendezvous_client = None
        try:
            rendezvous_client = RendezvousClient(rendezvous, role.name, token)
            timeout_s = None if role.daemon else options.timeout_s
            executor = Executor(verbs, rendezvous_client, runtime, sockets, data_dir, timeout_s, clock_offset_ns)
            outcome: tuple[str, Any] = ("ok", drive(role, executor))
        except BaseException:
            outcome = ("error", traceback.format_exc())
        report(role.name, outcome)
        if rendezvous_client is not None:
            rendezvous_client.close()

    threads = [threading.Thread(target=run_role, args=(r,), name=r.name, daemon=True) for r in roles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        verbs.close()
    except Exception:
        report(f"{host}.teardown", ("error", traceback.format_exc()))
    sockets.close()


def drive(role: Role, executor: Executor) -> Any:
    """Feed the role's generator the result of each operation it yields; return its return value.

    The role holds its host's lock while its own code runs; blocking operations give
    it up (:data:`BLOCKING`). A failed operation is thrown into the generator at its
    ``yield``.
    """
    gen = role.body(**role.args)
    handlers = HANDLERS
    lock = executor.runtime.lock
    value: Any = None
    exc: BaseException | None = None
    with lock:
        while True:
            try:
                op = gen.throw(exc) if exc is not None else gen.send(value)
            except StopIteration as stop:
                return stop.value
            exc = None
            value = None
            handler = handlers.get(type(op))
            if handler is None:
                exc = TypeError(f"role {role.name!r} yielded {op!r}, which is not an operation of kdlab.ops")
                continue
            try:
                if type(op) in BLOCKING:
                    with Unlocked(lock):
                        value = handler(executor, op)
                else:
                    value = handler(executor, op)
            except Exception as err:
                exc = err


@dataclass
class Executor:
    """What one role thread executes operations with."""

    verbs: Verbs
    rendezvous: RendezvousClient
    runtime: HostRuntime
    sockets: SocketTable
    data_dir: str
    timeout_s: float | None  # None: wait as long as the run (daemon roles)
    clock_offset_ns: int = 0  # added to perf_counter_ns: the cluster's common time base

    def now(self) -> int:
        """This host's clock on the run's time base: what ``Clock`` returns and ``IdlePoll`` times are in."""
        return time.perf_counter_ns() + self.clock_offset_ns


def _sleep(ex: Executor, op: ops.Sleep) -> None:
    if op.duration_ns < 0:
        raise ValueError(f"Sleep.duration_ns must be >= 0, got {op.duration_ns}")
    time.sleep(op.duration_ns / 1e9)


def _idle_poll(ex: Executor, op: ops.IdlePoll) -> int:
    """Wait for the first poll; the caller's round performs it (kdreal polls for real, one by one)."""
    wait = min(op.first_ns, op.until_ns) - ex.now()
    if wait > 0:
        time.sleep(wait / 1e9)
    return 0


def _reg_mr(ex: Executor, op: ops.RegMr) -> Any:
    path = None
    if op.path is not None:
        path = os.path.join(ex.data_dir, op.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return ex.verbs.reg_mr(op.length, op.access, path)


def _tcp_listen(ex: Executor, op: ops.TcpListen) -> Any:
    listener, address = ex.sockets.listen(op.service)
    ex.rendezvous.publish(f"tcp:{op.service}", address)
    return listener


def _tcp_connect(ex: Executor, op: ops.TcpConnect) -> Any:
    return ex.sockets.connect(op.service, ex.rendezvous.lookup(f"tcp:{op.service}"))


def _tcp_recv(ex: Executor, op: ops.TcpRecv) -> Any:
    timeout = ex.timeout_s if op.timeout_ns is None else op.timeout_ns / 1e9
    got = ex.sockets.recv(op.conns, timeout)
    if got is None and op.timeout_ns is None:
        raise TimeoutError(f"TcpRecv: no message within {ex.timeout_s} s")
    return got


def _seconds(timeout_ns: float | None) -> float | None:
    return None if timeout_ns is None else timeout_ns / 1e9


#: One handler per operation type: ``handler(executor, op) -> result``.
HANDLERS: dict[type, Callable[[Executor, Any], Any]] = {
    ops.QueryDevice: lambda ex, op: ex.verbs.query_device(),
    ops.RegMr: _reg_mr,
    ops.DeregMr: lambda ex, op: ex.verbs.dereg_mr(op.mr),
    ops.CreateCq: lambda ex, op: ex.verbs.create_cq(op.depth),
    ops.CreateQp: lambda ex, op: ex.verbs.create_qp(op.send_cq, op.recv_cq, op.cap),
    ops.ConnectQp: lambda ex, op: ex.verbs.connect_qp(op.qp, op.remote, op.rnr_retry, op.min_rnr_timer),
    ops.PostSend: lambda ex, op: ex.verbs.post_send(op.qp, op.wrs),
    ops.PostRecv: lambda ex, op: ex.verbs.post_recv(op.qp, op.wrs),
    ops.PollCq: lambda ex, op: ex.verbs.poll_cq(op.cq, op.max_entries),
    ops.WaitCq: lambda ex, op: ex.verbs.wait_cq(op.cq, op.max_entries, op.mode, ex.timeout_s, _seconds(op.timeout_ns)),
    ops.ReadMem: lambda ex, op: ex.verbs.read_mem(op.mr, op.offset, op.length),
    ops.WriteMem: lambda ex, op: ex.verbs.write_mem(op.mr, op.offset, op.data),
    ops.SpinUntil: lambda ex, op: ex.verbs.spin_until(op.mr, op.offset, op.value),
    ops.Compute: lambda ex, op: None,  # the datapath did the real work itself
    ops.FileWrite: lambda ex, op: 0,  # no device model: the real engine's files are real (or memory)
    ops.FileRead: lambda ex, op: None,
    ops.FileFlush: lambda ex, op: None,
    ops.Sleep: _sleep,
    ops.IdlePoll: _idle_poll,
    ops.Clock: lambda ex, op: ex.now(),
    ops.TcpListen: _tcp_listen,
    ops.TcpAccept: lambda ex, op: ex.sockets.accept(op.listener, ex.timeout_s),
    ops.TcpConnect: _tcp_connect,
    ops.TcpSend: lambda ex, op: ex.sockets.send(op.conn, op.message, op.zero_copy),
    ops.TcpRecv: _tcp_recv,
    ops.QueuePut: lambda ex, op: ex.runtime.put(op.queue, op.item, op.capacity, ex.timeout_s),
    ops.QueueGet: lambda ex, op: ex.runtime.get(op.queue, _seconds(op.timeout_ns)),
    ops.Notify: lambda ex, op: ex.runtime.notify(op.key),
    ops.WaitNotify: lambda ex, op: ex.runtime.wait_notify(op.key, _seconds(op.timeout_ns)),
    ops.Publish: lambda ex, op: ex.rendezvous.publish(op.key, op.value),
    ops.Lookup: lambda ex, op: ex.rendezvous.lookup(op.key) if op.wait else ex.rendezvous.peek(op.key),
}

#: Operations that may block: they run with the host lock given up. (Queue and
#: notification waits give it up inside their condition variables.)
BLOCKING = frozenset({
    ops.WaitCq, ops.SpinUntil, ops.Sleep, ops.IdlePoll, ops.Publish, ops.Lookup, ops.TcpListen, ops.TcpAccept,
    ops.TcpConnect, ops.TcpSend, ops.TcpRecv,
})  # fmt: skip

__all__ = ["RealEngine", "RealOptions", "RendezvousDeadlock", "RoleError", "VerbsError", "drive"]
