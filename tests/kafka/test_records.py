"""Record batch v2: real bytes, exact sizes, CRC-32C, and refusal of torn or corrupt batches."""

from __future__ import annotations

import random
import struct
import subprocess
import sys

import pytest

from kdlab.kafka.records import (
    ATTRIBUTES_OFFSET,
    CRC32C_IMPLEMENTATION,
    RECORD_BATCH_OVERHEAD,
    CorruptBatch,
    Record,
    assign_offsets,
    batch_size_bytes,
    crc32c,
    crc32c_python,
    decode_batch,
    encode_batch,
    iter_batches,
    record_size_bytes,
    varint_size,
    whole_batches_size,
)

# Three v2 batches written by a Kafka 0.11 broker, as published in kafka-python's test
# suite (test/record/test_records.py): value "123"; two empty values 168 ms apart; "123".
BROKER_BATCHES = [
    b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00;\x00\x00\x00\x01\x02\x03"
    b"\x18\xa2p\x00\x00\x00\x00\x00\x00\x00\x00\x01]\xff{\x06<\x00\x00\x01]"
    b"\xff{\x06<\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00"
    b"\x00\x00\x01\x12\x00\x00\x00\x01\x06123\x00",
    b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00@\x00\x00\x00\x02\x02\xc8"
    b"\\\xbd#\x00\x00\x00\x00\x00\x01\x00\x00\x01]\xff|\xddl\x00\x00\x01]\xff"
    b"|\xde\x14\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00"
    b"\x00\x00\x02\x0c\x00\x00\x00\x01\x00\x00\x0e\x00\xd0\x02\x02\x01\x00"
    b"\x00",
    b"\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00;\x00\x00\x00\x02\x02.\x0b"
    b"\x85\xb7\x00\x00\x00\x00\x00\x00\x00\x00\x01]\xff|\xe7\x9d\x00\x00\x01]"
    b"\xff|\xe7\x9d\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    b"\x00\x00\x00\x01\x12\x00\x00\x00\x01\x06123\x00",
]


def recrc(buf: bytes | bytearray) -> bytes:
    """Recompute the CRC after tampering, to reach the structural checks behind it."""
    out = bytearray(buf)
    struct.pack_into(">I", out, 17, crc32c(bytes(out[ATTRIBUTES_OFFSET:])))
    return bytes(out)


def sample_batch(base_offset: int = 0) -> bytes:
    return encode_batch(
        base_offset,
        [(b"k1", b"v" * 30), (None, b"hello"), (b"", None)],
        timestamps=[1000, 1005, 1003],
    )


