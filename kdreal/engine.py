"""kdreal's engine: runs datapath roles on real RDMA verbs (pyverbs), one process each.

``RealEngine().run(roles)`` has :meth:`kdsim.engine.SimEngine.run`'s contract: it
runs every role to completion and returns each role's return value by name. Here
each role is a process forked (``multiprocessing`` 'fork') before any verbs
resource exists; it opens the device itself and executes its operations on it,
in real time. Roles meet at a TCP rendezvous on 127.0.0.1 served by the parent
(:mod:`kdreal.rendezvous`). Role names and hosts are labels: all roles share the
machine's device, and each role has its own context and protection domain, so
roles cannot share MRs, CQs or QPs even when they name the same host.

As in kdsim, an operation that fails is raised inside the role at its ``yield``,
where the datapath may catch it; an exception that leaves the role fails the run
with :class:`RoleError`, which carries the role's name and its traceback.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mpc
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kdlab import ops
from kdlab.program import Role
from kdreal.rendezvous import RendezvousClient, RendezvousDeadlock, RendezvousServer
from kdreal.verbs import Verbs, VerbsError


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


class RealEngine:
    """Execute roles on a real RDMA device (Soft-RoCE in the testbed VM, or a NIC).

    ``device`` names the verbs device (default: the first one listed), ``gid_index``
    the source GID (default: the first IPv4-mapped GID, index 1 for rxe on ``lo``),
    ``timeout_s`` bounds every wait of a role (CQ, memory spin, completion event),
    ``run_timeout_s`` the whole run. A rendezvous lookup waits without a limit, but
    fails at once with :class:`~kdreal.rendezvous.RendezvousDeadlock` when every
    running role waits for a key nobody published.
    """

    name = "real"

    def __init__(
        self, device: str | None = None, gid_index: int | None = None, *, port: int = 1,
        timeout_s: float = 30.0, run_timeout_s: float | None = 600.0,
    ) -> None:  # fmt: skip
        self.options = RealOptions(device, gid_index, port, timeout_s)
        self.run_timeout_s = run_timeout_s

    def run(self, roles: Sequence[Role]) -> dict[str, Any]:
        """Run every role in its own process; return each role's return value by name."""
        names = [r.name for r in roles]
        if len(set(names)) != len(names):
            raise ValueError(f"role names must be unique, got {names}")
        ctx = mp.get_context("fork")
        server = RendezvousServer(len(roles))
        procs: dict[str, tuple[Any, mpc.Connection]] = {}
        try:
            for role in roles:
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(
                    target=_role_main, args=(role, self.options, server, writer), name=f"kdreal:{role.name}",
                    daemon=True,
                )  # fmt: skip
                proc.start()
                writer.close()
                procs[role.name] = (proc, reader)
            server.start()
            return self._collect(procs)
        finally:
            for proc, reader in procs.values():
                if proc.is_alive():
                    proc.terminate()
                proc.join(5)
                reader.close()
            server.close()

    def _collect(self, procs: dict[str, tuple[Any, mpc.Connection]]) -> dict[str, Any]:
        """Gather each role's result; a failure (or the run timeout) fails the run."""
        pending = {reader: name for name, (_, reader) in procs.items()}
        results: dict[str, Any] = {}
        failures: dict[str, str] = {}
        deadline = None if self.run_timeout_s is None else time.monotonic() + self.run_timeout_s
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = mpc.wait(list(pending), left)
            if not ready:
                if not failures:
                    waiting = ", ".join(sorted(pending.values()))
                    raise RoleError(waiting, f"run did not finish within {self.run_timeout_s} s")
                break
            for reader in ready:
                name = pending.pop(reader)  # type: ignore[call-overload]
                try:
                    status, payload = reader.recv()  # type: ignore[union-attr]
                except EOFError:
                    proc = procs[name][0]
                    proc.join(5)
                    status, payload = "error", f"process exited with code {proc.exitcode} without a result"
                if status == "ok":
                    results[name] = payload
                else:
                    if not failures:  # give the other roles a moment to report, then stop
                        grace = time.monotonic() + _FAIL_GRACE_S
                        deadline = grace if deadline is None else min(deadline, grace)
                    failures[name] = payload
        if failures:
            raise _first_failure(failures)
        return results


