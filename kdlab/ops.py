"""Operations: what datapath code yields to an engine, and what it gets back.

A datapath role is a generator. Each ``yield`` hands the engine one operation and
receives its result::

    mr = yield RegMr(4096)
    yield PostSend(qp, wr)
    wcs = yield WaitCq(cq)

kdsim executes an operation on modelled hardware (time passes as the model says);
kdreal performs it with pyverbs, memory and sockets (time passes as the hardware
says). Datapaths never read a clock or sleep except through these operations, and
never import an engine.

Operations are mutable slotted dataclasses so that a hot loop can build one and
yield it again and again, as perftest re-posts the same work request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kdlab.verbs import (
    Access,
    CompletionQueue,
    MemoryRegion,
    QpCap,
    QpEndpoint,
    QueuePair,
    RecvWR,
    SendWR,
)

# --- resources -------------------------------------------------------------------


@dataclass(slots=True)
class QueryDevice:
    """Ask the device for its limits -> :class:`kdlab.verbs.DeviceInfo`."""


@dataclass(slots=True)
class RegMr:
    """Register ``length`` bytes of fresh memory (zeroed) -> :class:`MemoryRegion`.

    ``path`` names a file to memory-map and register instead of anonymous memory
    (Kafka segments); engines that cannot map files treat it as a label.
    """

    length: int
    access: Access = field(default_factory=Access.all)
    path: str | None = None


@dataclass(slots=True)
class DeregMr:
    """Deregister ``mr`` and free its memory: a later access by its keys fails, as on an RNIC. kdreal frees at once
    an MR the same role registered; one another role of the host registered is freed at that role's close
    (pyverbs objects belong to the role that made them)."""

    mr: MemoryRegion


@dataclass(slots=True)
class CreateCq:
    """Create a completion queue with room for ``depth`` entries -> :class:`CompletionQueue`."""

    depth: int = 1024


@dataclass(slots=True)
class CreateQp:
    """Create an RC queue pair -> :class:`QueuePair` (state INIT until connected)."""

    send_cq: CompletionQueue
    recv_cq: CompletionQueue
    cap: QpCap = field(default_factory=QpCap)


@dataclass(slots=True)
class ConnectQp:
    """Move ``qp`` to RTS connected to the peer ``remote`` (INIT -> RTR -> RTS).

    ``rnr_retry`` (7 = retry forever) and ``min_rnr_timer`` (IBTA encoding; 12 = 0.64
    ms) are the QP attributes of the same names.
    """

    qp: QueuePair
    remote: QpEndpoint
    rnr_retry: int = 7
    min_rnr_timer: int = 12


# --- the data path ------------------------------------------------------------------


@dataclass(slots=True)
class PostSend:
    """Post one or more work requests to ``qp``'s send queue with one doorbell."""

    qp: QueuePair
    wrs: SendWR | list[SendWR]


@dataclass(slots=True)
class PostRecv:
    """Post one or more receive work requests to ``qp``'s receive queue."""

    qp: QueuePair
    wrs: RecvWR | list[RecvWR]


@dataclass(slots=True)
class PollCq:
    """Poll ``cq`` once, without waiting -> list of up to ``max_entries`` completions."""

    cq: CompletionQueue
    max_entries: int = 16


@dataclass(slots=True)
class WaitCq:
    """Wait until ``cq`` holds a completion -> list of 1..``max_entries`` completions.

    ``mode="busy"`` spins on the CQ; ``mode="event"`` arms a notification and sleeps
    until the completion event wakes the thread (``ibv_req_notify_cq`` and
    ``ibv_get_cq_event``), which costs a wake-up but no CPU while waiting.
    With ``timeout_ns`` it waits at most that long and returns ``[]`` on a time-out
    (a Sender that also waits for a batch's linger to expire).
    """

    cq: CompletionQueue
    max_entries: int = 16
    mode: Literal["busy", "event"] = "busy"
    timeout_ns: float | None = None


# --- the host ---------------------------------------------------------------------


@dataclass(slots=True)
class ReadMem:
    """CPU load of ``length`` bytes at ``offset`` of a local MR -> ``bytes``."""

    mr: MemoryRegion
    offset: int
    length: int


@dataclass(slots=True)
class WriteMem:
    """CPU store of ``data`` at ``offset`` of a local MR."""

    mr: MemoryRegion
    offset: int
    data: bytes


@dataclass(slots=True)
class SpinUntil:
    """Spin on local memory until ``mr[offset:offset+len(value)] == value``.

    This is how perftest's write-latency test and slot pollers learn that a peer's
    RDMA WRITE landed.
    """

    mr: MemoryRegion
    offset: int
    value: bytes


@dataclass(slots=True)
class Compute:
    """CPU work of a named ``kind`` over ``nbytes`` (``"copy"``, ``"crc32c"``, ...).

    kdsim charges the host profile's cost for that kind; kdreal does nothing extra,
    since the datapath performs the real work itself. ``Compute("alloc", n)`` is not CPU
    work: it declares ``n`` bytes of heap a JVM would allocate here, which kdsim counts
    toward the host's next young collection (``host.gc_young_bytes``, kdsim/gc.py).
    """

    kind: str
    nbytes: int = 0


