"""Kafka's record batch format v2 ("magic 2"), byte for byte.

The layout is Kafka 2.4's ``DefaultRecordBatch`` and ``DefaultRecord``. All fields are
big-endian::

    offset  field                 type     note
     0      baseOffset            int64    assigned by the leader on append
     8      batchLength           int32    bytes after this field (size - 12)
    12      partitionLeaderEpoch  int32    set by the leader on append
    16      magic                 int8     2
    17      crc                   uint32   CRC-32C of bytes 21..end
    21      attributes            int16    bits 0-2 codec, 3 LogAppendTime, 4 transactional, 5 control
    23      lastOffsetDelta       int32
    27      baseTimestamp         int64    "firstTimestamp" in 2.x: the first record's
    35      maxTimestamp          int64
    43      producerId            int64    -1 without idempotence
    51      producerEpoch         int16    -1
    53      baseSequence          int32    -1
    57      records count         int32
    61      records

Each record is ``length`` varint (bytes after it), ``attributes`` int8 (0),
``timestampDelta`` varlong, ``offsetDelta`` varint, ``keyLength`` varint (-1: null key),
key, ``valueLength`` varint (-1: null value), value, header count varint, then headers
(key length varint, UTF-8 key, value length varint (-1: null), value). Varints are
zig-zag, 7 bits a byte, least significant group first (protobuf's ``sint``).

The CRC starts at ``attributes``, so a leader can rewrite ``baseOffset`` and
``partitionLeaderEpoch`` (:func:`assign_offsets`) without recomputing it. Only
uncompressed batches are built or read.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

RECORD_BATCH_OVERHEAD = 61
"""Bytes of a batch before its first record (``DefaultRecordBatch.RECORD_BATCH_OVERHEAD``)."""
LOG_OVERHEAD = 12
"""baseOffset + batchLength: the part of a batch that ``batchLength`` does not count."""
MAGIC = 2
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
"""The CRC covers ``buf[ATTRIBUTES_OFFSET:]``."""

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_PARTITION_LEADER_EPOCH = -1

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_MASK = 0x08
TRANSACTIONAL_FLAG_MASK = 0x10
CONTROL_FLAG_MASK = 0x20
COMPRESSION_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")

_PREFIX = struct.Struct(">qiibI")  # baseOffset .. crc: 21 bytes
_BODY = struct.Struct(">hiqqqhii")  # attributes .. records count: 40 bytes
_OFFSET_EPOCH = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
assert _PREFIX.size == ATTRIBUTES_OFFSET and _PREFIX.size + _BODY.size == RECORD_BATCH_OVERHEAD

Header = tuple[str, bytes | None]
RecordInput = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Sequence[Header]]
"""``(key, value)`` or ``(key, value, headers)``; ``None`` is a null key or value."""


class CorruptBatch(ValueError):
    """A batch is torn, truncated, corrupt (bad CRC or structure) or not readable here."""


# --- CRC-32C ---------------------------------------------------------------------------

try:
    import google_crc32c as _google_crc32c
except ImportError:  # pragma: no cover - exercised only where the package is missing
    _google_crc32c = None


def _make_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven pure Python."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


if _google_crc32c is not None:
    CRC32C_IMPLEMENTATION = f"google-crc32c ({_google_crc32c.implementation})"

    def crc32c(data: bytes | bytearray | memoryview) -> int:
        """CRC-32C of ``data`` as an unsigned 32-bit int (google-crc32c)."""
        return _google_crc32c.value(data if isinstance(data, bytes) else bytes(data))

else:  # pragma: no cover
    CRC32C_IMPLEMENTATION = "pure-python"
    crc32c = crc32c_python


# --- varints -----------------------------------------------------------------------------


def _zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63)


def varint_size(v: int) -> int:
    """Bytes that zig-zag varint (or varlong) ``v`` takes."""
    return max(1, ((_zigzag(v)).bit_length() + 6) // 7)


def _write_bytes(out: bytearray, data: bytes | None) -> None:
    """A varint length and the bytes, or length -1 for null (keys, values, header values)."""
    if data is None:
        _write_varint(out, -1)
    else:
        _write_varint(out, len(data))
        out += data


def _write_varint(out: bytearray, v: int) -> None:
    z = _zigzag(v)
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _read_varint(buf: memoryview, pos: int, end: int, bits: int) -> tuple[int, int]:
    """Decode a zig-zag varint (bits=32) or varlong (bits=64) at ``pos``; -> (value, next pos)."""
    z = shift = 0
    for _ in range((bits + 6) // 7):
        if pos >= end:
            raise CorruptBatch(f"varint at byte {pos} runs past the end of its record")
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if not b & 0x80:
            if z >> bits:
                raise CorruptBatch(f"varint ending at byte {pos} overflows {bits} bits")
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
    raise CorruptBatch(f"varint ending at byte {pos} is longer than {(bits + 6) // 7} bytes")


def _field_size(n: int | None) -> int:
    """A length-prefixed field of ``n`` bytes (``None``: null, length -1)."""
    return 1 if n is None else varint_size(n) + n


# --- sizes -------------------------------------------------------------------------------


def record_size_bytes(offset_delta: int, timestamp_delta: int, key_bytes: int | None, value_bytes: int | None) -> int:
    """Encoded size of one header-less record, its length varint included."""
    body = (
        2 + varint_size(timestamp_delta) + varint_size(offset_delta) + _field_size(key_bytes) + _field_size(value_bytes)
    )
    return varint_size(body) + body


def batch_size_bytes(
    n_records: int, key_bytes: int | None, value_bytes: int | None, *, timestamp_step_ms: int = 0
) -> int:
    """Exact size of :func:`encode_batch` for ``n_records`` like records, without building it.

    Every record has a key of ``key_bytes`` (``None``: null key), a value of
    ``value_bytes`` and no headers; record ``i`` is stamped ``base + i * timestamp_step_ms``.
    Runs in constant time: varint sizes only change at powers of two.
    """
    if n_records < 1:
        raise ValueError(f"n_records must be >= 1 (got {n_records})")
    if timestamp_step_ms < 0:
        raise ValueError(f"timestamp_step_ms must be >= 0 (got {timestamp_step_ms})")
    for name, n in (("key_bytes", key_bytes), ("value_bytes", value_bytes)):
        if n is not None and n < 0:
            raise ValueError(f"{name} must be >= 0 or None (got {n})")
    cuts = {0, n_records}
    for k in range(1, 10):
        limit = 1 << (7 * k - 1)  # zig-zag(v) = 2v needs k+1 bytes from v = limit on
        if limit < n_records:
            cuts.add(limit)
        if timestamp_step_ms and -(-limit // timestamp_step_ms) < n_records:
            cuts.add(-(-limit // timestamp_step_ms))
    points = sorted(cuts)
    total = RECORD_BATCH_OVERHEAD
    for lo, hi in itertools.pairwise(points):
        total += (hi - lo) * record_size_bytes(lo, lo * timestamp_step_ms, key_bytes, value_bytes)
    return total


# --- encode ------------------------------------------------------------------------------


def encode_batch(
    base_offset: int,
    records: Sequence[RecordInput],
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
    *,
    timestamps: int | Sequence[int] = 0,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
    is_transactional: bool = False,
    is_control: bool = False,
    log_append_time: bool = False,
) -> bytes:
    """Build one uncompressed v2 batch, as a producer's ``MemoryRecordsBuilder`` does.

    ``timestamps`` is one timestamp (ms) for every record or one per record; the
    batch's baseTimestamp is the first record's and maxTimestamp the largest.
    """
    n = len(records)
    if n < 1:
        raise ValueError("a batch needs at least one record (Kafka never writes an empty one)")
    stamps = [timestamps] * n if isinstance(timestamps, int) else list(timestamps)
    if len(stamps) != n:
        raise ValueError(f"timestamps: {len(stamps)} given for {n} records")
    base_ts = stamps[0]
    buf = bytearray(RECORD_BATCH_OVERHEAD)
    body = bytearray()
    for i, (rec, ts) in enumerate(zip(records, stamps, strict=True)):
        key, value = rec[0], rec[1]
        headers: Sequence[Header] = rec[2] if len(rec) == 3 else ()
        body.clear()
        body.append(0)  # record attributes
        _write_varint(body, ts - base_ts)
        _write_varint(body, i)
        _write_bytes(body, key)
        _write_bytes(body, value)
        _write_varint(body, len(headers))
        for hkey, hvalue in headers:
            _write_bytes(body, hkey.encode())
            _write_bytes(body, hvalue)
        _write_varint(buf, len(body))
        buf += body
    attributes = (
        (TIMESTAMP_TYPE_MASK if log_append_time else 0)
        | (TRANSACTIONAL_FLAG_MASK if is_transactional else 0)
        | (CONTROL_FLAG_MASK if is_control else 0)
    )
    try:
        _BODY.pack_into(
            buf, ATTRIBUTES_OFFSET, attributes, n - 1, base_ts, max(stamps), producer_id, producer_epoch,
            base_sequence, n,
        )  # fmt: skip
        crc = crc32c(memoryview(buf)[ATTRIBUTES_OFFSET:])
        _PREFIX.pack_into(buf, 0, base_offset, len(buf) - LOG_OVERHEAD, partition_leader_epoch, MAGIC, crc)
    except struct.error as err:
        raise ValueError(f"a batch header field is out of range for its type: {err}") from None
    return bytes(buf)


# --- decode ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a decoded batch, with absolute offset and timestamp (ms)."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded, validated v2 batch (:func:`decode_batch` never returns a partial one)."""

    base_offset: int
    partition_leader_epoch: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records: tuple[Record, ...]
    size_bytes: int
    crc_ok: bool = True

    @property
    def batch_length(self) -> int:
        return self.size_bytes - LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    @property
    def compression(self) -> str:
        return COMPRESSION_CODECS[self.attributes & COMPRESSION_MASK]

    @property
    def log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_MASK)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_FLAG_MASK)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_FLAG_MASK)


