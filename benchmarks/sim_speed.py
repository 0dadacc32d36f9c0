"""Simulation speed: kdsim work requests per wall-clock second vs a bare SimPy timer loop.

Both are measured in the same process, alternating, ``--repeat`` times; the medians and
their ratio are printed. The ratio is the number the design goal is stated in: a ratio
of 0.25 means a simulated RDMA WRITE costs as much wall time as four bare SimPy events.
It also prints the SimPy events kdsim actually schedules per WRITE.

    .venv/bin/python benchmarks/sim_speed.py [--writes 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import simpy

from kdlab.datapaths.perftest import PerftestConfig, roles
from kdsim.engine import SimEngine


def bare_simpy_events_per_s(n: int) -> float:
    env = simpy.Environment()

    def ticker(env: simpy.Environment):
        for _ in range(n):
            yield env.timeout(1)

    env.process(ticker(env))
    t0 = time.perf_counter()
    env.run()
    return n / (time.perf_counter() - t0)


def kdsim_writes_per_s(n: int, size: int) -> tuple[float, float]:
    """ib_write_bw-style run of ``n`` WRITEs; -> (WRs per wall second, SimPy events per WR)."""
    engine = SimEngine("cx4-edr-100g")
    cfg = PerftestConfig("write_bw", size=size, iterations=n, tx_depth=128, cq_mod=100)
    t0 = time.perf_counter()
    engine.run(roles(cfg))
    wall = time.perf_counter() - t0
    events = engine.env._eid  # every event SimPy scheduled in the run (set-up included)
    return engine.stats.work_requests / wall, next(events) / engine.stats.work_requests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    wr, ev, per = [], [], []
    for _ in range(args.repeat):
        ev.append(bare_simpy_events_per_s(args.writes))
        rate, events_per_wr = kdsim_writes_per_s(args.writes, args.size)
        wr.append(rate)
        per.append(events_per_wr)
    med_wr, med_ev = statistics.median(wr), statistics.median(ev)
    print(f"bare SimPy timer loop : {med_ev:12,.0f} events/s   (median of {args.repeat})")
    print(f"kdsim RDMA WRITE      : {med_wr:12,.0f} WRs/s      ({args.size} B, ib_write_bw loop)")
    print(f"ratio WRs/s : events/s: {med_wr / med_ev:.3f}   (goal >= 0.25)")
    print(f"SimPy events per WRITE: {statistics.median(per):.2f}   (goal <= 4)")


if __name__ == "__main__":
    main()
