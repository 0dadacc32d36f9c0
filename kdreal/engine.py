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
from kdreal.rendezvous import RendezvousClient, RendezvousDeadlock, RendezvousServer
from kdreal.sockets import SocketTable
from kdreal.verbs import Verbs, VerbsError
from kdreal.wire import new_token


class RoleError(RuntimeError):
    """A role raised, died, or did not finish in time; the message holds its traceback."""

    def __init__(self, role: str, detail: str) -> None:
        super().__init__(f"role {role!r} failed:\n{detail}")
        self.role = role
        self.detail = detail


def _first_failure(failures: dict[str, str]) -> RoleError:
    """The failure to report: the first that is not a deadlock some other failure left behind."""
    names = sorted(failures, key=lambda n: "RendezvousDeadlock" in failures[n])
    first = names[0]
    detail = failures[first]
    if len(names) > 1:
        detail += f"\n(roles that failed as well: {', '.join(names[1:])})"
    return RoleError(first, detail)


#: Seconds the engine waits for the other roles' outcomes after a role failed.
_FAIL_GRACE_S = 2.0


@dataclass(frozen=True)
class RealOptions:
    """What every role process needs to open and use the device."""

    device: str | None = None
    gid_index: int | None = None
    port: int = 1
    timeout_s: float = 30.0
    cq_wait: str = "auto"  # "spin", "yield", or "auto": spin only with fewer host processes than cores