# --- CRC-32C -----------------------------------------------------------------------


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c_python(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


def test_crc32c_accelerated_and_fallback_agree() -> None:
    rng = random.Random(7)
    for n in (1, 3, 61, 1000, 4099):
        data = rng.randbytes(n)
        assert crc32c(data) == crc32c_python(data) == crc32c(bytearray(data)) == crc32c(memoryview(data))
    assert CRC32C_IMPLEMENTATION  # which one is in use, for reports


# --- layout and sizes ----------------------------------------------------------------


def test_header_is_61_bytes_at_the_documented_offsets() -> None:
    buf = encode_batch(42, [(None, b"")], 7, 3, 11, timestamps=5000, partition_leader_epoch=9)
    assert RECORD_BATCH_OVERHEAD == 61
    assert len(buf) == 61 + 7  # record: length, attrs, tsDelta, offsetDelta, key -1, value 0, headers 0
    fields = struct.unpack_from(">qiibIhiqqqhii", buf)
    assert fields == (42, len(buf) - 12, 9, 2, crc32c(buf[21:]), 0, 0, 5000, 5000, 7, 3, 11, 1)
    assert buf[61:] == bytes([12, 0, 0, 0, 1, 0, 0])


def test_null_key_100_byte_value_is_109_bytes() -> None:
    buf = encode_batch(0, [(None, b"x" * 100)])
    assert len(buf) == 170 == batch_size_bytes(1, None, 100)
    assert record_size_bytes(0, 0, None, 100) == 109
    # length 107 (2-byte varint), attrs, tsDelta 0, offsetDelta 0, key -1, value length 100 (2 bytes)
    assert buf[61:69] == bytes([0xD6, 0x01, 0, 0, 0, 1, 0xC8, 0x01])
    assert buf[-1] == 0  # no headers


@pytest.mark.parametrize(
    ("value", "size"),
    [(0, 1), (-1, 1), (63, 1), (-64, 1), (64, 2), (-65, 2), (8191, 2), (8192, 3), (-(2**31), 5), (2**63 - 1, 10)],
)
def test_varint_sizes(value: int, size: int) -> None:
    assert varint_size(value) == size


def test_size_matches_encoding_property() -> None:
    rng = random.Random(20240601)
    for _ in range(250):
        n = rng.choice([1, 2, 63, 64, 65, 150, rng.randint(1, 300)])
        key = rng.choice([None, 0, rng.randint(1, 70), rng.randint(8180, 8200)])
        value = rng.choice([None, 0, 100, 1024, rng.randint(0, 9000), rng.randint(8180, 8200)])
        step = rng.choice([0, 1, 3, 64, 100, 8191, 10**6])
        records = [(None if key is None else b"k" * key, None if value is None else b"v" * value)] * n
        buf = encode_batch(0, records, timestamps=[10**12 + i * step for i in range(n)])
        assert batch_size_bytes(n, key, value, timestamp_step_ms=step) == len(buf), (n, key, value, step)
        assert len(buf) == 61 + sum(record_size_bytes(i, i * step, key, value) for i in range(n))


def test_size_across_the_8192_record_offset_delta_boundary() -> None:
    n = 8200  # offsetDelta takes 3 bytes from record 8192 on
    buf = encode_batch(0, [(None, b"ab")] * n)
    assert batch_size_bytes(n, None, 2) == len(buf)


def test_size_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n_records"):
        batch_size_bytes(0, None, 10)
    with pytest.raises(ValueError, match="value_bytes"):
        batch_size_bytes(1, None, -1)
    with pytest.raises(ValueError, match="timestamp_step_ms"):
        batch_size_bytes(1, None, 1, timestamp_step_ms=-1)


# --- round trips -----------------------------------------------------------------------


def test_broker_bytes_decode_and_reencode_identically() -> None:
    for raw in BROKER_BATCHES:
        b = decode_batch(raw)
        again = encode_batch(
            b.base_offset,
            [(r.key, r.value) for r in b.records],
            b.producer_id,
            b.producer_epoch,
            b.base_sequence,
            timestamps=[r.timestamp for r in b.records],
            partition_leader_epoch=b.partition_leader_epoch,
        )
        assert again == raw
    first, second = decode_batch(BROKER_BATCHES[0]), decode_batch(BROKER_BATCHES[1])
    assert first.records == (Record(0, 1503229838908, None, b"123"),)
    assert first.crc == 51946096 and first.partition_leader_epoch == 1
    assert [r.offset for r in second.records] == [1, 2] and second.next_offset == 3
    assert second.max_timestamp - second.base_timestamp == 168


def test_round_trip_random_batches() -> None:
    rng = random.Random(5)
    for _ in range(100):
        n = rng.randint(1, 80)
        recs = []
        for _ in range(n):
            key = rng.choice([None, rng.randbytes(rng.randint(0, 20))])
            value = rng.choice([None, rng.randbytes(rng.randint(0, 300))])
            headers = [(f"h{j}", rng.choice([None, rng.randbytes(3)])) for j in range(rng.randint(0, 2))]
            recs.append((key, value, headers))
        stamps = [rng.randint(0, 2**41) for _ in range(n)]
        base = rng.randint(0, 2**40)
        b = decode_batch(encode_batch(base, recs, 1234, 5, 77, timestamps=stamps, is_transactional=True))
        assert b.crc_ok and b.is_transactional and not b.is_control and b.compression == "none"
        assert (b.producer_id, b.producer_epoch, b.base_sequence) == (1234, 5, 77)
        assert b.base_timestamp == stamps[0] and b.max_timestamp == max(stamps)
        assert b.last_offset == base + n - 1
        assert [(r.key, r.value, list(r.headers)) for r in b.records] == [(k, v, list(h)) for k, v, h in recs]
        assert [r.offset for r in b.records] == list(range(base, base + n))
        assert [r.timestamp for r in b.records] == stamps


def test_log_append_time_gives_every_record_the_max_timestamp() -> None:
    b = decode_batch(encode_batch(0, [(None, b"a"), (None, b"b")], timestamps=[10, 20], log_append_time=True))
    assert b.log_append_time and [r.timestamp for r in b.records] == [20, 20]


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        encode_batch(0, [])
    with pytest.raises(ValueError, match="timestamps"):
        encode_batch(0, [(None, b"a")], timestamps=[1, 2])
    with pytest.raises(ValueError, match="out of range"):
        encode_batch(0, [(None, b"a")], producer_epoch=2**15)


# --- corruption --------------------------------------------------------------------------


def test_corrupting_any_byte_from_the_crc_on_raises() -> None:
    buf = sample_batch()
    for pos in range(17, len(buf)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(buf)
            bad[pos] ^= mask
            with pytest.raises(CorruptBatch):
                decode_batch(bytes(bad))


def test_corrupting_length_or_magic_raises() -> None:
    buf = sample_batch()
    for pos in range(8, 17):
        if pos in range(12, 16):
            continue  # partitionLeaderEpoch: outside the CRC by design, like baseOffset
        bad = bytearray(buf)
        bad[pos] ^= 0x01
        with pytest.raises(CorruptBatch):
            decode_batch(bytes(bad))


def test_check_crc_false_reports_instead_of_raising() -> None:
    buf = sample_batch()
    bad = bytearray(buf)
    bad[buf.index(b"hello")] ^= 0x40  # a value byte: structure intact
    b = decode_batch(bytes(bad), check_crc=False)
    assert not b.crc_ok and b.records[1].value == b"(ello"
    with pytest.raises(CorruptBatch, match="CRC"):
        decode_batch(bytes(bad))


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "match"),
    [
        (57, ">i", 4, "ends after 3 of 4"),
        (57, ">i", 2, "stray bytes"),
        (57, ">i", -1, "negative record count"),
        (61, ">B", 0x7E, "does not fit the batch"),
        (21, ">h", 1, r"compressed batches \(gzip\)"),
    ],
)
def test_structural_damage_behind_a_valid_crc_raises(offset: int, fmt: str, value: int, match: str) -> None:
    bad = bytearray(sample_batch())
    struct.pack_into(fmt, bad, offset, value)
    with pytest.raises(CorruptBatch, match=match):
        decode_batch(recrc(bad))