# --- inside a role process ---------------------------------------------------------------


def _role_main(role: Role, options: RealOptions, server: RendezvousServer, conn: mpc.Connection) -> None:
    """Body of a role process: connect to the rendezvous, drive the role, report the outcome.

    The outcome is sent before the rendezvous connection closes, so that a failure
    reaches the parent before the roles it leaves waiting are declared deadlocked.
    """
    server.close_in_child()
    verbs = None
    rendezvous = None
    outcome: tuple[str, Any]
    try:
        rendezvous = RendezvousClient(server.address, role.name)
        verbs = Verbs(role.host, options.device, options.gid_index, options.port, options.timeout_s)
        outcome = ("ok", drive(role, Executor(verbs, rendezvous)))
    except BaseException:
        outcome = ("error", traceback.format_exc())
    try:
        if verbs is not None:
            verbs.close()
    except Exception:
        if outcome[0] == "ok":
            outcome = ("error", traceback.format_exc())
    try:
        conn.send(outcome)
    except Exception:  # the return value does not pickle
        conn.send(("error", traceback.format_exc()))
    conn.close()
    if rendezvous is not None:
        rendezvous.close()


def drive(role: Role, executor: Executor) -> Any:
    """Feed the role's generator the result of each operation it yields; return its return value.

    A failed operation is thrown into the generator at its ``yield``.
    """
    gen = role.body(**role.args)
    handlers = HANDLERS
    value: Any = None
    exc: BaseException | None = None
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
            value = handler(executor, op)
        except Exception as err:
            exc = err


class Executor:
    """What one role process executes operations with: its verbs and its rendezvous connection."""

    def __init__(self, verbs: Verbs, rendezvous: RendezvousClient) -> None:
        self.verbs = verbs
        self.rendezvous = rendezvous


def _sleep(ex: Executor, op: ops.Sleep) -> None:
    if op.duration_ns < 0:
        raise ValueError(f"Sleep.duration_ns must be >= 0, got {op.duration_ns}")
    time.sleep(op.duration_ns / 1e9)


def _lookup(ex: Executor, op: ops.Lookup) -> Any:
    return ex.rendezvous.lookup(op.key)


#: One handler per operation type: ``handler(executor, op) -> result``.
HANDLERS: dict[type, Callable[[Executor, Any], Any]] = {
    ops.QueryDevice: lambda ex, op: ex.verbs.query_device(),
    ops.RegMr: lambda ex, op: ex.verbs.reg_mr(op.length, op.access, op.path),
    ops.CreateCq: lambda ex, op: ex.verbs.create_cq(op.depth),
    ops.CreateQp: lambda ex, op: ex.verbs.create_qp(op.send_cq, op.recv_cq, op.cap),
    ops.ConnectQp: lambda ex, op: ex.verbs.connect_qp(op.qp, op.remote, op.rnr_retry, op.min_rnr_timer),
    ops.PostSend: lambda ex, op: ex.verbs.post_send(op.qp, op.wrs),
    ops.PostRecv: lambda ex, op: ex.verbs.post_recv(op.qp, op.wrs),
    ops.PollCq: lambda ex, op: ex.verbs.poll_cq(op.cq, op.max_entries),
    ops.WaitCq: lambda ex, op: ex.verbs.wait_cq(op.cq, op.max_entries, op.mode),
    ops.ReadMem: lambda ex, op: ex.verbs.read_mem(op.mr, op.offset, op.length),
    ops.WriteMem: lambda ex, op: ex.verbs.write_mem(op.mr, op.offset, op.data),
    ops.SpinUntil: lambda ex, op: ex.verbs.spin_until(op.mr, op.offset, op.value),
    ops.Compute: lambda ex, op: None,  # the datapath did the real work itself
    ops.Sleep: _sleep,
    ops.Clock: lambda ex, op: time.perf_counter_ns(),
    ops.Publish: lambda ex, op: ex.rendezvous.publish(op.key, op.value),
    ops.Lookup: _lookup,
}

__all__ = ["RealEngine", "RealOptions", "RendezvousDeadlock", "RoleError", "VerbsError", "drive"]