@dataclass(slots=True)
class FileWrite:
    """Append ``nbytes`` to this host's log files through the page cache -> a position token.

    The token (the host's count of bytes written, after these) tells :class:`FileRead` whether
    the bytes are still cached. kdsim models the kernel's write-back to the host's device
    (``storage`` in the profile): the write blocks while dirty data is over the dirty limit, and
    returns 0, blocking never, where no device is modelled. kdreal returns 0: its files are real.
    """

    nbytes: int


@dataclass(slots=True)
class FileFlush:
    """fsync this host's log files: return when every byte written so far is on the device.

    Kafka flushes in ``Log.append`` when ``log.flush.interval.messages`` (a topic's
    ``flush.messages``) records are unflushed. kdsim waits for the host's write-back to reach
    the last write, plus the device's latency; at once where no device is modelled. kdreal
    returns at once.
    """


@dataclass(slots=True)
class FileRead:
    """Read log-file bytes: ``extents`` are ``(token, nbytes)`` pairs from :class:`FileWrite`.

    kdsim reads the bytes that have left the page cache from the host's device, in one read,
    and returns when they are there; kdreal does nothing (the datapath sends from memory).
    """

    extents: list[tuple[int, int]]


@dataclass(slots=True)
class IdlePoll:
    """Poll RDMA READs while they would bring back what they brought last -> the polls it stood for.

    ``reads`` are ``(qp, wr)`` pairs of signaled one-SGE READs whose last results lie at their local
    SGEs (a consumer's slot reads once it has caught up). The polls would be posted at ``first_ns``,
    then every ``interval_ns``. The operation returns no later than the first poll that would see a
    change (the caller's own round then performs that poll), or at ``until_ns``.

    kdsim does not simulate each poll: it watches the remote bytes and charges the polls' CPU, NIC,
    PCIe and link work in bulk (their load is measured, their contention with other traffic is not:
    docs/design.md). kdreal waits until ``first_ns`` and returns 0: the caller polls as before.
    """

    reads: list[tuple[Any, Any]]
    first_ns: float
    interval_ns: float
    until_ns: float


@dataclass(slots=True)
class Sleep:
    """Let ``duration_ns`` nanoseconds pass without using the CPU."""

    duration_ns: float


@dataclass(slots=True)
class Clock:
    """Read the engine's clock -> nanoseconds (for measurement, not for decisions)."""


# --- sockets (TCP), message framed ---------------------------------------------------


@dataclass(slots=True)
class TcpListen:
    """Listen for TCP connections under the name ``service`` -> :class:`~kdlab.verbs.Listener`."""

    service: str


@dataclass(slots=True)
class TcpAccept:
    """Wait for the next connection on ``listener`` -> :class:`~kdlab.verbs.Connection`."""

    listener: Any


@dataclass(slots=True)
class TcpConnect:
    """Connect to the listener named ``service`` (waits until it listens) -> Connection."""

    service: str


@dataclass(slots=True)
class TcpSend:
    """Send one framed message of ``nbytes`` wire bytes carrying ``message``.

    ``zero_copy`` marks a send whose payload the kernel takes from the page cache
    (``sendfile``): no per-byte CPU copy on the sender.
    """

    conn: Any
    message: Any
    nbytes: int
    zero_copy: bool = False


@dataclass(slots=True)
class TcpRecv:
    """Receive the next whole message on any of ``conns`` -> ``(conn, message)``.

    Waits at most ``timeout_ns`` (None: forever) and returns None on a time-out, as
    a network thread's ``select``/``epoll`` loop does.
    """

    conns: Any
    timeout_ns: float | None = None


# --- threads of one process: queues and notifications -------------------------------


@dataclass(slots=True)
class QueuePut:
    """Put ``item`` on the in-process queue ``queue`` (waits while it holds ``capacity`` items)."""

    queue: str
    item: Any
    capacity: int | None = None


@dataclass(slots=True)
class QueueGet:
    """Take the oldest item of the in-process queue ``queue`` -> item, or None after ``timeout_ns``."""

    queue: str
    timeout_ns: float | None = None


@dataclass(slots=True)
class Notify:
    """Wake every thread waiting on ``key`` (a condition variable's notify_all)."""

    key: str


@dataclass(slots=True)
class WaitNotify:
    """Wait for a :class:`Notify` on ``key`` -> True, or False after ``timeout_ns``.

    Callers re-check their condition in a loop, as with any condition variable.
    """

    key: str
    timeout_ns: float | None = None


# --- out-of-band rendezvous --------------------------------------------------------


@dataclass(slots=True)
class Publish:
    """Publish ``value`` under ``key`` for the other roles of this run (TCP in kdreal)."""

    key: str
    value: Any


@dataclass(slots=True)
class Lookup:
    """Wait until ``key`` is published, then -> its value; with ``wait=False`` -> None if it is not (yet)."""

    key: str
    wait: bool = True


Operation = (
    QueryDevice
    | RegMr
    | DeregMr
    | CreateCq
    | CreateQp
    | ConnectQp
    | PostSend
    | PostRecv
    | PollCq
    | WaitCq
    | ReadMem
    | WriteMem
    | SpinUntil
    | Compute
    | FileWrite
    | FileFlush
    | FileRead
    | IdlePoll
    | Sleep
    | Clock
    | TcpListen
    | TcpAccept
    | TcpConnect
    | TcpSend
    | TcpRecv
    | QueuePut
    | QueueGet
    | Notify
    | WaitNotify
    | Publish
    | Lookup
)
