"""Host memory: registered regions with real bytes, keys, and spinning readers.

Every MR is backed by real bytes so that the simulation moves them: a test can check
byte for byte what a WRITE delivered, and that nothing outside the target range
changed, exactly as it would on kdreal. A large MR is an anonymous ``mmap``, whose
pages the kernel provides zeroed on first touch, so memory follows the bytes written,
not the bytes registered (a broker's 1 GiB segments cost what their batches fill).

A :class:`MemoryMeter` shared by every host counts the bytes the model holds: a small
MR's whole ``bytearray``, a large MR's pages once written (a bitmap of touched pages, as
the kernel backs them), less what ``DeregMr`` freed; its ``peak`` is the run's memory report.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count

from kdlab.verbs import ATOMIC_BYTES, Access, MemoryRegion, WcStatus

PAGE_BYTES = 4096
#: MRs at least this large are backed lazily (``mmap``); smaller ones by a ``bytearray``.
LAZY_BYTES = 1 << 20
#: First virtual address handed out on a simulated host (arbitrary, page aligned, non-zero).
BASE_ADDR = 0x7F00_0000_0000


class MemoryMeter:
    """Bytes held by every host's MRs now, and the most held at once."""

    __slots__ = ("held", "peak")

    def __init__(self) -> None:
        self.held = 0
        self.peak = 0

    def add(self, n: int) -> None:
        self.held += n
        if self.held > self.peak:
            self.peak = self.held


