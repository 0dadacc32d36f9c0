"""KafkaDirect push replication: what a follower's ack says, and a fault to test it with.

A follower acks every push with a zero-length WRITE_WITH_IMM whose 32-bit immediate
says how much of the partition it holds: the number of batches it appended,
contiguously from offset 0 (as Kafka's follower fetch carries its log end offset).
A batch that fails validation, and every batch after it, is not appended and not
counted, so the leader never counts a push as held past the follower's real log end.

Immediate layout (:class:`AckCodec`): bit 31 set (a produce write or a push carries a
broker-local segment id, below 2^31); then the *replica index*, the partition's place
among those the follower replicates from this leader (both know that list from the
placement; the QP the ack arrives on names the follower); the low bits the batch count
modulo 2^bits. The index takes as few bits as the largest such list needs, so a cluster
that cannot be encoded is refused when it is built. The leader restores the full count
from the one the follower confirmed before (it never shrinks) and the batches it
committed (the follower cannot hold more): exact while fewer than 2^bits committed
batches are unconfirmed, which :func:`held_batches` checks.

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
MIN_HELD_BITS = 11
"""Bits left for the batch count at least: 2047 unconfirmed batches per replica."""


def is_ack(imm: int) -> bool:
    """Whether an immediate is a follower's ack (else it is a segment id)."""
    return imm >= ACK_FLAG


@dataclass(frozen=True)
class AckCodec:
    """The layout of a follower's ack immediate: ``index_bits`` of replica index, the rest the held batches."""

    index_bits: int

    @classmethod
    def for_replicas(cls, most: int) -> AckCodec:
        """The layout for at most ``most`` partitions replicated between one leader and one follower."""
        bits = max(1, (max(1, most) - 1).bit_length())
        if 31 - bits < MIN_HELD_BITS:
            raise ValueError(
                f"{most} partitions replicated from one leader to one follower do not fit a 32-bit replica ack "
                f"(at most {1 << (31 - MIN_HELD_BITS)}): use more brokers or fewer partitions"
            )
        return cls(bits)

    @property
    def held_mod(self) -> int:
        return 1 << (31 - self.index_bits)

    def encode(self, index: int, held: int) -> int:
        if not 0 <= index < 1 << self.index_bits:
            raise DatapathError(f"replica index {index} does not fit {self.index_bits} bits")
        return ACK_FLAG | index << (31 - self.index_bits) | held % self.held_mod

    def decode(self, imm: int) -> tuple[int, int]:
        """-> (replica index, held batches modulo :attr:`held_mod`)."""
        body = imm - ACK_FLAG
        return body >> (31 - self.index_bits), body % self.held_mod


def held_batches(held_mod: int, mod: int, confirmed: int, committed: int, follower: str, partition: int) -> int:
    """The batches a follower's ack (``held_mod`` modulo ``mod``) says it holds: at least ``confirmed``, at most
    ``committed``."""
    if committed - confirmed >= mod:
        raise DatapathError(
            f"partition {partition}: {committed - confirmed} committed batches not confirmed by {follower}; an ack"
            f" counts at most {mod - 1} (use larger batches or fewer in flight)"
        )
    held = confirmed + (held_mod - confirmed) % mod
    if held > committed:
        raise DatapathError(f"partition {partition}: {follower} acks {held} batches, only {committed} were committed")
    return held


def end_offset(log: PartitionLog, held: int) -> int:
    """The log end offset of a replica that holds the first ``held`` batches of ``log``."""
    return log.entry(held - 1).last_offset + 1 if held else 0


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
        if fault.partition != log.partition or fault.batch != log.batches:
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
