"""The verbs vocabulary shared by datapaths and engines.

Names and numeric values follow libibverbs (``ibv_wr_opcode``, ``ibv_wc_opcode``,
``ibv_wc_status``, ``ibv_access_flags``) so that kdreal maps them one to one and a
reader who knows verbs reads datapath code without a glossary.

Work requests are mutable, slotted objects, as in pyverbs: datapaths build them once
and re-post them (perftest does the same), which keeps the simulation hot path cheap.
Handles (:class:`MemoryRegion`, :class:`QueuePair`, :class:`CompletionQueue`) are plain
data an engine hands out; they carry no engine objects, so they can be pickled and
sent to a peer over the rendezvous.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any


class Opcode(IntEnum):
    """Send-queue opcodes (``ibv_wr_opcode``)."""

    RDMA_WRITE = 0
    RDMA_WRITE_WITH_IMM = 1
    SEND = 2
    SEND_WITH_IMM = 3
    RDMA_READ = 4
    ATOMIC_CMP_AND_SWP = 5
    ATOMIC_FETCH_AND_ADD = 6


class WcOpcode(IntEnum):
    """Work-completion opcodes (``ibv_wc_opcode``)."""

    SEND = 0
    RDMA_WRITE = 1
    RDMA_READ = 2
    COMP_SWAP = 3
    FETCH_ADD = 4
    RECV = 128
    RECV_RDMA_WITH_IMM = 129


class WcStatus(IntEnum):
    """Work-completion status (``ibv_wc_status``); the values both engines report."""

    SUCCESS = 0
    LOC_LEN_ERR = 1
    LOC_QP_OP_ERR = 2
    LOC_PROT_ERR = 4
    WR_FLUSH_ERR = 5
    LOC_ACCESS_ERR = 8
    REM_INV_REQ_ERR = 9
    REM_ACCESS_ERR = 10
    REM_OP_ERR = 11
    RETRY_EXC_ERR = 12
    RNR_RETRY_EXC_ERR = 13


class Access(IntFlag):
    """Memory-region access rights (``ibv_access_flags``)."""

    LOCAL_WRITE = 1
    REMOTE_WRITE = 2
    REMOTE_READ = 4
    REMOTE_ATOMIC = 8

    @classmethod
    def all(cls) -> Access:
        return cls.LOCAL_WRITE | cls.REMOTE_WRITE | cls.REMOTE_READ | cls.REMOTE_ATOMIC


#: The work-completion opcode a requester sees for each send opcode.
REQUESTER_WC_OPCODE: dict[Opcode, WcOpcode] = {
    Opcode.RDMA_WRITE: WcOpcode.RDMA_WRITE,
    Opcode.RDMA_WRITE_WITH_IMM: WcOpcode.RDMA_WRITE,
    Opcode.SEND: WcOpcode.SEND,
    Opcode.SEND_WITH_IMM: WcOpcode.SEND,
    Opcode.RDMA_READ: WcOpcode.RDMA_READ,
    Opcode.ATOMIC_CMP_AND_SWP: WcOpcode.COMP_SWAP,
    Opcode.ATOMIC_FETCH_AND_ADD: WcOpcode.FETCH_ADD,
}

#: Opcodes that consume a receive WR at the responder.
CONSUMES_RECV = frozenset({Opcode.SEND, Opcode.SEND_WITH_IMM, Opcode.RDMA_WRITE_WITH_IMM})
#: Opcodes that carry an immediate value.
CARRIES_IMM = frozenset({Opcode.SEND_WITH_IMM, Opcode.RDMA_WRITE_WITH_IMM})
#: Opcodes that address remote memory (remote_addr/rkey).
REMOTE_OPCODES = frozenset(
    {
        Opcode.RDMA_WRITE,
        Opcode.RDMA_WRITE_WITH_IMM,
        Opcode.RDMA_READ,
        Opcode.ATOMIC_CMP_AND_SWP,
        Opcode.ATOMIC_FETCH_AND_ADD,
    }
)
ATOMIC_OPCODES = frozenset({Opcode.ATOMIC_CMP_AND_SWP, Opcode.ATOMIC_FETCH_AND_ADD})
#: Size in bytes of an atomic operand (IBTA: atomics act on 8 aligned bytes).
ATOMIC_BYTES = 8


class SGE:
    """A scatter-gather entry: ``length`` bytes at virtual address ``addr`` of the MR ``lkey``."""

    __slots__ = ("addr", "length", "lkey")

    def __init__(self, addr: int, length: int, lkey: int) -> None:
        self.addr = addr
        self.length = length
        self.lkey = lkey

    def __repr__(self) -> str:
        return f"SGE(addr={self.addr:#x}, length={self.length}, lkey={self.lkey})"


class SendWR:
    """A send-queue work request (``ibv_send_wr``).

    ``remote_addr``/``rkey`` are used by RDMA and atomic opcodes, ``imm_data`` by the
    ``*_WITH_IMM`` opcodes, ``compare_add``/``swap`` by atomics.
    """

    __slots__ = (
        "_sg_list",
        "compare_add",
        "imm_data",
        "inline",
        "length",
        "opcode",
        "remote_addr",
        "rkey",
        "signaled",
        "swap",
        "wr_id",
    )

    def __init__(
        self,
        wr_id: int,
        opcode: Opcode,
        sg_list: list[SGE] | tuple[SGE, ...] = (),
        *,
        remote_addr: int = 0,
        rkey: int = 0,
        imm_data: int = 0,
        compare_add: int = 0,
        swap: int = 0,
        signaled: bool = True,
        inline: bool = False,
    ) -> None:
        self.wr_id = wr_id
        self.opcode = opcode
        self.sg_list = sg_list
        self.remote_addr = remote_addr
        self.rkey = rkey
        self.imm_data = imm_data
        self.compare_add = compare_add
        self.swap = swap
        self.signaled = signaled
        self.inline = inline

    @property
    def sg_list(self) -> tuple[SGE, ...]:
        return self._sg_list

    @sg_list.setter
    def sg_list(self, sges: list[SGE] | tuple[SGE, ...]) -> None:
        """Setting the SGE list also sets ``length``, the payload the engines move."""
        self._sg_list = tuple(sges)
        self.length = sum(s.length for s in self._sg_list)

    def copy(self) -> SendWR:
        """A snapshot, as ``ibv_post_send`` copies the request into the send queue."""
        new = object.__new__(SendWR)
        new.wr_id, new.opcode, new._sg_list, new.length = self.wr_id, self.opcode, self._sg_list, self.length
        new.remote_addr, new.rkey, new.imm_data = self.remote_addr, self.rkey, self.imm_data
        new.compare_add, new.swap, new.signaled, new.inline = self.compare_add, self.swap, self.signaled, self.inline
        return new

    def __repr__(self) -> str:
        return (
            f"SendWR(wr_id={self.wr_id}, opcode={self.opcode.name}, length={self.length}, "
            f"remote_addr={self.remote_addr:#x}, rkey={self.rkey}, signaled={self.signaled}, "
            f"inline={self.inline})"
        )


class RecvWR:
    """A receive-queue work request (``ibv_recv_wr``)."""

    __slots__ = ("length", "sg_list", "wr_id")

    def __init__(self, wr_id: int, sg_list: list[SGE] | tuple[SGE, ...] = ()) -> None:
        self.wr_id = wr_id
        self.sg_list = tuple(sg_list)
        self.length = sum(s.length for s in self.sg_list)

    def __repr__(self) -> str:
        return f"RecvWR(wr_id={self.wr_id}, length={self.length})"


class WorkCompletion:
    """A work completion (``ibv_wc``)."""

    __slots__ = ("byte_len", "imm_data", "opcode", "qp_num", "status", "wr_id")

    def __init__(
        self,
        wr_id: int,
        status: WcStatus,
        opcode: WcOpcode,
        byte_len: int = 0,
        imm_data: int | None = None,
        qp_num: int = 0,
    ) -> None:
        self.wr_id = wr_id
        self.status = status
        self.opcode = opcode
        self.byte_len = byte_len
        self.imm_data = imm_data
        self.qp_num = qp_num

    @property
    def ok(self) -> bool:
        return self.status == WcStatus.SUCCESS

    def __repr__(self) -> str:
        imm = "" if self.imm_data is None else f", imm_data={self.imm_data:#x}"
        return (
            f"WorkCompletion(wr_id={self.wr_id}, status={self.status.name}, "
            f"opcode={self.opcode.name}, byte_len={self.byte_len}{imm}, qp_num={self.qp_num})"
        )


@dataclass(frozen=True, slots=True)
class QpCap:
    """Queue-pair capacities (``ibv_qp_cap``)."""

    max_send_wr: int = 128
    max_recv_wr: int = 128
    max_send_sge: int = 1
    max_recv_sge: int = 1
    max_inline_data: int = 0


@dataclass(frozen=True, slots=True)
class MemoryRegion:
    """A registered memory region as an engine hands it out."""

    addr: int
    length: int
    lkey: int
    rkey: int
    host: str

    def sge(self, offset: int = 0, length: int | None = None) -> SGE:
        """An SGE over ``length`` bytes of this MR starting at ``offset``."""
        n = self.length - offset if length is None else length
        return SGE(self.addr + offset, n, self.lkey)

    def remote(self, offset: int = 0) -> RemoteBuffer:
        """What a peer needs to address this MR: address and rkey."""
        return RemoteBuffer(self.addr + offset, self.rkey, self.length - offset)


@dataclass(frozen=True, slots=True)
class RemoteBuffer:
    """A peer's memory, as exchanged out of band: virtual address, rkey and length."""

    addr: int
    rkey: int
    length: int