def _check_frame(view: memoryview) -> int:
    """Validate size and magic of the single batch ``view`` holds; -> its size."""
    if len(view) < RECORD_BATCH_OVERHEAD:
        raise CorruptBatch(f"batch of {len(view)} bytes is shorter than the {RECORD_BATCH_OVERHEAD}-byte header")
    _, length, _ = _OFFSET_EPOCH.unpack_from(view)
    if length < RECORD_BATCH_OVERHEAD - LOG_OVERHEAD:
        raise CorruptBatch(f"batchLength {length} is below the minimum {RECORD_BATCH_OVERHEAD - LOG_OVERHEAD}")
    size = LOG_OVERHEAD + length
    if len(view) < size:
        raise CorruptBatch(f"batch truncated: batchLength says {size} bytes, {len(view)} present")
    if len(view) > size:
        raise CorruptBatch(f"{len(view) - size} bytes follow the batch (use iter_batches for several)")
    if view[16] != MAGIC:
        raise CorruptBatch(f"magic {view[16]} is not {MAGIC}")
    return size


def decode_batch(buf: bytes | bytearray | memoryview, *, check_crc: bool = True) -> Batch:
    """Decode and validate exactly one batch; raise :class:`CorruptBatch` if anything is off.

    Length, magic, CRC-32C and the structure of every record are checked. With
    ``check_crc=False`` (a consumer's ``check.crcs=false``) a CRC mismatch is reported
    in ``crc_ok`` instead of raised; structural damage still raises.
    """
    view = memoryview(buf).cast("B")
    size = _check_frame(view)
    base_offset, _, leader_epoch, _, crc = _PREFIX.unpack_from(view)
    crc_ok = crc32c(view[ATTRIBUTES_OFFSET:]) == crc
    if check_crc and not crc_ok:
        raise CorruptBatch(f"CRC-32C mismatch: header says {crc:#010x}")
    attributes, last_delta, base_ts, max_ts, pid, epoch, seq, count = _BODY.unpack_from(view, ATTRIBUTES_OFFSET)
    if attributes & COMPRESSION_MASK:
        codec = attributes & COMPRESSION_MASK
        name = COMPRESSION_CODECS[codec] if codec < len(COMPRESSION_CODECS) else codec
        raise CorruptBatch(f"compressed batches ({name}) are not supported")
    if count < 0:
        raise CorruptBatch(f"negative record count {count}")
    append_time = bool(attributes & TIMESTAMP_TYPE_MASK)
    records = []
    pos = RECORD_BATCH_OVERHEAD
    for _ in range(count):
        if pos >= size:
            raise CorruptBatch(f"batch ends after {len(records)} of {count} records")
        rec, pos = _decode_record(view, pos, size, base_offset, base_ts)
        if append_time:
            rec = Record(rec.offset, max_ts, rec.key, rec.value, rec.headers)
        records.append(rec)
    if pos != size:
        raise CorruptBatch(f"{size - pos} stray bytes after the last of {count} records")
    return Batch(
        base_offset, leader_epoch, crc, attributes, last_delta, base_ts, max_ts, pid, epoch, seq,
        tuple(records), size, crc_ok,
    )  # fmt: skip


