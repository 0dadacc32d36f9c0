"""Small builders shared by the kdsim / kdlab tests.

The usual shape of a test is two roles written as verbs sequences: a requester on
host ``a`` and a responder on host ``b``. :func:`make_rc_pair` wraps two bodies
``body(side, **args)`` so that each first runs :func:`setup_rc` (register an MR,
create CQs and QPs, exchange endpoints and buffers over Publish/Lookup, connect, and
meet at a barrier), then the test's own operations.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdlab.ops import ConnectQp, CreateCq, CreateQp, Lookup, Publish, RegMr, WaitCq
from kdlab.program import Role
from kdlab.verbs import (
    Access,
    CompletionQueue,
    MemoryRegion,
    QpCap,
    QueuePair,
    RemoteBuffer,
    WorkCompletion,
)
from kdsim.engine import SimEngine
from kdsim.profile import Profile, load_profile

PROFILE = "cx4-edr-100g"
#: Capacities roomy enough for every test (kdsim does not enforce max_send_wr/sge).
BIG_CAP = QpCap(max_send_wr=4096, max_recv_wr=4096, max_send_sge=4, max_recv_sge=4, max_inline_data=128)

Ops = Generator[Any, Any, Any]


@dataclass
class Side:
    """What one end of an RC connection holds after :func:`setup_rc`."""

    mr: MemoryRegion
    send_cq: CompletionQueue
    recv_cq: CompletionQueue
    qps: list[QueuePair]
    peer: RemoteBuffer
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def qp(self) -> QueuePair:
        return self.qps[0]


def setup_rc(
    me: str,
    peer: str,
    *,
    mr_bytes: int = 1 << 18,
    access: Access | None = None,
    n_qps: int = 1,
    shared_cq: bool = False,
    cq_depth: int = 1 << 16,
    cap: QpCap = BIG_CAP,
    rnr_retry: int = 7,
    min_rnr_timer: int = 12,
    mr: MemoryRegion | None = None,
) -> Ops:
    """Register, create, exchange (``me`` publishes, looks ``peer`` up), connect, barrier."""
    if mr is None:
        mr = yield RegMr(mr_bytes, Access.all() if access is None else access)
    send_cq = yield CreateCq(cq_depth)
    recv_cq = send_cq if shared_cq else (yield CreateCq(cq_depth))
    qps = []
    for _ in range(n_qps):
        qps.append((yield CreateQp(send_cq, recv_cq, cap)))
    yield Publish(me, ([qp.endpoint() for qp in qps], mr.remote()))
    peer_eps, peer_buf = yield Lookup(peer)
    for qp, ep in zip(qps, peer_eps, strict=True):
        yield ConnectQp(qp, ep, rnr_retry=rnr_retry, min_rnr_timer=min_rnr_timer)
    yield Publish(f"{me}.connected", True)
    yield Lookup(f"{peer}.connected")
    return Side(mr, send_cq, recv_cq, qps, peer_buf)


def make_rc_pair(
    requester: Callable[..., Ops],
    responder: Callable[..., Ops],
    *,
    requester_args: dict[str, Any] | None = None,
    responder_args: dict[str, Any] | None = None,
    requester_setup: dict[str, Any] | None = None,
    responder_setup: dict[str, Any] | None = None,
    **setup: Any,
) -> list[Role]:
    """Roles ``requester`` (host a) and ``responder`` (host b) connected by RC QPs.

    ``setup`` goes to :func:`setup_rc` on both sides; ``*_setup`` to one side only.
    Each body is called as ``body(side, **args)``.
    """

    def wrap(
        body: Callable[..., Ops], me: str, peer: str, args: dict[str, Any], own: dict[str, Any]
    ) -> Callable[[], Ops]:
        def role_body() -> Ops:
            side = yield from setup_rc(me, peer, **{**setup, **own})
            return (yield from body(side, **args))

        return role_body

    return [
        Role("requester", "a", wrap(requester, "requester", "responder", requester_args or {}, requester_setup or {})),
        Role("responder", "b", wrap(responder, "responder", "requester", responder_args or {}, responder_setup or {})),
    ]


def sim_profile(name: str = PROFILE, overrides: dict[str, float] | None = None) -> Profile:
    return load_profile(name).with_overrides(overrides or {})


def run_sim(
    roles: Sequence[Role],
    profile: str | Profile = PROFILE,
    overrides: dict[str, float] | None = None,
    **engine_kw: Any,
) -> tuple[dict[str, Any], SimEngine]:
    """Run roles on a fresh SimEngine; -> (results by role name, the engine)."""
    prof = sim_profile(profile, overrides) if isinstance(profile, str) else profile.with_overrides(overrides or {})
    engine = SimEngine(prof, **engine_kw)
    return engine.run(roles), engine


def wait_n(cq: CompletionQueue, n: int, mode: str = "busy") -> Ops:
    """Wait until ``n`` completions were taken from ``cq``; -> them, in CQ order."""
    out: list[WorkCompletion] = []
    while len(out) < n:
        out.extend((yield WaitCq(cq, n - len(out), mode)))  # type: ignore[arg-type]
    return out


def idle_until(key: str) -> Ops:
    """A responder that does nothing but wait for the requester to finish."""
    yield Lookup(key)
