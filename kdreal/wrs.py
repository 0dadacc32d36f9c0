"""Conversions between kdlab's verbs vocabulary and pyverbs objects.

Work completions: pyverbs ``WC`` -> :class:`kdlab.verbs.WorkCompletion`
(:func:`to_work_completion`). Work requests: kdlab -> pyverbs, built once and
re-posted (:class:`WrCache`).

Creating pyverbs objects is slow (each one is a Python object with a logger and a
malloc'd SGE array: about 12 us on the host and 180 us in the TCG guest for a
one-SGE ``SendWR``), while datapaths re-post the same kdlab work requests again and
again, as perftest does. :class:`WrCache` therefore keeps the pyverbs chain built
for a list of kdlab WRs (keyed by their identities) and reuses it for as long as
every field of every kdlab WR is unchanged; a changed field rebuilds the chain.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import IntEnum
from typing import Any

from kdlab.verbs import ATOMIC_OPCODES, REMOTE_OPCODES, RecvWR, SendWR, WcOpcode, WcStatus, WorkCompletion

IBV_SEND_SIGNALED = 2
IBV_SEND_INLINE = 8
IBV_WC_WITH_IMM = 2
IBV_WC_RECV = 128  # receive completion opcodes have this bit


class WcStatusExt(IntEnum):
    """``ibv_wc_status`` values that :class:`kdlab.verbs.WcStatus` does not name."""

    LOC_EEC_OP_ERR = 3
    MW_BIND_ERR = 6
    BAD_RESP_ERR = 7
    REM_ABORT_ERR = 14
    INV_EECN_ERR = 15
    INV_EEC_STATE_ERR = 16
    FATAL_ERR = 17
    RESP_TIMEOUT_ERR = 18
    GENERAL_ERR = 19
    TM_ERR = 20
    TM_RNDV_INCOMPLETE = 21


class WcOpcodeExt(IntEnum):
    """``ibv_wc_opcode`` values that :class:`kdlab.verbs.WcOpcode` does not name."""

    BIND_MW = 5
    LOCAL_INV = 6
    TSO = 7
    TM_ADD = 130
    TM_DEL = 131
    TM_SYNC = 132
    TM_RECV = 133
    TM_NO_TAG = 134
    DRIVER1 = 135


_STATUS: dict[int, IntEnum] = {**{int(s): s for s in WcStatusExt}, **{int(s): s for s in WcStatus}}
_OPCODE: dict[int, IntEnum] = {**{int(o): o for o in WcOpcodeExt}, **{int(o): o for o in WcOpcode}}


def to_work_completion(wc: Any) -> WorkCompletion:
    """A pyverbs ``WC`` as a :class:`WorkCompletion` (enums keep libibverbs values).

    ``imm_data`` is the raw 32-bit field, as posted: pyverbs and kdsim both treat
    it as a host integer, so a receiver sees exactly the value the sender posted.
    It is reported for receive completions only (rxe also flags the requester's
    completion of a ``*_WITH_IMM`` WR, with a meaningless value; kdsim does not).
    libibverbs leaves ``opcode`` undefined in error completions; rxe fills in the
    requester's opcode, but a flushed receive reports 0 (``SEND``).
    """
    imm = wc.imm_data if wc.wc_flags & IBV_WC_WITH_IMM and wc.opcode & IBV_WC_RECV else None
    status = _STATUS.get(wc.status, WcStatusExt.GENERAL_ERR)
    opcode = _OPCODE.get(wc.opcode, WcOpcode.SEND)
    return WorkCompletion(wc.wr_id, status, opcode, wc.byte_len, imm, wc.qp_num)  # type: ignore[arg-type]


def send_fields(wr: SendWR) -> tuple[Any, ...]:
    """Everything about ``wr`` that the pyverbs WR copies."""
    return (
        wr.wr_id, wr.opcode, wr.remote_addr, wr.rkey, wr.imm_data, wr.compare_add, wr.swap, wr.signaled,
        wr.inline, tuple((s.addr, s.length, s.lkey) for s in wr.sg_list),
    )  # fmt: skip


def recv_fields(wr: RecvWR) -> tuple[Any, ...]:
    return (wr.wr_id, tuple((s.addr, s.length, s.lkey) for s in wr.sg_list))


def _sges(wr: SendWR | RecvWR) -> list[Any]:
    from pyverbs.wr import SGE

    # pyverbs insists on one SGE; a zero-length WR gets a dummy one and num_sge 0.
    return [SGE(s.addr, s.length, s.lkey) for s in wr.sg_list] or [SGE(0, 0, 0)]


def build_send(wr: SendWR, nxt: Any = None) -> Any:
    """One pyverbs ``SendWR`` for ``wr``, chained to ``nxt``."""
    from pyverbs.wr import SendWR as PvSendWR

    sges = _sges(wr)
    flags = (IBV_SEND_SIGNALED if wr.signaled else 0) | (IBV_SEND_INLINE if wr.inline else 0)
    pwr = PvSendWR(
        wr_id=wr.wr_id, opcode=int(wr.opcode), num_sge=len(sges), sg=sges, send_flags=flags,
        imm_data=wr.imm_data, next_wr=nxt,
    )  # fmt: skip
    if not wr.sg_list:
        pwr.num_sge = 0
    if wr.opcode in ATOMIC_OPCODES:
        pwr.set_wr_atomic(wr.rkey, wr.remote_addr, wr.compare_add, wr.swap)
    elif wr.opcode in REMOTE_OPCODES:
        pwr.set_wr_rdma(wr.rkey, wr.remote_addr)
    return pwr


def build_recv(wr: RecvWR, nxt: Any = None) -> Any:
    """One pyverbs ``RecvWR`` for ``wr``, chained to ``nxt``."""
    from pyverbs.wr import RecvWR as PvRecvWR

    sges = _sges(wr)
    pwr = PvRecvWR(wr_id=wr.wr_id, num_sge=len(sges), sg=sges, next_wr=nxt)
    if not wr.sg_list:
        pwr.num_sge = 0
    return pwr


class WrCache:
    """Pyverbs WR chains for lists of kdlab WRs, least recently used dropped past ``size``."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[Any, ...], tuple[list[Any], list[Any], Any]] = OrderedDict()
        self.builds = 0

    def send(self, wrs: SendWR | list[SendWR]) -> Any:
        """The head of a pyverbs chain posting ``wrs`` in order."""
        return self._chain("s", wrs if isinstance(wrs, list) else [wrs], send_fields, build_send)

    def recv(self, wrs: RecvWR | list[RecvWR]) -> Any:
        return self._chain("r", wrs if isinstance(wrs, list) else [wrs], recv_fields, build_recv)

    def _chain(self, kind: str, wrs: list[Any], fields: Any, build: Any) -> Any:
        key = (kind, *map(id, wrs))
        snapshot = [fields(w) for w in wrs]
        entry = self._entries.get(key)
        if entry is not None and entry[1] == snapshot:
            self._entries.move_to_end(key)
            return entry[2][-1]
        chain: list[Any] = []  # keeps every pyverbs WR alive: each links to the next by pointer
        nxt = None
        for wr in reversed(wrs):
            nxt = build(wr, nxt)
            chain.append(nxt)
        self.builds += 1
        self._entries[key] = (list(wrs), snapshot, chain)  # the kdlab WRs are kept so ids stay unique
        self._entries.move_to_end(key)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return nxt
