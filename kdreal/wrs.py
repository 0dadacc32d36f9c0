"""kdlab work requests as pyverbs work requests, built once and re-posted.

Creating pyverbs objects is slow (each one is a Python object with a logger and a
malloc'd SGE array: about 12 us on the host and 180 us in the TCG guest for a
one-SGE ``SendWR``), while datapaths re-post the same kdlab work requests again and
again, as perftest does. :class:`WrCache` therefore keeps the pyverbs chain built
for a list of kdlab WRs (keyed by their identities) and reuses it for as long as
every field of every kdlab WR is unchanged; a changed field rebuilds the chain.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from kdlab.verbs import ATOMIC_OPCODES, REMOTE_OPCODES, RecvWR, SendWR

IBV_SEND_SIGNALED = 2
IBV_SEND_INLINE = 8


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
