"""Hardware profiles: every model number declared once, loaded from data, with a source.

Parameters are declared here, ns-3 style, as typed fields with a unit and help text;
their values live in YAML files under ``kdsim/profiles/``, each value with the source
it comes from and an evidence tag:

* ``V`` read in a primary source (datasheet, paper, perftest output);
* ``S`` a secondary source;
* ``A`` approximate, a default to calibrate;
* ``M`` measured or fitted by us (the file says on what, and how well).

A profile file must give every parameter, each with a source; anything else is an
error that names the parameter. Profiles are frozen: to vary one number in a sweep,
use :meth:`Profile.with_overrides`, which records the override.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

TAGS = {"V": "primary source", "S": "secondary source", "A": "approximate", "M": "measured/fitted"}


class ProfileError(ValueError):
    """A profile file or override is malformed; the message names the parameter."""


def param(unit: str, help: str, *, low: float = 0.0, high: float = float("inf")) -> Any:
    """Declare a profile parameter with its unit, help text and allowed range."""
    return field(metadata={"unit": unit, "help": help, "low": low, "high": high})


@dataclass(frozen=True)
class LinkParams:
    """A full-duplex link between a NIC port and its peer (NIC or switch)."""

    data_rate_gbps: float = param("Gb/s", "data rate after line coding (64b/66b), per direction", low=1e-3)
    mtu_bytes: int = param("B", "path MTU: payload bytes per packet", low=256, high=9000)
    packet_overhead_bytes: int = param("B", "header and trailer bytes added to every packet on the wire")
    propagation_ns: float = param("ns", "signal propagation along the cable")


@dataclass(frozen=True)
class SwitchParams:
    """A cut-through switch, used when the topology has one."""

    latency_ns: float = param("ns", "port-to-port forwarding latency")
    hosts_per_leaf: int = param(
        "hosts",
        "hosts under one leaf (top-of-rack) switch of a two-level leaf-spine fabric, filled in host-name order "
        "(brokers b*, then consumers c*, then producers p*); 0: one switch joins every host",
    )
    leaf_uplinks: int = param(
        "links",
        "links from each leaf to the spine, each at the link's rate, a flow hashed onto one (ECMP); oversubscription "
        "is hosts_per_leaf / leaf_uplinks (used only with hosts_per_leaf > 0)",
    )


@dataclass(frozen=True)
class PcieParams:
    """The PCIe link between host memory and the NIC, one server per direction."""

    bandwidth_gbps: float = param("Gb/s", "raw data rate per direction after 128b/130b coding", low=1e-3)
    max_payload_bytes: int = param("B", "max payload per TLP (MPS)", low=64, high=4096)
    tlp_overhead_bytes: int = param("B", "header, sequence and LCRC bytes per TLP")
    dma_read_ns: float = param("ns", "round-trip latency of a small NIC DMA read of host memory")
    write_ns: float = param("ns", "one-way latency of a posted write (MMIO to the NIC, DMA write to memory)")


@dataclass(frozen=True)
class NicParams:
    """The RDMA NIC: processing units, QP-context cache, inline and read limits."""

    processing_units: int = param("count", "parallel WQE processing units; a QP is pinned to one", low=1)
    tx_wqe_ns: float = param("ns", "processing-unit time per outgoing work request")
    rx_ns: float = param("ns", "processing-unit time per incoming request or response")
    pu_ns_per_byte: float = param("ns/B", "processing-unit time per payload byte (software RNICs copy and CRC)")
    pipeline_ns: float = param("ns", "fixed latency through the NIC's pipelines per message, not holding a unit")
    max_inline_bytes: int = param("B", "largest payload a WQE may carry inline")
    qpc_cache_entries: int = param("count", "QP contexts the NIC caches (LRU)", low=1)
    on_host_cores: int = param(
        "flag",
        "1: the processing units are the machine's CPU cores (a software RNIC: Soft-RoCE), 0: NIC hardware",
        high=1,
    )
    qpc_miss_ns: float = param("ns", "processing-unit time to fetch a QP context on a cache miss")
    max_rd_atomic: int = param("count", "outstanding RDMA READ/atomic requests per QP", low=1)
    atomic_ns: float = param("ns", "time an atomic holds its 8-byte target at the responder")
    cqe_bytes: int = param("B", "completion-queue entry written to host memory")


@dataclass(frozen=True)
class TcpParams:
    """The kernel TCP/IP path between hosts (over Ethernet, or IPoIB on the RDMA fabric)."""

    data_rate_gbps: float = param("Gb/s", "data rate of the link TCP uses, per direction", low=1e-3)
    mtu_bytes: int = param("B", "IP MTU (frame payload)", low=576, high=65520)
    frame_overhead_bytes: int = param("B", "wire bytes per frame besides the TCP payload (framing, IP, TCP)")
    latency_ns: float = param("ns", "one-way latency of a small message: both kernel stacks, interrupt, wire")
    send_ns_per_byte: float = param("ns/B", "sender CPU per byte (copy into the socket buffer)")
    recv_ns_per_byte: float = param("ns/B", "receiver CPU per byte (copy out of the socket buffer)")
    shares_rdma_link: int = param(
        "bool",
        "1: TCP runs on the RDMA link (IPoIB on the InfiniBand port, or TCP and RoCE on one Ethernet port), so a "
        "host's TCP and RDMA traffic queue on one link in each direction; 0: separate networks",
        high=1,
    )


@dataclass(frozen=True)
class HostParams:
    """Host CPU costs that the verbs datapaths pay."""

    post_ns: float = param("ns", "CPU time of one ibv_post_send/recv call (WQE build, doorbell)")
    post_wr_ns: float = param("ns", "CPU time for each further work request in a post list")
    poll_ns: float = param("ns", "CPU time of one ibv_poll_cq call")
    cache_miss_ns: float = param("ns", "time for a spinning core to see a line the NIC wrote")
    wakeup_ns: float = param("ns", "interrupt-to-thread wake-up latency (event-mode CQs, a socket's epoll wait)")
    queue_wakeup_ns: float = param(
        "ns", "wake-up of a thread parked on an in-process queue when another thread of the process hands it work"
    )
    notify_ns: float = param(
        "ns",
        "wake-up of a thread waiting on a notification (0 where the system runs the notified work on the "
        "notifying thread)",
    )
    handoff_ns: float = param(
        "ns",
        "hand-off to a parked thread that the datapath runs in the same role: a Kafka client's application "
        "<-> I/O thread, a broker's response back to its network thread (selector or latch wake-up)",
    )
    memcpy_gbps: float = param("Gb/s", "single-core memcpy bandwidth", low=1e-3)
    crc32c_gbps: float = param("Gb/s", "single-core CRC-32C throughput (SSE4.2 / JVM intrinsic)", low=1e-3)
    syscall_ns: float = param("ns", "CPU time of one system call (send, recv, epoll)")
    request_ns: float = param(
        "ns", "CPU a Kafka broker spends per request on the socket path only: parsing, dispatch, response (JVM)"
    )
    append_ns: float = param(
        "ns",
        "CPU a Kafka broker spends per appended batch besides CRC and copies: validation, producer state, "
        "high watermark (both Kafka and KafkaDirect)",
    )
    append_record_ns: float = param("ns", "CPU per record the leader's LogValidator iterates when it appends a batch")
    op_ns: float = param("ns", "CPU time of the datapath's own code per operation (interpreter, engine dispatch)")
    process_cores: int = param("cores", "cores the threads of one host process can use at once (0: one per thread)")
    machine_cores: int = param("cores", "cores all simulated hosts share, as processes of one VM (0: one machine each)")
    producer_record_ns: float = param(
        "ns",
        "a Kafka producer's CPU per record besides copies and CRC: ProducerRecord, serialiser, partitioner, "
        "RecordAccumulator.append and the record's callback (Java clients; 0 where op_ns covers the client)",
    )
    consumer_record_ns: float = param(
        "ns",
        "a Kafka consumer's CPU per record besides copies and CRC: parsing the record, deserialisers, "
        "ConsumerRecord (Java clients; 0 where op_ns covers the client)",
    )
    consumer_fetch_ns: float = param(
        "ns", "a Kafka consumer's CPU to build and serialise one FetchRequest (Fetcher.sendFetches), besides syscalls"
    )
    gc_young_bytes: int = param(
        "B",
        "a JVM process's young generation (eden): a stop-the-world young collection every time its threads "
        "have allocated this much (0: no collections; docs/variability.md)",
    )
    gc_pause_ns: float = param("ns", "length of one young-collection pause of a JVM process")
    cpu_sigma: float = param(
        "ln",
        "width of host CPU costs (Compute kinds, post/poll/syscall/copy costs, op_ns): each charge is drawn "
        "lognormal with median the cost above and this standard deviation of its logarithm, from the run's "
        "seed; 0: no draw, the cost itself (docs/variability.md)",
        high=3.0,
    )
    wakeup_sigma: float = param(
        "ln",
        "width of wake-ups (wakeup_ns, queue_wakeup_ns, notify_ns, handoff_ns): each wake-up is drawn lognormal "
        "with median the cost above and this standard deviation of its logarithm, from the run's seed; 0: no "
        "draw, the cost itself (docs/variability.md)",
        high=3.0,
    )


@dataclass(frozen=True)
class StorageParams:
    """A broker host's page cache and the device behind its log files (docs/storage.md)."""

    page_cache_bytes: int = param(
        "B", "page cache the kernel gives a host's log files: data appended longer ago than this has left it"
    )
    dirty_ratio: float = param(
        "%",
        "vm.dirty_ratio: dirty data allowed, as a share of the page cache, before appends block in the kernel "
        "until write-back makes room",
        high=100.0,
    )
    device_write_gbps: float = param(
        "Gb/s", "sequential write bandwidth of the log device; dirty data is written back at this rate (0: no device)"
    )
    device_read_gbps: float = param("Gb/s", "sequential read bandwidth of the log device (reads that miss the cache)")
    device_latency_ns: float = param("ns", "latency of one device read or write (queue depth 1, 4 KiB)")


