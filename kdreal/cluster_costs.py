"""kdreal's host costs on a cluster: measured on every host, TCP between hosts, written as one kdsim profile.

::

    python -m kdreal.cluster_costs SOURCE --profile-out kdsim/profiles/my-cluster.yaml --base cx4-edr-100g

``SOURCE`` is a hosts file or ``testbed`` (as for ``kdlab cluster check``). Each host runs
:mod:`kdreal.host_costs` on its own device (a process of its own, started by a task on
its Dask worker), one host at a time so that no two measurements share a wire or a
core. ``tcp.latency_ns`` is then measured again between the first two hosts, with the
server on one and the client on the other (the ping-pong of :mod:`kdreal.host_costs`
through :mod:`kdreal.cluster`): what a cluster's TCP datapaths cross. The CSV has a
row per host and parameter; the profile takes each parameter's median over the hosts
and cites their range.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kdlab.hosts import ClusterSpec
from kdreal.host_costs import HOW, profile_yaml, tcp_latency_ns, tcp_roles


def costs_here(rounds: int, device: str | None) -> dict[str, Any]:
    """On a host (a Dask task): :mod:`kdreal.host_costs` in a process of its own; its costs and this host's cores."""
    with tempfile.TemporaryDirectory(prefix="kdreal-costs-") as tmp:
        out = Path(tmp) / "costs.csv"
        argv = [sys.executable, "-m", "kdreal.host_costs", "--csv", str(out), "--rounds", str(rounds)]
        done = subprocess.run([*argv, *(["--device", device] if device else [])], capture_output=True, text=True,
                              check=False)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"kdreal.host_costs failed ({done.returncode}): {done.stderr[-2000:]}")
        with open(out) as f:
            costs = {row["parameter"]: float(row["value"]) for row in csv.DictReader(f)}
    software = not Path(f"/sys/class/infiniband/{device}/device").exists() if device else True
    return {"costs": costs, "cores": os.cpu_count() or 1, "software_nic": software}


def tcp_between(cluster: ClusterSpec, a: str, b: str, n: int = 400) -> float:
    """The median TCP round trip (ns) of a 64 B message between hosts ``a`` and ``b`` through kdreal."""
    from kdreal.engine import RealEngine

    placed = cluster.model_copy(update={"placement": (("s", a), ("c", b))})
    engine = RealEngine(cluster=placed, timeout_s=60, run_timeout_s=600)
    out = engine.run(tcp_roles(n))
    return float(out["client"][2])


def measure_cluster(cluster: ClusterSpec, rounds: int = 3) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Per host, its costs; and what the profile needs: median costs, cross-host TCP latency, cores, NIC kind."""
    from kdreal.cluster import check_workers, client_for

    client = client_for(cluster.scheduler)
    check_workers(client, cluster)
    per_host: dict[str, dict[str, float]] = {}
    facts: dict[str, Any] = {"cores": [], "software_nic": []}
    for h in cluster.hosts:  # one at a time: no two measurements share a core or a wire
        got = client.submit(costs_here, rounds, h.device, workers=[h.name], pure=False).result()
        per_host[h.name] = got["costs"]
        facts["cores"].append(h.cores or got["cores"])
        facts["software_nic"].append(got["software_nic"])
    median = {k: statistics.median(c[k] for c in per_host.values()) for k in HOW}
    if len(cluster.hosts) > 1:
        a, b = cluster.hosts[0].name, cluster.hosts[1].name
        rtt = tcp_between(cluster, a, b)
        op, syscall, wake = median["host.op_ns"], median["host.syscall_ns"], median["host.wakeup_ns"]
        cross = tcp_latency_ns(rtt, op, syscall, wake)
        per_host[f"{a}->{b}"] = {"tcp.latency_ns": cross}
        median["tcp.latency_ns"] = cross
        facts["tcp_pair"] = (a, b)
    facts["median"] = median
    return per_host, facts


def _how(per_host: dict[str, dict[str, float]], facts: dict[str, Any]) -> dict[str, str]:
    hosts = [h for h in per_host if "->" not in h]
    out = {}
    for k in HOW:
        values = [per_host[h][k] for h in hosts]
        out[k] = f"median of rounds on each of {len(hosts)} hosts, median over hosts; range {min(values):.4g}-" \
                 f"{max(values):.4g}"  # fmt: skip
    if "tcp_pair" in facts:
        a, b = facts["tcp_pair"]
        out["tcp.latency_ns"] = f"between hosts {a} (server) and {b} (client), not within one host"
    return out


def main(argv: list[str] | None = None) -> None:
    from kdreal.cluster import cluster_from

    ap = argparse.ArgumentParser(prog="python -m kdreal.cluster_costs", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="a hosts YAML file (hosts:, scheduler:) or 'testbed'")
    ap.add_argument("--scheduler", default=None)
    ap.add_argument("--csv", default="results/measured/cluster-host-costs.csv")
    ap.add_argument("--profile-out", default=None, help="write a kdsim profile with these costs")
    ap.add_argument("--name", default=None, help="the profile's name (default: the --profile-out file's stem)")
    ap.add_argument("--base", default="cx4-edr-100g", help="profile for the network and NIC (default cx4-edr-100g)")
    ap.add_argument("--where", default=None, help="where it ran, for the profile (default: the testbed or a cluster)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    cluster = cluster_from(args.source, args.scheduler)
    where = args.where or (f"the kdlab testbed VM, {len(cluster.hosts)} hosts" if args.source == "testbed"
                           else "a real RDMA cluster")  # fmt: skip
    per_host, facts = measure_cluster(cluster, args.rounds)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["host", "parameter", "value", "how"])
        for host, costs in per_host.items():
            for k, v in costs.items():
                w.writerow([host, k, f"{v:.6g}", HOW[k]])
    for k, v in facts["median"].items():
        print(f"{k:24s} {v:12.4g}   ({len(cluster.hosts)} hosts) {HOW[k]}")
    if args.profile_out:
        name = args.name or Path(args.profile_out).stem
        text = profile_yaml(
            facts["median"], Path(args.csv).name, where, min(facts["cores"]), name=name, base=args.base,
            description=f"kdreal on {len(cluster.hosts)} hosts ({where}): network and NIC from {args.base}, "
            "host and TCP costs measured from kdreal on every host (results/measured/{csv})",
            generated_by=f"python -m kdreal.cluster_costs {args.source} --csv {args.csv}",
            how=_how(per_host, facts), nic_on_host=all(facts["software_nic"]),
        )  # fmt: skip
        Path(args.profile_out).write_text(text)
        print(f"wrote {args.profile_out}")


if __name__ == "__main__":
    main()
