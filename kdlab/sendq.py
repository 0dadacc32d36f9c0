"""Selective signaling: a QP's send side that is reclaimed without a completion per WR.

A send queue slot is free again only once the WR in it completed, and an
application learns that from a signaled completion, which also vouches for every
earlier WR of the QP. Datapaths that post unsignaled WRs (acks, pushes, produce
writes) therefore signal every ``depth // 4``-th WR and reap those completions,
as perftest and RDMA middleware do; without it a real send queue fills after
``depth`` posts. Errors of unsignaled WRs still complete (with an error status)
and are raised here.

:class:`SendQueue` owns the QP's send CQ (no other QP may share it). Reaping is
non-blocking: a signaled post first polls for the earlier signaled completions;
only with three signaled WRs outstanding (three quarters of the queue) does a post
wait, polling, until one completes. Several threads of one host may post to one
:class:`SendQueue` (a broker's handler and push threads).
"""

from __future__ import annotations

from typing import Any

from kdlab.ops import PollCq, PostSend, Sleep, WaitCq
from kdlab.program import DatapathError
from kdlab.verbs import SendWR

#: Signaled WRs outstanding at which a post waits for one to complete.
_MAX_SIGNALED = 3
#: How long a full queue waits between two polls.
_FULL_POLL_NS = 1000.0


class SendQueue:
    """Post to ``qp`` with every ``depth // 4``-th WR signaled; reap ``cq``, the QP's own send CQ."""

    def __init__(self, qp: Any, cq: Any, depth: int, who: str) -> None:
        self.qp, self.cq, self.who = qp, cq, who
        self.every = max(1, depth // 4)
        self.posted = 0
        self.signaled = 0  # signaled WRs whose completion was not reaped yet
        self.completed: dict[int, Any] = {}  # wr_id -> completion, for :meth:`wait_for`

    def post(self, wr: SendWR, signaled: bool = False) -> Any:
        """Post ``wr`` (signaled if asked, or if its turn has come)."""
        self.posted += 1
        wr.signaled = signaled or self.posted % self.every == 0
        if wr.signaled:
            if self.signaled:
                self._reap((yield PollCq(self.cq, 16)))
            while self.signaled >= _MAX_SIGNALED:
                got = yield PollCq(self.cq, 16)
                if not got:
                    yield Sleep(_FULL_POLL_NS)
                self._reap(got)
        yield PostSend(self.qp, wr)
        if wr.signaled:
            self.signaled += 1

    def wait_for(self, wr_id: int) -> Any:
        """Wait for the completion of the signaled WR ``wr_id`` and return it.

        Only for a queue that one thread posts to: another thread's :meth:`post` could
        reap the completion while this one waits for it.
        """
        while wr_id not in self.completed:
            self._reap((yield WaitCq(self.cq, 16)))
        return self.completed.pop(wr_id)

    def _reap(self, wcs: list[Any]) -> None:
        for wc in wcs:
            if not wc.ok:
                raise DatapathError(f"{self.who}: a send on QP {self.qp.qp_num} failed: {wc}")
            self.signaled -= 1
            self.completed[wc.wr_id] = wc
