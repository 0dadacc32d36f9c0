"""Scale: CPU, events and memory per simulated batch as the cluster grows at a fixed load per client.

A ladder of clusters (brokers, clients), half the clients producers and half consumers, one topic per broker
with two partitions each, replication factor 3, every producer offering the same open-loop rate. Each rung
runs in a fresh process (so its peak RSS is its own) and prints:

* the whole run's CPU, and its set-up's (building hosts, MRs and queue pairs);
* over the steady window (from a quarter into the production phase to its end, measured with the engine's
  probes, so the start-up and the consumers' drain are left out): CPU seconds per simulated millisecond, CPU
  microseconds per batch acknowledged in the window, SimPy events and datapath operations per batch;
* peak RSS;

and at the end the fitted growth exponents against clients (log-log least squares): of CPU per simulated
millisecond (total work; the goal is <= 1.1 from 20 to 10,000 clients) and of CPU per batch (flat is 0).

    .venv/bin/python benchmarks/scale.py                      # the ladder up to 2,000 clients, 10 ms each (~20 s)
    .venv/bin/python benchmarks/scale.py --rungs 3x20 10x200 30x1000 100x2000 100x10000 --ms 20   # to 10,000 (~2 min)
    .venv/bin/python benchmarks/scale.py --rungs 3x20 10x200 30x1000 100x2000 100x10000 --ms 20 --repeat 3  # medians
    .venv/bin/python benchmarks/scale.py --rungs 100x10000 --ms 1000 --segment 65536 --retention 131072  # goal point
    .venv/bin/python benchmarks/scale.py --segment 65536 --retention 131072   # logs bounded by retention
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import multiprocessing as mp
import resource
import statistics
import sys
import time
from typing import Any

LADDER = ["3x20", "10x200", "30x1000", "100x2000"]


def run_rung(brokers: int, clients: int, ms: float, system: str, rate: float, segment: int = 16 << 20,
             retention: int | None = None) -> dict[str, Any]:  # fmt: skip
    """One cluster, in this process -> its measurements."""
    from kdlab.kafka.cluster import build
    from kdlab.kafka.params import KafkaParams
    from kdsim.engine import SimEngine

    producers = max(1, clients // 2 // brokers)
    consumers = max(1, clients // 2 // brokers)
    p = KafkaParams(
        system=system, brokers=brokers, topics=brokers, partitions=max(2, producers), producers=producers,
        consumers=consumers, replication_factor=min(3, brokers), acks=-1, record_bytes=1024, linger_ms=1.0,
        rate_per_producer=rate, duration_ms=ms, warmup_ms=0.0, segment_bytes=segment, slot_consumers=256,
        retention_bytes=retention,
    )  # fmt: skip
    probe_ns = max(ms, 1.0) * 1e6 / 40  # 40 probes over the production phase
    engine = SimEngine("cx4-edr-100g", probe_every_ns=probe_ns)
    roles = build(p, 0)
    cpu0 = time.process_time()
    results = engine.run(roles)
    cpu = time.process_time() - cpu0
    acks = sorted(b[6] for k, v in results.items() if k.startswith("producer") for b in v["sent"])
    events = next(engine.env._eid)  # SimPy's event counter: every event it scheduled
    sim_ms = engine.stats.sim_time_ns / 1e6
    # the steady window: from a quarter into the production phase to its end (start-up and drain left out)
    t0 = min(v["t_first_ns"] for k, v in results.items() if k.startswith("producer"))
    probes = engine.stats.probes
    a = next(x for x in probes if x[0] >= t0 + ms * 1e6 / 4)
    b = [x for x in probes if x[0] <= t0 + ms * 1e6][-1]
    steady = bisect.bisect_left(acks, b[0]) - bisect.bisect_left(acks, a[0])
    return {
        "brokers": brokers, "clients": (producers + consumers) * brokers, "sim_ms": sim_ms, "cpu_s": cpu,
        "batches": len(acks), "setup_s": probes[0][1] - cpu0, "cpu_us_per_batch_all": 1e6 * cpu / max(1, len(acks)),
        "steady_ms": (b[0] - a[0]) / 1e6, "steady_batches": steady,
        "cpu_s_per_sim_ms": (b[1] - a[1]) / ((b[0] - a[0]) / 1e6), "cpu_us_per_batch": 1e6 * (b[1] - a[1]) / steady,
        "events_per_batch": (b[2] - a[2]) / steady, "ops_per_batch": (b[3] - a[3]) / steady,
        "all_events_per_batch": events / max(1, len(acks)), "pending_events": b[4],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_peak_mb": engine.stats.model_peak_bytes / 1e6,
        **model_metrics(results, a[0], b[0], brokers),
    }  # fmt: skip


def model_metrics(results: dict[str, Any], t0: float, t1: float, brokers: int) -> dict[str, float]:
    """What the model predicts over ``[t0, t1)``: records acknowledged per broker per second, and the per-batch ack
    (first send to ack) and end-to-end (first record's timestamp to its batch's arrival) latency percentiles."""
    import numpy as np

    from kdlab.kafka.batch_log import stack

    sent = stack((v["sent"] for k, v in results.items() if k.startswith("producer")), 7)
    got = stack((v["received"] for k, v in results.items() if k.startswith("consumer")), 5)
    s = sent[(sent[:, 6] >= t0) & (sent[:, 6] < t1)]
    r = got[(got[:, 4] >= t0) & (got[:, 4] < t1)]
    ack, e2e = (s[:, 6] - s[:, 4]) / 1e3, (r[:, 4] - r[:, 2]) / 1e3
    return {
        "records_per_s_per_broker": float(s[:, 1].sum()) / ((t1 - t0) * 1e-9) / brokers,
        "ack_p50_us": float(np.percentile(ack, 50)), "ack_p99_us": float(np.percentile(ack, 99)),
        "e2e_p50_us": float(np.percentile(e2e, 50)), "e2e_p99_us": float(np.percentile(e2e, 99)),
    }  # fmt: skip


def _child(args: tuple, out: Any) -> None:
    out.send(run_rung(*args))


def measure(*rung_args: Any) -> dict[str, Any]:
    """``run_rung(*rung_args)`` in a fresh interpreter (so its peak RSS is its own)."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(rung_args, send))
    proc.start()
    row = recv.recv()
    proc.join()
    return row


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rungs", nargs="+", default=LADDER, help="BROKERSxCLIENTS, e.g. 3x20 100x10000")
    ap.add_argument("--ms", type=float, default=10.0, help="simulated milliseconds per rung")
    ap.add_argument("--system", default="kafkadirect", choices=["kafkadirect", "kafka"])
    ap.add_argument("--rate", type=float, default=1000.0, help="records/s offered by each producer")
    ap.add_argument("--segment", type=int, default=16 << 20, help="segment_bytes")
    ap.add_argument("--retention", type=int, default=None, help="retention_bytes per replica (default: none)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per rung; CPU figures are their medians (noisy hosts)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    rows = []
    for rung in args.rungs:
        brokers, clients = (int(x) for x in rung.split("x"))
        runs = [
            measure(brokers, clients, args.ms, args.system, args.rate, args.segment, args.retention)
            for _ in range(max(1, args.repeat))
        ]
        row = dict(runs[0])
        for key in ("cpu_s", "cpu_s_per_sim_ms", "cpu_us_per_batch", "peak_rss_mb"):
            row[key] = statistics.median(r[key] for r in runs)
        row["cpu_us_per_batch_runs"] = [round(r["cpu_us_per_batch"]) for r in runs]
        rows.append(row)
        print(
            f"{row['brokers']:4d} brokers {row['clients']:6d} clients: {row['cpu_s']:8.1f} s CPU for "
            f"{row['sim_ms']:.1f} ms (set-up {row['setup_s']:.1f} s); steady {row['steady_ms']:.1f} ms: "
            f"{row['cpu_s_per_sim_ms']:.3f} s/ms, {row['cpu_us_per_batch']:6.0f} us/batch, "
            f"{row['events_per_batch']:5.1f} events/batch, {row['ops_per_batch']:5.1f} ops/batch, "
            f"{row['pending_events']} events queued; "
            f"peak RSS {row['peak_rss_mb']:6.0f} MB (MRs {row['model_peak_mb']:.0f} MB)"
            + (f"; us/batch of each run {row['cpu_us_per_batch_runs']}" if args.repeat > 1 else ""),
            flush=True,
        )
    if len(rows) > 1:
        xs = [r["clients"] for r in rows]
        total = slope(xs, [r["cpu_s_per_sim_ms"] for r in rows])
        per_batch = slope(xs, [r["cpu_us_per_batch"] for r in rows])
        print(f"growth exponent vs clients: CPU per simulated ms {total:.2f} (goal <= 1.1), per batch {per_batch:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
