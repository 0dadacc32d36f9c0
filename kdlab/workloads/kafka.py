"""The ``kafka`` workload: a Kafka, OSU-Kafka or KafkaDirect cluster run, and its metrics.

One row per run: offered and achieved produce rate (records/s and MB/s, aggregate),
produce-ack and end-to-end latency percentiles per record, consumer throughput, CPU busy
time per thread class, registered memory per broker and client, and ``delivery_ok``:
every consumer group read every record exactly once, in order per producer and
partition, with contiguous offsets and the bytes its producer wrote.

Per-record latencies: a batch's records are spread evenly between its first and last
send (and timestamp), so ``ack - sent`` and ``received - timestamp`` are computed per
record with numpy (clients that report only per-batch latencies are counted per batch).
With ``duration_ms`` the measured window is ``[first send + warmup_ms, + duration_ms)`` and,
as OpenMessaging Benchmark counts them, rates and latencies are those of the records
acknowledged (received) in it: a cluster that cannot keep up shows a lower achieved rate,
not the offered one. Otherwise rates run from the first send to the last ack (delivery).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import numpy as np

from kdlab.engines import point_engine
from kdlab.kafka.batch_log import stack
from kdlab.kafka.batches import batch_factory
from kdlab.kafka.cluster import build, topology
from kdlab.kafka.params import KafkaParams
from kdlab.kafka.records import batch_size_bytes
from kdlab.spec import ExperimentSpec, Point, validate_points

PERCENTILES = {"p50": 50, "p99": 99, "p999": 99.9}
#: What this workload's metrics are (they are kdlab's, not an artifact tool's: see kdlab.workloads.artifact).
DEFINITION = (
    "kdlab kafka run, numpy linear percentiles over records (a batch's records evenly spaced between its first and "
    "last send): ack_latency = send() to the ack on the producer's application thread; e2e_latency = the record's "
    "timestamp to its batch's fetch response at a concurrent consumer (tailing unless consume_after_produce); "
    "fetch_latency = each fetch request (TCP/OSU) or data READ (KafkaDirect); throughput = records over the first "
    "send to the last ack (or delivery), or with duration_ms records acked (received) in the measured window after "
    "warm-up, as OMB counts them"
)


def _pcts(prefix: str, samples_ns: Any) -> dict[str, float]:
    a = np.asarray(samples_ns, dtype=float) / 1e3
    if not a.size:
        return {f"{prefix}_{k}_us": float("nan") for k in [*PERCENTILES, "max"]}
    out = {f"{prefix}_{k}_us": float(np.percentile(a, q)) for k, q in PERCENTILES.items()}
    out[f"{prefix}_max_us"] = float(a.max())
    return out


def per_record(rows: Any, first: int, last: int, at: int) -> tuple[np.ndarray, np.ndarray]:
    """Batches as rows (records in column 1, first and last time in ``first``/``last``, event time in ``at``)
    -> each record's time (evenly spaced in its batch) and its batch's event time."""
    t = np.asarray(rows, dtype=float).reshape(-1, max(first, last, at) + 1)
    n = t[:, 1].astype(np.int64)
    idx = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    step = np.repeat((t[:, last] - t[:, first]) / np.maximum(n - 1, 1), n)
    return np.repeat(t[:, first], n) + idx * step, np.repeat(t[:, at], n)


# --- delivery -------------------------------------------------------------------------------


def delivery_ok(results: dict[str, Any], p: KafkaParams) -> bool:
    """Every consumer group read each partition's batches exactly once, in order, as its producers wrote them."""
    return not delivery_problems(results, p)


def _written(results: dict[str, Any], p: KafkaParams) -> dict[int, dict[int, int]]:
    """Partition -> producer -> records it wrote there."""
    out: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for w in topology(p).producers:
        res = results.get(w.name)
        if res is None:
            continue
        if "sent" in res:
            for q, records, *_ in res["sent"]:
                out[q][w.pid] += records
        else:  # a producer that reports no batches writes partition pid mod partitions
            out[w.pid % p.partitions][w.pid] += res["records"]
    return out


