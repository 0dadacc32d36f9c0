"""The Soft-RoCE VM: real RDMA verbs on a host whose kernel has no RDMA.

:func:`setup` installs QEMU and the RDMA userland with apt, and puts Debian's stock
kernel (which builds ``rdma_rxe`` as a module) and a small initramfs into a cache
directory. :func:`run` boots that kernel under QEMU (TCG: no KVM needed) with the
host's own root file system shared read-only over virtio-9p and a tmpfs overlay on
top, so the guest sees the host's Python, virtual environments and project files.
The guest creates ``rxe0`` on ``lo``, runs the command in the caller's working
directory (shared read-write, so reports come back) and powers off; :func:`run`
returns the command's exit code. :func:`run` never installs or rebuilds anything: on a
host that :func:`setup` has not prepared (or prepared for another version of the
guest) it fails at once with :class:`TestbedError`, saying to run setup.

Everything stays inside the guest: it has no network card, and rxe over ``lo``
never transmits.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from kdreal.testbed import hosts as hostlayout
from kdreal.testbed import initramfs

#: Default cache directory (kernel, initramfs); override with ``KDLAB_RXE_VM_CACHE``.
DEFAULT_CACHE = Path("/var/cache/kdlab-rxe-vm")
#: Debian packages the testbed needs on the host (and therefore in the guest).
PACKAGES = (
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "iproute2",
    "rdma-core",
    "ibverbs-providers",
    "ibverbs-utils",
    "python3-pyverbs",
    "perftest",
    "rdmacm-utils",
)
#: Kernel modules the guest loads, roots of the dependency closure, in load order.
MODULES = (
    "crc32_generic",  # first: rxe computes its ICRC through crypto "crc32"
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "overlay",
    "rdma_rxe",
    "rdma_ucm",
    "ib_umad",
    "dummy",
    "veth",  # --hosts: each host's TCP and RDMA netdevs
    "bridge",
)
#: Extra kernel command line (``KDLAB_RXE_VM_KERNEL_ARGS`` replaces it).
KERNEL_ARGS = os.environ.get("KDLAB_RXE_VM_KERNEL_ARGS", "clocksource=tsc tsc=reliable")
#: Where Debian's pyverbs lives; see :func:`pyverbs_path`.
SYSTEM_PYVERBS = Path("/usr/lib/python3/dist-packages/pyverbs")
#: Exit code :func:`run` returns when the guest reported none (hang, crash, timeout).
NO_EXIT_CODE = 125
_STAMP = "kdlab-rxe-vm.json"
_ENV_SKIP = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "TERM"})


#: What :func:`run` tells a user whose testbed is not (or no longer) set up.
SETUP_HINT = "run `kdlab testbed setup` (as root) first"


class TestbedError(RuntimeError):
    """Setting up or booting the VM failed."""


def cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``cache``, else ``$KDLAB_RXE_VM_CACHE``, else :data:`DEFAULT_CACHE`."""
    if cache is not None:
        return Path(cache)
    return Path(os.environ.get("KDLAB_RXE_VM_CACHE", DEFAULT_CACHE))


def _log(msg: str) -> None:
    print(f"kdlab-rxe-vm: {msg}", file=sys.stderr, flush=True)


def _sh(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """Run a host command, return its stdout; raise :class:`TestbedError` with stderr on failure."""
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise TestbedError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


# --- setup ---------------------------------------------------------------------------


def _missing_packages() -> list[str]:
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *PACKAGES],
        capture_output=True, text=True,
    )  # fmt: skip
    installed = {line.split()[0] for line in out.stdout.splitlines() if line.split()[1:2] == ["ii"]}
    return [p for p in PACKAGES if p not in installed]


def install_packages() -> None:
    """``apt-get install`` whatever of :data:`PACKAGES` is missing (no recommends)."""
    missing = _missing_packages()
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _log(f"apt-get install {' '.join(missing)}")
    _sh("apt-get", "update", "-qq", env=env)
    _sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)


