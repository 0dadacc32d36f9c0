"""Kafka's replica fetchers: how a follower pulls the partitions it replicates.

Kafka 2.x (``ReplicaFetcherManager``, ``AbstractFetcherThread``): a follower runs
``num.replica.fetchers`` fetcher threads per leader broker; partition ``q`` belongs to
fetcher ``abs(31 * topic.hashCode + q) % num.replica.fetchers``
(:meth:`~kdlab.kafka.topology.Topology.fetcher_of`). Each round a fetcher sends its
leader *one* FetchRequest covering every partition it holds, each from the follower's
log end with ``replica.fetch.max.bytes``, the whole response at most
``replica.fetch.response.max.bytes``, waiting up to ``replica.fetch.wait.max.ms`` for
``replica.fetch.min.bytes`` (the leader's fetch purgatory). It appends what came (a CRC
pass, the follower's append path without LogValidator, a copy into the page cache),
takes the leader's high watermark up to its own log end, and moves the partitions that
returned data to the end of its list (``PartitionStates.updateAndMoveToEnd``), so a busy
partition does not starve the others under the response limit.

The fetch offsets tell the leader the follower's log ends, which is how the leader's
high watermark advances (:func:`kdlab.kafka.apache._fetch`). A fetcher runs until the
run ends (a daemon role): its next fetch after the last batch reports the final log end.
"""

from __future__ import annotations

from typing import Any

from kdlab.kafka.apache import BrokerState, flush_if_due
from kdlab.kafka.batches import check_batch
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.protocol import REPLICA_FETCH_RESPONSE_MAX_BYTES, Fetch, FetchRequest, FetchResponse
from kdlab.ops import Compute, FileWrite, TcpConnect, TcpRecv, TcpSend
from kdlab.program import DatapathError


def fetch_request(p: KafkaParams, state: BrokerState, order: list[int]) -> FetchRequest:
    """One round's request: every partition of this fetcher, from the follower's log end."""
    parts = [Fetch(q, state.logs[q].leo, p.replica_fetch_max_bytes) for q in order]
    wait_ns = p.replica_fetch_wait_max_ms * 1e6
    return FetchRequest(parts, REPLICA_FETCH_RESPONSE_MAX_BYTES, p.replica_fetch_min_bytes, wait_ns, state.name)


def replica_fetcher(p: KafkaParams, state: BrokerState, leader: str, partitions: list[int], service: str) -> Any:
    """A follower's fetcher thread for ``partitions`` of ``leader``: fetch all of them, append, repeat."""
    conn = yield TcpConnect(service)
    order = list(partitions)
    while True:
        request = fetch_request(p, state, order)
        yield TcpSend(conn, request, request.nbytes)
        _, response = yield TcpRecv(conn)
        yield Compute("alloc", response.nbytes)  # NetworkReceive: the fetched batches in a heap buffer
        with_data = yield from _append_fetched(p, state, response)
        order = [q for q in order if q not in with_data] + [q for q in order if q in with_data]


def _append_fetched(p: KafkaParams, state: BrokerState, response: FetchResponse) -> Any:
    """Append each partition's batches to the follower's log -> the partitions that returned data."""
    with_data = set()
    for reply in response.partitions:
        log = state.logs[reply.partition]
        for data in reply.batches:
            yield Compute("crc32c", len(data))
            info = check_batch(data)
            if info is None:
                raise DatapathError(f"{state.name}: replica fetch of partition {reply.partition} returned a torn batch")
            yield Compute("append", 0)  # a follower's append: no LogValidator, the rest of the path
            yield Compute("copy", len(data))
            stored = yield FileWrite(len(data))  # into the page cache: blocks while over the dirty limit
            log.append(len(data), info.records, data).stored = stored
            yield from flush_if_due(p, log)  # a follower's Log.append flushes by the same rule
        log.hw = max(log.hw, min(reply.hw, log.leo))
        if reply.batches:
            with_data.add(reply.partition)
    return with_data
