"""A results folder stays usable: bad parts are named and moved aside, killed runs leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from kdlab.cli import main
from kdlab.results import ResultsError, read_results
from kdlab.runner import run_experiment

SPEC = {"name": "hyg", "workload": "perftest", "params": {"test": "write_bw", "iterations": 60},
        "sweep": {"size": [64, 256, 1024]}}  # fmt: skip


def _truncate_one_part(results: Path) -> Path:
    (part,) = (results / "hyg").glob("part-*.parquet")
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])  # as a full disk or a crash would leave it
    return part


def test_run_resume_and_query_name_a_truncated_part_and_check_repair_moves_it_aside(tmp_path: Path) -> None:
    run_experiment(SPEC, results_dir=tmp_path, progress=False, workers=1)
    part = _truncate_one_part(tmp_path)
    with pytest.raises(ResultsError, match=f"{part.name}: not readable as Parquet.*kdlab results check --repair"):
        run_experiment(SPEC, results_dir=tmp_path, progress=False, workers=1)
    for args in (["query", "select 1"], ["run", "--no-figures", "-q"]):
        extra = [] if args[0] == "query" else [str(tmp_path / "hyg.yaml")]
        (tmp_path / "hyg.yaml").write_text(__import__("yaml").safe_dump(SPEC))
        out = CliRunner().invoke(main, [*args, *extra, "--results-dir", str(tmp_path)])
        assert out.exit_code == 1
        assert out.output.strip().count("\n") == 0 and part.name in out.output and "--repair" in out.output
    checked = CliRunner().invoke(main, ["results", "check", "--results-dir", str(tmp_path)])
    assert checked.exit_code == 1 and part.name in checked.output and part.exists()
    repaired = CliRunner().invoke(main, ["results", "check", "--repair", "--results-dir", str(tmp_path)])
    assert repaired.exit_code == 0 and "_quarantine" in repaired.output
    assert not part.exists() and (tmp_path / "hyg" / "_quarantine" / part.name).exists()
    assert read_results(tmp_path, "hyg").empty  # the only part was the bad one
    again = run_experiment(SPEC, results_dir=tmp_path, progress=False, workers=1)  # recomputes, reads fine
    assert len(again) == 3 and len(pd.read_parquet(tmp_path / "hyg")) == 3  # pyarrow skips _quarantine


def test_foreign_parquet_files_are_found(tmp_path: Path) -> None:
    run_experiment(SPEC, results_dir=tmp_path, progress=False, workers=1)
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "hyg" / "part-foreign.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "hyg" / "notes.parquet")
    (part,) = [p for p in (tmp_path / "hyg").glob("part-2*.parquet")]
    (tmp_path / "other").mkdir()
    part.rename(tmp_path / "other" / part.name)  # a part of experiment hyg in another experiment's folder
    out = CliRunner().invoke(main, ["results", "check", "--results-dir", str(tmp_path)])
    assert out.exit_code == 1
    assert "part-foreign.parquet: foreign Parquet file: no column(s) experiment, config_json, created_utc" in out.output
    assert "notes.parquet: not a result part" in out.output
    assert f"{part.name}: foreign part: its rows belong to experiment(s) hyg" in out.output


def test_a_temp_file_of_a_killed_writer_is_removed_by_the_next_run(tmp_path: Path) -> None:
    folder = tmp_path / "hyg"
    folder.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = folder / f".part-{dead.stdout.strip()}-abc123.tmp"  # the pid of a process that has exited
    leftover.write_bytes(b"PAR1 half")
    mine = folder / f".part-{os.getpid()}-live.tmp"  # a live writer's file is left alone
    mine.write_bytes(b"PAR1 writing")
    out = CliRunner().invoke(main, ["results", "check", "--results-dir", str(tmp_path)])
    assert leftover.name in out.output and mine.name not in out.output
    run_experiment(SPEC, results_dir=tmp_path, progress=False, workers=1)
    assert not leftover.exists() and mine.exists()


def test_an_interrupt_writes_the_points_that_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGINT arrives while the third point runs: the first two are on disk, the third is not."""
    import kdlab.workloads.perftest as perftest

    real = perftest.PerftestWorkload.run_point
    started: list[int] = []

    def interrupted_on_third(self, point):  # type: ignore[no-untyped-def]
        started.append(point.params_dict["size"])
        if len(started) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, point)

    monkeypatch.setattr(perftest.PerftestWorkload, "run_point", interrupted_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(SPEC, results_dir=tmp_path, progress=False, workers=1)
    on_disk = pd.read_parquet(tmp_path / "hyg")
    assert sorted(on_disk["size"]) == [64, 256]
    assert not list((tmp_path / "hyg").glob(".part-*"))


def test_a_figure_leaves_out_points_an_edited_spec_no_longer_has(tmp_path) -> None:
    """After a spec's sweep changes, its folder still holds the old points' rows; the figure draws only the new."""
    from kdlab.results import load_results, rows_of_spec
    from kdlab.runner import run_experiment
    from kdlab.spec import load_spec

    old = {**SPEC, "sweep": {"size": [64, 128]}}
    new = {**SPEC, "sweep": {"size": [128, 256]}}
    run_experiment(old, results_dir=tmp_path, progress=False)
    run_experiment(new, results_dir=tmp_path, progress=False)
    frame = load_results(tmp_path, SPEC["name"]).frame
    assert sorted(frame["size"]) == [64, 128, 256]
    assert sorted(rows_of_spec(frame, load_spec(new))["size"]) == [128, 256]


def test_kdlab_figures_reads_the_sweeps_and_testbed_specs_but_not_omb_workloads() -> None:
    from kdlab.cli import _all_spec_files

    files = _all_spec_files("experiments")
    assert any("/sweeps/brokers.yaml" in f for f in files) and any("/testbed/kd-replication.yaml" in f for f in files)
    assert not any("/omb/" in f for f in files)
