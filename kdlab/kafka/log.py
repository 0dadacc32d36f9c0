"""A partition's log as its replicas keep it: segments, offsets, high watermark, ISR.

Engine-neutral state shared by the threads of one broker. It holds the batches'
bytes (Kafka over TCP keeps them here; KafkaDirect keeps them in registered segment
memory and records only positions here) and answers "what may a fetch of offset X
return": up to the high watermark for consumers, up to the log end for followers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Segment:
    """A preallocated segment: ``capacity`` bytes, ``position`` of them committed."""

    seg_id: int
    base_offset: int
    capacity: int
    position: int = 0
    sealed: bool = False
    mr: Any = None  # KafkaDirect: the registered memory region holding the segment
    final: int | None = None  # KafkaDirect: rolled; sealed once committed up to here


@dataclass
class Entry:
    """One appended batch: offsets, where it lies, and (TCP path) its bytes."""

    base_offset: int
    last_offset: int
    seg_id: int
    position: int
    size: int
    data: bytes | None = None
    stored: int = 0  # the FileWrite token after its bytes (0: not modelled): is it still in the page cache?


@dataclass
class PartitionLog:
    """One replica of one partition."""

    partition: int
    segment_bytes: int
    replicas: tuple[str, ...] = ()
    segments: list[Segment] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    leo: int = 0  # log end offset: next offset to assign
    hw: int = 0  # high watermark
    flushed: int = 0  # recovery point: offsets below it were fsynced (log.flush.interval.messages)
    follower_leo: dict[str, int] = field(default_factory=dict)
    next_seg_id: int = 0
    retention_bytes: int | None = None  # log.retention.bytes: delete the oldest segments beyond it (None: never)
    start_offset: int = 0  # the log start offset: offsets below it were deleted
    dropped: int = 0  # batches retention deleted: entries[0] is batch number ``dropped`` of the log
    pushed_copy: bool = False  # a KafkaDirect follower's copy: a segment may go once the log has appended past it
    deleted: list[Segment] = field(default_factory=list)  # segments retention deleted, for their owner to free

    def __post_init__(self) -> None:
        if not self.segments:
            self.roll()

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    def roll(self) -> Segment:
        """Start a new active segment at the log end (sealing the old one is the caller's call)."""
        seg = Segment(self.partition * 1_000_000 + self.next_seg_id, self.leo, self.segment_bytes)
        self.next_seg_id += 1
        self.segments.append(seg)
        if self.retention_bytes is not None:
            self.retain()
        return seg

    def retain(self) -> None:
        """Kafka's size-based retention: delete the oldest segments while the log stays above retention.bytes
        without them; never the active one, nor one holding offsets at or above the high watermark (Kafka's
        ``deletableSegments`` bound). Kafka runs it every log.retention.check.interval.ms (5 min); here at each
        roll, when the size grows."""
        size = sum(s.position for s in self.segments)
        gone = 0
        while (
            len(self.segments) > 1
            and size - self.segments[0].position >= self.retention_bytes
            and self._done_with(self.segments[0], self.segments[1])
        ):
            seg = self.segments.pop(0)
            size -= seg.position
            self.deleted.append(seg)
            gone += 1
        if gone:
            first = self.segments[0].seg_id
            keep = next((i for i, e in enumerate(self.entries) if e.seg_id == first), len(self.entries))
            if keep:
                self.start_offset = self.entries[keep - 1].last_offset + 1
                self.dropped += keep
                del self.entries[:keep]

    def segment(self, seg_id: int) -> Segment:
        for seg in reversed(self.segments):
            if seg.seg_id == seg_id:
                return seg
        raise KeyError(f"partition {self.partition} has no segment {seg_id}")

    def append(self, size: int, records: int, data: bytes | None = None, seg: Segment | None = None) -> Entry:
        """Append a batch at the active segment's end (rolling if it does not fit)."""
        if size > self.segment_bytes:
            raise ValueError(f"a {size} B batch does not fit a {self.segment_bytes} B segment")
        if seg is None:
            seg = self.active
            if seg.position + size > seg.capacity:
                seg = self.roll()
        entry = Entry(self.leo, self.leo + records - 1, seg.seg_id, seg.position, size, data)
        seg.position += size
        self.leo += records
        self.entries.append(entry)
        return entry

    def _done_with(self, seg: Segment, nxt: Segment) -> bool:
        """Whether nothing may still need ``seg``: every offset in it is below the high watermark (so every
        follower holds it, and a KafkaDirect leader's pushes of it are acknowledged), or, on a KafkaDirect
        follower's copy (whose segments' base offsets are only known as they fill, and which learns the high
        watermark late), the log has already appended a batch in the next segment (appends are in order)."""
        if self.pushed_copy:
            return any(e.seg_id == nxt.seg_id for e in self.entries)
        return nxt.base_offset <= self.hw

    @property
    def batches(self) -> int:
        """Batches ever appended (retention does not lower it)."""
        return self.dropped + len(self.entries)

    def entry(self, i: int) -> Entry:
        """Batch number ``i`` of the log (counted from its first, deleted or not)."""
        if i < self.dropped:
            raise ValueError(f"partition {self.partition}: batch {i} was deleted by retention")
        return self.entries[i - self.dropped]

    def advance_hw(self, isr_size: int) -> bool:
        """Move the high watermark to the lowest log end of the in-sync replicas."""
        followers = sorted(self.follower_leo.values(), reverse=True)[: max(0, isr_size - 1)]
        if len(followers) < isr_size - 1:
            return False
        new = min([self.leo, *followers])
        if new > self.hw:
            self.hw = new
            return True
        return False

    def read(self, offset: int, max_bytes: int, upto: int) -> list[Entry]:
        """Whole batches from ``offset`` below offset ``upto``, at least one, at most ``max_bytes``."""
        if offset < self.start_offset:  # Kafka answers OFFSET_OUT_OF_RANGE; no reader here may skip data
            raise ValueError(
                f"partition {self.partition}: offset {offset} was deleted by retention (log start "
                f"{self.start_offset}; raise retention_bytes)"
            )
        lo, hi = 0, len(self.entries)
        while lo < hi:  # first entry whose last offset >= offset
            mid = (lo + hi) // 2
            if self.entries[mid].last_offset < offset:
                lo = mid + 1
            else:
                hi = mid
        out, total = [], 0
        entries = self.entries
        for i in range(lo, len(entries)):  # from the first wanted entry (no slice: a copy of the log's tail)
            e = entries[i]
            if e.last_offset >= upto or (out and total + e.size > max_bytes):
                break
            out.append(e)
            total += e.size
        return out
