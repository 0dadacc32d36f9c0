"""Links, switches and paths: how long a message holds the wire.

Header overhead is computed per message from the packet count, not simulated per
packet: ``wire_bytes = payload + packets * packet_overhead + extension headers``.
A path is the list of link directions a message crosses; with a switch, the message
is forwarded cut-through, so the next hop may start once the first packet is in.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlab.hosts import natural_order
from kdsim.profile import Profile
from kdsim.timeline import Timeline

# IBTA transport extension headers, bytes (InfiniBand Architecture Spec. vol. 1, ch. 9).
RETH_BYTES = 16  # RDMA extended header: first packet of a WRITE, READ request
IMMDT_BYTES = 4  # immediate data: last packet of *_WITH_IMM
AETH_BYTES = 4  # ACK extended header: ACKs, first/last READ response packets
ATOMIC_ETH_BYTES = 28  # atomic request header
ATOMIC_ACK_ETH_BYTES = 8  # atomic response: the original value


@dataclass(frozen=True, eq=False)
class WireModel:
    """Per-byte and per-packet times of one link type, derived from the profile."""

    ns_per_byte: float
    mtu: int
    overhead: int
    propagation_ns: float

    @classmethod
    def from_profile(cls, profile: Profile) -> WireModel:
        link = profile.link
        return cls(8.0 / link.data_rate_gbps, link.mtu_bytes, link.packet_overhead_bytes, link.propagation_ns)

    def packets(self, payload: int) -> int:
        return max(1, -(-payload // self.mtu))

    def message_ns(self, payload: int, extra: int = 0) -> float:
        """Time to put a whole message (all its packets, with headers) on the wire."""
        return (payload + self.packets(payload) * self.overhead + extra) * self.ns_per_byte

    def first_packet_ns(self, payload: int, extra: int = 0) -> float:
        return (min(payload, self.mtu) + self.overhead + extra) * self.ns_per_byte

    def last_packet_ns(self, payload: int) -> float:
        last = payload - (self.packets(payload) - 1) * self.mtu
        return (last + self.overhead) * self.ns_per_byte

    def last_payload(self, payload: int) -> int:
        """Payload bytes in the last packet of a message."""
        return payload - (self.packets(payload) - 1) * self.mtu

    def goodput_gbps(self, payload: int, extra: int = 0) -> float:
        """Payload rate of back-to-back messages of this size (Gb/s)."""
        return payload * 8.0 / self.message_ns(payload, extra)


@dataclass
class Path:
    """The link directions from one NIC to another, and the fixed latency of each hop."""

    hops: list[Timeline]
    hop_latency_ns: list[float]


class Fabric:
    """Hosts joined back to back (two hosts), through one switch (a star), or in racks of a leaf-spine fabric.

    With ``switch.hosts_per_leaf`` the hosts fill leaves in natural name order; a message between two leaves
    crosses one of its leaf's ``switch.leaf_uplinks`` links to the spine and one of the far leaf's links down,
    the same pair of links for every message between two hosts (ECMP hashes a flow onto one path), each a
    link of the host links' rate. Two more switches on the way add their latency.

    A path is computed when a message needs it, not stored per pair of hosts: memory and set-up grow with
    the hosts, not with their square.
    """

    def __init__(self, profile: Profile, hosts: list[str], switch: bool | None = None) -> None:
        self.wire = WireModel.from_profile(profile)
        self.switched = len(hosts) > 2 if switch is None else switch
        if not self.switched and len(hosts) > 2:
            raise ValueError("a fabric without a switch joins at most two hosts")
        prop = profile.link.propagation_ns
        self.uplink = {h: Timeline(f"{h}->") for h in hosts}
        self.downlink = {h: Timeline(f"->{h}") for h in hosts}
        self._latency = [prop, profile.switch.latency_ns + prop] if self.switched else [prop]
        self._times: dict[tuple[int, int], tuple[float, float, float]] = {}
        per_leaf, uplinks = profile.switch.hosts_per_leaf, profile.switch.leaf_uplinks
        self.spine_hop_ns = profile.switch.latency_ns + prop  # a leaf or spine switch, then its cable
        #: A host's leaf and index (racks only); each leaf's links up to the spine and down from it.
        self.leaf_of: dict[str, tuple[int, int]] = {}
        if self.switched and per_leaf and len(hosts) > per_leaf:
            self.leaf_of = {h: (i // per_leaf, i) for i, h in enumerate(natural_order(hosts))}
            leaves = -(-len(hosts) // per_leaf)
            self.spine_up = [[Timeline(f"leaf{k}->spine[{j}]") for j in range(uplinks)] for k in range(leaves)]
            self.spine_down = [[Timeline(f"spine[{j}]->leaf{k}") for j in range(uplinks)] for k in range(leaves)]

    def _time(self, payload: int, extra: int) -> tuple[float, float, float]:
        w = self.wire
        t = self._times[payload, extra] = (
            w.message_ns(payload, extra),
            w.first_packet_ns(payload, extra),
            w.last_packet_ns(payload),
        )
        return t

    def path(self, src: str, dst: str) -> Path:
        if src == dst or src not in self.uplink or dst not in self.downlink:
            raise ValueError(f"no path from host {src!r} to {dst!r} (loopback is not modelled)")
        if not self.switched:
            return Path([self.uplink[src]], self._latency)
        spine = self.spine_links(src, dst) if self.leaf_of else ()
        up, down = self._latency
        return Path([self.uplink[src], *spine, self.downlink[dst]], [up, *[self.spine_hop_ns] * len(spine), down])

    def send(
        self, src: str, dst: str, ready: float, last_ready: float, payload: int, extra: int = 0
    ) -> tuple[float, float]:
        """Carry a message whose first packet is ready at ``ready`` and last at ``last_ready``.

        Returns when the first and the last packet arrive at ``dst``'s NIC.
        """
        if src == dst:
            raise ValueError(f"no path from host {src!r} to itself (loopback is not modelled)")
        dur, first, last = self._times.get((payload, extra)) or self._time(payload, extra)
        lat = self._latency
        start, end = self.uplink[src].reserve(ready, dur, last_ready + last)
        ready, last_ready = start + first + lat[0], end + lat[0]
        if self.leaf_of:
            hop = self.spine_hop_ns
            for tl in self.spine_links(src, dst):
                start, end = tl.reserve(ready, dur, last_ready + last)
                ready, last_ready = start + first + hop, end + hop
        if self.switched:
            start, end = self.downlink[dst].reserve(ready, dur, last_ready + last)
            ready, last_ready = start + first + lat[1], end + lat[1]
        return ready, last_ready

    def spine_links(self, src: str, dst: str) -> tuple[Timeline, ...]:
        """The spine links a message from ``src`` to ``dst`` crosses: none within a leaf, else up and down."""
        (ls, i), (ld, j) = self.leaf_of[src], self.leaf_of[dst]
        if ls == ld:
            return ()
        link = hash((i, j)) % len(self.spine_up[ls])  # the flow's ECMP hash (ints hash alike in every process)
        return self.spine_up[ls][link], self.spine_down[ld][link]

    def control(self, src: str, dst: str, when: float, extra: int) -> float:
        """Arrival time of a header-only packet (ACK, NAK) sent at ``when``.

        ACKs are coalesced by RC NICs and tiny, so they take time on the wire but
        are not queued behind data (a stated simplification).
        """
        path = self.path(src, dst)
        return when + self.wire.first_packet_ns(0, extra) * len(path.hops) + sum(path.hop_latency_ns)

    def utilisation(self, now: float) -> dict[str, float]:
        """The busiest spine link's busy share, up and down (racks only)."""
        if not self.leaf_of or not now:
            return {}
        return {
            "spine_up": max(tl.busy_ns for links in self.spine_up for tl in links) / now,
            "spine_down": max(tl.busy_ns for links in self.spine_down for tl in links) / now,
        }