SECTIONS: dict[str, type] = {
    "link": LinkParams,
    "switch": SwitchParams,
    "pcie": PcieParams,
    "nic": NicParams,
    "tcp": TcpParams,
    "host": HostParams,
    "storage": StorageParams,
}


@dataclass(frozen=True)
class Source:
    """Where one parameter value comes from."""

    tag: str
    text: str


@dataclass(frozen=True)
class Profile:
    """A complete, validated hardware profile."""

    name: str
    description: str
    link: LinkParams
    switch: SwitchParams
    pcie: PcieParams
    nic: NicParams
    tcp: TcpParams
    host: HostParams
    storage: StorageParams
    sources: dict[str, Source] = field(compare=False, hash=False)
    fit: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    overrides: tuple[tuple[str, float], ...] = ()

    def get(self, dotted: str) -> float:
        section, name = _split(dotted)
        return getattr(getattr(self, section), name)

    def with_overrides(self, overrides: dict[str, float]) -> Profile:
        """A copy with some parameters replaced (``{"nic.qpc_cache_entries": 64}``)."""
        if not overrides:
            return self
        changed: dict[str, Any] = {}
        for dotted, value in overrides.items():
            section, name = _split(dotted)
            current = changed.get(section, getattr(self, section))
            changed[section] = dataclasses.replace(current, **{name: _check(section, name, value)})
        merged = tuple(sorted({**dict(self.overrides), **overrides}.items()))
        out = dataclasses.replace(self, overrides=merged, **changed)
        _check_together(out)
        return out

    def as_dict(self) -> dict[str, float]:
        """Every parameter as ``{"section.name": value}``."""
        return {f"{s}.{f.name}": getattr(getattr(self, s), f.name) for s in SECTIONS for f in fields(SECTIONS[s])}


