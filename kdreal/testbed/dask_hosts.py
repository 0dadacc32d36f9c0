"""The testbed's Dask cluster: a scheduler in the main namespace, one worker per host namespace.

Run inside the guest by ``kdlab testbed run --hosts N``, after :mod:`kdreal.testbed.hosts`
built the layout::

    python -m kdreal.testbed.dask_hosts HOSTS_FILE READY_FILE

It imports ``distributed`` once and forks one process per host, which enters the
host's namespace (:func:`kdreal.linux.enter_netns`) before it opens any socket or
thread and then runs a worker named after the host, listening on the host's TCP
address. The parent runs the scheduler on ``10.98.0.254:8786`` and touches
``READY_FILE`` once every worker has joined. SIGTERM stops all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from kdreal.linux import enter_netns
from kdreal.testbed.hosts import SCHEDULER_IP, SCHEDULER_PORT, netns

#: Threads per worker: one per host process a run places there, plus checks.
WORKER_THREADS = 8


async def _worker(host: dict[str, Any]) -> None:
    from distributed import Worker

    async with Worker(
        f"tcp://{SCHEDULER_IP}:{SCHEDULER_PORT}", name=host["name"], host=host["address"], nthreads=WORKER_THREADS,
        memory_limit=0, dashboard=False, death_timeout=120,
    ) as worker:  # fmt: skip
        await worker.finished()


async def _scheduler(n: int, ready: Path) -> None:
    from distributed import Scheduler

    async with Scheduler(host=SCHEDULER_IP, port=SCHEDULER_PORT, dashboard=False) as scheduler:
        while len(scheduler.workers) < n:
            await asyncio.sleep(0.1)
        ready.write_text(json.dumps(sorted(w.name for w in scheduler.workers.values())) + "\n")
        await scheduler.finished()


def main(argv: list[str]) -> int:
    hosts = json.loads(Path(argv[0]).read_text())
    ready = Path(argv[1])
    sys.path.insert(0, os.getcwd())  # tasks pickled by reference to the caller's modules (tests, notebooks)
    import distributed  # noqa: F401 - once, before the fork: the workers share the import

    children = []
    for host in hosts:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                enter_netns(netns(host["name"]))
                asyncio.run(_worker(host))
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children.append(pid)

    def stop(signum: int, frame: Any) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    asyncio.run(_scheduler(len(hosts), ready))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
