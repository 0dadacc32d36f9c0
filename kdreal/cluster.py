"""kdreal across machines: each simulated host's process on its own RDMA machine, launched through Dask.

:func:`run_on_cluster` is :meth:`kdreal.engine.RealEngine.run` for a cluster
(:class:`kdlab.hosts.ClusterSpec`): every machine runs one Dask worker named after it
(``dask worker tcp://SCHEDULER:8786 --name node1``, see ``docs/real-cluster.md``).

* The engine serves the rendezvous on the address this machine reaches the scheduler
  from (every host reaches it), authenticated with the run's token as before.
* For each simulated host it submits :func:`host_task`, pinned to the placed machine's
  worker. The task forks the host process (the roles' threads, as on one machine),
  which opens the machine's device, binds its sockets to the machine's address, and
  reports each role's outcome over its own rendezvous connection, so results and
  failures reach the engine as they happen.
* The task also watches the rendezvous: when the engine closes it (the run is over,
  failed, or the engine died) the task ends its host process. It returns the host's
  exit code and the end of its log; a failed role's error carries its host's log.
* Time: every host process estimates its clock's offset from the engine's (NTP's rule,
  :meth:`kdreal.rendezvous.HostLink.offset`). Where the offset is larger than its own
  uncertainty the host adds it to every ``Clock`` it reads, so a latency measured
  between two hosts (a record's timestamp at its producer, its arrival at a consumer)
  is on one time base. The engine keeps the offsets per host pair in
  :attr:`RealEngine.clock_offsets`, and the kafka workload reports them in its rows.
"""

from __future__ import annotations

import contextlib
import multiprocessing.connection as mpc
import os
import pickle
import queue
import shutil
import signal
import socket
import tempfile
import traceback
from collections import Counter
from dataclasses import replace
from typing import Any

from kdlab.hosts import SCHEDULER_ENV, TESTBED_HOSTS_ENV, ClusterSpec, HostsError, make_cluster, spec_fields
from kdlab.program import Role
from kdreal.engine import RealEngine, RealOptions, RoleError, Tally, host_main, with_log
from kdreal.rendezvous import HostLink, RendezvousServer
from kdreal.wire import new_token

#: A report's role name that says the host's task ended (its outcome is the Dask future's).
_ENDED = "\0ended"
#: Seconds the engine waits for the host tasks to end after it closed the rendezvous.
_STOP_S = 30.0
#: How much of a host's log a failure carries back.
_LOG_TAIL = 64_000


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
        found = make_cluster(fields["hosts"], scheduler or fields["scheduler"], fields["placement"], source)
    assert found is not None
    return found


