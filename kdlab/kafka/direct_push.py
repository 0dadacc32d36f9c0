"""KafkaDirect's push replication: the leader writes committed regions into its followers' copies.

As the artifact's ``LeaderPushManager``: a broker runs ``num.replication.threads`` push
threads; a follower's pushes are all made by thread ``follower id mod threads``, so
every partition a follower replicates from this leader goes through one thread, in
offset order. Each loop a thread takes up to ``num.replication.replicationbatch``
queued appends, and per follower and partition coalesces contiguous regions of one
segment until the push reaches ``maxrdmabatch`` (the last region may overshoot). A
push is one WRITE_WITH_IMM straight from the leader's segment (zero copy) into the
follower's copy of it (immediate: the follower's id for that copy, which the follower's
control plane answers on first use). At most ``num.replication.maxrequestquota``
pushes are outstanding per follower; the commit handler returns one per ack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdlab.kafka.direct_broker import CTL_BYTES, KdBroker, ReplicaSegmentRequest
from kdlab.ops import Lookup, QueueGet, TcpConnect, TcpRecv, TcpSend, WaitNotify
from kdlab.verbs import Opcode, SendWR

QUOTA_RECHECK_NS = 1e6
"""A push thread at its quota re-checks at least this often (a notification may race its wait on real threads)."""


@dataclass(frozen=True, slots=True)
class PushRegion:
    """A committed region of the leader's segment ``sid`` to push to ``follower``; ``end``: the offset after it."""

    follower: str
    partition: int
    sid: int
    position: int
    size: int
    end: int


def broker_id(name: str) -> int:
    return int(name.removeprefix("b"))


def push_thread_of(state: KdBroker, follower: str) -> int:
    """LeaderPushManager: ``followerBrokerId % numberOfReplicationProcessors``."""
    return broker_id(follower) % state.p.replication_threads


def push_queue(state: KdBroker, follower: str) -> str:
    return f"{state.name}.push{push_thread_of(state, follower)}"


def coalesce(regions: list[PushRegion], max_bytes: int) -> list[PushRegion]:
    """Per follower and partition (in the order they first appear), merge contiguous regions of one segment
    until a push reaches ``max_bytes``; the result keeps each partition's offset order."""
    groups: dict[tuple[str, int], list[PushRegion]] = {}
    for r in regions:
        groups.setdefault((r.follower, r.partition), []).append(r)
    out: list[PushRegion] = []
    for group in groups.values():
        push = group[0]
        for r in group[1:]:
            if push.size < max_bytes and r.sid == push.sid and r.position == push.position + push.size:
                push = PushRegion(push.follower, push.partition, push.sid, push.position, push.size + r.size, r.end)
            else:
                out.append(push)
                push = r
        out.append(push)
    return out


def push_thread(state: KdBroker, index: int, followers: list[str]) -> Any:
    """One replication processor: push committed regions to ``followers``, coalesced up to maxrdmabatch."""
    p = state.p
    ctl = {}
    for f in followers:  # connect first: the followers' control planes count on it
        ctl[f] = yield TcpConnect(f"{f}.ctl")
    yield Lookup(f"kd.{state.name}.ready")
    remote: dict[tuple[str, int], tuple[int, int, int]] = {}  # (follower, our segment) -> its copy: addr, rkey, id
    queue = f"{state.name}.push{index}"
    write = SendWR(0, Opcode.RDMA_WRITE_WITH_IMM, [], signaled=False)
    while True:
        taken = [(yield QueueGet(queue))]
        while len(taken) < p.replication_batch:
            more = yield QueueGet(queue, timeout_ns=0.0)
            if more is None:
                break
            taken.append(more)
        for push in coalesce(taken, p.max_rdma_batch):
            local = state.segments[push.sid]
            seg = local.seg
            key = (push.follower, push.sid)
            if key not in remote:
                yield TcpSend(ctl[push.follower], ReplicaSegmentRequest(push.partition, seg.seg_id, seg.capacity),
                              CTL_BYTES)  # fmt: skip
                _, remote[key] = yield TcpRecv(ctl[push.follower])
            addr, rkey, copy = remote[key]
            peer = state.peers[push.follower]
            while peer.outstanding >= p.replication_request_quota:
                yield WaitNotify(f"{state.name}.pushq.{push.follower}", timeout_ns=QUOTA_RECHECK_NS)
            write.sg_list = (seg.mr.sge(push.position, push.size),)  # zero copy: straight from the leader's segment
            write.remote_addr, write.rkey, write.imm_data = addr + push.position, rkey, copy
            local.part.followers[push.follower].pushed.append(push.end)
            peer.outstanding += 1
            yield from peer.sq.post(write)