def _split(dotted: str) -> tuple[str, str]:
    section, _, name = dotted.partition(".")
    if section not in SECTIONS or name not in {f.name for f in fields(SECTIONS[section])}:
        raise ProfileError(f"unknown profile parameter {dotted!r}; known: {', '.join(param_names())}")
    return section, name


def param_names() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


def param_info(dotted: str) -> dict[str, Any]:
    section, name = _split(dotted)
    f = next(f for f in fields(SECTIONS[section]) if f.name == name)
    return dict(f.metadata)


def _check(section: str, name: str, value: Any) -> float:
    f = next(f for f in fields(SECTIONS[section]) if f.name == name)
    lo, hi = f.metadata["low"], f.metadata["high"]
    want_int = f.type in ("int", int)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{section}.{name}: expected a number in {f.metadata['unit']}, got {value!r}")
    if want_int and value != int(value):
        raise ProfileError(f"{section}.{name}: expected a whole number, got {value!r}")
    if not math.isfinite(value):
        raise ProfileError(f"{section}.{name}: expected a finite number in {f.metadata['unit']}, got {value!r}")
    if not lo <= value <= hi:
        raise ProfileError(f"{section}.{name} = {value} is outside the allowed range [{lo}, {hi}]")
    return int(value) if want_int else float(value)


def _profiles_dir() -> Path:
    return Path(str(resources.files("kdsim") / "profiles"))


def available_profiles() -> list[str]:
    """Names of the profiles shipped with kdsim."""
    return sorted(p.stem for p in _profiles_dir().glob("*.yaml"))


def profile_path(name: str) -> Path:
    path = _profiles_dir() / f"{name}.yaml"
    if not path.exists():
        raise ProfileError(f"unknown profile {name!r}; available: {', '.join(available_profiles())}")
    return path


