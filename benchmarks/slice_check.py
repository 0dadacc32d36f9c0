"""The symmetric slice: a large cluster predicted from a few of its brokers, checked against the full model.

In the scale ladder's clusters every broker carries the same load (one topic per broker, its partitions'
leaders and followers spread by Kafka's assignment over all brokers, the same clients per broker) and one
non-blocking switch joins the hosts, so no resource is shared between brokers. A cluster of ``--slice`` brokers
with the same clients per broker then has, per broker, the same load and the same mechanisms; the full cluster's
throughput is the slice's times brokers / slice, its latency distributions the slice's. What differs: a broker
replicates to fewer other brokers (fewer queue pairs and connections per host) and the samples are fewer.

For each rung this prints the full model's and the slice's records per broker per second and per-batch ack and
end-to-end p50 / p99, their differences, and both runs' CPU per simulated millisecond:

    .venv/bin/python benchmarks/slice_check.py                               # 10x200 30x960 100x2000, 20 ms
    .venv/bin/python benchmarks/slice_check.py --rate 30000                  # loaded: 20 records a batch
    .venv/bin/python benchmarks/slice_check.py --rungs 100x10000 --ms 1000 --only-slice  # the goal point, sliced

Racks with oversubscribed spine links (switch.leaf_uplinks) share a resource between brokers: a slice does not
apply there (docs/design.md, "Beyond one machine").
"""

from __future__ import annotations

import argparse
import sys

from scale import measure

METRICS = ["records_per_s_per_broker", "ack_p50_us", "ack_p99_us", "e2e_p50_us", "e2e_p99_us"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rungs", nargs="+", default=["10x200", "30x960", "100x2000"], help="BROKERSxCLIENTS")
    ap.add_argument("--slice", type=int, default=3, help="brokers in the slice (at least the replication factor, 3)")
    ap.add_argument("--ms", type=float, default=20.0, help="simulated milliseconds per run")
    ap.add_argument("--rate", type=float, default=1000.0, help="records/s offered by each producer")
    ap.add_argument("--only-slice", action="store_true", help="run the slice alone (a rung too large for one run)")
    args = ap.parse_args()
    if args.slice < 3:
        print(f"--slice: {args.slice} brokers cannot hold 3 replicas (allowed: 3 or more)", file=sys.stderr)
        return 2
    for rung in args.rungs:
        brokers, clients = (int(x) for x in rung.split("x"))
        if clients % (2 * brokers):
            print(f"{rung}: clients must be an even number per broker for a slice (half produce, half consume)",
                  file=sys.stderr)  # fmt: skip
            return 2
        part = measure(args.slice, clients // brokers * args.slice, args.ms, "kafkadirect", args.rate)
        full = None if args.only_slice else measure(brokers, clients, args.ms, "kafkadirect", args.rate)
        print(f"{rung} (slice {args.slice}x{part['clients']}):")
        for m in METRICS:
            line = f"  {m:26s} slice {part[m]:10.1f}"
            if full is not None:
                line += f"   full {full[m]:10.1f}   difference {100 * (part[m] / full[m] - 1):+5.1f}%"
            print(line)
        cpu = f"  CPU per simulated ms: slice {part['cpu_s_per_sim_ms']:.3f} s"
        if full is not None:
            cpu += (
                f", full {full['cpu_s_per_sim_ms']:.3f} s ({full['cpu_s_per_sim_ms'] / part['cpu_s_per_sim_ms']:.0f}x)"
            )
        print(cpu + f"; slice run {part['cpu_s']:.1f} s CPU, peak RSS {part['peak_rss_mb']:.0f} MB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
