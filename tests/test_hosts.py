"""A spec's hosts, placement and scheduler; the testbed's multi-host layout; the rendezvous's host connections."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from kdlab.hosts import SCHEDULER_ENV, TESTBED_HOSTS_ENV, natural_order
from kdlab.spec import SpecError, expand, load_spec
from kdreal.host_link import HostLink
from kdreal.rendezvous import RendezvousClient, RendezvousDeadlock, RendezvousServer
from kdreal.testbed import hosts as layout
from kdreal.testbed import vm

BASE = {"name": "x", "workload": "perftest", "engine": "real", "params": {"test": "write_lat"}}
HOSTS = [{"name": "n1", "address": "10.0.0.1", "device": "mlx5_0", "gid_index": 3, "cores": 16},
         {"name": "n2", "address": "10.0.0.2"}]  # fmt: skip


def _spec(**extra: object) -> dict:
    return {**BASE, "scheduler": "tcp://10.0.0.9:8786", "hosts": HOSTS, **extra}


def test_default_placement_fills_machines_in_natural_order_like_the_simulation() -> None:
    cluster = expand(load_spec(_spec()))[0].cluster
    assert cluster is not None
    sim_hosts = ["producer0", "broker10", "consumer0", "broker2", "broker0"]
    placed = {h: m.name for h, m in cluster.place(sim_hosts).items()}
    # broker0, broker2, broker10, consumer0, producer0 take n1, n2, n1, n2, n1 in turn
    assert placed == {"broker0": "n1", "broker2": "n2", "broker10": "n1", "consumer0": "n2", "producer0": "n1"}
    assert natural_order(["b10", "b2", "a"]) == ["a", "b2", "b10"]


def test_a_placement_pins_hosts_and_the_rest_fill_in_turn() -> None:
    cluster = expand(load_spec(_spec(placement={"broker0": "n2"})))[0].cluster
    placed = {h: m.name for h, m in cluster.place(["broker0", "broker1", "producer0"]).items()}
    assert placed == {"broker0": "n2", "broker1": "n1", "producer0": "n2"}


def test_the_cluster_is_part_of_a_real_points_config_and_absent_otherwise() -> None:
    point = expand(load_spec(_spec()))[0]
    assert point.config()["cluster"]["hosts"][0] == HOSTS[0] | {"port": 1}
    plain = expand(load_spec(BASE))[0]
    assert "cluster" not in plain.config() and plain.cluster is None  # cache keys of earlier runs are unchanged
    sim = expand(load_spec(_spec(engine="sim")))[0]
    assert sim.cluster is None  # the simulation has its own hosts


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"hosts": [{"name": "n1"}]}, "hosts.0.address: Field required"),
        ({"hosts": [{"name": "n1", "address": "a", "port": 0}]}, "hosts.0.port: Input should be greater than or"),
        ({"hosts": [{"name": "n1", "address": "a", "speed": 1}]}, "hosts.0.speed: Extra inputs are not permitted"),
        ({"hosts": [*HOSTS, HOSTS[0]]}, "hosts: names must be unique"),
        ({"hosts": []}, "hosts: a list of at least one host"),
        ({"scheduler": None}, "scheduler: needed with hosts"),
        ({"scheduler": "10.0.0.9"}, "scheduler: String should match pattern"),
        ({"placement": {"broker0": "n9"}}, "placement.broker0: 'n9' is not a host; hosts: n1, n2"),
    ],
)  # fmt: skip
def test_bad_hosts_are_refused_in_one_line_naming_the_field(extra: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        load_spec(_spec(**extra))
    assert "\n" not in str(info.value)


def test_hosts_testbed_reads_the_testbed_and_says_where_to_run_outside_it(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.delenv(TESTBED_HOSTS_ENV, raising=False)
    with pytest.raises(SpecError, match=r"run inside `kdlab testbed run --hosts N"):
        load_spec({**BASE, "hosts": "testbed"})
    load_spec({**BASE, "engine": "sim", "hosts": "testbed"})  # a simulated run does not need the testbed
    path = tmp_path / "hosts.json"
    path.write_text(json.dumps(layout.host_table(3)))
    monkeypatch.setenv(TESTBED_HOSTS_ENV, str(path))
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://10.98.0.254:8786")
    cluster = expand(load_spec({**BASE, "hosts": "testbed"}))[0].cluster
    assert [h.device for h in cluster.hosts] == ["rxhost0", "rxhost1", "rxhost2"]
    assert cluster.scheduler == "tcp://10.98.0.254:8786"


def test_testbed_layout_gives_each_host_a_namespace_an_address_and_a_device() -> None:
    script = layout.layout_script(3)
    for i in range(3):
        assert f"ip netns add kdhost{i}" in script
        assert f"rdma link add rxhost{i} type rxe netdev kdr{i}" in script
        # traffic from a host's RDMA address leaves its own veth; what arrives on a veth is delivered locally
        assert f"ip rule add pref 20 from 10.99.0.{i + 1} lookup {100 + i}" in script
        assert f"ip rule add pref 10 iif kdr{i} lookup local" in script
        # ...and a host's packets to itself (QPs of two roles on one device) stay local
        assert f"ip rule add pref 15 from 10.99.0.{i + 1} to 10.99.0.{i + 1} lookup local" in script
    assert script.count("nud permanent") == 3 * 2  # every host knows every other's MAC
    with pytest.raises(ValueError, match="--hosts must be between 1 and 16"):
        layout.layout_script(0)


def test_guest_script_with_hosts_starts_the_dask_cluster_and_exports_where_it_is() -> None:
    script = vm.guest_script(["pytest"], Path("/w"), {}, hosts=2, python="/venv/bin/python")
    assert "/venv/bin/python -m kdreal.testbed.dask_hosts /run/kdlab-hosts.json" in script
    assert "export KDLAB_DASK_SCHEDULER=tcp://10.98.0.254:8786" in script
    assert script.index("kdreal.testbed.dask_hosts") < script.index("\npytest\n") < script.index("kill $KD_DASK")
    assert "dask" not in vm.guest_script(["pytest"], Path("/w"), {})


def test_host_connections_report_outcomes_read_the_clock_and_never_count_as_roles() -> None:
    server = RendezvousServer(roles=1)
    server.start()
    link = HostLink(server.address, "h1", server.token)
    role = RendezvousClient(server.address, "r1", server.token)
    try:
        link.report("r1", "ok", pickle.dumps({"n": 1}))
        assert server.reports.get(timeout=5) == ("h1", "r1", "ok", pickle.dumps({"n": 1}))
        offset, uncertainty = link.offset(samples=8)
        assert abs(offset) <= uncertainty  # one process, one clock
        # the one role waits for a key nobody publishes: a deadlock, although a host connection is open
        with pytest.raises(RendezvousDeadlock):
            role.lookup("never")
        role.close()
        server.close()
        assert link.socket.recv(1) == b""  # closing the rendezvous ends every host connection
    finally:
        role.close()
        link.close()
        server.close()


def test_a_second_link_for_one_host_is_refused_and_a_closed_link_says_the_host_ended() -> None:
    from kdreal.rendezvous import LINK_CLOSED

    server = RendezvousServer(roles=1)
    server.start()
    link = HostLink(server.address, "h1", server.token)
    try:
        with pytest.raises(RuntimeError, match="host h1 is already connected"):
            HostLink(server.address, "h1", server.token)  # the same host's task run a second time
        link.report("r1", "ok", b"x")
        link.close()
        assert server.reports.get(timeout=5)[:2] == ("h1", "r1")
        assert server.reports.get(timeout=5)[:2] == ("h1", LINK_CLOSED)  # after every report it sent
    finally:
        link.close()
        server.close()


def test_clock_pairs_give_each_pairs_offset_uncertainty_and_drift() -> None:
    from kdreal.cluster import clock_pairs

    clocks = {"a": {"clock": (5_000, 100, 5_000), "clock-end": (5_600, 50)}, "b": {"clock": (-2_000, 300, 0)}}
    out = clock_pairs(clocks)
    assert out["a"] == {"offset_us": 5.0, "uncertainty_us": 0.1, "drift_us": 0.6, "applied": 1.0}
    assert out["b"]["drift_us"] == 0.0 and out["b"]["applied"] == 0.0
    assert out["a|b"] == {"offset_us": 7.0, "uncertainty_us": 0.4, "drift_us": 0.6}  # b's clock minus a's is 7 us


def test_an_idle_poll_waits_on_the_corrected_clock() -> None:
    """A host whose clock was moved onto the engine's (offset 2 s) polls when due, not 2 s later."""
    import time

    from kdlab import ops
    from kdreal.engine import HANDLERS, Executor

    ex = Executor(None, None, None, None, "", None, clock_offset_ns=2_000_000_000)  # type: ignore[arg-type]
    due = HANDLERS[ops.Clock](ex, ops.Clock()) + 1_000_000
    t0 = time.perf_counter()
    HANDLERS[ops.IdlePoll](ex, ops.IdlePoll(reads=[], first_ns=due, interval_ns=1, until_ns=due + 10**9))
    assert time.perf_counter() - t0 < 0.5


def test_cluster_check_names_each_problem_in_one_line() -> None:
    from kdreal.cluster_check import _host_problems

    good = {"host": "n1", "problems": [], "port_state": "ACTIVE", "gid": "::ffff:10.0.0.1", "gid_index": 3,
            "active_mtu": 4096, "netdev_mtu": 9000, "offset_us": 3.6e9, "uncertainty_us": 20.0,
            "wall_offset_us": 150.0, "wall_uncertainty_us": 20.0}  # fmt: skip
    assert _host_problems(good) == []  # a monotonic offset of an hour is two boot times, not a problem
    bad = {**good, "port_state": "DOWN", "gid": "fe80::1", "gid_index": 0, "netdev_mtu": 1500,
           "wall_offset_us": 5000.0}  # fmt: skip
    problems = _host_problems(bad)
    assert problems == [
        "n1: port is DOWN, not ACTIVE",
        "n1: GID fe80::1 (index 0) is not RoCE v2 over IPv4; set gid_index",
        "n1: netdev MTU 1500 is below the RDMA MTU 4096",
        "n1: its wall clock is +5000 us off this machine's (kdreal corrects for it; tools that compare timestamps do "
        "not): synchronise clocks (chrony, PTP)",
    ]
