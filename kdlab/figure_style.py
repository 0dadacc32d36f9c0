"""What every kdlab figure shares: axis labels in words with units, and one style per system.

:data:`LABELS` maps each result column to its words and unit (:func:`label_of`,
:func:`axis_label` steps the unit up for large values); :data:`STYLE` gives every variant,
perftest operation and profile one Okabe-Ito colour, marker and line style
(:func:`style_for`). :mod:`kdlab.figures` draws with them.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import matplotlib
import matplotlib.colors

# --- axis labels -------------------------------------------------------------------------------

#: Units that step up when the values are large: (unit, factor applied to the values), smallest first.
UNIT_STEPS: dict[str, tuple[tuple[str, float], ...]] = {
    "µs": (("µs", 1.0), ("ms", 1e-3), ("s", 1e-6)),
    "ms": (("ms", 1.0), ("s", 1e-3)),
    "records/s": (("records/s", 1.0), ("k records/s", 1e-3), ("M records/s", 1e-6)),
    "MB/s": (("MB/s", 1.0), ("GB/s", 1e-3)),
    "MB": (("MB", 1.0), ("GB", 1e-3)),
}
#: The unit of byte sizes: its ticks read B, KiB, MiB, so the label carries no unit.
BYTES = "bytes"

_STATS = {"p50": "median", "p99": "p99", "p999": "p99.9", "max": "maximum", "min": "minimum", "avg": "mean"}
#: Latency families whose columns are ``<family>_<stat>_us``.
_LATENCIES = {
    "ack_latency": "Produce latency",
    "e2e_latency": "End-to-end latency",
    "fetch_latency": "Fetch latency",
    "latency": "Latency",
    "data_latency": "Data-read latency",
    "empty_latency": "Empty-fetch latency",
}

#: Result column -> (axis label in words, unit). Every column a spec's figure names must be here.
LABELS: dict[str, tuple[str, str]] = {
    # sizes and counts (x axes)
    "record_bytes": ("Record size", BYTES),
    "fetch_bytes": ("Fetch size", BYTES),
    "batch_bytes": ("Batch size", BYTES),
    "batch_bytes_on_wire": ("Batch size on the wire", BYTES),
    "segment_bytes": ("Segment size", BYTES),
    "max_rdma_batch": ("Largest RDMA batch", BYTES),
    "size": ("Message size", BYTES),
    "replication_factor": ("Replication factor", ""),
    "partitions": ("Partitions", ""),
    "brokers": ("Brokers", ""),
    "topics": ("Topics", ""),
    "groups": ("Consumer groups", ""),
    "producers": ("Producers", ""),
    "consumers": ("Consumers", ""),
    "max_in_flight": ("Requests in flight", ""),
    "qps": ("Queue pairs", ""),
    "threads": ("Client threads", ""),
    "post_list": ("Work requests per post", ""),
    "tx_depth": ("Send queue depth", ""),
    "slot_poll_us": ("Slot polling interval", "µs"),
    "linger_ms": ("Linger time", "ms"),
    "fetch_max_wait_ms": ("Fetch wait", "ms"),
    "rate_total": ("Offered load", "records/s"),
    "offered_records_per_s": ("Offered load", "records/s"),
    "replica_fetchers": ("Replica fetchers per leader", ""),
    # Kafka metrics
    "produce_mb_per_s": ("Producer throughput", "MB/s"),
    "produce_records_per_s": ("Producer throughput", "records/s"),
    "consume_mb_per_s": ("Consumer throughput", "MB/s"),
    "consume_records_per_s": ("Consumer throughput", "records/s"),
    "mb_per_s": ("Throughput", "MB/s"),
    "records_per_s": ("Throughput", "records/s"),
    "registered_mb_per_broker": ("Registered memory per broker", "MB"),
    "registered_mb_per_client": ("Registered memory per client", "MB"),
    "model_peak_mb": ("Peak memory held by the model's MRs", "MB"),
    "spine_up_util": ("Busiest leaf-to-spine link utilisation", ""),
    "spine_down_util": ("Busiest spine-to-leaf link utilisation", ""),
    # perftest metrics
    "t_typical_us": ("Latency, typical", "µs"),
    "t_min_us": ("Latency, minimum", "µs"),
    "t_max_us": ("Latency, maximum", "µs"),
    "t_avg_us": ("Latency, mean", "µs"),
    "t_p99_us": ("Latency, p99", "µs"),
    "t_p999_us": ("Latency, p99.9", "µs"),
    "bw_avg_gbps": ("Bandwidth", "Gb/s"),
    "bw_avg_mib_s": ("Bandwidth", "MiB/s"),
    "bw_peak_mib_s": ("Peak bandwidth", "MiB/s"),
    "msg_rate_mpps": ("Message rate", "M messages/s"),
}
for _family, _words in _LATENCIES.items():
    for _stat, _stat_words in _STATS.items():
        LABELS.setdefault(f"{_family}_{_stat}_us", (f"{_words}, {_stat_words}", "µs"))


class UnlabelledColumn(KeyError):
    """A figure names a column that :data:`LABELS` has no label for."""


def label_of(column: str, strict: bool = False) -> tuple[str, str]:
    """``column`` -> (words, unit); unknown: the column's name (``strict``: :class:`UnlabelledColumn`)."""
    if column in LABELS:
        return LABELS[column]
    msg = f"no axis label for column {column!r}: add it to kdlab.figures.LABELS as (words, unit)"
    if strict:
        raise UnlabelledColumn(msg)
    warnings.warn(msg, stacklevel=2)
    return column, ""


