"""kdreal across machines, launched through a real Dask cluster (one worker process per host), without RDMA.

The roles here use only what needs no verbs device (rendezvous, TCP, clocks, sleeps),
so the launch, the reports, the clock offsets, a host killed mid-run and the clean-up
are checked in the default suite; ``tests/real/test_multihost_real.py`` runs RDMA
datapaths the same way across devices in the testbed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kdlab import ops
from kdlab.hosts import ClusterSpec, HostSpec
from kdlab.program import Role

distributed = pytest.importorskip("distributed")


@contextlib.contextmanager
def two_machines() -> Iterator[tuple[Any, ClusterSpec]]:
    """A scheduler and two worker processes named nodeA and nodeB (the way ``dask worker --name`` names them)."""
    from kdreal.cluster import client_for, close_client

    workers = {name: {"cls": distributed.Nanny, "options": {"nthreads": 4, "host": "127.0.0.1"}}
               for name in ("nodeA", "nodeB")}  # fmt: skip
    scheduler = {"cls": distributed.Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    with distributed.SpecCluster(workers=workers, scheduler=scheduler) as cluster:
        hosts = (HostSpec(name="nodeA", address="127.0.0.1"), HostSpec(name="nodeB", address="127.0.0.1"))
        try:
            yield client_for(cluster.scheduler_address), ClusterSpec(scheduler=cluster.scheduler_address, hosts=hosts)
        finally:
            close_client(cluster.scheduler_address)


@pytest.fixture(scope="module")
def dask_hosts() -> Iterator[tuple[Any, ClusterSpec]]:
    with two_machines() as both:
        yield both


def _engine(cluster: ClusterSpec, **kw: Any) -> Any:
    from kdreal.engine import RealEngine

    return RealEngine(cluster=cluster, timeout_s=20.0, run_timeout_s=60.0, **kw)


def server(n: int) -> Any:
    listener = yield ops.TcpListen("echo")
    conn = yield ops.TcpAccept(listener)
    for _ in range(n):
        _, msg = yield ops.TcpRecv([conn])
        yield ops.TcpSend(conn, msg, 8)
    return {"pid": os.getpid(), "ppid": os.getppid()}


def client(n: int) -> Any:
    conn = yield ops.TcpConnect("echo")
    got = []
    for i in range(n):
        yield ops.TcpSend(conn, i, 8)
        _, reply = yield ops.TcpRecv([conn])
        got.append(reply)
    t = yield ops.Clock()
    return {"got": got, "pid": os.getpid(), "ppid": os.getppid(), "clock": t}


def _worker_pids(client_: Any) -> dict[str, int]:
    info = client_.scheduler_info()["workers"]
    by_addr = client_.run(os.getpid)
    return {info[addr]["name"]: pid for addr, pid in by_addr.items()}


def test_each_host_process_runs_under_its_machines_worker_and_results_come_back(dask_hosts: Any) -> None:
    client_, cluster = dask_hosts
    engine = _engine(cluster)
    out = engine.run([Role("server", "broker0", server, {"n": 5}), Role("client", "producer0", client, {"n": 5})])
    assert out["client"]["got"] == [0, 1, 2, 3, 4]
    workers = _worker_pids(client_)
    # natural order: broker0 -> the first machine, producer0 -> the second, each under that machine's worker
    assert out["server"]["ppid"] == workers["nodeA"] and out["client"]["ppid"] == workers["nodeB"]
    assert out["server"]["pid"] != out["client"]["pid"]
    offsets = engine.clock_offsets
    assert set(offsets) == {"broker0", "producer0", "broker0|producer0"}
    pair = offsets["broker0|producer0"]
    # one machine, one clock: the estimate is within its uncertainty, so no correction was applied
    assert abs(pair["offset_us"]) <= pair["uncertainty_us"]
    assert offsets["broker0"]["applied"] == offsets["producer0"]["applied"] == 0.0


def test_a_placement_puts_hosts_on_the_machines_it_names(dask_hosts: Any) -> None:
    client_, cluster = dask_hosts
    placed = cluster.model_copy(update={"placement": (("broker0", "nodeB"), ("producer0", "nodeB"))})
    out = _engine(placed).run([Role("server", "broker0", server, {"n": 1}), Role("client", "producer0", client,
                                                                              {"n": 1})])  # fmt: skip
    workers = _worker_pids(client_)
    assert out["server"]["ppid"] == out["client"]["ppid"] == workers["nodeB"]


def sleeper() -> Any:
    yield ops.Publish("sleeper-up", os.getpid())
    yield ops.Sleep(3600e9)


def victim() -> Any:
    yield ops.Lookup("sleeper-up")
    print("victim: about to be killed", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    yield ops.Sleep(1e9)


def test_a_host_killed_mid_run_fails_the_run_with_its_log_and_leaves_no_process(dask_hosts: Any) -> None:
    from kdreal.engine import RoleError

    client_, cluster = dask_hosts
    roles = [Role("sleeper", "broker0", sleeper, {}, daemon=False), Role("victim", "producer0", victim, {})]
    with pytest.raises(RoleError) as info:
        _engine(cluster).run(roles)
    err = info.value
    assert err.role == "victim"
    assert "killed by signal 9" in err.detail
    assert "victim: about to be killed" in err.detail  # the end of the killed host's log
    # every host's processes are gone: no worker has a child left
    children = client_.run(lambda: [p.pid for p in __import__("psutil").Process().children(recursive=True)])
    assert all(not pids for pids in children.values()), children


def test_a_host_without_a_worker_is_named(dask_hosts: Any) -> None:
    from kdreal.cluster import ClusterError

    _, cluster = dask_hosts
    missing = cluster.model_copy(update={"hosts": (*cluster.hosts, HostSpec(name="nodeC", address="127.0.0.1"))})
    with pytest.raises(ClusterError, match="no Dask worker named nodeC"):
        _engine(missing).run([Role("server", "broker0", server, {"n": 0})])


def test_a_machine_with_too_few_worker_threads_or_a_loopback_driver_is_refused(dask_hosts: Any) -> None:
    from kdreal.cluster import ClusterError, driver_address

    _, cluster = dask_hosts
    crowded = cluster.model_copy(update={"placement": tuple((f"b{i}", "nodeA") for i in range(5))})
    roles = [Role(f"server{i}", f"b{i}", server, {"n": 0}) for i in range(5)]
    with pytest.raises(ClusterError, match="nodeA runs 5 simulated hosts at once but its worker has 4 threads"):
        _engine(crowded).run(roles)
    remote = cluster.model_copy(update={"hosts": (HostSpec(name="nodeA", address="10.1.2.3"),)})
    with pytest.raises(ClusterError, match=r"reached over loopback, but host nodeA is at 10\.1\.2\.3"):
        driver_address(remote)


def pid_then_sleep() -> Any:
    yield ops.Publish("sleeper-pid", [os.getpid(), os.getppid()])
    yield ops.Sleep(3600e9)


def kill_its_worker(note: str) -> Any:
    sleeper, worker = yield ops.Lookup("sleeper-pid")
    with open(note, "w") as f:  # for the test: which process must be gone
        f.write(str(sleeper))
    os.kill(worker, signal.SIGKILL)  # the machine's Dask worker dies; its host process must not live on
    return worker


def test_a_host_process_dies_with_its_worker_and_the_run_fails_naming_it(tmp_path: Path) -> None:
    import psutil

    from kdreal.engine import RoleError

    note = tmp_path / "sleeper.pid"
    with two_machines() as (_, spec):  # its own: a worker of it is killed
        roles = [Role("sleeper", "b0", pid_then_sleep, {}), Role("killer", "p0", kill_its_worker, {"note": str(note)})]
        with pytest.raises(RoleError) as info:
            _engine(spec).run(roles)
    assert info.value.role == "sleeper" and "its process on nodeA ended" in info.value.detail
    sleeper = int(note.read_text())
    with contextlib.suppress(psutil.NoSuchProcess):  # it died with its worker (a zombie is dead: only a status)
        assert psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE
