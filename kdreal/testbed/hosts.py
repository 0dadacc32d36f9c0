"""Several RDMA hosts in one testbed VM: one network namespace, address and rxe device per host.

rxe routes and receives in the main network namespace only (an rxe in a namespace
fails its first WRITE with "no route"; ``../shared/design/multihost.md``), so a
testbed host is split in two:

* its **processes and TCP sockets** live in its own namespace ``kd<name>``, on a veth
  ``kdt<i>`` with the TCP address ``10.98.0.<i+1>``; the other ends are joined by the
  bridge ``kdtcp`` (``10.98.0.254``, the main namespace's address: the Dask scheduler
  and a driver that runs there reach every host through it);
* its **RDMA device** ``rx<name>`` lives in the main namespace, on its own veth
  ``kdr<i>`` (``10.99.0.<i+1>``, GID ``::ffff:10.99.0.<i+1>``), joined to the
  other hosts' by the bridge ``kdrdma``.

Policy routing makes traffic between two hosts' RDMA addresses leave one veth and
enter the other (without it the kernel delivers local addresses through ``lo``):
packets from ``10.99.0.<i+1>`` (or sent out of ``kdr<i>``) use table ``100+i``,
whose only route is the subnet on ``kdr<i>``; packets that arrive on a ``kdr``
veth, and a host's packets to itself (two roles of one machine, QPs on one device),
are delivered locally. Neighbour entries are fixed and ``arp_ignore=1``, so a
veth never answers for another host's address. MTU 9000 and a deep netdev backlog
avoid the ACKs rxe otherwise drops under load (path MTU 4096).

:func:`layout_script` is the guest's bash for ``n`` hosts; :func:`host_table` is what
the guest writes to :data:`HOSTS_FILE` for tests and ``kdlab cluster check``.
"""

from __future__ import annotations

import json
import os
from typing import Any

#: Where the guest writes the host table (JSON list of :func:`host_table` entries).
HOSTS_FILE = "/run/kdlab-hosts.json"
#: The Dask scheduler every testbed worker joins (the main namespace's end of ``kdtcp``).
SCHEDULER_IP = "10.98.0.254"
SCHEDULER_PORT = 8786
#: The most hosts a testbed VM builds (the addresses' last byte, and the VM's memory).
MAX_HOSTS = 16


def host_name(i: int) -> str:
    return f"host{i}"


def netns(name: str) -> str:
    """The network namespace of the testbed host ``name``."""
    return f"kd{name}"


def _rdma_address(i: int) -> str:
    return f"10.99.0.{i + 1}"


def host_table(n: int, cpus: int | None = None) -> list[dict[str, Any]]:
    """The testbed's hosts as a spec's ``hosts`` section: name, TCP address, device, and each host's
    share of the VM's ``cpus`` (default: this machine's count, the VM's default) as its cores."""
    check_count(n)
    cores = max(1, (cpus or os.cpu_count() or 1) // n)
    return [
        {"name": host_name(i), "address": f"10.98.0.{i + 1}", "device": f"rx{host_name(i)}", "port": 1,
         "gid_index": None, "cores": cores}
        for i in range(n)
    ]  # fmt: skip


def check_count(n: int) -> None:
    if not 1 <= n <= MAX_HOSTS:
        raise ValueError(f"--hosts must be between 1 and {MAX_HOSTS}, got {n}")


def layout_script(n: int, cpus: int | None = None) -> str:
    """Bash that builds ``n`` hosts (namespaces, veths, bridges, routing, rxe devices); exits 97 on failure."""
    hosts = host_table(n, cpus)
    sysctl = "sysctl -qw"
    lines = [
        'kd_fail() { echo "kdlab-rxe-vm: host layout failed at: $*" >&2; exit 97; }',
        f"{sysctl} net.core.netdev_max_backlog=30000 net.ipv4.conf.all.accept_local=1 net.ipv4.conf.all.rp_filter=0"
        " net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2"
        " || kd_fail sysctl",
        "mkdir -p /var/run/netns",
        "ip link add kdtcp type bridge && ip link set kdtcp mtu 9000 up || kd_fail kdtcp",
        f"ip addr add {SCHEDULER_IP}/24 dev kdtcp || kd_fail kdtcp address",
        "ip link add kdrdma type bridge && ip link set kdrdma mtu 9000 up || kd_fail kdrdma",
        "ip rule add pref 100 lookup local && ip rule del pref 0 lookup local || kd_fail ip rule local",
    ]
    for i, h in enumerate(hosts):
        ns, t, r, ip = netns(h["name"]), f"kdt{i}", f"kdr{i}", _rdma_address(i)
        lines += [
            f"ip netns add {ns} || kd_fail netns {ns}",
            f"ip link add {t} mtu 9000 type veth peer name {t}b mtu 9000 && ip link set {t}b master kdtcp up"
            f" && ip link set {t} netns {ns} || kd_fail {t}",
            f"ip -n {ns} addr add {h['address']}/24 dev {t} && ip -n {ns} link set {t} up"
            f" && ip -n {ns} link set lo up || kd_fail {ns} addresses",
            f"ip link add {r} mtu 9000 type veth peer name {r}b mtu 9000 && ip link set {r}b master kdrdma up"
            f" && ip addr add {ip}/24 dev {r} && ip link set {r} up || kd_fail {r}",
            f"{sysctl} net.ipv4.conf.{r}.accept_local=1 net.ipv4.conf.{r}.rp_filter=0"
            f" net.ipv4.conf.{r}.arp_ignore=1 net.ipv4.conf.{r}.arp_announce=2 || kd_fail sysctl {r}",
            f"ip rule add pref 10 iif {r} lookup local || kd_fail rule iif {r}",
            f"ip rule add pref 15 from {ip} to {ip} lookup local || kd_fail rule self {r}",
            f"ip route add 10.99.0.0/24 dev {r} src {ip} table {100 + i} || kd_fail route {r}",
            f"ip rule add pref 20 from {ip} lookup {100 + i} || kd_fail rule from {r}",
            f"ip rule add pref 30 oif {r} lookup {100 + i} || kd_fail rule oif {r}",
        ]
    for i in range(n):
        for j in range(n):
            if i != j:
                lines.append(
                    f"ip neigh replace {_rdma_address(j)} lladdr $(cat /sys/class/net/kdr{j}/address)"
                    f" dev kdr{i} nud permanent || kd_fail neigh kdr{i}"
                )
    lines += [f"rdma link add {h['device']} type rxe netdev kdr{i} || kd_fail rxe {h['device']}" for i, h in
              enumerate(hosts)]  # fmt: skip
    lines.append(f"echo {_quote(json.dumps(hosts))} > {HOSTS_FILE}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