def axis_label(column: str, values: Iterable[float] = (), words: str | None = None) -> tuple[str, float]:
    """The axis label in words with its unit for ``column``, and the factor to multiply values by.

    The unit steps up (µs -> ms) when the largest value would still be at least 10 in the larger unit.
    """
    default_words, unit = label_of(column)
    words = words or default_words
    factor = 1.0
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    if unit in UNIT_STEPS and finite:
        peak = max(finite)
        for name, f in UNIT_STEPS[unit]:
            if peak * f >= 10 or f == 1.0:
                unit, factor = name, f
    if not unit or unit == BYTES:
        return words, factor
    return f"{words} ({unit})", factor


def is_size(column: str) -> bool:
    return column in LABELS and LABELS[column][1] == BYTES


# --- styles --------------------------------------------------------------------------------------

#: Okabe & Ito's colour-blind-safe palette (yellow left out: too light on white).
OKABE_ITO = {
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "black": "#000000",
}


def _mix(colour: str, towards: str, amount: float) -> str:
    """``colour`` moved ``amount`` (0..1) of the way to ``towards``: the lighter/darker shades of one system."""
    a, b = matplotlib.colors.to_rgb(colour), matplotlib.colors.to_rgb(towards)
    return matplotlib.colors.to_hex([x + (y - x) * amount for x, y in zip(a, b, strict=True)])


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str = "-"


_O = OKABE_ITO
_KAFKA, _KD = _O["vermillion"], _O["blue"]
#: Series label -> style, the same in every figure. Kafka is vermillion, KafkaDirect blue (its variants
#: other Okabe-Ito colours, or shades of blue where they are settings of one design), OSU purple.
STYLE: dict[str, Style] = {
    # the systems (experiments/*.yaml)
    "Kafka": Style(_KAFKA, "s"),
    "OSU RDMA Kafka": Style(_O["purple"], "^"),
    "KafkaDirect exclusive": Style(_KD, "o"),
    "KafkaDirect shared": Style(_O["sky"], "D"),
    "KafkaDirect slots": Style(_O["green"], "o"),
    "KafkaDirect no slots": Style(_O["orange"], "v"),
    # replication (kafka-replication.yaml)
    "Kafka (pull)": Style(_KAFKA, "s"),
    "KafkaDirect (push, maxrdmabatch 2000 B)": Style(_KD, "o"),
    "KafkaDirect (push, maxrdmabatch 1 KiB)": Style(_mix(_KD, "white", 0.45), "P", "--"),
    "KafkaDirect (push, maxrdmabatch 64 KiB)": Style(_mix(_KD, "black", 0.45), "X", ":"),
    # networks (sweeps/ethernet.yaml)
    "Kafka, IPoIB EDR": Style(_KAFKA, "s"),
    "Kafka, 100 GbE": Style(_mix(_KAFKA, "black", 0.4), "^", "--"),
    "Kafka, 25 GbE": Style(_mix(_KAFKA, "white", 0.35), "v", "-."),
    "Kafka, 10 GbE": Style(_mix(_KAFKA, "white", 0.6), "D", ":"),
    "KafkaDirect, EDR": Style(_KD, "o"),
    # host-cost variability (sweeps/latency-under-load.yaml): the system's colour, lighter and dashed
    "Kafka, host jitter": Style(_mix(_KAFKA, "white", 0.45), "v", "--"),
    "KafkaDirect exclusive, host jitter": Style(_mix(_KD, "white", 0.45), "P", "--"),
    # perftest's operations and the hardware profiles
    "WRITE": Style(_O["blue"], "o"),
    "READ": Style(_O["green"], "^"),
    "SEND": Style(_O["orange"], "s"),
    "ATOMIC": Style(_O["purple"], "D"),
    "ConnectX-3 FDR 56G": Style(_O["orange"], "v"),
    "ConnectX-4 EDR 100G": Style(_O["blue"], "o"),
    "10 GbE": Style(_mix(_O["green"], "white", 0.5), "v"),
    "25 GbE": Style(_O["green"], "^"),
    "100 GbE": Style(_mix(_O["green"], "black", 0.4), "D"),
}
#: Display names of profiles and perftest tests in legends.
PROFILE_NAMES = {
    "cx3-fdr-56g": "ConnectX-3 FDR 56G",
    "cx4-edr-100g": "ConnectX-4 EDR 100G",
    "eth-10g": "10 GbE",
    "eth-25g": "25 GbE",
    "eth-100g": "100 GbE",
}
_OPS = {"send": "SEND", "write": "WRITE", "read": "READ", "atomic": "ATOMIC"}
_FALLBACK_COLOURS = list(matplotlib.colormaps["tab10"].colors)
_FALLBACK_MARKERS = ["o", "s", "^", "v", "D", "P", "X", "<", ">", "h"]
#: Hollow black markers: published reference values.
REFERENCE_STYLE = {"marker": "o", "mfc": "none", "mec": "black", "color": "black", "ms": 6, "mew": 1.2, "ls": "none"}


def style_for(label: str) -> Style:
    """The label's style: from :data:`STYLE`, else a fixed one picked by the label's CRC."""
    if label in STYLE:
        return STYLE[label]
    h = zlib.crc32(label.encode())
    colour = matplotlib.colors.to_hex(_FALLBACK_COLOURS[h % len(_FALLBACK_COLOURS)])
    return Style(colour, _FALLBACK_MARKERS[(h // 7) % len(_FALLBACK_MARKERS)])