def load_profile(name_or_path: str) -> Profile:
    """Load a shipped profile by name, or any profile file by path.

    The files are read on every call, so an edited profile is never served stale; parsing
    is cached by the files' text.
    """
    p = Path(name_or_path)
    path = p if p.suffix in (".yaml", ".yml") and p.exists() else profile_path(name_or_path)
    return _parse_cached(str(path), path.read_text(), _base_texts(path.read_text(), str(path)))


def _base_texts(text: str, origin: str, depth: int = 0) -> tuple[str, ...]:
    """The text of each profile in the ``base:`` chain below ``text``, nearest first."""
    doc = _yaml_doc(text, origin)
    if not isinstance(doc, dict) or "base" not in doc:
        return ()
    if depth > 4:
        raise ProfileError(f"{origin}: 'base' chain too deep")
    base_text = profile_path(str(doc["base"])).read_text()
    return (base_text, *_base_texts(base_text, str(doc["base"]), depth + 1))


@cache
def _yaml_doc(text: str, origin: str) -> Any:
    """The parsed YAML of a profile file's text (cached: callers must not modify it)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ProfileError(f"{origin}: not valid YAML: {err}") from None


@cache
def _parse_cached(origin: str, text: str, base_texts: tuple[str, ...]) -> Profile:
    del base_texts  # part of the cache key: a changed base file must give a new profile
    return parse_profile(_resolve_base(_yaml_doc(text, origin), origin), origin=origin)


def _resolve_base(doc: Any, origin: str, depth: int = 0) -> Any:
    """A profile may say ``base: NAME`` and give only the parameters it changes."""
    if not isinstance(doc, dict) or "base" not in doc:
        return doc
    if depth > 4:
        raise ProfileError(f"{origin}: 'base' chain too deep")
    base_name = doc["base"]
    base_text = profile_path(str(base_name)).read_text()
    base = _resolve_base(_yaml_doc(base_text, str(base_name)), str(base_name), depth + 1)
    merged = {k: v for k, v in base.items() if k not in ("fit", "name", "description")}
    for key, value in doc.items():
        if key == "base":
            continue
        if key in SECTIONS and isinstance(value, dict):
            merged[key] = {**base.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def parse_profile(doc: Any, origin: str = "<profile>") -> Profile:
    """Validate a profile document (the parsed YAML) into a :class:`Profile`."""
    if not isinstance(doc, dict):
        raise ProfileError(f"{origin}: a profile is a mapping with name, description and sections")
    for key in ("name", "description"):
        if not isinstance(doc.get(key), str):
            raise ProfileError(f"{origin}: field {key!r} is required and must be text")
    allowed = {"name", "description", "fit", *SECTIONS}
    extra = set(doc) - allowed
    if extra:
        raise ProfileError(f"{origin}: unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    sources: dict[str, Source] = {}
    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        entries = doc.get(section)
        if not isinstance(entries, dict):
            raise ProfileError(f"{origin}: section {section!r} is missing")
        names = {f.name for f in fields(cls)}
        unknown = set(entries) - names
        if unknown:
            raise ProfileError(f"{origin}: unknown parameter(s) {sorted(f'{section}.{u}' for u in unknown)}")
        values: dict[str, float] = {}
        for f in fields(cls):
            where = f"{origin}: {section}.{f.name}"
            entry = entries.get(f.name)
            if not isinstance(entry, dict) or "value" not in entry:
                raise ProfileError(f"{where} is missing; give {{value, tag, source}} ({f.metadata['help']})")
            tag, text = entry.get("tag"), entry.get("source")
            if tag not in TAGS:
                raise ProfileError(f"{where}: tag must be one of {sorted(TAGS)}, got {tag!r}")
            if not isinstance(text, str) or not text.strip():
                raise ProfileError(f"{where}: every value needs a source")
            values[f.name] = _check(section, f.name, entry["value"])
            sources[f"{section}.{f.name}"] = Source(tag, text.strip())
        built[section] = cls(**values)
    profile = Profile(
        name=doc["name"], description=doc["description"], sources=sources, fit=doc.get("fit") or {}, **built
    )
    _check_together(profile)
    return profile


def _check_together(profile: Profile) -> None:
    """Parameters that are only valid together."""
    sw = profile.switch
    if sw.hosts_per_leaf and not sw.leaf_uplinks:
        raise ProfileError(f"switch.leaf_uplinks must be >= 1 with switch.hosts_per_leaf = {sw.hosts_per_leaf} (got 0)")
