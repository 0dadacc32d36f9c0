"""The RDMA NIC of one host: processing units, QP-context cache and its PCIe link.

Every resource is a :class:`~kdsim.timeline.Timeline`, so a work request's path
through the NIC is computed in a few additions when it is posted.

* Processing units (PUs) handle one WQE or incoming message at a time; a QP is pinned
  to one PU so its requests stay in order.
* The QP-context cache is an LRU of QP numbers; a miss holds the PU for the time of a
  context fetch over PCIe (``nic.qpc_miss_ns``).
* PCIe has one server per direction: ``pcie_down`` carries host-to-NIC traffic (DMA
  read completions, MMIO), ``pcie_up`` NIC-to-host traffic (DMA writes, CQEs).
  Each transfer is split into TLPs of at most ``max_payload_bytes`` with
  ``tlp_overhead_bytes`` each.
"""

from __future__ import annotations

from collections import OrderedDict

from kdsim.profile import Profile
from kdsim.timeline import ServerPool, Timeline


class QpContextCache:
    """An LRU cache of QP contexts on the NIC."""

    __slots__ = ("capacity", "entries", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[int, None] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def touch(self, qp_num: int) -> bool:
        """Use a QP's context; True on a hit. A miss evicts the least recently used."""
        entries = self.entries
        if qp_num in entries:
            entries.move_to_end(qp_num)
            self.hits += 1
            return True
        self.misses += 1
        entries[qp_num] = None
        if len(entries) > self.capacity:
            entries.popitem(last=False)
        return False


class Rnic:
    """One host's NIC and its PCIe link."""

    def __init__(self, host: str, profile: Profile) -> None:
        nic, pcie = profile.nic, profile.pcie
        self.host = host
        self.pus = ServerPool(f"{host}.pu", nic.processing_units)
        self.qpc = QpContextCache(nic.qpc_cache_entries)
        self.pcie_down = Timeline(f"{host}.pcie_down")
        self.pcie_up = Timeline(f"{host}.pcie_up")
        self.tx_wqe_ns = nic.tx_wqe_ns
        self.rx_ns = nic.rx_ns
        self.pu_ns_per_byte = nic.pu_ns_per_byte
        self.qpc_miss_ns = nic.qpc_miss_ns
        self.pipeline_ns = nic.pipeline_ns
        self.dma_read_ns = pcie.dma_read_ns
        self.write_ns = pcie.write_ns
        self._pcie_ns_per_byte = 8.0 / pcie.bandwidth_gbps
        self._mps = pcie.max_payload_bytes
        self._tlp = pcie.tlp_overhead_bytes
        self._pcie_cache: dict[int, float] = {}

    def pcie_ns(self, nbytes: int) -> float:
        """Time ``nbytes`` of payload hold one PCIe direction, TLP overhead included (memoised)."""
        t = self._pcie_cache.get(nbytes)
        if t is None:
            tlps = max(1, -(-nbytes // self._mps))
            t = self._pcie_cache[nbytes] = (nbytes + tlps * self._tlp) * self._pcie_ns_per_byte
        return t

    def process(self, qp_num: int, arrival: float, work_ns: float) -> float:
        """Run ``work_ns`` of PU work for a QP (plus a context fetch on a miss); -> end time."""
        qpc = self.qpc
        entries = qpc.entries
        if qp_num in entries:  # QpContextCache.touch, inlined on this hot path
            entries.move_to_end(qp_num)
            qpc.hits += 1
        else:
            qpc.touch(qp_num)
            work_ns += self.qpc_miss_ns
        servers = self.pus.servers
        return servers[qp_num % len(servers)].reserve(arrival, work_ns)[1]

    def dma_write(self, arrival: float, nbytes: int, last_in: float = 0.0, last_bytes: int = 0) -> float:
        """DMA ``nbytes`` into host memory; -> time the data is visible to the CPU.

        ``last_in`` is when the last packet (``last_bytes`` of payload) was in the NIC:
        packets are stored and forwarded, so the DMA ends no earlier than that packet's
        own transfer after it arrived.
        """
        _, end = self.pcie_up.reserve(arrival, self.pcie_ns(nbytes), last_in + self.pcie_ns(last_bytes))
        return end + self.write_ns

    def dma_read(self, issue: float, nbytes: int, first_bytes: int) -> tuple[float, float]:
        """DMA-read ``nbytes`` of host memory issued at ``issue``.

        Returns when the first ``first_bytes`` (one packet's worth) and all the data
        are on the NIC.
        """
        start, end = self.pcie_down.reserve(issue + self.dma_read_ns, self.pcie_ns(nbytes))
        return start + self.pcie_ns(first_bytes), end

    def utilisation(self, elapsed_ns: float) -> dict[str, float]:
        if elapsed_ns <= 0:
            return {}
        return {
            "pu": self.pus.busy_ns / (elapsed_ns * len(self.pus.servers)),
            "pcie_down": self.pcie_down.busy_ns / elapsed_ns,
            "pcie_up": self.pcie_up.busy_ns / elapsed_ns,
        }