def delivery_problems(results: dict[str, Any], p: KafkaParams) -> list[str]:
    """What is wrong with the delivery, one line each (empty: every group read everything exactly once).

    Per group and partition: batches from one consumer only; offsets from 0 without gap or overlap; per
    producer, base sequences contiguous from 0 and as many records as it wrote there; each batch's CRC
    (which covers every byte after it) the one its producer computed for those records and times.
    """
    written = _written(results, p)
    groups: dict[tuple[int, int], dict[int, list[tuple[str, tuple, int]]]] = defaultdict(lambda: defaultdict(list))
    for c in topology(p).consumers:
        res = results.get(c.name)
        if res is None:
            continue
        stamps = [r[3] for r in res.get("received", [])] or [d[4] for d in res["delivered"]]
        if len(stamps) != len(res["delivered"]):
            return [f"{c.name}: {len(res['delivered'])} batches delivered, {len(stamps)} received"]
        for d, max_ts in zip(res["delivered"], stamps, strict=True):
            q = d[6] if len(d) > 6 else c.cid % p.partitions
            groups[c.topic, c.group][q].append((c.name, d, max_ts))
    problems = []
    for (t, g), by_partition in groups.items():
        for q in topology(p).topic_partitions(t):
            got = by_partition.get(q, [])
            if not got and not sum(written.get(q, {}).values()):
                continue
            problems += [f"group {g} partition {q}: {x}" for x in _partition_problems(p, got, written.get(q, {}))]
    if not groups and any(written.values()) and topology(p).consumers:
        problems.append("no consumer delivered anything")
    return problems


def _partition_problems(p: KafkaParams, got: list[tuple[str, tuple, int]], wrote: dict[int, int]) -> list[str]:
    readers = {name for name, _, _ in got}
    if len(readers) > 1:
        return [f"read by {sorted(readers)}"]
    offset = 0
    sequence: dict[int, int] = defaultdict(int)
    for _, (pid, base_sequence, records, base_offset, timestamp, crc, *_), max_ts in got:
        if base_offset != offset:
            return [f"batch at offset {base_offset}, expected {offset}"]
        if base_sequence != sequence[pid]:
            return [f"producer {pid}: base sequence {base_sequence}, expected {sequence[pid]}"]
        if crc != batch_factory(records, p.record_bytes).crc(pid, base_sequence, timestamp, max_ts):
            return [f"batch at offset {base_offset}: CRC differs from what producer {pid} wrote"]
        offset += records
        sequence[pid] += records
    missing = {pid: (n, sequence.get(pid, 0)) for pid, n in wrote.items() if sequence.get(pid, 0) != n}
    return [f"producer {pid} wrote {n} records, {k} read" for pid, (n, k) in missing.items()]


# --- metrics ----------------------------------------------------------------------------------


def _window(p: KafkaParams, producers: list[dict]) -> tuple[float, float] | None:
    """The measured window ``[first send + warm-up, + duration)``, or None for a run of a fixed record count."""
    if not p.duration_ms:
        return None
    start = min(r["t_first_ns"] for r in producers) + p.warmup_ms * 1e6
    return start, start + p.duration_ms * 1e6


def produce_metrics(p: KafkaParams, producers: list[dict]) -> dict[str, Any]:
    window = _window(p, producers)
    batches = stack((r["sent"] for r in producers if "sent" in r), 7)
    if len(batches) and all("sent" in r for r in producers):
        sent_at, acked_at = per_record(batches, 4, 5, 6)
        n = batches[:, 1].astype(np.int64)
        counts, which = np.unique(n, return_inverse=True)  # one size per distinct record count, not per batch
        sizes = np.array([batch_size_bytes(int(k), None, p.record_bytes) for k in counts], dtype=float)[which]
        record_bytes = np.repeat(sizes / n, n)
        latency = acked_at - sent_at
    else:  # per-batch reports only
        sent_at = acked_at = np.zeros(0)
        record_bytes = np.zeros(0)
        latency = np.asarray([x for r in producers for x in r["ack_latency_ns"]], dtype=float)
    out: dict[str, Any] = {"offered_records_per_s": p.producer_rate * len(producers)}  # 0: closed loop
    if window is None or not sent_at.size:
        span = (max(r["t_last_ns"] for r in producers) - min(r["t_first_ns"] for r in producers)) * 1e-9
        out.update(produce_records_per_s=sum(r["records"] for r in producers) / span,
                   produce_mb_per_s=sum(r["bytes"] for r in producers) / span / 1e6)  # fmt: skip
    else:
        inside = (acked_at >= window[0]) & (acked_at < window[1])  # OMB: counted in the ack callback
        seconds = (window[1] - window[0]) * 1e-9
        latency = latency[inside]
        out.update(produce_records_per_s=float(inside.sum()) / seconds,
                   produce_mb_per_s=float(record_bytes[inside].sum()) / seconds / 1e6)  # fmt: skip
    out.update(batch_bytes_on_wire=p.batch_size, **_pcts("ack_latency", latency))
    return out


