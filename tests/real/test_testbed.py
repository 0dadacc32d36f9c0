"""The Soft-RoCE testbed's parts that run on any host: initramfs, guest script, QEMU line, exit codes.

``test_vm_runs_a_command_and_passes_its_exit_code`` boots the real VM (about 15 s);
it is marked ``slow`` and needs ``python -m kdreal.testbed setup`` first.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from kdreal import testbed
from kdreal.testbed import initramfs, vm
from kdreal.testbed.__main__ import main


def _read_newc(blob: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc archive."""
    out, pos = {}, 0
    while True:
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = blob[pos : pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        data = blob[pos : pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data)


def test_initramfs_holds_files_dirs_and_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF...")
    (root / "bin" / "busybox").chmod(0o755)
    (root / "init").write_text("#!/bin/busybox sh\n")
    (root / "sh").symlink_to("bin/busybox")
    initramfs.build(root, tmp_path / "initrd.gz")
    entries = _read_newc(gzip.decompress((tmp_path / "initrd.gz").read_bytes()))
    assert set(entries) == {"bin", "bin/busybox", "init", "sh"}
    assert stat.S_ISDIR(entries["bin"][0])
    assert entries["bin/busybox"] == (stat.S_IFREG | 0o755, b"\x7fELF...")
    assert entries["init"][1] == b"#!/bin/busybox sh\n"
    assert entries["sh"] == (stat.S_IFLNK | 0o777, b"bin/busybox")


def test_guest_script_exports_the_environment_and_quotes_the_command() -> None:
    env = {"PATH": "/usr/bin", "TRICKY": "a b'c$d", "PWD": "/nope", "not-an-identifier": "x"}
    script = vm.guest_script(["python", "-c", "print('hi there')"], Path("/work/my dir"), env)
    lines = script.splitlines()
    assert "export PATH=/usr/bin" in lines
    assert "export TRICKY='a b'\"'\"'c$d'" in lines
    assert not any("PWD" in line or "not-an-identifier" in line for line in lines)
    assert 'rdma link add rxe0 type rxe netdev "$NETDEV" || exit 99' in lines
    assert lines[-2:] == ["cd '/work/my dir' || exit 98", "python -c 'print('\"'\"'hi there'\"'\"')'"]


def test_qemu_command_boots_the_cached_kernel_with_the_host_root_read_only(tmp_path: Path) -> None:
    args = vm.qemu_command(tmp_path, Path("/tmp/ctl"), Path("/work"), mem_mib=2048, smp=3)
    line = " ".join(args)
    assert args[0] == "qemu-system-x86_64" and "accel=tcg" in line and "-nic none" in line
    assert f"-kernel {tmp_path}/vmlinuz -initrd {tmp_path}/initrd.gz" in line
    assert "path=/,mount_tag=hostroot,readonly=on" in line
    assert "path=/work,mount_tag=rwdir" in line and "path=/tmp/ctl,mount_tag=ctl" in line
    assert "-m 2048" in line and "-smp 3" in line


def _fake_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "vmlinuz").write_bytes(b"")
    (cache / "initrd.gz").write_bytes(b"")
    return cache


@pytest.mark.parametrize(("guest_rc", "expected"), [("3\n", 3), ("0\n", 0), (None, testbed.NO_EXIT_CODE)])
def test_run_returns_the_guest_exit_code(tmp_path: Path, monkeypatch, guest_rc, expected) -> None:
    seen = {}

    def fake_qemu(args, **kw):
        ctl = Path(next(a for a in args if "mount_tag=ctl" in a).split("path=")[1].split(",")[0])
        seen["script"] = (ctl / "cmd.sh").read_text()
        seen["rwdir"] = (ctl / "rwdir").read_text()
        if guest_rc is not None:
            (ctl / "rc").write_text(guest_rc)
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.setattr(vm.subprocess, "run", fake_qemu)
    rc = testbed.run(["true"], cwd=tmp_path, cache=_fake_cache(tmp_path), env={"A": "1"}, pyverbs=False)
    assert rc == expected
    assert seen["rwdir"].strip() == str(tmp_path.resolve())
    assert "export A=1" in seen["script"] and seen["script"].endswith("true\n")


def test_run_reports_no_exit_code_when_qemu_times_out(tmp_path: Path, monkeypatch) -> None:
    def hung(args, **kw):
        raise subprocess.TimeoutExpired(args, kw["timeout"])

    monkeypatch.setattr(vm.subprocess, "run", hung)
    rc = testbed.run(["sleep", "1"], cwd=tmp_path, cache=_fake_cache(tmp_path), timeout_s=0.1, pyverbs=False)
    assert rc == testbed.NO_EXIT_CODE


def test_pyverbs_path_links_only_pyverbs(tmp_path: Path, capsys) -> None:
    for _ in range(2):  # idempotent
        path = testbed.pyverbs_path(tmp_path / "pv")
    assert os.listdir(path) == ["pyverbs"]
    assert os.readlink(path / "pyverbs") == str(vm.SYSTEM_PYVERBS)
    assert main(["pyverbs-path", str(tmp_path / "pv2")]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "pv2").resolve())


def test_has_rdma_is_a_plain_answer() -> None:
    assert testbed.has_rdma() in (True, False)


@pytest.mark.slow
def test_vm_runs_a_command_and_passes_its_exit_code(tmp_path: Path) -> None:
    cache = testbed.cache_dir()
    if shutil.which("qemu-system-x86_64") is None or not (cache / "initrd.gz").exists():
        pytest.skip("the testbed is not set up: python -m kdreal.testbed setup")
    cmd = ["sh", "-c", "rdma link | grep -q 'rxe0/1 state ACTIVE' && echo in-guest > out.txt && exit 7"]
    assert testbed.run(cmd, cwd=tmp_path, pyverbs=False, timeout_s=300) == 7
    assert (tmp_path / "out.txt").read_text() == "in-guest\n"


def test_run_on_a_host_that_is_not_set_up_says_so_and_installs_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_install(*args, **kwargs):  # a guard: run must never get here
        raise AssertionError("testbed run tried to install or rebuild")

    monkeypatch.setattr(vm, "setup", no_install)
    monkeypatch.setattr(vm, "install_packages", no_install)
    empty = tmp_path / "cache"
    empty.mkdir()
    with pytest.raises(testbed.TestbedError, match=r"not set up .*kdlab testbed setup"):
        testbed.run(["true"], cwd=tmp_path, cache=empty, pyverbs=False)
    assert main(["--cache", str(empty), "run", "--", "true"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run `kdlab testbed setup` (as root) first" in err
    assert sorted(p.name for p in empty.iterdir()) == []  # nothing was built
