"""kdreal across machines: each simulated host's process on its own RDMA machine, launched through Dask.

:func:`run_on_cluster` is :meth:`kdreal.engine.RealEngine.run` for a cluster
(:class:`kdlab.hosts.ClusterSpec`): every machine runs one Dask worker named after it
(``dask worker tcp://SCHEDULER:8786 --name node1``, see ``docs/real-cluster.md``).

* The engine serves the rendezvous on the address this machine reaches the scheduler
  from (:func:`driver_address`), authenticated with the run's token as before. The
  network between the machines is trusted as Dask's own is: its tasks are pickles.
* For each simulated host it submits :func:`kdreal.cluster_host.host_task`, pinned to
  the placed machine's worker. The task forks the host process (the roles' threads, as
  on one machine), which opens the machine's device, binds its sockets to the
  machine's address, and reports each role's outcome over its own rendezvous
  connection, so results and failures reach the engine as they happen. That
  connection closing says the process ended; the task's result brings its exit code
  and the end of its log, which a failed role's error carries.
* When the engine closes the rendezvous (the run is over, or failed) every task ends its
  host process; a host process also dies with its worker. Tasks not yet started are
  cancelled.
* Time: every host process estimates its clock's offset from the engine's (NTP's rule,
  :meth:`kdreal.rendezvous.HostLink.offset`), at its start and again as each of its
  non-daemon roles ends. Where the offset is larger than its own uncertainty the host
  adds it to every ``Clock`` it reads, so a latency measured between two hosts (a
  record's timestamp at its producer, its arrival at a consumer) is on one time base.
  The engine keeps offsets, uncertainties and drifts per host pair in
  :attr:`RealEngine.clock_offsets`, and the kafka workload reports them in its rows.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pickle
import queue
import socket
from collections import Counter
from dataclasses import replace
from typing import Any

from kdlab.hosts import SCHEDULER_ENV, TESTBED_HOSTS_ENV, ClusterSpec, HostsError, make_cluster, spec_fields
from kdlab.program import Role
from kdreal.cluster_host import host_task
from kdreal.engine import RealEngine
from kdreal.outcomes import RoleError, Tally, with_log
from kdreal.rendezvous import LINK_CLOSED, RendezvousServer
from kdreal.wire import new_token

#: A report's role name that says the host's task ended (its outcome is the Dask future's).
_ENDED = "\0ended"
#: Seconds the engine waits for the host tasks to end after it closed the rendezvous.
_STOP_S = 30.0


class ClusterError(RuntimeError):
    """The cluster cannot run this: a host has no Dask worker, or the scheduler is unreachable."""


_clients: dict[str, Any] = {}


def client_for(scheduler: str) -> Any:
    """A Dask client of ``scheduler``, one per process (connecting costs seconds)."""
    client = _clients.get(scheduler)
    if client is None or client.status != "running":
        from distributed import Client

        try:
            client = _clients[scheduler] = Client(scheduler, timeout=15)
        except OSError as err:
            raise ClusterError(f"scheduler: cannot reach the Dask scheduler {scheduler}: {err}") from None
    return client


def close_client(scheduler: str) -> None:
    """Close and forget this process's client of ``scheduler`` (before the scheduler goes away)."""
    client = _clients.pop(scheduler, None)
    if client is not None:
        client.close()


def cluster_from(source: str | None, scheduler: str | None) -> ClusterSpec:
    """The hosts of ``source``: ``testbed`` (the default inside one), a YAML file with ``hosts:`` and
    ``scheduler:`` (a spec works), or, with only ``scheduler``, each of its workers at its own address."""
    if source is None and os.environ.get(TESTBED_HOSTS_ENV):
        source = "testbed"
    if source is None:
        if scheduler is None:
            raise HostsError(f"hosts: give a hosts file (YAML with hosts: and scheduler:), 'testbed' (inside kdlab "
                             f"testbed run --hosts N), or --scheduler tcp://HOST:PORT ({SCHEDULER_ENV})")  # fmt: skip
        workers = client_for(scheduler).scheduler_info()["workers"]
        hosts = [{"name": str(w["name"]), "address": w["host"]} for w in workers.values()]
        found = make_cluster(hosts, scheduler, None, f"workers of {scheduler}")
    else:
        fields = spec_fields(source)
        found = make_cluster(fields["hosts"], scheduler or fields.get("scheduler"), fields.get("placement"), source)
    assert found is not None
    return found