def consume_metrics(p: KafkaParams, producers: list[dict], consumers: list[dict]) -> dict[str, Any]:
    window = _window(p, producers)
    received = stack((c["received"] for c in consumers if "received" in c), 5)
    if len(received) and all("received" in c for c in consumers):
        stamped, got_at = per_record(received, 2, 3, 4)
        e2e = got_at - stamped
    else:
        stamped = got_at = np.zeros(0)
        e2e = np.asarray([x for c in consumers for x in c["e2e_latency_ns"]], dtype=float)
    if window is None or not got_at.size:
        reading = [c for c in consumers if c["records"]] or consumers
        span = (max(c["t_last_ns"] for c in reading) - min(c["t_first_ns"] for c in reading)) * 1e-9
        rate = sum(c["records"] for c in consumers) / span if span > 0 else float("nan")
    else:
        # arrivals in a window as long as the producers', after the warm-up; with none, from the first arrival
        # (a window anchored at the first send would miss the pipeline's fill time)
        start = window[0] if p.warmup_ms else float(got_at.min())
        end = start + (window[1] - window[0])
        rate = float(((got_at >= start) & (got_at < end)).sum()) / ((end - start) * 1e-9)
        e2e = e2e[(got_at >= start) & (got_at < end)]  # OMB: counted when the consumer receives the record
    return {"consume_records_per_s": rate, **_pcts("e2e_latency", e2e),
            **_pcts("fetch_latency", [x for c in consumers for x in c["fetch_latency_ns"]])}  # fmt: skip


def _thread_class(role: str) -> str:
    """A thread's class: ``b0.io3`` -> io, ``b1.fetcher0.b2`` -> fetcher, ``producer7`` -> producer."""
    return re.sub(r"\d+$", "", role.split(".")[1] if "." in role else role)


class KafkaWorkload:
    name = "kafka"

    def validate_spec(self, spec: ExperimentSpec, origin: str) -> None:
        validate_points(spec, origin, KafkaParams, "kafka")

    def run_point(self, point: Point) -> list[dict[str, Any]]:
        p = KafkaParams.model_validate(point.params_dict)
        engine = point_engine(point)
        results = engine.run(build(p, point.seed))
        producers = [v for k, v in results.items() if k.startswith("producer")]
        consumers = [v for k, v in results.items() if k.startswith("consumer")]
        row: dict[str, Any] = {**p.model_dump(), "definition": DEFINITION}
        row.update(produce_metrics(p, producers))
        if consumers:
            row.update(consume_metrics(p, producers, consumers))
        row["delivery_ok"] = delivery_ok(results, p)
        stats = getattr(engine, "stats", None)
        if stats is not None:  # kdsim: CPU per thread class, registered memory
            row.update(_sim_stats(engine, stats))
        row.update(clock_columns(getattr(engine, "clock_offsets", None)))
        return [row]


