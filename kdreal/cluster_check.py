"""``kdlab cluster check``: is every host of a cluster ready for a measured run?

For each host (a task pinned to its Dask worker): its device is there, its port is
ACTIVE, the GID the runs will use (and whether it is RoCE over IPv4), the port's
active MTU and its netdev's MTU, and its clocks' offsets from this machine's (NTP's
rule over the rendezvous, :meth:`kdreal.rendezvous.HostLink.offset`): the monotonic
clock kdreal reads (machines' differ by their boot times; runs correct for it) and the
wall clock (which chrony or PTP should keep within a millisecond). Then the real
perftest tool between every pair of hosts, the server on one and the client on the
other (one pair at a time, so they do not share the wire). One table per part, then
one line per problem; :func:`check` returns them, the CLI prints them and exits 1 if
there is any problem.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.hosts import ClusterSpec, HostSpec
from kdreal.cluster import check_workers, client_for, driver_address
from kdreal.host_link import HostLink
from kdreal.perftest_tools import PerftestToolError, ToolRun, connect, serve
from kdreal.rendezvous import RendezvousServer
from kdreal.wire import new_token

_PORT_STATES = {1: "DOWN", 2: "INIT", 3: "ARMED", 4: "ACTIVE", 5: "ACTIVE_DEFER"}
_MTUS = {1: 256, 2: 512, 3: 1024, 4: 2048, 5: 4096}


@dataclass
class CheckReport:
    hosts: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"{'host':<10} {'device':<10} {'port':<7} {'gid':>3} {'address (GID)':<28} {'MTU':>5} "
                 f"{'netdev MTU':>10} {'monotonic clock offset':>24} {'wall clock offset':>20}"]  # fmt: skip
        for h in self.hosts:
            nan = float("nan")
            clock = f"{h.get('offset_us', nan):+.1f} ± {h.get('uncertainty_us', nan):.1f} us"
            wall = f"{h.get('wall_offset_us', nan):+.1f} ± {h.get('wall_uncertainty_us', nan):.1f} us"
            lines.append(f"{h['host']:<10} {h.get('device') or '-':<10} {h.get('port_state', '-'):<7} "
                         f"{h.get('gid_index', '-'):>3} {h.get('gid', '-'):<28} {h.get('active_mtu', '-'):>5} "
                         f"{h.get('netdev_mtu', '-'):>10} {clock:>24} {wall:>20}")  # fmt: skip
        if self.pairs:
            lines += ["", f"{'server':<10} {'client':<10} {'test':<10} {'size':>6} {'typical|avg':>12} {'p99':>12}"]
            for p in self.pairs:
                nan = float("nan")
                if "bw_avg_gbps" in p:  # a bandwidth test: its average, and no percentile
                    result = f"{p['bw_avg_gbps']:>7.2f} Gb/s {'-':>12}"
                else:
                    result = f"{p.get('t_typical_us', nan):>9.2f} us {p.get('t_p99_us', nan):>9.2f} us"
                lines.append(f"{p['server']:<10} {p['client']:<10} {p['test']:<10} {p['size']:>6} {result}")
        lines.append("")
        lines += [f"problem: {p}" for p in self.problems] or ["no problems"]
        return "\n".join(lines)


def probe_host(host: HostSpec, rendezvous: tuple[str, int], token: bytes) -> dict[str, Any]:
    """On the host: its device, port, GID, MTUs and clock offset (problems as a list of strings)."""
    from kdreal.verbs import Verbs

    out: dict[str, Any] = {"host": host.name, "problems": []}
    try:
        link = HostLink(rendezvous, host.name, token)
        offset, uncertainty = link.offset()
        wall, wall_uncertainty = link.offset(wall=True)
        link.close()
        out.update(offset_us=offset / 1e3, uncertainty_us=uncertainty / 1e3, wall_offset_us=wall / 1e3,
                   wall_uncertainty_us=wall_uncertainty / 1e3)  # fmt: skip
    except (OSError, RuntimeError) as err:
        out["problems"].append(f"cannot reach this machine's rendezvous at {rendezvous[0]}:{rendezvous[1]}: {err}")
    verbs = Verbs(host.name, host.device, host.gid_index, host.port)
    try:
        verbs.ctx  # noqa: B018 - opens the device
        attr = verbs._port_attr
        out.update(device=verbs.name, port_state=_PORT_STATES.get(attr.state, str(attr.state)),
                   active_mtu=_MTUS.get(attr.active_mtu, 0), gid_index=verbs.gid_index,
                   gid=_gid_text(verbs.gid))  # fmt: skip
        ndev = Path(f"/sys/class/infiniband/{verbs.name}/ports/{host.port}/gid_attrs/ndevs/{verbs.gid_index}")
        try:
            out["netdev"] = ndev.read_text().strip()
            out["netdev_mtu"] = int(Path(f"/sys/class/net/{out['netdev']}/mtu").read_text())
        except OSError:
            pass  # InfiniBand: no netdev behind the GID
    except Exception as err:  # no such device, no permission
        out["problems"].append(f"cannot open its RDMA device {host.device or '(first listed)'}: {err}")
    finally:
        verbs.close()
    return out


def _gid_text(gid: str) -> str:
    """A GID as an address: ``::ffff:10.99.0.1`` for RoCE v2 over IPv4."""
    addr = ipaddress.IPv6Address(gid)
    return f"::ffff:{addr.ipv4_mapped}" if addr.ipv4_mapped is not None else str(addr)


def _host_problems(h: dict[str, Any]) -> list[str]:
    out = [f"{h['host']}: {p}" for p in h["problems"]]
    if h.get("port_state") not in (None, "ACTIVE"):
        out.append(f"{h['host']}: port is {h['port_state']}, not ACTIVE")
    gid = h.get("gid")
    if gid is not None and ipaddress.IPv6Address(gid).ipv4_mapped is None:
        out.append(f"{h['host']}: GID {gid} (index {h['gid_index']}) is not RoCE v2 over IPv4; set gid_index")
    if h.get("netdev_mtu") and h.get("active_mtu") and h["netdev_mtu"] < h["active_mtu"]:
        out.append(f"{h['host']}: netdev MTU {h['netdev_mtu']} is below the RDMA MTU {h['active_mtu']}")
    if abs(h.get("wall_offset_us", 0.0)) > max(h.get("wall_uncertainty_us", 0.0), 1000.0):
        off = h["wall_offset_us"]
        out.append(f"{h['host']}: its wall clock is {off:+.0f} us off this machine's (kdreal corrects for it; "
                   "tools that compare timestamps do not): synchronise clocks (chrony, PTP)")  # fmt: skip
    return out


def check(cluster: ClusterSpec, test: str = "write_lat", size: int = 64, iterations: int = 200) -> CheckReport:
    """Probe every host, then run perftest ``test`` between every pair of hosts."""
    client = client_for(cluster.scheduler)
    check_workers(client, cluster)
    server = RendezvousServer(0, new_token(), host=driver_address(cluster))  # hosts only read its clocks
    server.start()
    try:
        futures = [client.submit(probe_host, h, server.address, server.token, workers=[h.name], pure=False)
                   for h in cluster.hosts]  # fmt: skip
        report = CheckReport(hosts=client.gather(futures, errors="skip"))
        for h, f in zip(cluster.hosts, futures, strict=True):
            if f.status == "error":
                report.hosts.append({"host": h.name, "problems": [f"its probe failed: {f.exception()}"]})
    finally:
        server.close()
    for h in report.hosts:
        report.problems += _host_problems(h)
    mtus = {h["active_mtu"] for h in report.hosts if h.get("active_mtu")}
    if len(mtus) > 1:
        report.problems.append(f"hosts' RDMA MTUs differ ({sorted(mtus)}): every path runs at the smallest")
    by_name = {h["host"]: h for h in report.hosts}
    for i, (a, b) in enumerate(itertools.combinations(cluster.hosts, 2)):
        ha, hb = by_name[a.name], by_name[b.name]
        if "gid_index" not in ha or "gid_index" not in hb:
            report.problems.append(f"{a.name} - {b.name}: no perftest, a device did not open")
            continue
        port = 18515 + i % 1000  # a port per pair: a server left behind by a failed pair does not hold the next one's
        report.pairs.append(_pair(client, a, b, ha, hb, (test, size, iterations, port), report.problems))
    return report


def _pair(
    client: Any, a: HostSpec, b: HostSpec, ha: dict[str, Any], hb: dict[str, Any], run: tuple[str, int, int, int],
    problems: list[str],
) -> dict[str, Any]:  # fmt: skip
    """perftest between two hosts: the server on ``a``, the client on ``b`` against ``a``'s address."""
    test, size, iterations, port = run
    row: dict[str, Any] = {"server": a.name, "client": b.name, "test": test, "size": size}
    on_a = ToolRun(test, size, iterations, device=ha["device"], gid_index=ha["gid_index"], port=port)
    on_b = ToolRun(test, size, iterations, device=hb["device"], gid_index=hb["gid_index"], port=port,
                   server_address=a.address)  # fmt: skip
    served = client.submit(serve, on_a, workers=[a.name], pure=False)
    connected = client.submit(connect, on_b, workers=[b.name], pure=False)
    try:
        row.update(connected.result()[0])
    except PerftestToolError as err:
        problems.append(f"{a.name} - {b.name}: {test} failed: {' '.join(str(err).split())[:300]}")
    except Exception as err:
        problems.append(f"{a.name} - {b.name}: {test} failed: {type(err).__name__}: {err}")
    try:
        served.result()  # the server ends with its client (or its own time limit)
    except Exception as err:
        problems.append(f"{a.name} - {b.name}: the {test} server failed: {' '.join(str(err).split())[:300]}")
    return row