def test_decode_wants_exactly_one_batch() -> None:
    buf = sample_batch()
    with pytest.raises(CorruptBatch, match="follow the batch"):
        decode_batch(buf + b"\x00")
    with pytest.raises(CorruptBatch, match="shorter than the 61-byte header"):
        decode_batch(buf[:60])
    with pytest.raises(CorruptBatch, match="truncated"):
        decode_batch(buf[:-1])


# --- torn streams ------------------------------------------------------------------------


def test_truncating_anywhere_yields_only_the_whole_batches() -> None:
    batches = [sample_batch(0), encode_batch(3, [(None, b"z" * 200)] * 5), *BROKER_BATCHES]
    stream = b"".join(batches)
    ends = [sum(len(b) for b in batches[: i + 1]) for i in range(len(batches))]
    for cut in range(len(stream) + 1):
        whole = [i for i, end in enumerate(ends) if end <= cut]
        got = list(iter_batches(stream[:cut]))
        assert [b.size_bytes for b in got] == [len(batches[i]) for i in whole]
        assert whole_batches_size(stream[:cut]) == (ends[whole[-1]] if whole else 0)
        if 0 < cut < len(stream) and cut not in ends:
            with pytest.raises(CorruptBatch):
                decode_batch(stream[ends[whole[-1]] if whole else 0 : cut])


def test_iter_batches_raises_on_a_whole_corrupt_batch() -> None:
    stream = bytearray(sample_batch(0) + sample_batch(3))
    stream[-2] ^= 0x10
    it = iter_batches(bytes(stream))
    assert next(it).base_offset == 0
    with pytest.raises(CorruptBatch):
        next(it)


def test_broker_fetch_with_trailing_garbage() -> None:
    got = list(iter_batches(b"".join(BROKER_BATCHES) + b"\x00" * 4))
    assert [b.base_offset for b in got] == [0, 1, 3]
    assert whole_batches_size(b"".join(BROKER_BATCHES) + b"\x00" * 4) == 218


# --- offset assignment ---------------------------------------------------------------------


def test_assign_offsets_keeps_the_crc_valid() -> None:
    buf = sample_batch(0)
    out = assign_offsets(buf, 1_000_000, partition_leader_epoch=4)
    assert isinstance(out, bytes) and out[17:] == buf[17:]
    b = decode_batch(out)
    assert b.base_offset == 1_000_000 and b.partition_leader_epoch == 4
    assert [r.offset for r in b.records] == [1_000_000, 1_000_001, 1_000_002]
    assert decode_batch(buf).base_offset == 0  # bytes input untouched


def test_assign_offsets_rewrites_a_bytearray_in_place() -> None:
    arr = bytearray(sample_batch(0))
    assert assign_offsets(arr, 77) is arr
    assert decode_batch(arr).base_offset == 77
    view = memoryview(arr)
    assign_offsets(view, 88)
    assert decode_batch(arr).base_offset == 88


def test_assign_offsets_checks_the_frame() -> None:
    with pytest.raises(CorruptBatch):
        assign_offsets(sample_batch()[:-1], 5)
    with pytest.raises(ValueError, match="out of range"):
        assign_offsets(sample_batch(), 2**63)


def test_pure_python_fallback_when_the_package_is_missing() -> None:
    code = (
        "import sys; sys.modules['google_crc32c'] = None\n"
        "from kdlab.kafka import records as r\n"
        "assert r.CRC32C_IMPLEMENTATION == 'pure-python', r.CRC32C_IMPLEMENTATION\n"
        "assert r.crc32c(b'123456789') == 0xE3069283\n"
        "assert r.decode_batch(r.encode_batch(5, [(None, b'x' * 100)])).records[0].offset == 5\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
