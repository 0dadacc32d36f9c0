"""kdreal across hosts in the testbed: every broker and client on its own host, device and Dask worker.

Run inside ``kdlab testbed run --hosts 7`` (CI does: ``scripts/test.sh``)::

    python -m kdreal.testbed run --hosts 7 python -m pytest -m multihost tests/real

Each testbed host has its own network namespace, TCP address and rxe device, joined by
a bridge with policy routing so that RDMA between two hosts leaves one device and
arrives at the other (:mod:`kdreal.testbed.hosts`). The checks: the Kafka acceptance
run of ``test_kafka_real`` for every system, with its broker-side spies installed in
each host process; RDMA bytes counted by the devices themselves; a host killed mid-run.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import pytest

from kdlab.datapaths.perftest import PerftestConfig
from kdlab.datapaths.perftest import roles as perftest_roles
from kdlab.hosts import TESTBED_HOSTS_ENV, ClusterSpec, make_cluster
from kdlab.kafka.cluster import build
from kdlab.kafka.params import KafkaParams
from kdlab.program import Role
from tests.real.test_kafka_real import CLUSTER, SYSTEMS, check_acceptance_run, install_spies

pytestmark = [
    pytest.mark.multihost,
    pytest.mark.skipif(not os.environ.get(TESTBED_HOSTS_ENV), reason="run inside kdlab testbed run --hosts 7"),
]


@pytest.fixture(scope="module")
def cluster() -> ClusterSpec:
    spec = make_cluster("testbed", None, None, "test")
    assert spec is not None
    return spec


def _engine(cluster: ClusterSpec, **kw: Any) -> Any:
    from kdreal.engine import RealEngine

    return RealEngine(cluster=cluster, timeout_s=60.0, run_timeout_s=300.0, **kw)


def _netdev(device: str) -> str:
    return Path(f"/sys/class/infiniband/{device}/ports/1/gid_attrs/ndevs/1").read_text().strip()


def counters(device: str) -> dict[str, int]:
    """The device's own packet counters and its netdev's byte counters."""
    hw = Path(f"/sys/class/infiniband/{device}/ports/1/hw_counters")
    stats = Path(f"/sys/class/net/{_netdev(device)}/statistics") if device != "rxe0" else None
    out = {k: int((hw / k).read_text()) for k in ("sent_pkts", "rcvd_pkts")}
    if stats is not None:
        out.update({k: int((stats / k).read_text()) for k in ("tx_bytes", "rx_bytes")})
    return out


def _grown(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {d: {k: after[d][k] - before[d][k] for k in after[d]} for d in after}


@pytest.mark.parametrize("system", SYSTEMS, ids=lambda s: "-".join(s.values()))
def test_kafka_acceptance_with_every_broker_and_client_on_its_own_host(
    cluster: ClusterSpec, system: dict, tmp_path: Path
) -> None:
    p = KafkaParams(**system, **CLUSTER)
    roles = build(p)
    placed = cluster.place(sorted({r.host for r in roles}))
    assert len(placed) == 7 and len({m.name for m in placed.values()}) == 7  # 3 brokers, 2 producers, 2 consumers
    devices = [m.device for m in placed.values()]
    before = {d: counters(d) for d in [*devices, "rxe0"]}
    engine = _engine(cluster, host_setup=functools.partial(install_spies, setattr, p, tmp_path))
    out = engine.run(roles)
    check_acceptance_run(out, p, tmp_path)
    grown = _grown(before, {d: counters(d) for d in before})
    assert grown["rxe0"] == {"sent_pkts": 0, "rcvd_pkts": 0}  # nothing took the loopback device
    # KafkaDirect moves all three datapaths over RDMA: every host's device sent and received. OSU's clients
    # produce and fetch over RDMA (its replication is Kafka's, over TCP: a broker that leads no partition is idle).
    users = devices if p.system == "kafkadirect" else [m.device for h, m in placed.items() if h[0] in "pc"]
    if p.system != "kafka":
        assert all(grown[d]["sent_pkts"] > 0 and grown[d]["rcvd_pkts"] > 0 for d in users), grown
    pairs = [k for k in engine.clock_offsets if "|" in k]
    assert len(pairs) == 7 * 6 // 2  # an offset estimate for every pair of hosts


def test_rdma_bytes_cross_between_devices_as_the_devices_count_them(cluster: ClusterSpec) -> None:
    cfg = PerftestConfig(test="write_bw", size=65536, iterations=200)
    a, b = cluster.hosts[0], cluster.hosts[1]
    placed = cluster.model_copy(update={"placement": (("a", a.name), ("b", b.name))})
    before = {d: counters(d) for d in (a.device, b.device, "rxe0")}
    out = _engine(placed).run(perftest_roles(cfg))
    grown = _grown(before, {d: counters(d) for d in before})
    payload = cfg.size * cfg.iterations
    # the client on host a WRITEs into host b: a's netdev sends the payload, b's receives it, in MTU-sized packets
    assert grown[a.device]["tx_bytes"] >= payload and grown[b.device]["rx_bytes"] >= payload
    assert grown[a.device]["sent_pkts"] >= payload // 4096 and grown[b.device]["rcvd_pkts"] >= payload // 4096
    assert grown["rxe0"] == {"sent_pkts": 0, "rcvd_pkts": 0}
    assert out["client"] is not None


def test_two_simulated_hosts_placed_on_one_machine_share_its_device(cluster: ClusterSpec) -> None:
    """Fewer machines than simulated hosts: two processes on one machine connect QPs on its one device."""
    h = cluster.hosts[2]
    placed = cluster.model_copy(update={"placement": (("a", h.name), ("b", h.name))})
    before = counters(h.device)
    out = _engine(placed).run(perftest_roles(PerftestConfig(test="write_lat", size=64, iterations=100)))
    assert out["client"] is not None
    assert counters(h.device)["sent_pkts"] > before["sent_pkts"]  # its own device carried it


def test_a_host_killed_mid_run_fails_the_run_with_its_log_and_leaves_no_process(cluster: ClusterSpec) -> None:
    from kdreal.cluster import client_for
    from kdreal.engine import RoleError
    from tests.test_cluster_launch import sleeper, victim

    roles = [Role("sleeper", "broker0", sleeper, {}), Role("victim", "producer0", victim, {})]
    with pytest.raises(RoleError) as info:
        _engine(cluster).run(roles)
    assert info.value.role == "victim" and "killed by signal 9" in info.value.detail
    assert "victim: about to be killed" in info.value.detail
    client = client_for(cluster.scheduler)
    children = client.run(lambda: [p.pid for p in __import__("psutil").Process().children(recursive=True)])
    assert len(children) == len(cluster.hosts) and all(not pids for pids in children.values()), children


def test_cluster_check_reports_every_host_and_every_pair(cluster: ClusterSpec) -> None:
    from click.testing import CliRunner

    from kdlab.cli import main

    out = CliRunner().invoke(main, ["cluster", "check", "testbed", "--iters", "100"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    n = len(cluster.hosts)
    names = {h.name for h in cluster.hosts}
    hosts = [line for line in lines if line.split()[:1] and line.split()[0] in names]
    assert len(hosts) == n + n * (n - 1) // 2  # a line per host, then one per pair
    for h in cluster.hosts:
        assert any(line.split()[:3] == [h.name, h.device, "ACTIVE"] for line in hosts), h.name
    pairs = [line.split() for line in hosts if line.split()[2] == "write_lat"]
    assert {(p[0], p[1]) for p in pairs} == {(a.name, b.name) for i, a in enumerate(cluster.hosts)
                                             for b in cluster.hosts[i + 1 :]}  # fmt: skip
    assert all(float(p[4]) > 0 for p in pairs)  # a typical latency measured for each
    assert lines[-1] == "no problems"
    print(out.output)  # the report, for the log
