"""Host-cost variability (issue 13, item 1): widths the profile gives, draws the point's seed controls.

Width 0 (every profile but cx4-edr-100g-jitter) draws nothing and gives today's numbers exactly; with
widths, different seeds give different rows, the same seed the same rows on one worker, two, or Dask.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from kdlab.cli import main
from kdlab.ops import Clock, Compute, Sleep, TcpAccept, TcpConnect, TcpListen, TcpRecv, TcpSend
from kdlab.program import Role
from kdlab.runner import run_experiment, run_points
from kdlab.schema import COMMON_COLUMNS
from kdlab.spec import expand, load_spec
from kdsim import engine as sim_engine
from kdsim.engine import Jitter, SimEngine
from kdsim.profile import available_profiles, load_profile

JITTER = "cx4-edr-100g-jitter"
#: One open-loop Kafka shape at a moderate rate (20 k records/s: a few percent of a broker's capacity).
KAFKA = {"brokers": 1, "replication_factor": 1, "acks": 1, "topics": 1, "partitions": 1, "producers": 1,
         "consumers": 1, "record_bytes": 200, "rate_total": 20_000, "duration_ms": 5.0, "warmup_ms": 1.0,
         "linger_ms": 0.0}  # fmt: skip
#: Sweep axes that set both widths to 0.
WIDTHS_ZERO = {"profile.host.cpu_sigma": [0.0], "profile.host.wakeup_sigma": [0.0]}


def _spec(profile: str = JITTER, seeds: tuple[int, ...] = (1, 2), zero_widths: bool = False) -> list:
    """Points: perftest send_lat and write_bw, and a Kafka and a KafkaDirect open-loop run, per seed."""
    extra = WIDTHS_ZERO if zero_widths else {}
    perf = load_spec({"name": "var-perf", "workload": "perftest", "profile": profile, "seeds": list(seeds),
                      "params": {"iterations": 200}, "sweep": {"test": ["send_lat", "write_bw"], **extra}})  # fmt: skip
    kafka = load_spec({"name": "var-kafka", "workload": "kafka", "profile": profile, "seeds": list(seeds),
                       "params": KAFKA, "sweep": {"system": ["kafka", "kafkadirect"], **extra}})  # fmt: skip
    return expand(perf) + expand(kafka)


def _metrics(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its provenance: what the model computed."""
    return {k: v for k, v in row.items() if k not in COMMON_COLUMNS}


def _run(points: list, workers: int = 1) -> list[dict[str, Any]]:
    rows, failures = run_points(points, workers=workers, progress=False)
    assert failures == []
    return rows


#: The profiles built on the jitter profile (a loaded cluster's): they keep its widths.
WIDE = {JITTER, "cx4-edr-100g-cluster", "aws-i3en-2xlarge"}


def test_every_profile_gives_both_widths_with_a_source_and_only_the_jitter_profiles_are_not_zero() -> None:
    for name in available_profiles():
        prof = load_profile(name)
        for key in ("host.cpu_sigma", "host.wakeup_sigma"):
            assert prof.sources[key].text, (name, key)
            assert (prof.get(key) > 0) == (name in WIDE), (name, key)
    jitter, base = load_profile(JITTER), load_profile("cx4-edr-100g")
    assert (jitter.host.cpu_sigma, jitter.host.wakeup_sigma) == (0.25, 0.4)
    assert {k: v for k, v in jitter.as_dict().items() if not k.endswith("_sigma")} == {
        k: v for k, v in base.as_dict().items() if not k.endswith("_sigma")
    }  # the base profile's numbers, only the widths added


def test_kdlab_profiles_prints_the_widths_with_their_sources() -> None:
    out = CliRunner().invoke(main, ["profiles", JITTER])
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line for line in out.output.splitlines() if line.strip().startswith("host.")}
    assert "0.25" in lines["host.cpu_sigma"] and "[A]" in lines["host.cpu_sigma"]
    assert "0.4" in lines["host.wakeup_sigma"] and "Cerqueira" in lines["host.wakeup_sigma"]