def local_address_towards(address: str) -> str:
    """The address of this machine's interface that routes to ``address`` (nothing is sent)."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))
        return str(s.getsockname()[0])


def check_workers(client: Any, cluster: ClusterSpec, tasks: Counter[str] | None = None) -> None:
    """Every host has a worker of its name, with a thread for each of its ``tasks``; ClusterError naming the others."""
    workers = {w.get("name"): w for w in client.scheduler_info()["workers"].values()}
    missing = [h.name for h in cluster.hosts if h.name not in workers]
    if missing:
        raise ClusterError(
            f"hosts: no Dask worker named {', '.join(missing)} at {cluster.scheduler} (workers: "
            f"{', '.join(sorted(map(str, workers))) or 'none'}); start one per host: dask worker SCHEDULER --name HOST"
        )
    for name, n in (tasks or Counter()).items():
        if workers[name]["nthreads"] < n:
            raise ClusterError(f"hosts: {name} runs {n} simulated hosts at once but its worker has "
                               f"{workers[name]['nthreads']} threads; start it with --nthreads {n + 1}")  # fmt: skip


def driver_address(cluster: ClusterSpec) -> str:
    """Where the hosts reach this machine: its address towards the scheduler (not loopback if a host is remote)."""
    address = local_address_towards(cluster.scheduler)
    remote = [h for h in cluster.hosts if not ipaddress.ip_address(_resolve(h.address)).is_loopback]
    if ipaddress.ip_address(address).is_loopback and remote:
        raise ClusterError(f"scheduler: {cluster.scheduler} is reached over loopback, but host {remote[0].name} is "
                           f"at {remote[0].address}: give the scheduler's address on the hosts' network")  # fmt: skip
    return address


def _resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError:
        return "0.0.0.0"  # a name this machine cannot resolve: not loopback


def run_on_cluster(engine: RealEngine, by_host: dict[str, list[Role]]) -> dict[str, Any]:
    """Run each simulated host's roles on its machine; return each role's return value by name."""
    cluster: ClusterSpec = engine.cluster
    client = client_for(cluster.scheduler)
    placed = cluster.place(list(by_host))
    per_machine = Counter(m.name for m in placed.values())
    check_workers(client, cluster, per_machine)
    token = new_token()
    server = RendezvousServer(sum(len(r) for r in by_host.values()), token, host=driver_address(cluster))
    server.start()
    futures: dict[str, Any] = {}
    ended: dict[str, dict[str, Any]] = {}
    try:
        for sim_host, host_roles in by_host.items():
            m = placed[sim_host]
            options = replace(engine.options, device=m.device, gid_index=m.gid_index, port=m.port, cores=m.cores)
            future = client.submit(
                host_task, sim_host, host_roles, options, server.address, token, per_machine[m.name],
                engine.host_setup, m.address, key=f"kdreal-{sim_host}-{token.hex()[:12]}", workers=[m.name],
                allow_other_workers=False, pure=False, retries=0,
            )  # fmt: skip
            future.add_done_callback(lambda _f, h=sim_host: server.reports.put((h, _ENDED, "", b"")))
            futures[sim_host] = future
        tally = Tally(by_host, engine.run_timeout_s)
        clocks: dict[str, dict[str, tuple[int, ...]]] = {}
        while not tally.complete() and len(ended) < len(by_host):
            try:
                host, name, status, payload = server.reports.get(timeout=tally.time_left())
            except queue.Empty:
                tally.timed_out()
                break
            if name in (_ENDED, LINK_CLOSED):
                if host not in ended:  # the first sign wins: the link closing, or the task ending
                    ended[host] = _task_outcome(futures[host], name == LINK_CLOSED)
                    tally.host_ended(host, f"its process on {placed[host].name} ended ({ended[host]['why']}) "
                                           "without a result")  # fmt: skip
            elif status in ("clock", "clock-end"):
                clocks.setdefault(host, {})[status] = pickle.loads(payload)
            else:
                tally.outcome(host, name, status, pickle.loads(payload))
        engine.clock_offsets = clock_pairs(clocks)
    finally:
        server.close()  # every host task sees it and ends its process
        _wait_ended(client, futures, ended)
    try:
        return tally.result(hosts_left=len(ended) < len(by_host))
    except RoleError as err:
        raise with_log(err, by_host, lambda h: ended.get(h, {}).get("log", "")) from None


def _task_outcome(future: Any, link_closed: bool = False) -> dict[str, Any]:
    """What a finished host task says: exit code and log, or the error that ended it (a lost worker)."""
    try:
        out = dict(future.result(timeout=2))
    except TimeoutError:
        why = "its connection to the rendezvous closed" if link_closed else "its task did not finish"
        return {"why": why, "log": "", "exitcode": None}
    except Exception as err:  # the worker died, or the task raised
        return {"why": f"{type(err).__name__}: {err}", "log": "", "exitcode": None}
    code = out["exitcode"]
    out["why"] = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return out


def _wait_ended(client: Any, futures: dict[str, Any], ended: dict[str, dict[str, Any]]) -> None:
    """Wait for the host tasks still running to end; cancel the rest (a task its lost worker would run again)."""
    from distributed import wait

    running = [f for h, f in futures.items() if h not in ended]  # an ended host's process is gone already
    with contextlib.suppress(Exception):  # TimeoutError: a host did not stop; it is left out of `ended`
        wait(running, timeout=_STOP_S)
    pending = [f for f in futures.values() if not f.done()]
    if pending:
        client.cancel(pending)
    for host, future in futures.items():
        if host not in ended and future.done() and not future.cancelled():
            ended[host] = _task_outcome(future)


def clock_pairs(clocks: dict[str, dict[str, tuple[int, ...]]]) -> dict[str, dict[str, float]]:
    """Per host, and per pair of hosts ``a|b``: offset (b's clock minus a's), uncertainty, drift, and if applied.

    A host's drift is its offset at the end of its last role less the offset at its start;
    a pair's is the difference of the two (how far their clocks moved apart during the run).
    """
    out: dict[str, dict[str, float]] = {}
    base = {h: c["clock"] for h, c in clocks.items() if "clock" in c}
    drift = {h: (clocks[h]["clock-end"][0] - base[h][0]) if "clock-end" in clocks[h] else 0 for h in base}
    for h, (off, unc, applied) in sorted(base.items()):
        out[h] = {"offset_us": off / 1e3, "uncertainty_us": unc / 1e3, "drift_us": drift[h] / 1e3,
                  "applied": float(applied != 0)}  # fmt: skip
    names = sorted(base)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (oa, ua, _), (ob, ub, _) = base[a], base[b]
            out[f"{a}|{b}"] = {"offset_us": (oa - ob) / 1e3, "uncertainty_us": (ua + ub) / 1e3,
                               "drift_us": (drift[a] - drift[b]) / 1e3}  # fmt: skip
    return out
