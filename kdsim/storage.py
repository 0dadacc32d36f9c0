"""A broker host's page cache and log device: the kernel's write-back, computed per batch.

Kafka leaves flushing to the OS (``log.flush.interval.*`` unset). The Linux kernel writes
dirty pages back to the device behind the cache, and a process that writes while dirty data
is above ``vm.dirty_ratio`` of available memory is throttled until write-back makes room
(Documentation/admin-guide/sysctl/vm.rst: dirty_ratio, dirty_background_ratio). So a
sustained write rate above the device's is bounded by the device once the dirty limit is
reached, and data older than the cache has left it: a read of it goes to the device.

The model (docs/storage.md), one computation per batch and no simulator event unless a
thread must wait:

* write-back is a FIFO server at ``device_write_gbps`` (a :class:`~kdsim.timeline.Timeline`):
  each appended batch is one job, arriving when it is appended; it is clean
  ``device_latency_ns`` after its job ends;
* an append of ``n`` bytes at time ``t`` may proceed once the dirty bytes (appended, not yet
  clean) are at most ``limit - n``, with ``limit = dirty_ratio% x page_cache_bytes``: it waits
  for the oldest dirty batches to become clean (a hard limit: the kernel's gradual throttling
  between the background and the hard limit is not modelled);
* the cache holds the last ``page_cache_bytes`` appended on the host (an LRU by write order:
  dirty data is at most ``dirty_ratio`` of it, so it never crowds out the clean); bytes
  appended longer ago are read from the device, one read per fetch response, on a second
  FIFO server at ``device_read_gbps`` (reads and writes do not share the device's bandwidth),
  ending ``device_latency_ns`` after its transfer. Data read back is not re-inserted.

With ``device_write_gbps`` 0 (every profile but ``cx4-edr-100g-nvme``) nothing is modelled:
writes return 0 at once and reads never miss.
"""

from __future__ import annotations

import heapq

from kdsim.profile import StorageParams
from kdsim.timeline import Timeline


class HostStorage:
    """One host's page cache and device."""

    __slots__ = ("cache", "dirty", "dirty_bytes", "last_clean", "limit", "p", "reader", "writer", "written")

    def __init__(self, host: str, p: StorageParams) -> None:
        self.p = p
        self.cache = p.page_cache_bytes
        self.limit = p.page_cache_bytes * p.dirty_ratio / 100.0
        self.writer = Timeline(f"{host}.device-write")
        self.reader = Timeline(f"{host}.device-read")
        self.dirty: list[tuple[float, int]] = []  # heap of (clean at, bytes)
        self.dirty_bytes = 0
        self.written = 0  # bytes appended on this host: the position tokens
        self.last_clean = 0.0  # when the last byte written so far is on the device (write-back is FIFO)

    def write(self, t: float, nbytes: int) -> tuple[float, int]:
        """Append ``nbytes`` at ``t`` -> (when the append is done, the position token after it)."""
        dirty = self.dirty
        while dirty and dirty[0][0] <= t:
            self.dirty_bytes -= heapq.heappop(dirty)[1]
        at = t
        room = self.limit - nbytes
        while dirty and self.dirty_bytes > room:  # throttled: wait for the oldest dirty data to be clean
            clean, n = heapq.heappop(dirty)
            self.dirty_bytes -= n
            at = max(at, clean)
        p = self.p
        end = self.writer.reserve(at, nbytes * 8.0 / p.device_write_gbps)[1]
        heapq.heappush(dirty, (end + p.device_latency_ns, nbytes))
        self.last_clean = max(self.last_clean, end + p.device_latency_ns)
        self.dirty_bytes += nbytes
        self.written += nbytes
        return at, self.written

    def flushed_at(self, t: float) -> float:
        """An fsync at ``t`` returns when write-back has reached every byte written so far (FIFO: the last one)."""
        return max(t, self.last_clean)

    def missed(self, extents: list[tuple[int, int]]) -> int:
        """Bytes of ``extents`` (position token after them, length) that have left the cache."""
        cached_from = self.written - self.cache
        miss = 0
        for end, n in extents:
            if end and end - n < cached_from:
                miss += min(end, cached_from) - (end - n)
        return miss

    def read(self, t: float, nbytes: int) -> float:
        """A read of ``nbytes`` from the device issued at ``t`` -> when its data is there."""
        p = self.p
        rate = p.device_read_gbps
        duration = nbytes * 8.0 / rate if rate > 0 else 0.0
        return self.reader.reserve(t, duration)[1] + p.device_latency_ns

    def utilisation(self, now: float) -> dict[str, float]:
        """Busy share of each direction over ``now``, capped at 1 (write-back still queued at the end counts)."""
        return {
            "device_write": min(1.0, self.writer.busy_ns / now) if now else 0.0,
            "device_read": min(1.0, self.reader.busy_ns / now) if now else 0.0,
        }