def test_with_every_width_at_zero_nothing_is_drawn_and_the_rows_are_the_base_profiles(monkeypatch) -> None:
    def no_draw(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a draw was made with every width at 0")

    base = _run(_spec("cx4-edr-100g", seeds=(1,)))
    monkeypatch.setattr(sim_engine, "Jitter", no_draw)  # a width of 0 must not even build a generator
    zero = _run(_spec(JITTER, seeds=(1,), zero_widths=True))
    assert [_metrics(r) for r in zero] == [_metrics(r) for r in base]
    assert any(r.get("ack_latency_p50_us") for r in base) and any(r.get("t_typical_us") for r in base)


def test_different_seeds_give_different_rows_and_one_seed_the_same_on_one_worker_or_two() -> None:
    points = _spec()
    one, two = _run(points, workers=1), _run(points, workers=2)
    assert [_metrics(r) for r in one] == [_metrics(r) for r in two]
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for p, r in zip(points, one, strict=True):
        by_seed.setdefault(p.seed, []).append(_metrics(r))
    assert len(by_seed[1]) == len(by_seed[2]) == 4
    for a, b in zip(by_seed[1], by_seed[2], strict=True):
        assert a != b, "seeds 1 and 2 gave the same row"
    assert _metrics(_run([points[0]])[0]) == _metrics(one[0])  # a point alone: its draws are its own


def test_a_jittered_point_gives_the_same_rows_on_dask_as_in_the_local_pool() -> None:
    distributed = pytest.importorskip("distributed")
    spec = {"name": "var-dask", "workload": "kafka", "profile": JITTER, "params": dict(KAFKA, system="kafkadirect"),
            "seeds": [3]}  # fmt: skip
    drop = ["created_utc", "wall_s", "run_id", "git_commit"]  # git_commit: for people, read when a point runs
    local = run_experiment(spec, workers=1, results_dir=None, progress=False).drop(columns=drop)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        on_dask = run_experiment(spec, executor=client, results_dir=None, progress=False).drop(columns=drop)
    pd.testing.assert_frame_equal(local.reset_index(drop=True), on_dask.reset_index(drop=True))


def test_under_load_the_tail_spreads_where_every_constant_cost_gave_none() -> None:
    points = _spec("cx4-edr-100g") + _spec()
    rows = {(p.profile, p.seed, dict(p.params).get("system")): r for p, r in zip(points, _run(points), strict=True)}
    for seed in (1, 2):
        flat = rows["cx4-edr-100g", seed, "kafkadirect"]
        assert flat["ack_latency_p99_us"] == pytest.approx(flat["ack_latency_p50_us"], rel=1e-9)  # no spread today
        kd = rows[JITTER, seed, "kafkadirect"]
        assert kd["ack_latency_p99_us"] / kd["ack_latency_p50_us"] > 1.2
        tcp, tcp_flat = rows[JITTER, seed, "kafka"], rows["cx4-edr-100g", seed, "kafka"]
        assert tcp["ack_latency_p99_us"] / tcp["ack_latency_p50_us"] > 1.0
        assert tcp["e2e_latency_p99_us"] > tcp_flat["e2e_latency_p99_us"]
        # the widths move the tail, not the centre: the medians stay within ~10% of today's
        assert kd["ack_latency_p50_us"] == pytest.approx(flat["ack_latency_p50_us"], rel=0.1)


def test_a_jitter_stream_is_lognormal_with_the_profiles_median_and_its_own_per_seed_role_and_family() -> None:
    stream = Jitter(7, "broker-0", "cpu", 0.4)
    draws = [stream(1000.0) for _ in range(20_000)]
    logs = [math.log(d / 1000.0) for d in draws]
    assert abs(statistics.median(draws) / 1000.0 - 1.0) < 0.02
    assert statistics.pstdev(logs) == pytest.approx(0.4, rel=0.03)
    again = Jitter(7, "broker-0", "cpu", 0.4)
    assert [again(1000.0) for _ in range(300)] == draws[:300]  # stable across instances and processes
    for other in (Jitter(8, "broker-0", "cpu", 0.4), Jitter(7, "broker-1", "cpu", 0.4),
                  Jitter(7, "broker-0", "wakeup", 0.4)):  # fmt: skip
        assert [other(1000.0) for _ in range(10)] != draws[:10]
    zero = Jitter(7, "broker-0", "cpu", 0.4)
    assert zero(0.0) == 0.0 and zero(1000.0) == draws[0]  # a zero cost stays 0 and uses no draw


# --- the tail under load: a server whose service times vary queues, and more so near saturation -----------------


def _open_loop_client(n: int, interval_ns: float) -> Any:
    """Send ``n`` small requests, one every ``interval_ns`` (open loop: never waits for the server)."""
    conn = yield TcpConnect("srv")
    t0 = yield Clock()
    for i in range(n):
        now = yield Clock()
        if t0 + i * interval_ns > now:
            yield Sleep(t0 + i * interval_ns - now)
        yield TcpSend(conn, (yield Clock()), 64)


def _server(n: int) -> Any:
    """Serve each request (Kafka's per-request CPU), FIFO -> each request's time from send to served."""
    listener = yield TcpListen("srv")
    conn = yield TcpAccept(listener)
    sojourn = []
    for _ in range(n):
        _, sent = yield TcpRecv(conn)
        yield Compute("request")
        sojourn.append((yield Clock()) - sent)
    return sojourn


def test_under_load_p99_over_p50_exceeds_one_and_grows_toward_saturation() -> None:
    """Open-loop requests into one server thread with the jitter profile's widths: at light load a request's
    time is its own (the widths' spread); near saturation the wait behind others dominates, and waits spread
    far more (a D/G/1 queue), so p99/p50 grows with the load."""
    prof = load_profile("cx4-edr-100g-jitter")
    median = prof.host.request_ns + 2 * prof.host.syscall_ns + 64 * prof.tcp.recv_ns_per_byte  # CPU a request
    service = median * math.exp(prof.host.cpu_sigma**2 / 2)  # its mean, the lognormal's
    n = 20_000  # enough that near saturation one long queue excursion does not decide the percentiles (any seed)
    ratios, p99s = [], []
    for load in (0.2, 0.6, 0.9):
        out = SimEngine(prof, seed=1).run([
            Role("client", "c", _open_loop_client, {"n": n, "interval_ns": service / load}),
            Role("server", "s", _server, {"n": n}),
        ])  # fmt: skip
        p50, p99 = np.percentile(out["server"][n // 10 :], [50, 99])
        ratios.append(p99 / p50)
        p99s.append(p99)
    assert 1 < ratios[0] < ratios[1] < ratios[2]
    assert p99s[2] > 2 * p99s[0]  # the tail itself more than doubles (the wait behind others), not only the ratio
