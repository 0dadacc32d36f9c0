"""Command line of the Soft-RoCE testbed.

::

    python -m kdreal.testbed setup [--cache DIR] [--force]
    python -m kdreal.testbed run [--mem MIB] [--smp N] [--netdev lo|dummy0] [--rw DIR]
                                 [--timeout S] [--loglevel N] [--no-pyverbs] [--hosts N] CMD [ARGS...]
    python -m kdreal.testbed pyverbs-path [DIR]    # print a PYTHONPATH entry for pyverbs
    python -m kdreal.testbed has-rdma              # exit 0 if verbs work here
"""

from __future__ import annotations

import argparse
import sys

from kdreal import testbed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdreal.testbed", description=testbed.__doc__.splitlines()[0])
    parser.add_argument("--cache", help=f"cache directory (default $KDLAB_RXE_VM_CACHE or {testbed.DEFAULT_CACHE})")
    sub = parser.add_subparsers(dest="verb", required=True)
    p_setup = sub.add_parser("setup", help="install packages, build kernel + initramfs into the cache")
    p_setup.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    p_run = sub.add_parser(
        "run", help="boot the VM, create rxe0, run CMD in the current directory (needs setup; installs nothing)"
    )
    p_run.add_argument("--mem", type=int, default=4096, help="guest memory in MiB (4096)")
    p_run.add_argument("--smp", type=int, default=None, help="guest CPUs (host's count)")
    p_run.add_argument("--netdev", default="lo", help="netdev for rxe0: lo (default) or dummy0")
    p_run.add_argument("--rw", default=None, help="host directory shared read-write (default: cwd)")
    p_run.add_argument("--timeout", type=float, default=1800.0, help="seconds before QEMU is killed (1800)")
    p_run.add_argument("--loglevel", type=int, default=0, help="guest kernel console log level (0; 7 to debug)")
    p_run.add_argument("--no-pyverbs", action="store_true", help="do not put .pyverbs-path on PYTHONPATH")
    p_run.add_argument(
        "--hosts", type=int, default=0, metavar="N",
        help="build N RDMA hosts (a network namespace, address and rxe device each) and a Dask worker per host; "
        "CMD sees KDLAB_TESTBED_HOSTS and KDLAB_DASK_SCHEDULER",
    )  # fmt: skip
    p_run.add_argument("cmd", nargs=argparse.REMAINDER, help="command and arguments")
    p_path = sub.add_parser("pyverbs-path", help="create DIR with a pyverbs symlink and print it")
    p_path.add_argument("dir", nargs="?", default=".pyverbs-path")
    sub.add_parser("has-rdma", help="exit 0 if pyverbs lists an RDMA device here, else 1")
    args = parser.parse_args(argv)
    try:
        return _main(parser, args)
    except (testbed.TestbedError, ValueError) as err:  # not set up, a setup step failed, bad --hosts: one line
        print(f"kdlab testbed {args.verb}: {err}", file=sys.stderr)
        return 2


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.verb == "setup":
        testbed.setup(args.cache, force=args.force)
        return 0
    if args.verb == "run":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            parser.error("run needs a command")
        return testbed.run(
            cmd, cache=args.cache, rw=args.rw, mem_mib=args.mem, smp=args.smp, netdev=args.netdev,
            timeout_s=args.timeout, loglevel=args.loglevel, pyverbs=not args.no_pyverbs, hosts=args.hosts,
        )  # fmt: skip
    if args.verb == "pyverbs-path":
        print(testbed.pyverbs_path(args.dir))
        return 0
    ok = testbed.has_rdma()
    print("rdma: yes" if ok else "rdma: no")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