@dataclass(frozen=True, slots=True)
class CompletionQueue:
    """A completion queue handle."""

    cq_id: int
    depth: int
    host: str


@dataclass(frozen=True, slots=True)
class QpEndpoint:
    """What a peer needs to connect an RC QP to this one (exchanged out of band)."""

    host: str
    qp_num: int
    psn: int = 0
    gid: str = ""
    lid: int = 0


@dataclass(frozen=True, slots=True)
class QueuePair:
    """An RC queue-pair handle."""

    qp_num: int
    host: str
    send_cq: CompletionQueue
    recv_cq: CompletionQueue
    cap: QpCap = field(default_factory=QpCap)
    endpoint_info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def endpoint(self) -> QpEndpoint:
        """This QP's connection information for the peer."""
        return QpEndpoint(host=self.host, qp_num=self.qp_num, **self.endpoint_info)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What a datapath may ask of the device (``ibv_query_device`` and probing)."""

    name: str
    max_inline_data: int
    max_qp_rd_atom: int
    max_qp_wr: int = 16384
    max_cqe: int = 4194303


@dataclass(frozen=True, slots=True)
class Listener:
    """A listening TCP endpoint."""

    listener_id: int
    service: str
    host: str


@dataclass(frozen=True, slots=True)
class Connection:
    """One end of a TCP connection."""

    conn_id: int
    host: str
    peer_host: str
    service: str