def _read_bytes(view: memoryview, pos: int, end: int, what: str) -> tuple[bytes | None, int]:
    n, pos = _read_varint(view, pos, end, 32)
    if n == -1:
        return None, pos
    if n < -1 or pos + n > end:
        raise CorruptBatch(f"{what} length {n} at byte {pos} does not fit its record")
    return bytes(view[pos : pos + n]), pos + n


def _decode_record(view: memoryview, pos: int, size: int, base_offset: int, base_ts: int) -> tuple[Record, int]:
    length, pos = _read_varint(view, pos, size, 32)
    end = pos + length
    if length < 1 or end > size:
        raise CorruptBatch(f"record length {length} at byte {pos} does not fit the batch")
    pos += 1  # record attributes, unused
    ts_delta, pos = _read_varint(view, pos, end, 64)
    offset_delta, pos = _read_varint(view, pos, end, 32)
    key, pos = _read_bytes(view, pos, end, "key")
    value, pos = _read_bytes(view, pos, end, "value")
    n_headers, pos = _read_varint(view, pos, end, 32)
    if n_headers < 0:
        raise CorruptBatch(f"negative header count {n_headers}")
    headers = []
    for _ in range(n_headers):
        raw, pos = _read_bytes(view, pos, end, "header key")
        if raw is None:
            raise CorruptBatch("null header key")
        hvalue, pos = _read_bytes(view, pos, end, "header value")
        try:
            headers.append((raw.decode(), hvalue))
        except UnicodeDecodeError:
            raise CorruptBatch("header key is not UTF-8") from None
    if pos != end:
        raise CorruptBatch(f"record says {length} bytes but its fields end {pos - end:+d} bytes off")
    return Record(base_offset + offset_delta, base_ts + ts_delta, key, value, tuple(headers)), pos


