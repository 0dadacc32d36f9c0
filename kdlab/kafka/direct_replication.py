"""KafkaDirect push replication: what a follower's ack says, and a fault to test it with.

A follower acks every push with a zero-length WRITE_WITH_IMM whose 32-bit immediate
says how much of the partition it holds: the number of batches it appended,
contiguously from offset 0 (as Kafka's follower fetch carries its log end offset).
A batch that fails validation, and every batch after it, is not appended and not
counted, so the leader never counts a push as held past the follower's real log end.

Immediate layout: bit 31 set (a push or a produce write carries a segment id, below
2^31), bits 21-30 the partition (``KafkaParams`` allows at most 1024), bits 0-20 the
batch count modulo 2^21. The leader restores the full count from the one the
follower confirmed before (it never shrinks) and the batches it committed (the
follower cannot hold more): exact while fewer than 2^21 committed batches are
unconfirmed, which :func:`held_batches` checks.

:class:`FlipBit` is fault injection for tests: one bit of one batch flipped in a
follower's copy once the batch has landed there, before the follower validates it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from kdlab.kafka.batches import check_batch
from kdlab.kafka.log import PartitionLog, Segment
from kdlab.kafka.records import CorruptBatch
from kdlab.ops import ReadMem, WriteMem
from kdlab.program import DatapathError

ACK_FLAG = 1 << 31
_PARTITION_SHIFT = 21
_PARTITIONS = 1 << 10
HELD_MOD = 1 << _PARTITION_SHIFT


def ack_imm(partition: int, held: int) -> int:
    """The immediate of a follower's ack: ``partition``, and ``held`` batches appended (modulo 2^21)."""
    if not 0 <= partition < _PARTITIONS:
        raise DatapathError(f"partition {partition} does not fit a replica ack (at most {_PARTITIONS} partitions)")
    return ACK_FLAG | partition << _PARTITION_SHIFT | held % HELD_MOD


def is_ack(imm: int) -> bool:
    return imm >= ACK_FLAG


def imm_partition(imm: int) -> int:
    """The partition an immediate is about: a replica ack's, or a segment id's (produce write, push, seal)."""
    if imm >= ACK_FLAG:
        return (imm >> _PARTITION_SHIFT) % _PARTITIONS
    return imm // 1_000_000


def held_batches(imm: int, confirmed: int, committed: int, follower: str, partition: int) -> int:
    """The batches a follower's ack says it holds, in full: at least ``confirmed``, at most ``committed``."""
    if committed - confirmed >= HELD_MOD:
        raise DatapathError(
            f"partition {partition}: {committed - confirmed} committed batches not confirmed by {follower}; an ack"
            f" counts at most {HELD_MOD - 1} (use larger batches or fewer in flight)"
        )
    held = confirmed + (imm - confirmed) % HELD_MOD
    if held > committed:
        raise DatapathError(f"partition {partition}: {follower} acks {held} batches, only {committed} were committed")
    return held


def end_offset(log: PartitionLog, held: int) -> int:
    """The log end offset of a replica that holds the first ``held`` batches of ``log``."""
    return log.entries[held - 1].last_offset + 1 if held else 0


@dataclass(frozen=True)
class FlipBit:
    """Fault injection: flip one bit of one pushed batch in a follower's copy of a partition.

    ``batch`` counts the partition's batches from 0; ``byte`` (from the batch's start)
    and ``bit`` pick the bit. The default byte is the first record's, which the CRC
    covers. The flip happens once, when the follower reaches that batch and it has
    fully landed; the flipped byte stays in the follower's segment. Off unless a test
    passes faults to :func:`kdlab.kafka.direct.roles`.
    """

    follower: str
    partition: int
    batch: int
    byte: int = 61
    bit: int = 0


def inject_flip(faults: list[FlipBit], log: PartitionLog, seg: Segment, data: Any) -> Generator[Any, Any, bool]:
    """Flip the bit of a pending fault aimed at the batch ``data`` (whole, at ``seg.position``); True if one fired.

    A fired fault leaves ``faults``, so later pushes see the corrupt byte and no new flip.
    """
    for fault in faults:
        if fault.partition != log.partition or fault.batch != len(log.entries):
            continue
        try:
            if check_batch(data) is None:  # not landed yet: the push would overwrite the flip
                return False
        except CorruptBatch:
            return False
        if not 0 <= fault.byte < len(data):
            raise ValueError(f"{fault}: byte {fault.byte} is outside the {len(data)} B batch")
        faults.remove(fault)
        at = seg.position + fault.byte
        byte = (yield ReadMem(seg.mr, at, 1))[0] ^ (1 << fault.bit)
        yield WriteMem(seg.mr, at, bytes([byte]))
        return True
    return False