def clock_columns(offsets: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    """kdreal across machines: the largest clock offset between two hosts, uncertainty, drift, and all of them.

    End-to-end latency compares a producer's clock with a consumer's; a host whose offset
    exceeds its uncertainty had its clock moved onto the engine's (kdreal.cluster), so an
    end-to-end latency is good to about the uncertainty plus the drift during the run.
    """
    if not offsets:
        return {}
    pairs = [v for k, v in offsets.items() if "|" in k] or [{"offset_us": 0.0, "uncertainty_us": 0.0, "drift_us": 0.0}]
    return {
        "clock_offset_max_us": max(abs(v["offset_us"]) for v in pairs),
        "clock_uncertainty_max_us": max(v["uncertainty_us"] for v in pairs),
        "clock_drift_max_us": max(abs(v["drift_us"]) for v in pairs),
        "clock_offsets_json": json.dumps(offsets, sort_keys=True),
    }


def _broker_cores(engine: Any, stats: Any) -> dict[str, float]:
    """The busiest broker's CPU: cores kept busy, and that over the cores it has (``host.process_cores``, else one
    per thread), so a researcher sees when a broker's threads queue for cores."""
    by_host: dict[str, list[float]] = defaultdict(list)
    for role, ns in stats.role_cpu_busy_ns.items():
        if role.startswith("b") and "." in role:
            by_host[role.split(".")[0]].append(ns)
    if not by_host:
        return {}
    cores = engine.profile.host.process_cores
    busy = {h: sum(v) / stats.sim_time_ns for h, v in by_host.items()}
    util = {h: busy[h] / (cores or len(by_host[h])) for h in by_host}
    return {"cpu_broker_busy_cores": max(busy.values()), "cpu_broker_util": max(util.values())}


def _sim_stats(engine: Any, stats: Any) -> dict[str, float]:
    row: dict[str, float] = {}
    sim_s = stats.sim_time_ns * 1e-9
    busy: dict[str, float] = defaultdict(float)
    for role, ns in stats.role_cpu_busy_ns.items():
        busy[_thread_class(role)] += ns
    for cls, ns in sorted(busy.items()):
        row[f"cpu_{cls}_cores"] = ns * 1e-9 / sim_s
    row.update(_broker_cores(engine, stats))
    if stats.role_cpu_busy_ns:  # the bottleneck thread: which one, and the share of the run it was busy
        name, ns = max(stats.role_cpu_busy_ns.items(), key=lambda kv: (kv[1], kv[0]))
        row["cpu_busiest_thread"], row["cpu_busiest_thread_util"] = name, ns / stats.sim_time_ns
    util = stats.utilisation  # per host: NIC processing units, PCIe, RDMA uplink
    brokers = [h for h in util if h.startswith("b")]
    row["rdma_link_util_broker"] = max((util[h].get("uplink", 0.0) for h in brokers), default=0.0)
    row["nic_pu_util_broker"] = max((util[h].get("pu", 0.0) for h in brokers), default=0.0)
    tcp = engine.sockets.utilisation(stats.sim_time_ns)  # per host: the TCP link out, and in (incast)
    row["tcp_link_util_broker"] = max(
        (u.get("tcp_uplink", 0.0) for h, u in tcp.items() if h.startswith("b")), default=0.0
    )
    row["tcp_downlink_util_broker"] = max(
        (u.get("tcp_downlink", 0.0) for h, u in tcp.items() if h.startswith("b")), default=0.0
    )
    if getattr(engine, "heaps", None):  # young collections (profile host.gc_young_bytes > 0): the busiest JVMs
        pauses = stats.gc_pauses
        row["gc_pauses_broker"] = max((pauses.get(h, 0) for h in brokers), default=0)
        row["gc_pauses_client"] = max((n for h, n in pauses.items() if not h.startswith("b")), default=0)
        row["gc_paused_share_broker"] = max((util[h].get("gc_paused", 0.0) for h in brokers), default=0.0)
    if getattr(engine, "storage", None):  # a log device (profile storage.device_write_gbps > 0): its busy share
        for kind in ("device_write", "device_read"):
            row[f"{kind}_util_broker"] = max((util[h].get(kind, 0.0) for h in brokers), default=0.0)
    mem = {h: m.registered_bytes for h, m in engine.memories.items()}
    row["registered_mb_per_broker"] = max([v for h, v in mem.items() if h.startswith("b")], default=0) / 1e6
    row["registered_mb_per_client"] = max([v for h, v in mem.items() if not h.startswith("b")], default=0) / 1e6
    row["model_peak_mb"] = stats.model_peak_bytes / 1e6  # the most bytes the model's MRs held at once
    for kind, share in stats.spine_utilisation.items():  # racks (switch.hosts_per_leaf): the busiest spine link
        row[f"{kind}_util"] = share
    return row
