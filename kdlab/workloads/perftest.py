"""The ``perftest`` workload: perftest's tests on any engine, perftest's columns out."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kdlab.datapaths.perftest import HALF_RTT_TESTS, PerftestConfig, merge_bandwidth, roles
from kdlab.engines import point_engine
from kdlab.perftest_report import bandwidth_stats, latency_stats
from kdlab.spec import ExperimentSpec, Point, validate_points

#: perftest's largest message (``MAX_SIZE``, 8 MiB).
MAX_SIZE = 8 * 1024 * 1024


class PerftestParams(BaseModel):
    """Parameters of one perftest run, with perftest's defaults and limits."""

    model_config = ConfigDict(extra="forbid")

    test: Literal["send_lat", "write_lat", "read_lat", "atomic_lat", "send_bw", "write_bw", "read_bw", "atomic_bw"]
    size: int = Field(default=65536, ge=1, le=MAX_SIZE, description="message size, bytes")
    iterations: int = Field(default=1000, ge=5, le=10_000_000, description="per QP")
    qps: int = Field(default=1, ge=1, le=16384)
    tx_depth: int = Field(default=128, ge=1, le=16384)
    rx_depth: int = Field(default=512, ge=1, le=16384)
    cq_mod: int | None = Field(default=None, ge=1, le=1024,
                               description="one CQE per this many WRs (-Q); unset: as perftest")  # fmt: skip
    post_list: int = Field(default=1, ge=1, le=1024)
    inline_size: int | None = Field(default=None, ge=0, le=1024)
    atomic: Literal["fetch_add", "cmp_swap"] = "fetch_add"
    threads: int = Field(default=1, ge=1, le=64, description="client threads (bandwidth tests)")
    total_iterations: int | None = Field(
        default=None, ge=5, description="if set, iterations per QP = total_iterations // qps (for QP sweeps)"
    )


#: Above this size perftest signals every WR unless -Q is given (``MSG_SIZE_CQ_MOD_LIMIT``, perftest_parameters.c).
MSG_SIZE_CQ_MOD_LIMIT = 8192


def cq_mod_for(p: PerftestParams) -> int:
    """perftest's ``cq_mod``: ``-Q`` if given; else 100, or 1 for messages above 8 KiB (as ``ib_*_bw`` does)."""
    if p.cq_mod is not None:
        return p.cq_mod
    return 1 if p.size > MSG_SIZE_CQ_MOD_LIMIT else 100


class PerftestWorkload:
    name = "perftest"

    def validate_spec(self, spec: ExperimentSpec, origin: str) -> None:
        validate_points(spec, origin, PerftestParams, "perftest")

    def run_point(self, point: Point) -> list[dict[str, Any]]:
        p = PerftestParams.model_validate(point.params_dict)
        if p.total_iterations is not None:
            p = p.model_copy(update={"iterations": max(5, p.total_iterations // p.qps)})
        fields = {**p.model_dump(exclude={"total_iterations"}), "cq_mod": cq_mod_for(p)}
        cfg = PerftestConfig(**fields)
        if cfg.is_latency and "tx_depth" not in point.params_dict:
            cfg = PerftestConfig(**{**fields, "tx_depth": 1})
        engine = point_engine(point)
        results = engine.run(roles(cfg))
        out = merge_bandwidth([v for k, v in sorted(results.items()) if k.startswith("client")])
        if cfg.is_latency:
            half = 2.0 if cfg.test in HALF_RTT_TESTS else 1.0
            metrics = latency_stats(s / half / 1000.0 for s in out["samples_ns"])
        else:
            metrics = bandwidth_stats(
                out["messages"], out["msg_bytes"], out["t_first_post_ns"], out["t_last_completion_ns"],
                out["block_posted_ns"], out["block_completed_ns"], out["cq_mod"],
            )  # fmt: skip
        return [{**p.model_dump(), "msg_bytes": cfg.msg_bytes, **metrics}]
