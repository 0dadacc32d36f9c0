"""Role outcomes in kdreal: how a run's outcomes are tallied, when it is over, and the error it fails with.

Shared by the engine on one machine (outcomes over pipes from forked host processes)
and across machines (outcomes over the rendezvous, :mod:`kdreal.cluster`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kdlab.program import Role


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


def group_by_host(roles: Sequence[Role]) -> dict[str, list[Role]]:
    """Roles by host name, in the order given; ValueError if two roles share a name."""
    names = [r.name for r in roles]
    if len(set(names)) != len(names):
        raise ValueError(f"role names must be unique, got {names}")
    by_host: dict[str, list[Role]] = {}
    for role in roles:
        by_host.setdefault(role.host, []).append(role)
    return by_host


class Tally:
    """Role outcomes as they arrive, and the rule for when a run is over.

    The run is over once every non-daemon role has an outcome, or a failure's grace
    period (:data:`_FAIL_GRACE_S`, for the other roles to report what it did to them)
    or the run's time limit has passed. Any failure fails the run.
    """

    def __init__(self, by_host: dict[str, list[Role]], run_timeout_s: float | None) -> None:
        self.waiting_for = {r.name for rs in by_host.values() for r in rs if not r.daemon}
        self.unreported = {host: {r.name for r in rs} for host, rs in by_host.items()}
        self.results: dict[str, Any] = {}
        self.failures: dict[str, str] = {}
        self.run_timeout_s = run_timeout_s
        self.deadline = None if run_timeout_s is None else time.monotonic() + run_timeout_s

    def complete(self) -> bool:
        return not self.waiting_for

    def time_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _grace(self) -> None:
        if not self.failures:  # the others may be waiting on it: a moment to report, then stop
            grace = time.monotonic() + _FAIL_GRACE_S
            self.deadline = grace if self.deadline is None else min(self.deadline, grace)

    def outcome(self, host: str, name: str, status: str, payload: Any) -> None:
        if host not in self.unreported:
            return  # not a host of this run
        self.unreported[host].discard(name)
        self.waiting_for.discard(name)
        if status == "ok":
            self.results[name] = payload
        else:
            self._grace()
            self.failures[name] = payload

    def host_ended(self, host: str, why: str) -> None:
        """``host``'s process ended: its roles without an outcome failed with ``why``."""
        if self.unreported.get(host):
            self._grace()
        for name in sorted(self.unreported[host]):
            self.failures.setdefault(name, why)
        self.unreported[host].clear()

    def timed_out(self) -> None:
        if not self.failures:
            pending = ", ".join(sorted(self.waiting_for))
            raise RoleError(pending, f"run did not finish within {self.run_timeout_s} s")

    def result(self, hosts_left: bool = True) -> dict[str, Any]:
        if not hosts_left and self.waiting_for and not self.failures:
            self.failures.update(dict.fromkeys(self.waiting_for, "its process ended without a result"))
        if self.failures:
            raise _first_failure(self.failures)
        return self.results


def read_text(path: str) -> str:
    """The file's text, or "" if it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def with_log(
    err: RoleError, by_host: dict[str, list[Role]], read_log: Callable[[str], str], tail: int = 4000
) -> RoleError:  # fmt: skip
    """``err`` with the end of the failed role's host log (its stderr: warnings, a crash's stacks)."""
    host = next((h for h, roles in by_host.items() if any(r.name == err.role for r in roles)), None)
    if host is None:
        return err
    text = read_log(host)
    crash = text.find("Fatal Python error")
    text = text[max(0, crash - tail // 4) :][:tail] if crash >= 0 else text[-tail:]  # a crash: where it begins
    if not text.strip():
        return err
    return RoleError(err.role, f"{err.detail}\n--- end of host {host!r} log ---\n{text}")
