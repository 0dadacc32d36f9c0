"""Roles and engines: how datapath code is handed to an engine.

A *role* is one thread of a distributed program (a requester, a responder, a
broker's network thread): a generator function that yields operations
(:mod:`kdlab.ops`), placed on a named host. An *engine* runs a list of roles to the
end and returns what each role returned.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

#: A role body: a generator function yielding operations and returning a result.
RoleBody = Callable[..., Generator[Any, Any, Any]]


@dataclass(frozen=True)
class Role:
    """One thread of a program: ``body(**args)`` runs on host ``host``.

    A ``daemon`` role (a server thread) need not finish: the run ends when every
    other role has, and daemons are stopped then.
    """

    name: str
    host: str
    body: RoleBody
    args: dict[str, Any] = field(default_factory=dict)
    daemon: bool = False


class Engine(Protocol):
    """What kdsim and kdreal both provide."""

    name: str

    def run(self, roles: Sequence[Role]) -> dict[str, Any]:
        """Run every role to completion; return each role's return value by name."""
        ...


class DatapathError(RuntimeError):
    """A datapath met a condition it does not handle (an unexpected completion, say)."""
