"""Runner and result files: one atomic Parquet part per run, failures reported with their config."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kdlab.results import read_results, write_part
from kdlab.runner import SweepFailed, run_experiment
from kdlab.schema import COMMON_COLUMNS, SCHEMA_VERSION


def _spec(name: str = "runner-t", **sweep: list) -> dict:
    return {
        "name": name,
        "workload": "perftest",
        "params": {"test": "write_bw", "size": 1024, "iterations": 60},
        "sweep": sweep or {"size": [64, 1024]},
        "seeds": [1],
    }


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_run_experiment_writes_one_part_with_the_common_columns(tmp_path: Path) -> None:
    frame = run_experiment(_spec(), results_dir=tmp_path, workers=1, progress=False)
    parts = _files(tmp_path)
    assert len(parts) == 1 and parts[0].startswith("part-") and parts[0].endswith(".parquet")
    assert (tmp_path / "runner-t" / parts[0]).exists()
    on_disk = pd.read_parquet(tmp_path / "runner-t" / parts[0])
    assert len(on_disk) == len(frame) == 2
    assert list(on_disk.columns[: len(COMMON_COLUMNS)]) == list(COMMON_COLUMNS)
    assert {"bw_avg_gbps", "msg_rate_mpps", "size", "test"} <= set(on_disk.columns)
    assert sorted(on_disk["size"]) == [64, 1024]
    assert (on_disk["schema_version"] == SCHEMA_VERSION).all()
    assert (on_disk["experiment"] == "runner-t").all() and (on_disk["engine"] == "sim").all()
    assert on_disk["point_key"].nunique() == 2
    for cfg in on_disk["config_json"]:
        assert json.loads(cfg)["params"]["test"] == "write_bw"
    # readers see the same rows
    back = read_results(tmp_path, "runner-t")
    assert sorted(back["point_key"]) == sorted(on_disk["point_key"])


def test_a_failing_point_is_reported_with_its_config_and_the_rest_is_written(tmp_path: Path) -> None:
    # iterations (60) is not a multiple of post_list 7: perftest's loop refuses that point at run time
    with pytest.raises(SweepFailed) as info:
        run_experiment(_spec(post_list=[1, 7, 2]), results_dir=tmp_path, workers=1, progress=False)
    failed = info.value
    assert len(failed.failures) == 1
    (failure,) = failed.failures
    assert failure.point.params_dict["post_list"] == 7
    assert "multiple of post_list" in failure.error
    assert '"post_list": 7' in str(failed) and "runner-t" in str(failed)
    assert sorted(failed.frame["post_list"]) == [1, 2]
    (part,) = (tmp_path / "runner-t").glob("part-*.parquet")
    assert sorted(pd.read_parquet(part)["post_list"]) == [1, 2]


def test_interrupted_write_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: pd.DataFrame, path: str, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"PAR1 half a file")  # as if the process died mid-write
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_spec(), results_dir=tmp_path, workers=1, progress=False)
    assert _files(tmp_path) == []


def test_write_part_with_no_rows_writes_nothing(tmp_path: Path) -> None:
    assert write_part([], tmp_path, "empty") is None
    assert _files(tmp_path) == []


def test_each_write_appends_its_own_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kdlab.results

    monkeypatch.setattr(kdlab.results.time, "strftime", lambda fmt, t=None: "20260101T000000")
    rows = [{"point_key": "abcdef0123456789", "row": 0, "created_utc": "x", "v": 1}]
    write_part(rows, tmp_path, "e")
    write_part([{**rows[0], "v": 2, "created_utc": "y"}], tmp_path, "e")
    assert len(_files(tmp_path)) == 2


def test_a_real_engine_point_without_a_device_fails_clearly_and_writes_nothing(tmp_path) -> None:
    from kdreal.testbed import has_rdma

    if has_rdma():
        pytest.skip("this machine has an RDMA device")
    spec = {"name": "x", "workload": "kafka", "engine": "real", "params": {"system": "kafkadirect"}}
    with pytest.raises(Exception, match="needs an RDMA device"):
        run_experiment(spec, results_dir=tmp_path, progress=False)
    assert not any(tmp_path.rglob("*.parquet"))
