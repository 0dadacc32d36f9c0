"""The machines a measured run uses: a spec's ``hosts``, ``placement`` and ``scheduler``.

::

    engine: real
    scheduler: tcp://10.0.0.1:8786      # a Dask scheduler with one worker per host, named after it
    hosts:
      - {name: node1, address: 10.0.0.11, device: mlx5_0, gid_index: 3, cores: 16}
      - {name: node2, address: 10.0.0.12, device: mlx5_0, gid_index: 3, cores: 16}
    placement: {b0: node1, p0: node2}   # optional: simulated host -> machine

``hosts: testbed`` takes the hosts and the scheduler of ``kdlab testbed run --hosts N``
(``KDLAB_TESTBED_HOSTS``, ``KDLAB_DASK_SCHEDULER``). Roles name *simulated* hosts
(the Kafka cluster's ``b0``, ``p1``, ``c0``); the placement maps each to a machine. Simulated hosts the
placement does not name fill the machines in turn, in natural name order (brokers,
then consumers, then producers: the order racks fill in kdsim), so with as many
machines as simulated hosts each gets one, as in the simulation. Without ``hosts``
every simulated host runs on this machine, as before.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: Environment variables ``kdlab testbed run --hosts N`` sets for its command.
TESTBED_HOSTS_ENV = "KDLAB_TESTBED_HOSTS"
SCHEDULER_ENV = "KDLAB_DASK_SCHEDULER"


class HostSpec(BaseModel):
    """One RDMA machine: its Dask worker's name, the address the others reach it at, its device."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="its Dask worker's name")
    address: str = Field(min_length=1, description="TCP address every other host and the driver reach")
    device: str | None = Field(default=None, description="verbs device (default: the first listed)")
    port: int = Field(default=1, ge=1, le=255)
    gid_index: int | None = Field(default=None, ge=0, description="default: the first IPv4-mapped GID")
    cores: int | None = Field(default=None, ge=1, description="cores its processes share (default: all it has)")


class ClusterSpec(BaseModel):
    """The machines of a measured run, the placement of simulated hosts on them, and their Dask scheduler."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scheduler: str = Field(pattern=r"^(tcp|tls)://\S+:\d+$", description="Dask scheduler, tcp://HOST:PORT")
    hosts: tuple[HostSpec, ...]
    placement: tuple[tuple[str, str], ...] = ()

    def machine(self, name: str) -> HostSpec:
        return next(h for h in self.hosts if h.name == name)

    def place(self, sim_hosts: list[str]) -> dict[str, HostSpec]:
        """Each simulated host's machine: the placement's, else the machines in turn in natural name order."""
        fixed = dict(self.placement)
        free = [h for h in natural_order(sim_hosts) if h not in fixed]
        out = {h: self.machine(m) for h, m in fixed.items() if h in sim_hosts}
        out.update({h: self.hosts[i % len(self.hosts)] for i, h in enumerate(free)})
        return out

    def summary(self) -> dict[str, Any]:
        """What a result row records of the cluster (provenance)."""
        return {"scheduler": self.scheduler, "hosts": [h.model_dump(exclude_none=True) for h in self.hosts],
                "placement": dict(self.placement)}  # fmt: skip


class HostsError(ValueError):
    """A ``hosts`` section or placement is invalid; the message names the field."""


def natural_order(hosts: list[str]) -> list[str]:
    """Host names in natural order (b2 before b10): the order kdsim's racks fill leaves and the default
    placement fills machines."""
    return sorted(hosts, key=lambda h: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", h)])


def testbed_cluster(where: str = "spec") -> tuple[list[dict[str, Any]], str]:
    """The hosts and scheduler of the testbed this process runs in (``kdlab testbed run --hosts N``)."""
    path, scheduler = os.environ.get(TESTBED_HOSTS_ENV), os.environ.get(SCHEDULER_ENV)
    if not path or not scheduler:
        raise HostsError(
            f"{where}: hosts: testbed: {TESTBED_HOSTS_ENV} and {SCHEDULER_ENV} are not set; "
            "run inside `kdlab testbed run --hosts N -- CMD`"
        )
    return json.loads(Path(path).read_text()), scheduler


def make_cluster(
    hosts: list[dict[str, Any]] | str | None, scheduler: str | None, placement: dict[str, str] | None,
    where: str = "spec",
) -> ClusterSpec | None:  # fmt: skip
    """A validated :class:`ClusterSpec` from a spec's fields, or None without ``hosts``."""
    from kdlab.spec import format_validation_error

    if hosts is None:
        if scheduler is not None or placement:
            raise HostsError(f"{where}: scheduler and placement need a hosts section")
        return None
    if hosts == "testbed":
        hosts, testbed_scheduler = testbed_cluster(where)
        scheduler = scheduler or testbed_scheduler
    if isinstance(hosts, str) or not hosts:
        raise HostsError(f"{where}: hosts: a list of at least one host, or 'testbed' (got {hosts!r})")
    if scheduler is None:
        raise HostsError(f"{where}: scheduler: needed with hosts (the Dask scheduler, tcp://HOST:PORT)")
    try:
        pairs = tuple(sorted((placement or {}).items()))
        cluster = ClusterSpec(scheduler=scheduler, hosts=tuple(hosts), placement=pairs)
    except ValidationError as err:
        raise HostsError(format_validation_error(err, where)) from None
    names = [h.name for h in cluster.hosts]
    if len(set(names)) != len(names):
        raise HostsError(f"{where}: hosts: names must be unique (got {names})")
    for sim_host, machine in cluster.placement:
        if machine not in names:
            raise HostsError(f"{where}: placement.{sim_host}: {machine!r} is not a host; hosts: {', '.join(names)}")
    return cluster


def spec_fields(source: str) -> dict[str, Any]:
    from kdlab.spec import read_yaml

    """The fields ``source`` sets: ``testbed`` sets the hosts and the scheduler (the testbed's); a file sets
    those it has (hosts always), so a spec's own placement stays unless the file gives one."""
    if source == "testbed":
        return {"hosts": "testbed", "scheduler": None}
    doc, origin = read_yaml(source, "hosts", HostsError)
    if not isinstance(doc, dict) or "hosts" not in doc:
        raise HostsError(f"{origin}: a hosts file is a mapping with hosts: and scheduler: (and placement:)")
    return {k: doc[k] for k in ("hosts", "scheduler", "placement") if k in doc}
