"""IdlePoll in kdsim: a caught-up reader's READ polls, charged in bulk instead of simulated one by one.

A KafkaDirect consumer that has read everything polls its slot rows every ``slotupdatetimeout``
(20 us): a READ, a busy wait for its completion and a compare, about ten simulator events and a
round trip through the datapath's generator each, whatever the load. At scale those idle polls
were most of the simulation's work. Here the engine watches the polled remote bytes instead
(``SimMr.change_watchers``): the thread sleeps until the first poll that would see them change, or
until ``until_ns``, and is then charged, in bulk, for the polls it skipped:

* its CPU: per poll a post, a completion poll, the busy wait of an uncontended READ round trip and
  the copy of the bytes read (``busy_ns``, so ``cpu_*_cores`` counts them);
* both NICs' processing units, the responder's PCIe read and the requester's PCIe write, and each
  link direction the request and the response cross (``busy_ns`` of each timeline, so the
  utilisation columns count them); the work requests (``RunStats.work_requests``).

Not modelled: the skipped polls' contention with other traffic (their time is added to the
servers' busy totals, not reserved on their schedules), their QP-context cache effects, and their
read credits. The poll that sees the change is a real READ, posted by the caller's own round.
"""

from __future__ import annotations

import math
from typing import Any

from kdlab import ops
from kdsim.fabric import AETH_BYTES, RETH_BYTES


def idle_poll(eng: Any, op: ops.IdlePoll, st: Any) -> Any:
    """Handle ``op`` for thread ``st`` of engine ``eng`` -> polls stood for, or a block."""
    now = eng.env.now + st.debt
    start = max(op.first_ns, now)
    if start >= op.until_ns or not op.reads:
        return _wait(eng, st, min(start, op.until_ns))
    watched = []
    for qp, wr in op.reads:
        sq = eng._qps[st.host, qp.qp_num]
        s = wr.sg_list[0]
        lmr = eng.memories[st.host].local(s.addr, s.length, s.lkey)
        rmr = eng.memories[sq.peer.host].by_rkey.get(wr.rkey) if sq.peer is not None else None
        if lmr is None or rmr is None or not rmr.contains(wr.remote_addr, s.length):
            return _wait(eng, st, start)  # a READ that would fail: the caller posts it at its time and sees
        loff, roff = s.addr - lmr.handle.addr, wr.remote_addr - rmr.handle.addr
        seen = bytes(lmr.data[loff : loff + s.length])
        if rmr.data[roff : roff + s.length] != seen:
            return _wait(eng, st, start)  # already changed: the first poll, at its time, sees it
        watched.append((sq, rmr, roff, seen))
    interval = op.interval_ns

    def changed() -> None:  # the first poll at or after the change, on the poll grid
        k = max(0, math.ceil((eng.env.now - start) / interval))
        block.waiter.wake_at(eng.env, min(start + k * interval, op.until_ns))

    entries: list = []

    def resume(st: Any) -> int:
        for rmr, entry in entries:
            rmr.change_watchers.discard(entry)
        polls = max(0, math.ceil((eng.env.now - start) / interval - 1e-9))
        _charge(eng, st, watched, polls)
        st.debt = 0.0
        return polls

    block = eng._block(st, f"a change in {len(watched)} polled remote range(s) (idle polls)", resume)
    entries += [(rmr, rmr.change_watchers.add(roff, seen, changed)) for _, rmr, roff, seen in watched]
    eng._deadline(st, block.waiter, op.until_ns)  # (one timer per thread: idle waits all end then)
    return block


def _wait(eng: Any, st: Any, until: float) -> Any:
    """Return 0 polls at ``until`` (the first poll's time): never earlier, as kdreal does."""
    if until <= eng.env.now + st.debt:
        return 0
    return eng._wait_until(st, until, "the first idle poll", 0)


def _charge(eng: Any, st: Any, watched: list, polls: int) -> None:
    """The CPU, NIC, PCIe and link work of ``polls`` rounds of READs of ``watched``, added to busy totals.

    A round posts its READs together and spins until the last completes: its CPU is a post, a poll and a copy
    per READ, and one uncontended round trip of the slowest."""
    if not polls:
        return
    host, fabric = eng.profile.host, eng.fabric
    spin = 0.0
    for sq, _, _, seen in watched:
        n = len(seen)
        peer = sq.peer
        nic, pnic = eng.nics[st.host], eng.nics[peer.host]
        req_wire = fabric.wire.message_ns(0, RETH_BYTES)
        resp_wire = fabric.wire.message_ns(n, AETH_BYTES)
        for link in fabric.path(st.host, peer.host).hops:  # every link direction the request crosses
            link.busy_ns += polls * req_wire
        for link in fabric.path(peer.host, st.host).hops:  # and the response
            link.busy_ns += polls * resp_wire
        per_byte = n * nic.pu_ns_per_byte
        nic.pus.servers[sq.handle.qp_num % len(nic.pus.servers)].busy_ns += polls * (
            nic.tx_wqe_ns + nic.rx_ns + per_byte
        )
        pnic.pus.servers[peer.handle.qp_num % len(pnic.pus.servers)].busy_ns += polls * (
            pnic.rx_ns + n * pnic.pu_ns_per_byte
        )
        pnic.pcie_down.busy_ns += polls * pnic.pcie_ns(n)
        nic.pcie_up.busy_ns += polls * nic.pcie_ns(n)
        rtt = (
            nic.write_ns + nic.tx_wqe_ns + nic.pipeline_ns + fabric.control(st.host, peer.host, 0.0, RETH_BYTES)
            + pnic.rx_ns + pnic.pipeline_ns + pnic.dma_read_ns + pnic.pcie_ns(n) + pnic.pipeline_ns + resp_wire
            + fabric.control(peer.host, st.host, 0.0, AETH_BYTES) + nic.rx_ns + nic.pipeline_ns + nic.pcie_ns(n)
            + nic.write_ns
        )  # fmt: skip
        spin = max(spin, rtt)
        st.busy_ns += polls * (host.post_ns + host.poll_ns + n * 8.0 / host.memcpy_gbps)
    st.busy_ns += polls * spin
    eng.stats.work_requests += polls * len(watched)
