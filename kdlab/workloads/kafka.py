"""The ``kafka`` workload: a Kafka, OSU-Kafka or KafkaDirect cluster run, and its metrics.

One row per run: throughput (records/s and MB/s, aggregate), produce-ack and
end-to-end latency percentiles, consumer throughput, CPU busy time per thread class,
registered memory per broker and client, and ``delivery_ok``: every produced record
was consumed exactly once, in order per producer.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from kdlab.engines import point_engine
from kdlab.kafka.batches import BatchFactory
from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.spec import ExperimentSpec, Point, validate_points

PERCENTILES = {"p50": 50, "p99": 99, "p999": 99.9}
#: What this workload's metrics are (they are kdlab's, not an artifact tool's: see kdlab.workloads.artifact).
DEFINITION = (
    "kdlab kafka run, all samples, numpy linear percentiles: ack_latency = send() to get() on the producer's "
    "application thread; e2e_latency = the batch's timestamp to its delivery by a concurrent consumer (tailing "
    "unless consume_after_produce); fetch_latency = each fetch request (TCP/OSU) or data READ (KafkaDirect); "
    "throughput = records over the first send to the last ack (or delivery)"
)


def _pcts(prefix: str, samples_ns: list[float]) -> dict[str, float]:
    if not samples_ns:
        return {f"{prefix}_{k}_us": float("nan") for k in [*PERCENTILES, "max"]}
    a = np.asarray(samples_ns) / 1e3
    out = {f"{prefix}_{k}_us": float(np.percentile(a, q)) for k, q in PERCENTILES.items()}
    out[f"{prefix}_max_us"] = float(a.max())
    return out


def delivery_ok(results: dict[str, Any], p: KafkaParams) -> bool:
    """Every consumer got each of its partition's batches exactly once, in order per producer.

    Also: offsets run from 0 without gap or overlap in delivery order, and each batch's
    CRC (which covers every byte after it) is the one its producer computed.
    """
    per = p.records_per_batch
    n_batches = -(-p.records_total // per)
    factory = BatchFactory(p.records_per_batch, p.record_bytes)
    for name, out in results.items():
        if not name.startswith("consumer"):
            continue
        q = int(name.removeprefix("consumer")) % p.partitions
        seen: dict[int, list[int]] = defaultdict(list)
        offset = 0
        for producer_id, base_sequence, records, base_offset, timestamp, crc in out["delivered"]:
            if base_offset != offset or crc != factory.crc(producer_id, base_sequence, timestamp):
                return False
            offset += records
            seen[producer_id].append(base_sequence)
        writers = [i for i in range(p.producers) if i % p.partitions == q]
        if sorted(seen) != writers:
            return False
        if any(seen[i] != [b * per for b in range(n_batches)] for i in writers):
            return False
    return True


def _thread_class(role: str) -> str:
    return re.sub(r"\d+$", "", role.split(".")[-1]) if "." in role else re.sub(r"\d+$", "", role)


class KafkaWorkload:
    name = "kafka"

    def validate_spec(self, spec: ExperimentSpec, origin: str) -> None:
        validate_points(spec, origin, KafkaParams, "kafka")

    def run_point(self, point: Point) -> list[dict[str, Any]]:
        p = KafkaParams.model_validate(point.params_dict)
        engine = point_engine(point)
        results = engine.run(build(p))
        producers = [v for k, v in results.items() if k.startswith("producer")]
        consumers = [v for k, v in results.items() if k.startswith("consumer")]
        row: dict[str, Any] = {**p.model_dump(), "definition": DEFINITION}
        span = (max(r["t_last_ns"] for r in producers) - min(r["t_first_ns"] for r in producers)) * 1e-9
        records = sum(r["records"] for r in producers)
        row.update(
            produce_records_per_s=records / span,
            produce_mb_per_s=sum(r["bytes"] for r in producers) / span / 1e6,
            batch_bytes_on_wire=p.batch_size,
            **_pcts("ack_latency", [x for r in producers for x in r["ack_latency_ns"]]),
        )
        if consumers:
            cspan = (max(r["t_last_ns"] for r in consumers) - min(r["t_first_ns"] for r in consumers)) * 1e-9
            row.update(
                consume_records_per_s=sum(r["records"] for r in consumers) / cspan,
                **_pcts("e2e_latency", [x for r in consumers for x in r["e2e_latency_ns"]]),
                **_pcts("fetch_latency", [x for r in consumers for x in r["fetch_latency_ns"]]),
            )
        row["delivery_ok"] = delivery_ok(results, p)
        stats = getattr(engine, "stats", None)
        if stats is not None:  # kdsim: CPU per thread class, registered memory
            sim_s = stats.sim_time_ns * 1e-9
            busy: dict[str, float] = defaultdict(float)
            for role, ns in stats.role_cpu_busy_ns.items():
                busy[_thread_class(role)] += ns
            for cls, ns in sorted(busy.items()):
                row[f"cpu_{cls}_cores"] = ns * 1e-9 / sim_s
            util = stats.utilisation  # per host: NIC processing units, PCIe, RDMA uplink
            brokers = [h for h in util if h.startswith("b")]
            row["rdma_link_util_broker"] = max((util[h].get("uplink", 0.0) for h in brokers), default=0.0)
            row["nic_pu_util_broker"] = max((util[h].get("pu", 0.0) for h in brokers), default=0.0)
            tcp = engine.sockets.uplinks  # type: ignore[attr-defined]
            row["tcp_link_util_broker"] = max(
                (tcp[h].busy_ns / stats.sim_time_ns for h in tcp if h.startswith("b")), default=0.0
            )
            mem = {h: m.registered_bytes for h, m in engine.memories.items()}  # type: ignore[attr-defined]
            row["registered_mb_per_broker"] = max([v for h, v in mem.items() if h.startswith("b")], default=0) / 1e6
            row["registered_mb_per_client"] = max([v for h, v in mem.items() if not h.startswith("b")], default=0) / 1e6
        return [row]
