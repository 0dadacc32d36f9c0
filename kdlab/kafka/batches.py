"""Record batches as a simulated producer makes them, fast enough for long runs.

A producer's batches differ only in their header (producer id, base sequence,
timestamps), so :class:`BatchFactory` encodes one template batch with
:func:`~kdlab.kafka.records.encode_batch` and stamps each new batch from it,
recomputing the real CRC-32C. :func:`check_batch` validates a batch the way a broker
or consumer does (length, magic, CRC) without decoding every record.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from kdlab.kafka.records import (
    ATTRIBUTES_OFFSET,
    CRC_OFFSET,
    LOG_OVERHEAD,
    MAGIC,
    CorruptBatch,
    crc32c,
    encode_batch,
)

_TIMES = struct.Struct(">qq")  # baseTimestamp, maxTimestamp at offset 27
_TIMES_OFFSET = 27
_IDS = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence at offset 43
_IDS_OFFSET = 43
_COUNT = struct.Struct(">i")  # records count at offset 57
_LENGTH = struct.Struct(">i")  # batchLength at offset 8
BASE_OFFSET = struct.Struct(">q")  # baseOffset at offset 0 (not covered by the CRC)


class BatchFactory:
    """Real v2 batches of ``records_per_batch`` null-key records of ``record_bytes`` each."""

    def __init__(self, records_per_batch: int, record_bytes: int) -> None:
        value = bytes(range(256)) * (record_bytes // 256 + 1)
        self.template = bytearray(encode_batch(0, [(None, value[:record_bytes])] * records_per_batch, 0, 0, 0))
        self.size = len(self.template)
        self.records = records_per_batch

    def make(self, producer_id: int, base_sequence: int, timestamp: int = 0, max_timestamp: int | None = None) -> bytes:
        """A batch stamped with ``producer_id``/``base_sequence``, ``timestamp`` (base) and ``max_timestamp``.

        Simulated producers put their clock (ns) in the timestamp fields: the first
        record's send time and the last's (the default: the same), so a consumer can
        time end-to-end delivery from the bytes alone.
        """
        buf = self.template
        _TIMES.pack_into(buf, _TIMES_OFFSET, timestamp, timestamp if max_timestamp is None else max_timestamp)
        _IDS.pack_into(buf, _IDS_OFFSET, producer_id, 0, base_sequence)
        struct.pack_into(">I", buf, CRC_OFFSET, crc32c(memoryview(buf)[ATTRIBUTES_OFFSET:]))
        return bytes(buf)

    def crc(self, producer_id: int, base_sequence: int, timestamp: int, max_timestamp: int | None = None) -> int:
        """The CRC-32C of the batch :meth:`make` builds: it covers every byte after the CRC field."""
        return struct.unpack_from(">I", self.make(producer_id, base_sequence, timestamp, max_timestamp), CRC_OFFSET)[0]


@functools.cache
def batch_factory(records: int, record_bytes: int) -> BatchFactory:
    """The factory of batches of ``records`` records (one per batch length a producer uses)."""
    return BatchFactory(records, record_bytes)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    size: int
    producer_id: int
    base_sequence: int
    records: int
    timestamp: int
    base_offset: int = -1
    crc: int = 0
    max_timestamp: int = 0


def check_batch(buf: bytes | bytearray | memoryview, pos: int = 0, limit: int | None = None) -> BatchInfo | None:
    """The whole, valid batch at ``buf[pos:]``, or None if none is there (yet).

    None means "not (completely) written": zero length, or not all bytes present. A
    batch whose bytes are all there but whose CRC or magic is wrong raises
    :class:`CorruptBatch`: a torn batch is never handed up.
    """
    end = len(buf) if limit is None else limit
    if end - pos < LOG_OVERHEAD:
        return None
    (length,) = _LENGTH.unpack_from(buf, pos + 8)
    size = length + LOG_OVERHEAD
    if length <= 0 or pos + size > end:
        return None
    view = memoryview(buf)[pos : pos + size]
    if view[16] != MAGIC:
        raise CorruptBatch(f"batch at {pos}: magic {view[16]} != {MAGIC}")
    (crc,) = struct.unpack_from(">I", view, CRC_OFFSET)
    if crc32c(view[ATTRIBUTES_OFFSET:]) != crc:
        raise CorruptBatch(f"batch at {pos}: CRC mismatch")
    producer_id, _, base_sequence = _IDS.unpack_from(view, _IDS_OFFSET)
    (count,) = _COUNT.unpack_from(view, 57)
    timestamp, max_timestamp = _TIMES.unpack_from(view, _TIMES_OFFSET)
    (base_offset,) = BASE_OFFSET.unpack_from(view, 0)
    return BatchInfo(size, producer_id, base_sequence, count, timestamp, base_offset, crc, max_timestamp)
