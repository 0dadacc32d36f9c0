"""Determinism: the same configuration gives the same numbers, in one process or a pool."""

from __future__ import annotations

import pytest

from kdlab.datapaths.perftest import PerftestConfig, roles
from kdlab.runner import run_points
from kdlab.schema import COMMON_COLUMNS
from kdlab.spec import expand, load_spec
from kdsim.engine import SimEngine
from kdsim.profile import load_profile


@pytest.mark.parametrize(
    "cfg",
    [
        PerftestConfig("send_lat", size=64, iterations=200, tx_depth=1),
        PerftestConfig("write_bw", size=4096, iterations=400, qps=2, post_list=4),
    ],
    ids=lambda c: c.test,
)
def test_same_perftest_config_twice_gives_identical_samples(cfg: PerftestConfig) -> None:
    outs = [SimEngine(load_profile("cx4-edr-100g"), seed=5).run(roles(cfg))["client"] for _ in range(2)]
    assert outs[0] == outs[1]
    key = "samples_ns" if cfg.is_latency else "block_completed_ns"
    assert len(outs[0][key]) > 1
    assert len(set(outs[0][key])) > 1  # real, varying data was compared, not two empty lists


def test_run_points_gives_the_same_metrics_with_one_or_two_workers() -> None:
    spec = load_spec(
        {
            "name": "det",
            "workload": "perftest",
            "params": {"iterations": 100},
            "sweep": {"test": ["send_lat", "write_bw"], "size": [64, 8192]},
            "seeds": [1, 2],
        }
    )
    points = expand(spec)
    one, fail1 = run_points(points, workers=1, progress=False)
    two, fail2 = run_points(points, workers=2, progress=False)
    assert fail1 == fail2 == []
    assert len(one) == len(two) == len(points) == 8

    def strip(rows: list[dict]) -> list[dict]:
        volatile = ("created_utc", "wall_s", "run_id", "git_commit")
        return [{k: v for k, v in r.items() if k not in volatile} for r in rows]

    assert strip(one) == strip(two)
    metric_cols = set(one[0]) - set(COMMON_COLUMNS)
    assert {"t_typical_us", "bw_avg_gbps"} <= {c for r in one for c in r} and metric_cols


def test_a_cluster_run_is_the_same_on_one_worker_or_two() -> None:
    """Sticky partitioning, open loop, groups, several brokers and topics: the same rows whichever worker ran them."""
    shape = {"system": "kafka", "brokers": 3, "replication_factor": 2, "acks": -1, "topics": 2, "partitions": 4,
             "producers": 2, "consumers": 2, "groups": 2, "partitioner": "sticky", "record_bytes": 200,
             "rate_total": 40_000, "duration_ms": 4.0, "warmup_ms": 1.0, "linger_ms": 0.5,
             "segment_bytes": 1 << 20}  # fmt: skip
    spec = load_spec({"name": "det-kafka", "workload": "kafka", "params": shape,
                      "sweep": {"variant": [{"system": "kafka"}, {"system": "osu"}]}})  # fmt: skip
    points = expand(spec)
    one, _ = run_points(points, workers=1, progress=False)
    two, _ = run_points(points, workers=2, progress=False)
    drop = ("created_utc", "wall_s", "run_id", "git_commit")
    assert [{k: v for k, v in r.items() if k not in drop} for r in one] == [
        {k: v for k, v in r.items() if k not in drop} for r in two
    ]
    assert all(r["delivery_ok"] for r in one) and one[0]["ack_latency_p50_us"] > 0
