"""Per-batch measurements, stored compactly.

A client records a few numbers for every batch it sends or reads (when it was sent and
acknowledged, what it held, when it arrived). A large cluster's run makes millions of
batches: as Python tuples of Python numbers they took about 250 bytes each, the largest
part of a long run's memory. :class:`BatchLog` keeps the same rows column by column in
typed arrays (the standard library's :mod:`array`: 8 bytes a value), reads back as tuples,
and hands the metrics a NumPy table without building a tuple per row.

Integers (partitions, record counts, offsets, CRCs, batch timestamps) are stored as signed
64-bit integers, times as doubles: exact for nanosecond clocks below 2^53 ns (104 days),
which both engines' clocks are (kdsim's starts at 0, kdreal's is ``perf_counter_ns``).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

#: Column types of the rows each client records (``q``: integer, ``d``: double).
SENT = "qqddddd"  # partition, records, intended first/last, sent first/last, ack (ns)
RECEIVED = "qqqqd"  # partition, records, first and max batch timestamp, received (ns)
DELIVERED = "qqqqqqq"  # producer id, base sequence, records, base offset, timestamp, CRC, partition


class BatchLog(Sequence[tuple]):
    """Rows of a fixed number of typed columns; appended one at a time, read as tuples."""

    __slots__ = ("_cols", "codes")

    def __init__(self, codes: str, rows: Iterable[Sequence[Any]] = ()) -> None:
        self.codes = codes
        self._cols = [array(c) for c in codes]
        for row in rows:
            self.append(row)

    def append(self, row: Sequence[Any]) -> None:
        if len(row) != len(self._cols):
            raise ValueError(f"a row of {len(self._cols)} values expected, got {len(row)}")
        for col, value in zip(self._cols, row, strict=True):
            col.append(value)

    def __setitem__(self, i: int, row: Sequence[Any]) -> None:
        if len(row) != len(self._cols):
            raise ValueError(f"a row of {len(self._cols)} values expected, got {len(row)}")
        for col, value in zip(self._cols, row, strict=True):
            col[i] = value

    def pop(self, i: int = -1) -> tuple:
        return tuple(col.pop(i) for col in self._cols)

    def __len__(self) -> int:
        return len(self._cols[0])

    @overload
    def __getitem__(self, i: int) -> tuple: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple]: ...
    def __getitem__(self, i: int | slice) -> tuple | list[tuple]:
        if isinstance(i, slice):
            return list(zip(*(col[i] for col in self._cols), strict=True))
        return tuple(col[i] for col in self._cols)

    def __iter__(self) -> Iterator[tuple]:
        return zip(*self._cols, strict=True)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BatchLog):
            return self.codes == other.codes and self._cols == other._cols
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"BatchLog({self.codes!r}, {len(self)} rows)"

    def table(self) -> np.ndarray:
        """The rows as a ``(rows, columns)`` float array (a copy; integers above 2^53 would round)."""
        out = np.empty((len(self), len(self._cols)))
        for j, col in enumerate(self._cols):
            out[:, j] = np.frombuffer(col, dtype=np.int64 if col.typecode == "q" else np.float64) if len(col) else 0
        return out


def stack(logs: Iterable[Sequence[Sequence[Any]]], width: int) -> np.ndarray:
    """Many clients' rows as one ``(rows, width)`` float array, in order."""
    parts = [
        log.table() if isinstance(log, BatchLog) else np.asarray(log, dtype=float).reshape(-1, width) for log in logs
    ]
    return np.concatenate(parts) if parts else np.zeros((0, width))
