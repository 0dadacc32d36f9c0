"""kdreal across machines, on a machine: the Dask task that runs one simulated host's process there.

:func:`host_task` runs on the worker the placement chose (:mod:`kdreal.cluster`). It forks
the host process with ``os.fork`` (a worker under a nanny, ``dask worker``'s default, is a
daemonic ``multiprocessing`` process, which ``multiprocessing`` does not let have children);
the kernel kills that process if the worker dies (``PR_SET_PDEATHSIG``). The task then
watches two things: the process ending, and its own watcher connection to the rendezvous
ending (the engine closed it: the run is over, failed, or the engine is gone). In the
second case it ends the process (SIGTERM, then SIGKILL). It returns the exit code and
the end of the host's log.

The host process connects its host link first, estimates its clock's offset from the
engine's and applies it where it exceeds its uncertainty (:mod:`kdreal.cluster`), runs
the roles as on one machine (:func:`kdreal.engine.host_main`) and reports each outcome
over the link. Before a non-daemon role's outcome it measures the offset again, so the
engine knows how far the clocks drifted during the run.
"""

from __future__ import annotations

import multiprocessing.connection as mpc
import os
import pickle
import shutil
import signal
import sys
import tempfile
import traceback
from typing import Any

from kdlab.program import Role
from kdreal.engine import RealOptions, host_main
from kdreal.host_link import HostLink
from kdreal.linux import die_with_parent
from kdreal.wire import WireError

#: How much of a host's log a failure carries back.
LOG_TAIL = 64_000


def host_task(
    sim_host: str, roles: list[Role], options: RealOptions, rendezvous: tuple[str, int], token: bytes,
    processes: int, setup: Any, bind: str,
) -> dict[str, Any]:  # fmt: skip
    """Run one host process on this worker's machine until it ends or the run does; its exit code and log."""
    data_dir = tempfile.mkdtemp(prefix=f"kdreal-{sim_host}-")
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the host process
        code = 1
        try:
            die_with_parent(parent)
            for sig in (signal.SIGTERM, signal.SIGINT):  # not the worker's handlers: they need its event loop
                signal.signal(sig, signal.SIG_DFL)
            _host_process(sim_host, roles, options, rendezvous, token, processes, setup, bind, data_dir)
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
        try:
            watch = HostLink(rendezvous, sim_host, token, watch=True)
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
                log = f.read()[-LOG_TAIL:]
        except OSError:
            log = ""
        return {"exitcode": exitcode, "log": log}
    finally:
        if pidfd is None:  # the process could not be watched: it must not outlive this task
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        else:
            os.close(pidfd)
        shutil.rmtree(data_dir, ignore_errors=True)


def _host_process(
    sim_host: str, roles: list[Role], options: RealOptions, rendezvous: tuple[str, int], token: bytes,
    processes: int, setup: Any, bind: str, data_dir: str,
) -> None:  # fmt: skip
    """The host process: clock offset, the roles (as on one machine), each outcome reported over the link."""
    link = HostLink(rendezvous, sim_host, token)
    offset, uncertainty = link.offset()
    applied = offset if abs(offset) > uncertainty else 0  # a correction within its own error is noise
    link.report(f"{sim_host}.clock", "clock", pickle.dumps((offset, uncertainty, applied)))
    daemons = {r.name for r in roles if r.daemon}

    def report(name: str, outcome: tuple[str, Any]) -> None:
        status, payload = outcome
        try:
            if status == "ok" and name not in daemons:  # how far the clocks drifted since the start
                link.report(f"{sim_host}.clock", "clock-end", pickle.dumps(link.offset(samples=8)))
            data = pickle.dumps(payload)
        except Exception:  # the return value does not pickle
            status, data = "error", pickle.dumps(traceback.format_exc())
        try:
            link.report(name, status, data)
        except WireError as err:  # too large for a frame: say so instead
            link.report(name, "error", pickle.dumps(f"its result could not be sent to the engine: {err}"))
        except OSError as err:  # the run is over: nobody is listening
            print(f"kdreal: {name}'s outcome was not reported: {err}", file=sys.stderr)

    host_main(sim_host, roles, options, rendezvous, token, report, data_dir, processes, setup, applied, bind)
    link.close()