class ChangeWatchers:
    """Idle pollers' ranges of one MR (IdlePoll), each fired once its bytes differ from those it last saw.

    Ranges are filed by offset in buckets of :attr:`BUCKET` bytes, so a write looks only at the ranges it
    touches, not at every poller of the MR (a broker's slot region is polled by all its consumers).
    Callbacks fire in the order the ranges were added.
    """

    BUCKET = 256

    __slots__ = ("buckets", "live", "seq")

    def __init__(self) -> None:
        self.buckets: dict[int, list[tuple[int, int, bytes, Callable[[], None]]]] = {}
        self.live: set[int] = set()
        self.seq = 0

    def __len__(self) -> int:
        return len(self.live)

    def _spanned(self, off: int, end: int) -> range:
        return range(off // self.BUCKET, (max(end, off + 1) - 1) // self.BUCKET + 1)

    def add(self, off: int, seen: bytes, callback: Callable[[], None]) -> tuple[int, int, bytes, Callable[[], None]]:
        self.seq += 1
        entry = (self.seq, off, seen, callback)
        for b in self._spanned(off, off + len(seen)):
            self.buckets.setdefault(b, []).append(entry)
        self.live.add(self.seq)
        return entry

    def discard(self, entry: tuple[int, int, bytes, Callable[[], None]]) -> None:
        seq, off, seen, _ = entry
        if seq not in self.live:
            return
        self.live.discard(seq)
        for b in self._spanned(off, off + len(seen)):
            bucket = self.buckets[b]
            bucket.remove(entry)
            if not bucket:
                del self.buckets[b]

    def check(self, data: bytearray | mmap.mmap, off: int, end: int) -> None:
        """After a write of ``[off, end)``: fire (and drop) every range it touched whose bytes changed."""
        fired = {}
        for b in self._spanned(off, end):
            for entry in self.buckets.get(b, ()):
                seq, woff, seen, _ = entry
                if woff < end and off < woff + len(seen) and data[woff : woff + len(seen)] != seen:
                    fired[seq] = entry  # (a range spanning buckets is found once)
        in_order = [fired[seq] for seq in sorted(fired)]
        for entry in in_order:
            self.discard(entry)
        for entry in in_order:
            entry[3]()

    def clear(self) -> None:
        self.buckets.clear()
        self.live.clear()


@dataclass
class SimMr:
    """A registered region on a simulated host."""

    handle: MemoryRegion
    access: Access
    data: bytearray | mmap.mmap
    #: Spinning readers: (offset, expected bytes, callback) fired once the bytes match.
    watchers: list[tuple[int, bytes, Callable[[], None]]] = field(default_factory=list)
    #: Idle pollers (IdlePoll): ranges fired once their bytes differ from those last seen.
    change_watchers: ChangeWatchers = field(default_factory=ChangeWatchers)
    #: Bytes of ``data`` the model holds: all of a bytearray, an mmap's pages written so far.
    held: int = 0
    #: An mmap's pages: 1 once written (None for a bytearray, which is held whole).
    touched: bytearray | None = None
    meter: MemoryMeter = field(default_factory=MemoryMeter)

    def contains(self, addr: int, length: int) -> bool:
        start = self.handle.addr
        return start <= addr and addr + length <= start + self.handle.length


class HostMemory:
    """The registered memory of one host, addressed by virtual address and key."""

    def __init__(self, host: str, keys: count, meter: MemoryMeter | None = None) -> None:
        self.host = host
        self.meter = meter if meter is not None else MemoryMeter()
        self._keys = keys
        self._next_addr = BASE_ADDR
        self.by_lkey: dict[int, SimMr] = {}
        self.by_rkey: dict[int, SimMr] = {}
        self.registered_bytes = 0

    def register(self, length: int, access: Access) -> SimMr:
        if length <= 0:
            raise ValueError(f"RegMr.length must be > 0 bytes, got {length}")
        addr = self._next_addr
        self._next_addr += -(-length // PAGE_BYTES) * PAGE_BYTES + PAGE_BYTES  # guard page
        lkey, rkey = next(self._keys), next(self._keys)
        handle = MemoryRegion(addr=addr, length=length, lkey=lkey, rkey=rkey, host=self.host)
        lazy = length >= LAZY_BYTES
        mr = SimMr(handle, access, mmap.mmap(-1, length) if lazy else bytearray(length), meter=self.meter)
        if lazy:
            mr.touched = bytearray(-(-length // PAGE_BYTES))
        else:
            mr.held = length
            self.meter.add(length)
        self.by_lkey[lkey] = mr
        self.by_rkey[rkey] = mr
        self.registered_bytes += length
        return mr

    def deregister(self, lkey: int) -> None:
        """Drop the MR with ``lkey`` (its keys stop working) and free its bytes."""
        mr = self.by_lkey.pop(lkey, None)
        if mr is None:
            raise ValueError(f"DeregMr: no memory region with lkey {lkey} on host {self.host}")
        self.by_rkey.pop(mr.handle.rkey, None)
        self.registered_bytes -= mr.handle.length
        self.meter.add(-mr.held)
        mr.held = 0
        if isinstance(mr.data, mmap.mmap):
            mr.data.close()
        mr.data = bytearray()
        mr.watchers.clear()
        mr.change_watchers.clear()

    def local(self, addr: int, length: int, lkey: int) -> SimMr | None:
        """The MR an SGE refers to, or None if the lkey or bounds are wrong."""
        mr = self.by_lkey.get(lkey)
        if mr is None or not mr.contains(addr, length):
            return None
        return mr

    def remote(self, addr: int, length: int, rkey: int, need: Access) -> tuple[SimMr | None, WcStatus]:
        """Check a remote access as the responder NIC does: key, bounds, rights, alignment."""
        mr = self.by_rkey.get(rkey)
        if mr is None or not mr.contains(addr, length) or not (mr.access & need):
            return None, WcStatus.REM_ACCESS_ERR
        if need == Access.REMOTE_ATOMIC and addr % ATOMIC_BYTES:
            return None, WcStatus.REM_INV_REQ_ERR
        return mr, WcStatus.SUCCESS

    # --- byte movement -----------------------------------------------------------

    @staticmethod
    def read(mr: SimMr, addr: int, length: int) -> bytes:
        off = addr - mr.handle.addr
        return bytes(mr.data[off : off + length])

    @staticmethod
    def write(mr: SimMr, addr: int, data: bytes | bytearray | memoryview) -> None:
        off = addr - mr.handle.addr
        end = off + len(data)
        mr.data[off:end] = data
        touched = mr.touched
        if touched is not None and end > off:  # an mmap's pages are held from their first write
            p0, p1 = off // PAGE_BYTES, (end - 1) // PAGE_BYTES + 1
            new = touched.count(0, p0, p1)
            if new:
                touched[p0:p1] = b"\x01" * (p1 - p0)
                mr.held += new * PAGE_BYTES
                mr.meter.add(new * PAGE_BYTES)
        if mr.watchers:
            HostMemory.check_watchers(mr)
        if mr.change_watchers.live:
            mr.change_watchers.check(mr.data, off, end)

    @staticmethod
    def check_watchers(mr: SimMr) -> None:
        keep = []
        fired = []
        for w in mr.watchers:
            off, value, callback = w
            if mr.data[off : off + len(value)] == value:
                fired.append(callback)
            else:
                keep.append(w)
        mr.watchers = keep
        for callback in fired:
            callback()

    def gather(self, sges: tuple, total: int) -> bytes | None:
        """Concatenate the bytes of local SGEs, or None if one is invalid."""
        if len(sges) == 1:
            s = sges[0]
            mr = self.local(s.addr, s.length, s.lkey)
            return None if mr is None else self.read(mr, s.addr, s.length)
        parts = []
        for s in sges:
            mr = self.local(s.addr, s.length, s.lkey)
            if mr is None:
                return None
            parts.append(self.read(mr, s.addr, s.length))
        return b"".join(parts)

    def scatter(self, sges: tuple, data: bytes) -> bool:
        """Spread ``data`` over local SGEs; False if an SGE is invalid."""
        pos = 0
        for s in sges:
            if pos >= len(data):
                break
            n = min(s.length, len(data) - pos)
            mr = self.local(s.addr, n, s.lkey)
            if mr is None:
                return False
            self.write(mr, s.addr, data[pos : pos + n])
            pos += n
        return True
