"""``kdlab cluster check`` (is a real RDMA cluster, or the testbed's hosts, ready for measured runs?) and
``kdlab testbed`` (the Soft-RoCE testbed: one host, or ``--hosts N``)."""

from __future__ import annotations

import sys

import click


@click.group("cluster")
def cluster() -> None:
    """Real RDMA clusters: one Dask worker per machine, named after it (docs/real-cluster.md)."""


@cluster.command("check")
@click.argument("source", required=False)
@click.option("--scheduler", default=None, help="Dask scheduler tcp://HOST:PORT (default: the hosts file's)")
@click.option("--test", default="write_lat", show_default=True, help="perftest test run between every pair",
              type=click.Choice(["write_lat", "read_lat", "send_lat", "atomic_lat", "write_bw", "read_bw", "send_bw",
                                 "atomic_bw"]))  # fmt: skip
@click.option("--size", type=click.IntRange(min=1), default=64, show_default=True, help="message size (bytes)")
@click.option("--iters", type=click.IntRange(min=5), default=200, show_default=True, help="perftest iterations")
def check(source: str | None, scheduler: str | None, test: str, size: int, iters: int) -> None:
    """Every host's device, port state, GID, MTU and clock offset, and perftest between every pair.

    SOURCE is a YAML file with `hosts:` and `scheduler:` (a spec works), or `testbed` (the default inside
    `kdlab testbed run --hosts N`); with only --scheduler every worker is a host. Prints one table per part
    and one line per problem; exits 1 if there is any problem.
    """
    from kdreal.cluster import cluster_from
    from kdreal.cluster_check import check as run_check

    report = run_check(cluster_from(source, scheduler), test, size, iters)
    click.echo(report.format())
    if report.problems:
        sys.exit(1)


@click.command(context_settings={"ignore_unknown_options": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def testbed(args: tuple[str, ...]) -> None:
    """Soft-RoCE testbed: real verbs (rdma_rxe) in a QEMU VM, for machines without RDMA.

    `kdlab testbed setup` (once, root), `kdlab testbed run -- CMD ...` (boot, create rxe0, run CMD in
    the current directory, pass its exit code), `kdlab testbed run --hosts N -- CMD` (N hosts, each with its
    own network namespace, address, rxe device and Dask worker), `kdlab testbed has-rdma`, `kdlab testbed --help`.
    """
    from kdreal.testbed.__main__ import main as testbed_main

    sys.exit(testbed_main(list(args)))
