"""The real perftest tools (``ib_write_bw``, ``ib_read_lat``, ...) run and parsed.

Every kdreal perftest figure gets the hardware's own figure beside it: this module
starts a perftest server and client on the same device (two processes over
127.0.0.1, as in the Soft-RoCE testbed), or, for ``kdlab cluster check``, the server on
one host and the client on another (:func:`serve` and :func:`connect`, the client
given the server's address), reads their report, and turns it into rows
with the same metric columns as the ``perftest`` workload
(``t_typical_us``..., ``bw_avg_mib_s``, ``bw_avg_gbps``, ``msg_rate_mpps``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

from kdlab.perftest_report import MIB

LAT_COLUMNS = ("t_min_us", "t_max_us", "t_typical_us", "t_avg_us", "t_stdev_us", "t_p99_us", "t_p999_us")
BW_COLUMNS = ("bw_peak_mib_s", "bw_avg_mib_s", "msg_rate_mpps")


class PerftestToolError(RuntimeError):
    """A perftest binary is missing, failed, or printed no result table."""


def parse_report(text: str) -> list[dict[str, float]]:
    """Rows of a perftest report: the numeric lines after the ``#bytes`` header.

    Latency reports give ``#bytes #iterations t_min t_max t_typical [t_avg t_stdev 99% 99.9%]``;
    bandwidth reports ``#bytes #iterations BW_peak BW_average MsgRate`` in MB/s (2^20 B/s).
    """
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("#bytes"))
    except StopIteration:
        raise PerftestToolError(f"no '#bytes' header in perftest output:\n{text[-2000:]}") from None
    header = lines[start]
    is_lat = "usec" in header
    rows = []
    for line in lines[start + 1 :]:
        parts = line.split()
        if not parts or not parts[0].isdigit():
            if rows:
                break
            continue
        values = [float(p) for p in parts]
        row: dict[str, float] = {"size": int(values[0]), "iterations": int(values[1])}
        names = LAT_COLUMNS if is_lat else BW_COLUMNS
        row.update(zip(names, values[2:], strict=False))
        if not is_lat:
            row["bw_avg_gbps"] = row["bw_avg_mib_s"] * MIB * 8 / 1e9
        rows.append(row)
    if not rows:
        raise PerftestToolError(f"perftest printed a header but no rows:\n{text[-2000:]}")
    return rows


@dataclass(frozen=True)
class ToolRun:
    """One real perftest run: tool, message size, iterations, device and GID index."""

    test: str  # e.g. "write_bw", "read_lat"
    size: int
    iterations: int = 1000
    device: str = "rxe0"
    gid_index: int = 1
    port: int = 18515
    server_address: str = "127.0.0.1"

    def argv(self, server: bool) -> list[str]:
        tool = f"ib_{self.test}"
        args = [tool, "-d", self.device, "-x", str(self.gid_index), "-F", "-p", str(self.port)]
        if self.test != "atomic_lat" and self.test != "atomic_bw":
            args += ["-s", str(self.size)]
        args += ["-n", str(self.iterations)]
        return args if server else [*args, self.server_address]


def _check_installed(run: ToolRun) -> None:
    tool = f"ib_{run.test}"
    if shutil.which(tool) is None:
        raise PerftestToolError(f"{tool} not found: install Debian's 'perftest' package (kdreal testbed setup does)")


def run_tool(run: ToolRun, timeout_s: float = 120.0) -> list[dict[str, float]]:
    """Run a perftest server and client on this host's device; -> the client's rows."""
    _check_installed(run)
    server = subprocess.Popen(run.argv(server=True), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)  # let the server listen on its TCP port before the client connects
        client = subprocess.run(run.argv(server=False), capture_output=True, text=True, timeout=timeout_s, check=False)
        server_out, _ = server.communicate(timeout=timeout_s)
    finally:
        if server.poll() is None:
            server.kill()
    if client.returncode != 0:
        raise PerftestToolError(_failed(run, client, server_out))
    return parse_report(client.stdout)


def _failed(run: ToolRun, client: subprocess.CompletedProcess[str], server_out: str) -> str:
    return (f"{' '.join(run.argv(False))} exited {client.returncode}:\n{client.stdout[-1500:]}{client.stderr[-1500:]}"
            f"\nserver said:\n{server_out[-1500:]}")  # fmt: skip


def serve(run: ToolRun, timeout_s: float = 120.0) -> str:
    """Run the perftest server (on this host) until its one client is done; -> what it printed."""
    _check_installed(run)
    try:
        done = subprocess.run(run.argv(server=True), capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as err:
        return f"server timed out after {timeout_s} s: {err.stdout or ''}"
    return done.stdout + done.stderr


def connect(run: ToolRun, timeout_s: float = 120.0, tries: int = 20) -> list[dict[str, float]]:
    """Run the perftest client against ``run.server_address`` (retrying while the server is not yet listening)."""
    _check_installed(run)
    for _ in range(tries):
        client = subprocess.run(run.argv(server=False), capture_output=True, text=True, timeout=timeout_s, check=False)
        if client.returncode == 0:
            return parse_report(client.stdout)
        if "Couldn't connect" not in client.stdout + client.stderr:
            break
        time.sleep(0.5)
    raise PerftestToolError(_failed(run, client, "(on the other host)"))
