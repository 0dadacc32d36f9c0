"""Sweeps on a real Dask cluster give exactly the rows the local pool gives; re-runs compute nothing."""

import pandas as pd
import pytest

from kdlab.runner import run_experiment

SPEC = {
    "name": "dask-check",
    "workload": "perftest",
    "params": {"iterations": 50},
    "sweep": {"test": ["write_lat", "read_bw"], "size": [64, 4096]},
    "seeds": [1, 2],
}
VOLATILE = ["created_utc", "wall_s", "run_id", "git_commit"]  # git_commit is read when a point runs


def _metrics(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=VOLATILE).sort_values("point_key").reset_index(drop=True)


def test_dask_local_cluster_gives_the_local_pool_rows(tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    local = run_experiment(SPEC, workers=2, results_dir=None, progress=False)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client:
        on_dask = run_experiment(SPEC, executor=client, results_dir=None, progress=False)
    pd.testing.assert_frame_equal(_metrics(local), _metrics(on_dask))


def test_rerun_computes_nothing_and_interrupted_sweep_resumes(tmp_path) -> None:
    messages: list[str] = []
    first = run_experiment(SPEC, workers=1, results_dir=tmp_path, progress=False, log=messages.append)
    assert len(first) == 8 and not messages
    again = run_experiment(SPEC, workers=1, results_dir=tmp_path, progress=False, log=messages.append)
    assert messages == ["dask-check: 8 of 8 points already computed; computing 0"]
    pd.testing.assert_frame_equal(_metrics(first), _metrics(again))
    # an interrupted sweep: half its points are on disk; a re-run computes only the others
    half = dict(SPEC, sweep={"test": ["write_lat"], "size": [64, 4096]}, name="resume")
    run_experiment(half, workers=1, results_dir=tmp_path, progress=False)
    messages.clear()
    full = run_experiment(dict(SPEC, name="resume"), workers=1, results_dir=tmp_path, progress=False,
                          log=messages.append)  # fmt: skip
    assert messages == ["resume: 4 of 8 points already computed; computing 4"]
    assert len(full) == 8
    assert not list(tmp_path.glob("*/.part-*"))  # no partial files left


def test_results_can_be_queried_with_duckdb(tmp_path) -> None:
    pytest.importorskip("duckdb")
    from click.testing import CliRunner

    from kdlab.cli import main

    run_experiment(SPEC, workers=1, results_dir=tmp_path, progress=False)
    run_experiment(SPEC, workers=1, results_dir=tmp_path, progress=False, recompute=True)  # a second part
    sql = 'select test, count(*) as n from "dask-check" group by test order by test'
    out = CliRunner().invoke(main, ["query", sql, "--results-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    lines = out.output.split("\n")
    assert "read_bw" in lines[1] and lines[1].split()[-1] == "4"  # the newest rows only, per point config