def local_address_towards(address: str) -> str:
    """The address of this machine's interface that routes to ``address`` (nothing is sent)."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))
        return str(s.getsockname()[0])


def check_workers(client: Any, cluster: ClusterSpec) -> None:
    """Every host of the cluster has a worker of its name; ClusterError naming the missing ones."""
    names = {w.get("name") for w in client.scheduler_info()["workers"].values()}
    missing = [h.name for h in cluster.hosts if h.name not in names]
    if missing:
        raise ClusterError(
            f"hosts: no Dask worker named {', '.join(missing)} at {cluster.scheduler} (workers: "
            f"{', '.join(sorted(map(str, names))) or 'none'}); start one per host: dask worker SCHEDULER --name HOST"
        )


def run_on_cluster(engine: RealEngine, by_host: dict[str, list[Role]]) -> dict[str, Any]:
    """Run each simulated host's roles on its machine; return each role's return value by name."""
    cluster: ClusterSpec = engine.cluster
    client = client_for(cluster.scheduler)
    check_workers(client, cluster)
    placed = cluster.place(list(by_host))
    per_machine = Counter(m.name for m in placed.values())
    token = new_token()
    roles = sum(len(r) for r in by_host.values())
    server = RendezvousServer(roles, token, host="0.0.0.0")  # every host must reach it; connections prove the token
    address = (local_address_towards(cluster.scheduler), server.address[1])
    server.start()
    futures = {}
    ended: dict[str, dict[str, Any]] = {}
    try:
        for sim_host, host_roles in by_host.items():
            m = placed[sim_host]
            options = replace(engine.options, device=m.device, gid_index=m.gid_index, port=m.port, cores=m.cores)
            future = client.submit(
                host_task, sim_host, host_roles, options, address, token, per_machine[m.name], engine.host_setup,
                m.address, key=f"kdreal-{sim_host}-{token.hex()[:12]}", workers=[m.name], allow_other_workers=False,
                pure=False, retries=0,
            )  # fmt: skip
            future.add_done_callback(lambda _f, h=sim_host: server.reports.put((h, _ENDED, "", b"")))
            futures[sim_host] = future
        tally = Tally(by_host, engine.run_timeout_s)
        clocks: dict[str, tuple[int, int, int]] = {}
        while not tally.complete() and len(ended) < len(by_host):
            try:
                host, name, status, payload = server.reports.get(timeout=tally.time_left())
            except queue.Empty:
                tally.timed_out()
                break
            if name == _ENDED:
                ended[host] = _task_outcome(futures[host])
                tally.host_ended(host, f"its process on {placed[host].name} ended ({ended[host]['why']}) without a "
                                       "result")  # fmt: skip
            elif status == "clock":
                clocks[host] = pickle.loads(payload)
            else:
                tally.outcome(host, name, status, pickle.loads(payload))
        engine.clock_offsets = clock_pairs(clocks)
    finally:
        server.close()  # every host task sees it and ends its process
        _wait_ended(futures, ended)
    try:
        return tally.result(hosts_left=len(ended) < len(by_host))
    except RoleError as err:
        raise with_log(err, by_host, lambda h: ended.get(h, {}).get("log", "")) from None


def _task_outcome(future: Any) -> dict[str, Any]:
    """What a finished host task says: exit code and log, or the error that ended it (a lost worker)."""
    try:
        out = dict(future.result(timeout=5))
    except Exception as err:  # the worker died, or the task raised
        return {"why": f"{type(err).__name__}: {err}", "log": "", "exitcode": None}
    code = out["exitcode"]
    out["why"] = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    return out


def _wait_ended(futures: dict[str, Any], ended: dict[str, dict[str, Any]]) -> None:
    from distributed import wait

    with contextlib.suppress(Exception):  # TimeoutError: a host did not stop; it is left out of `ended`
        wait(list(futures.values()), timeout=_STOP_S)
    for host, future in futures.items():
        if host not in ended and future.done():
            ended[host] = _task_outcome(future)


def clock_pairs(clocks: dict[str, tuple[int, int, int]]) -> dict[str, dict[str, float]]:
    """Per host, and per pair of hosts ``a|b``: offset (b's clock minus a's), its uncertainty, and if applied."""
    out: dict[str, dict[str, float]] = {}
    for h, (off, unc, applied) in sorted(clocks.items()):
        out[h] = {"offset_us": off / 1e3, "uncertainty_us": unc / 1e3, "applied": float(applied != 0)}
    names = sorted(clocks)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (oa, ua, _), (ob, ub, _) = clocks[a], clocks[b]
            out[f"{a}|{b}"] = {"offset_us": (oa - ob) / 1e3, "uncertainty_us": (ua + ub) / 1e3}
    return out


# --- on a worker --------------------------------------------------------------------------


def host_task(
    sim_host: str, roles: list[Role], options: RealOptions, rendezvous: tuple[str, int], token: bytes,
    processes: int, setup: Any, bind: str,
) -> dict[str, Any]:  # fmt: skip
    """Run one host process on this worker's machine until it ends or the run does; its exit code and log.

    The process is forked with ``os.fork``: a worker under a nanny (``dask worker``'s
    default) is a daemonic ``multiprocessing`` process, which ``multiprocessing`` does
    not let have children.
    """
    data_dir = tempfile.mkdtemp(prefix=f"kdreal-{sim_host}-")
    pid = os.fork()
    if pid == 0:  # the host process
        code = 1
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):  # not the worker's handlers: they need its event loop
                signal.signal(sig, signal.SIG_DFL)
            _remote_host_main(sim_host, roles, options, rendezvous, token, processes, setup, bind, data_dir)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    pidfd = os.pidfd_open(pid)
    try:
        try:
            watch = HostLink(rendezvous, f"{sim_host}.watch", token)
            mpc.wait([pidfd, watch.socket])  # the host ends, or the engine closes the rendezvous
            watch.close()
        except OSError:
            pass  # the rendezvous is gone already: the run is over
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if mpc.wait([pidfd], 0):
                break
            os.kill(pid, sig)
            mpc.wait([pidfd], 5)
        exitcode = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        try:
            with open(os.path.join(data_dir, f"{sim_host}.log")) as f:
                log = f.read()[-_LOG_TAIL:]
        except OSError:
            log = ""
        return {"exitcode": exitcode, "log": log}
    finally:
        os.close(pidfd)
        shutil.rmtree(data_dir, ignore_errors=True)


def _remote_host_main(
    sim_host: str, roles: list[Role], options: RealOptions, rendezvous: tuple[str, int], token: bytes,
    processes: int, setup: Any, bind: str, data_dir: str,
) -> None:  # fmt: skip
    """The host process on a machine: measure the clock offset, run the roles, report over the rendezvous."""
    link = HostLink(rendezvous, sim_host, token)
    offset, uncertainty = link.offset()
    applied = offset if abs(offset) > uncertainty else 0  # a correction within its own error is noise
    link.report(f"{sim_host}.clock", "clock", pickle.dumps((offset, uncertainty, applied)))

    def report(name: str, outcome: tuple[str, Any]) -> None:
        status, payload = outcome
        try:
            data = pickle.dumps(payload)
        except Exception:  # the return value does not pickle
            status, data = "error", pickle.dumps(traceback.format_exc())
        link.report(name, status, data)

    host_main(sim_host, roles, options, rendezvous, token, report, data_dir, processes, setup, applied, bind)
    link.close()