def spin_allowed(cq_wait: str, processes: int) -> bool:
    """Whether busy CQ waits may spin: ``auto`` spins only with fewer host processes than cores.

    On an oversubscribed machine (the testbed VM: 2 vCPUs for brokers, clients and
    the Soft-RoCE kernel work) spinning threads starve the ones that would produce
    the completion, so busy waits give the CPU away (``sched_yield``) after every
    empty poll instead (``yield``).
    """
    if cq_wait not in ("auto", "spin", "yield"):
        raise ValueError(f"cq_wait must be 'auto', 'spin' or 'yield', got {cq_wait!r}")
    if cq_wait == "auto":
        return processes < (os.cpu_count() or 1)
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
    ``WaitCq`` waits (:func:`spin_allowed`; event-mode waits always sleep).
    """

    name = "real"

    def __init__(
        self, device: str | None = None, gid_index: int | None = None, *, port: int = 1,
        timeout_s: float = 30.0, run_timeout_s: float | None = 600.0, data_dir: str | None = None,
        cq_wait: str = "auto",
    ) -> None:  # fmt: skip
        spin_allowed(cq_wait, 1)  # validates
        self.options = RealOptions(device, gid_index, port, timeout_s, cq_wait)
        self.run_timeout_s = run_timeout_s
        self.data_dir = data_dir

    def run(self, roles: Sequence[Role]) -> dict[str, Any]:
        """Run each host's roles as threads of one process; return each role's return value by name."""
        names = [r.name for r in roles]
        if len(set(names)) != len(names):
            raise ValueError(f"role names must be unique, got {names}")
        by_host: dict[str, list[Role]] = {}
        for role in roles:
            by_host.setdefault(role.host, []).append(role)
        data_dir = self.data_dir or tempfile.mkdtemp(prefix="kdreal-")
        ctx = mp.get_context("fork")
        server = RendezvousServer(len(roles), new_token())  # the run's secret: its forked roles inherit it
        procs: dict[str, tuple[Any, mpc.Connection]] = {}
        try:
            for host, host_roles in by_host.items():
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=_host_main, args=(host, host_roles, self.options, server, writer, data_dir, len(by_host)),
                    name=f"kdreal:{host}", daemon=True,
                )  # fmt: skip
                proc.start()
                writer.close()
                procs[host] = (proc, reader)
            server.start()
            try:
                return self._collect(by_host, procs)
            except RoleError as err:
                raise _with_logs(err, by_host, data_dir) from None
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
        """Gather role outcomes until every non-daemon role has one; any failure fails the run."""
        waiting_for = {r.name for rs in by_host.values() for r in rs if not r.daemon}
        unreported = {host: {r.name for r in rs} for host, rs in by_host.items()}
        readers = {reader: host for host, (_, reader) in procs.items()}
        results: dict[str, Any] = {}
        failures: dict[str, str] = {}
        deadline = None if self.run_timeout_s is None else time.monotonic() + self.run_timeout_s
        while readers and waiting_for:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = mpc.wait(list(readers), left)
            if not ready:
                if not failures:
                    pending = ", ".join(sorted(waiting_for))
                    raise RoleError(pending, f"run did not finish within {self.run_timeout_s} s")
                break
            for reader in ready:
                host = readers[reader]  # type: ignore[index]
                try:
                    name, status, payload = reader.recv()  # type: ignore[union-attr]
                except EOFError:
                    del readers[reader]  # type: ignore[arg-type]
                    proc = procs[host][0]
                    proc.join(5)
                    if unreported[host] and not failures:  # the others may wait on it: a moment, then stop
                        grace = time.monotonic() + _FAIL_GRACE_S
                        deadline = grace if deadline is None else min(deadline, grace)
                    for name in unreported[host]:
                        failures.setdefault(name, f"process exited with code {proc.exitcode} without a result")
                    continue
                unreported[host].discard(name)
                waiting_for.discard(name)
                if status == "ok":
                    results[name] = payload
                else:
                    if not failures:  # give the other roles a moment to report, then stop
                        grace = time.monotonic() + _FAIL_GRACE_S
                        deadline = grace if deadline is None else min(deadline, grace)
                    failures[name] = payload
            if not readers and waiting_for and not failures:
                failures.update(dict.fromkeys(waiting_for, "its process ended without a result"))
        if failures:
            raise _first_failure(failures)
        return results


def _with_logs(err: RoleError, by_host: dict[str, list[Role]], data_dir: str, tail: int = 4000) -> RoleError:
    """``err`` with the end of the failed role's host log (its stderr: warnings, a crash's stacks)."""
    host = next((h for h, roles in by_host.items() if any(r.name == err.role for r in roles)), None)
    try:
        with open(os.path.join(data_dir, f"{host}.log")) as f:
            text = f.read()
    except OSError:
        return err
    crash = text.find("Fatal Python error")
    text = text[max(0, crash - tail // 4) :][:tail] if crash >= 0 else text[-tail:]  # a crash: where it begins
    if not text.strip():
        return err
    return RoleError(err.role, f"{err.detail}\n--- end of host {host!r} log ---\n{text}")


# --- inside a host process ------------------------------------------------------------------


def _host_main(
    host: str, roles: list[Role], options: RealOptions, server: RendezvousServer, conn: mpc.Connection,
    data_dir: str, processes: int,
) -> None:  # fmt: skip
    """Body of a host process: run each role in a thread, report each outcome as it comes.

    Outcomes are sent before a role's rendezvous connection closes, so that a failure
    reaches the parent before the roles it leaves waiting are declared deadlocked. The
    process ends when its last thread does; the parent stops daemons by ending it.
    """
    server.close_in_child()
    log = open(os.path.join(data_dir, f"{host}.log"), "w", buffering=1)  # noqa: SIM115 - the process's lifetime
    os.dup2(log.fileno(), 2)  # this host's stderr (and the verbs library's) goes to its log
    sys.stderr = log
    faulthandler.enable(log)  # a crash in the verbs library prints every thread's Python stack there
    send_lock = threading.Lock()
    runtime = HostRuntime()
    verbs = Verbs(host, options.device, options.gid_index, options.port, options.timeout_s)
    verbs.shared = len(roles) > 1
    verbs.spin = spin_allowed(options.cq_wait, processes)
    sockets = SocketTable(host, server.token)

    def report(name: str, outcome: tuple[str, Any]) -> None:
        with send_lock:
            try:
                conn.send((name, *outcome))
            except Exception:  # the return value does not pickle
                conn.send((name, "error", traceback.format_exc()))

    def run_role(role: Role) -> None:
        rendezvous = None
        try:
            rendezvous = RendezvousClient(server.address, role.name, server.token)
            timeout_s = None if role.daemon else options.timeout_s
            executor = Executor(verbs, rendezvous, runtime, sockets, data_dir, timeout_s)
            outcome: tuple[str, Any] = ("ok", drive(role, executor))
        except BaseException:
            outcome = ("error", traceback.format_exc())
        report(role.name, outcome)
        if rendezvous is not None:
            rendezvous.close()

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
    conn.close()


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


def _sleep(ex: Executor, op: ops.Sleep) -> None:
    if op.duration_ns < 0:
        raise ValueError(f"Sleep.duration_ns must be >= 0, got {op.duration_ns}")
    time.sleep(op.duration_ns / 1e9)


def _idle_poll(ex: Executor, op: ops.IdlePoll) -> int:
    """Wait for the first poll; the caller's round performs it (kdreal polls for real, one by one)."""
    wait = min(op.first_ns, op.until_ns) - time.perf_counter_ns()
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
    ops.Clock: lambda ex, op: time.perf_counter_ns(),
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