def kernel_package() -> str:
    """The versioned kernel package ``linux-image-amd64`` depends on (ABI changes with point releases)."""
    out = _sh("apt-cache", "depends", "linux-image-amd64")
    match = re.search(r"Depends: (linux-image-\d\S*)", out)
    if match is None:
        raise TestbedError("apt-cache depends linux-image-amd64 names no linux-image-<version> package")
    return match.group(1)


def _init_script() -> bytes:
    return resources.files("kdreal.testbed").joinpath("init.sh").read_bytes()


def _module_files(kern: Path, kver: str) -> list[Path]:
    """The .ko files of :data:`MODULES` and their dependencies, each once, in load order."""
    files: list[Path] = []
    for mod in MODULES:
        out = _sh("modprobe", "-d", str(kern), "-S", kver, "--show-depends", mod)
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["insmod"]:
                path = Path(words[1])
                if path.name not in {f.name for f in files}:
                    files.append(path)
    return files


def setup(cache: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Install the packages and build the kernel and initramfs into ``cache``; return the cache.

    Idempotent: with everything in place (same kernel package, same guest init) it
    only checks the packages. Must run as root (apt, and modules owned by root).
    """
    cache = cache_dir(cache)
    t0 = time.monotonic()
    install_packages()
    kpkg = kernel_package()
    kver = kpkg.removeprefix("linux-image-")
    init = _init_script()
    want = {"kernel_package": kpkg, "init_sha": _digest(init), "modules": list(MODULES)}
    stamp = cache / _STAMP
    ready = all((cache / f).exists() for f in (_STAMP, "initrd.gz", "vmlinuz"))
    if ready and not force and json.loads(stamp.read_text()) == want:
        _log(f"cache {cache} is up to date ({kpkg})")
        return cache
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stage.", dir=cache) as tmp:
        stage = Path(tmp)
        _sh("apt-get", "download", "-qq", kpkg, cwd=stage)
        (deb,) = stage.glob(f"{kpkg}_*.deb")
        kern = stage / "kern"
        _sh("dpkg-deb", "-x", str(deb), str(kern))
        deb.unlink()
        _sh("depmod", "-b", str(kern), kver)
        root = stage / "initrd"
        for d in ("bin", "proc", "sys", "dev", "lower", "rw", "host", "ctl", "mods"):
            (root / d).mkdir(parents=True)
        shutil.copy2(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
        mods = _module_files(kern, kver)
        for f in mods:
            shutil.copy2(f, root / "mods" / f.name)
        (root / "mods" / "order").write_text("".join(f"{f.name}\n" for f in mods))
        (root / "init").write_bytes(init)
        (root / "init").chmod(0o755)
        initramfs.build(root, cache / "initrd.gz.tmp")
        shutil.copy2(kern / "boot" / f"vmlinuz-{kver}", cache / "vmlinuz.tmp")
    os.replace(cache / "initrd.gz.tmp", cache / "initrd.gz")
    os.replace(cache / "vmlinuz.tmp", cache / "vmlinuz")
    stamp.write_text(json.dumps(want))
    _log(f"kernel {kver}, {len(mods)} modules, cache {cache}, {time.monotonic() - t0:.1f} s")
    return cache


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_stale(cache: Path) -> bool:
    """True if ``cache`` holds a build whose stamp is unreadable or names other modules or another guest init."""
    stamp = cache / _STAMP
    if not stamp.exists():
        return False
    try:
        built = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return True
    return built.get("init_sha") != _digest(_init_script()) or built.get("modules") != list(MODULES)


def check_ready(cache: Path) -> None:
    """Raise :class:`TestbedError` (one line) unless :func:`setup` built ``cache`` for this guest init."""
    missing = [f for f in ("vmlinuz", "initrd.gz") if not (cache / f).exists()]
    if missing:
        raise TestbedError(f"the testbed is not set up ({cache} has no {' or '.join(missing)}): {SETUP_HINT}")
    if is_stale(cache):
        raise TestbedError(f"the testbed in {cache} was built for another version of kdlab: {SETUP_HINT}")


# --- pyverbs for other interpreters --------------------------------------------------


def pyverbs_path(dest: str | os.PathLike[str] = ".pyverbs-path") -> Path:
    """Make ``dest`` a directory holding only ``pyverbs -> Debian's pyverbs``; return it resolved.

    Put the returned directory on ``PYTHONPATH`` to import Debian's ``python3-pyverbs``
    (built for CPython 3.11) from another 3.11 interpreter, such as a pyenv one,
    without exposing the rest of ``dist-packages``.
    """
    path = Path(dest).resolve()
    path.mkdir(parents=True, exist_ok=True)
    link = path / "pyverbs"
    if not (link.is_symlink() and os.readlink(link) == str(SYSTEM_PYVERBS)):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(SYSTEM_PYVERBS)
    return path


# --- run -----------------------------------------------------------------------------


def guest_script(
    cmd: Sequence[str], cwd: Path, env: Mapping[str, str], netdev: str = "lo", hosts: int = 0,
    python: str = sys.executable, cpus: int | None = None,
) -> str:  # fmt: skip
    """The bash script the guest runs: the environment, ``rxe0`` on ``netdev``, then ``cmd`` in ``cwd``.

    With ``hosts`` it first builds that many hosts (:mod:`kdreal.testbed.hosts`) and starts
    their Dask cluster (:mod:`kdreal.testbed.dask_hosts`, run by ``python``), exports
    ``KDLAB_TESTBED_HOSTS`` (the host table's file) and ``KDLAB_DASK_SCHEDULER``, and stops
    the cluster after ``cmd``.
    """
    lines = ["set +e"]
    for key, value in sorted(env.items()):
        if key.isidentifier() and key not in _ENV_SKIP:
            lines.append(f"export {key}={shlex.quote(value)}")
    lines += [
        "export TERM=dumb",
        "ip link set lo up",
        f"NETDEV={shlex.quote(netdev)}",
        '[ "$NETDEV" = lo ] || { ip link set "$NETDEV" up; sleep 1.5; }',
        'rdma link add rxe0 type rxe netdev "$NETDEV" || exit 99',
        f"cd {shlex.quote(str(cwd))} || exit 98",
    ]
    if not hosts:
        return "\n".join([*lines, shlex.join(cmd)]) + "\n"
    log, ready = "/run/kdlab-dask.log", "/run/kdlab-dask.ready"
    lines += [
        hostlayout.layout_script(hosts, cpus),
        f"{shlex.quote(python)} -m kdreal.testbed.dask_hosts {hostlayout.HOSTS_FILE} {ready} >{log} 2>&1 &",
        "KD_DASK=$!",
        f"for _ in $(seq 1500); do [ -s {ready} ] && break; kill -0 $KD_DASK 2>/dev/null || break; sleep 0.2; done",
        f'[ -s {ready} ] || {{ echo "kdlab-rxe-vm: the Dask cluster did not start:"; tail -n 40 {log}; exit 96; }}',
        f"export KDLAB_TESTBED_HOSTS={hostlayout.HOSTS_FILE}",
        f"export KDLAB_DASK_SCHEDULER=tcp://{hostlayout.SCHEDULER_IP}:{hostlayout.SCHEDULER_PORT}",
        shlex.join(cmd),
        "KD_RC=$?",
        "kill $KD_DASK 2>/dev/null; wait $KD_DASK 2>/dev/null",
        "exit $KD_RC",
    ]
    return "\n".join(lines) + "\n"


def qemu_command(
    cache: Path, ctl: Path, rw: Path, *, mem_mib: int = 4096, smp: int | None = None, loglevel: int = 0
) -> list[str]:
    """The QEMU command line: TCG, no devices but the serial console and three 9p shares."""
    share = "security_model=passthrough,multidevs=remap"
    return [
        "qemu-system-x86_64", "-nodefaults", "-no-user-config",
        "-machine", "pc,accel=tcg", "-cpu", "max",
        "-smp", str(smp or os.cpu_count() or 1), "-m", str(mem_mib),
        "-display", "none", "-serial", "stdio", "-no-reboot", "-nic", "none",
        "-kernel", str(cache / "vmlinuz"), "-initrd", str(cache / "initrd.gz"),
        "-append", f"console=ttyS0 quiet loglevel={loglevel} panic=-1 {KERNEL_ARGS}",
        "-virtfs", f"local,path=/,mount_tag=hostroot,readonly=on,{share}",
        "-virtfs", f"local,path={rw},mount_tag=rwdir,{share}",
        "-virtfs", f"local,path={ctl},mount_tag=ctl,security_model=passthrough",
    ]  # fmt: skip


def run(
    cmd: Sequence[str],
    *,
    cwd: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    rw: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    mem_mib: int = 4096,
    smp: int | None = None,
    netdev: str = "lo",
    timeout_s: float = 1800.0,
    loglevel: int = 0,
    pyverbs: bool = True,
    hosts: int = 0,
) -> int:
    """Boot the VM, run ``cmd`` in ``cwd`` (default: the current directory), return its exit code.

    ``rw`` (default ``cwd``) is shared read-write at the same path; every other write
    in the guest goes to a tmpfs and is lost at power-off. ``env`` (default
    ``os.environ``) is exported into the guest. With ``pyverbs`` the directory
    ``<cwd>/.pyverbs-path`` (see :func:`pyverbs_path`) is put first on the guest's
    ``PYTHONPATH``. Returns :data:`NO_EXIT_CODE` if the guest reported no exit code
    (it hung past ``timeout_s``, or crashed). The guest's console goes to stdout.
    Raises :class:`TestbedError` if the testbed is not set up (:func:`check_ready`). A cache
    built for an older module list or guest init is rebuilt first (:func:`setup`; root).
    With ``hosts`` the guest has that many RDMA hosts and a Dask cluster (:func:`guest_script`).
    """
    cache = cache_dir(cache)
    if hosts:
        hostlayout.check_count(hosts)
    if is_stale(cache):
        _log(f"the cache {cache} was built for another module list or guest init: rebuilding it")
        setup(cache)
    check_ready(cache)
    workdir = Path(cwd).resolve() if cwd is not None else Path.cwd()
    env = dict(os.environ if env is None else env)
    if pyverbs and SYSTEM_PYVERBS.exists():
        extra = str(pyverbs_path(workdir / ".pyverbs-path"))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH", "")) if p)
    rwdir = Path(rw).resolve() if rw is not None else workdir
    with tempfile.TemporaryDirectory(prefix="kdlab-rxe-vm.") as tmp:
        ctl = Path(tmp)
        (ctl / "rwdir").write_text(f"{rwdir}\n")
        (ctl / "cmd.sh").write_text(guest_script(cmd, workdir, env, netdev, hosts, cpus=smp))
        args = qemu_command(cache, ctl, rwdir, mem_mib=mem_mib, smp=smp, loglevel=loglevel)
        try:
            proc = subprocess.run(args, stdin=subprocess.DEVNULL, timeout=timeout_s)
            qemu_rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            qemu_rc = f"killed after {timeout_s:.0f} s"
        except FileNotFoundError:
            raise TestbedError(f"{args[0]} is not installed: {SETUP_HINT}") from None
        rc_file = ctl / "rc"
        if rc_file.exists() and rc_file.read_text().strip():
            return int(rc_file.read_text())
    _log(f"guest gave no exit code (qemu: {qemu_rc})")
    return NO_EXIT_CODE
