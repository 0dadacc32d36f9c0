"""``kdlab cluster check``: is a real RDMA cluster (or the testbed's hosts) ready for measured runs?"""

from __future__ import annotations

import sys

import click

from kdlab.hosts import SCHEDULER_ENV, TESTBED_HOSTS_ENV, ClusterSpec, HostsError, make_cluster
from kdlab.spec import read_yaml


@click.group("cluster")
def cluster() -> None:
    """Real RDMA clusters: one Dask worker per machine, named after it (docs/real-cluster.md)."""


def _cluster_from(source: str | None, scheduler: str | None) -> ClusterSpec:
    """The hosts of SOURCE: 'testbed', a YAML file with hosts (a spec or a hosts file), or a scheduler's workers."""
    import os

    if source is None:
        source = "testbed" if os.environ.get(TESTBED_HOSTS_ENV) else None
    if source is None and scheduler is None:
        raise HostsError(f"cluster check: give a hosts file (YAML with hosts: and scheduler:), 'testbed' (inside "
                         f"kdlab testbed run --hosts N), or --scheduler tcp://HOST:PORT ({SCHEDULER_ENV})")  # fmt: skip
    if source == "testbed":
        found = make_cluster("testbed", scheduler, None, "testbed")
    elif source is not None:
        doc, origin = read_yaml(source, "hosts", HostsError)
        if not isinstance(doc, dict) or "hosts" not in doc:
            raise HostsError(f"{origin}: a mapping with hosts: (and scheduler:), as in a spec")
        found = make_cluster(doc["hosts"], scheduler or doc.get("scheduler"), doc.get("placement"), origin)
    else:
        from kdreal.cluster import client_for  # every worker is a host, at its own address, first device

        workers = client_for(str(scheduler)).scheduler_info()["workers"]
        hosts = [{"name": str(w["name"]), "address": w["host"]} for w in workers.values()]
        found = make_cluster(hosts, scheduler, None, f"workers of {scheduler}")
    assert found is not None
    return found


@cluster.command("check")
@click.argument("source", required=False)
@click.option("--scheduler", default=None, help="Dask scheduler tcp://HOST:PORT (default: the hosts file's)")
@click.option("--test", default="write_lat", show_default=True, help="perftest test run between every pair")
@click.option("--size", type=click.IntRange(min=1), default=64, show_default=True, help="message size (bytes)")
@click.option("--iters", type=click.IntRange(min=5), default=200, show_default=True, help="perftest iterations")
def check(source: str | None, scheduler: str | None, test: str, size: int, iters: int) -> None:
    """Every host's device, port state, GID, MTU and clock offset, and perftest between every pair.

    SOURCE is a YAML file with `hosts:` and `scheduler:` (a spec works), or `testbed` (the default inside
    `kdlab testbed run --hosts N`); with only --scheduler every worker is a host. Prints one table per part
    and one line per problem; exits 1 if there is any problem.
    """
    from kdreal.cluster_check import check as run_check

    report = run_check(_cluster_from(source, scheduler), test, size, iters)
    click.echo(report.format())
    if report.problems:
        sys.exit(1)