def iter_batches(buf: bytes | bytearray | memoryview, *, check_crc: bool = True) -> Iterator[Batch]:
    """Yield the whole batches at the start of ``buf``; stop at a partial trailing one.

    This is how a consumer reads a fetch response: a batch cut off by the fetch size
    is not handed up (it is fetched again). A whole batch that is corrupt raises
    :class:`CorruptBatch`, as Kafka's consumer does.
    """
    view = memoryview(buf).cast("B")
    pos = 0
    while len(view) - pos >= LOG_OVERHEAD:
        _, length = struct.unpack_from(">qi", view, pos)
        if length < RECORD_BATCH_OVERHEAD - LOG_OVERHEAD:
            raise CorruptBatch(f"batch at byte {pos}: batchLength {length} is below the minimum")
        end = pos + LOG_OVERHEAD + length
        if end > len(view):
            return
        yield decode_batch(view[pos:end], check_crc=check_crc)
        pos = end


def whole_batches_size(buf: bytes | bytearray | memoryview) -> int:
    """Bytes at the start of ``buf`` taken by whole batches, by their length fields only."""
    view = memoryview(buf).cast("B")
    pos = 0
    while len(view) - pos >= LOG_OVERHEAD:
        (length,) = struct.unpack_from(">i", view, pos + 8)
        end = pos + LOG_OVERHEAD + length
        if length < RECORD_BATCH_OVERHEAD - LOG_OVERHEAD or end > len(view):
            break
        pos = end
    return pos


Buf = TypeVar("Buf", bytes, bytearray, memoryview)


def assign_offsets(buf: Buf, base_offset: int, partition_leader_epoch: int | None = None) -> Buf:
    """Stamp a leader's ``baseOffset`` (and optionally ``partitionLeaderEpoch``) on one batch.

    Neither field is covered by the CRC, so the CRC stays valid. A ``bytearray`` or a
    writable ``memoryview`` is rewritten in place and returned; for ``bytes`` a new
    ``bytes`` is returned. Checks the frame (length, magic), not the CRC.
    """
    view = memoryview(buf).cast("B")
    _check_frame(view)
    if view.readonly:
        out = bytearray(view)
        _write_offsets(out, base_offset, partition_leader_epoch)
        return memoryview(bytes(out)) if isinstance(buf, memoryview) else bytes(out)
    _write_offsets(view, base_offset, partition_leader_epoch)
    return buf


def _write_offsets(target: bytearray | memoryview, base_offset: int, epoch: int | None) -> None:
    try:
        struct.pack_into(">q", target, 0, base_offset)
        if epoch is not None:
            struct.pack_into(">i", target, 12, epoch)
    except struct.error as err:
        raise ValueError(f"baseOffset or partitionLeaderEpoch out of range: {err}") from None
