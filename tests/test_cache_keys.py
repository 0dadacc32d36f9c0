"""Cache keys that cannot go stale, and readers that return one computation per point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from kdlab.cli import main
from kdlab.provenance import fingerprint_of
from kdlab.results import load_results, read_results
from kdlab.runner import run_experiment
from kdsim.profile import profile_path

ROOT = Path(__file__).resolve().parent.parent


def _lat_spec(profile: str, name: str = "keys") -> dict:
    return {"name": name, "workload": "perftest", "profile": profile,
            "params": {"test": "write_lat", "size": 8, "iterations": 20}}  # fmt: skip


def _profile_copy(tmp_path: Path, propagation_ns: float, name: str = "mine.yaml") -> Path:
    doc = yaml.safe_load(profile_path("cx4-edr-100g").read_text())
    doc["link"]["propagation_ns"]["value"] = propagation_ns
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_editing_one_number_of_a_profile_file_recomputes_with_the_new_value(tmp_path: Path) -> None:
    path = _profile_copy(tmp_path, 10.0)
    said: list[str] = []
    first = run_experiment(_lat_spec(str(path)), results_dir=tmp_path / "r", progress=False, log=said.append)
    _profile_copy(tmp_path, 5000.0)  # the same file, one number changed
    second = run_experiment(_lat_spec(str(path)), results_dir=tmp_path / "r", progress=False, log=said.append)
    assert said == []  # nothing was served from the cache
    # a write's one-way latency grows by the added propagation (4990 ns each way, halved RTT)
    assert second["t_typical_us"][0] - first["t_typical_us"][0] == pytest.approx(4.99, abs=1e-6)
    assert second["point_key"][0] != first["point_key"][0]
    again = run_experiment(_lat_spec(str(path)), results_dir=tmp_path / "r", progress=False, log=said.append)
    assert said == ["keys: 1 of 1 points already computed; computing 0"]
    assert again["t_typical_us"][0] == second["t_typical_us"][0]
    assert read_results(tmp_path / "r", "keys")["t_typical_us"].tolist() == [second["t_typical_us"][0]]
    _profile_copy(tmp_path, 10.0)  # back to the first numbers: the first computation is current again
    back = run_experiment(_lat_spec(str(path)), results_dir=tmp_path / "r", progress=False, log=said.append)
    assert back["t_typical_us"][0] == first["t_typical_us"][0]
    assert read_results(tmp_path / "r", "keys")["t_typical_us"].tolist() == [first["t_typical_us"][0]]


def test_a_new_profile_that_changes_its_base_is_a_new_point(tmp_path: Path) -> None:
    base = run_experiment(_lat_spec("cx4-edr-100g"), results_dir=tmp_path / "r", progress=False)
    derived = tmp_path / "derived.yaml"  # a new, untracked file that changes one number of its base
    write_ns = {"value": 1227.0, "tag": "A", "source": "test"}
    derived.write_text(yaml.safe_dump({"name": "cx4-edr-100g", "description": "same name, other numbers",
                                       "base": "cx4-edr-100g", "pcie": {"write_ns": write_ns}}))  # fmt: skip
    said: list[str] = []
    other = run_experiment(_lat_spec(str(derived)), results_dir=tmp_path / "r", progress=False, log=said.append)
    assert said == []
    assert other["t_typical_us"][0] > base["t_typical_us"][0]
    assert '"pcie.write_ns": 1227.0' in other["profile_values"][0]


def test_profile_overrides_and_base_resolution_enter_the_key(tmp_path: Path) -> None:
    spec = {**_lat_spec("cx4-edr-100g"), "sweep": {"profile.link.propagation_ns": [10.0, 10.5]}}
    frame = run_experiment(spec, results_dir=None, progress=False)
    assert frame["point_key"].nunique() == 2 and frame["profile_fingerprint"].nunique() == 2


def _package_copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package in ("kdlab", "kdsim", "kdreal"):
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    for extra in ("README.md", "docs", "notebooks", "tests", "benchmarks"):
        source = ROOT / extra
        if source.is_dir():
            shutil.copytree(source, tree / extra, ignore=shutil.ignore_patterns("__pycache__", "*.ipynb"))
        else:
            shutil.copy(source, tree / extra)
    return tree


def test_docs_notebooks_tests_and_profile_comments_leave_the_code_fingerprint_alone(tmp_path: Path) -> None:
    tree = _package_copy(tmp_path)
    before = fingerprint_of(tree)
    (tree / "README.md").write_text((tree / "README.md").read_text() + "\none more line of docs\n")
    (tree / "docs" / "kafka.md").write_text("rewritten")
    (tree / "notebooks" / "build.py").write_text("# changed\n")
    (tree / "tests" / "test_new.py").write_text("def test_x():\n    pass\n")
    profile = tree / "kdsim" / "profiles" / "cx4-edr-100g.yaml"
    profile.write_text("# a comment\n" + profile.read_text())  # its numbers enter the key through their values
    assert fingerprint_of(tree) == before


def test_any_source_change_tracked_or_not_changes_the_code_fingerprint(tmp_path: Path) -> None:
    tree = _package_copy(tmp_path)
    before = fingerprint_of(tree)
    (tree / "kdsim" / "scratch.py").write_text("X = 1\n")  # a new, untracked module
    added = fingerprint_of(tree)
    engine = tree / "kdsim" / "engine.py"
    engine.write_text(engine.read_text() + "\n# one character\n")
    assert len({before, added, fingerprint_of(tree)}) == 3


def test_the_key_does_not_depend_on_git(tmp_path: Path) -> None:
    """A copy of the sources outside any git checkout has this checkout's fingerprint: no git state is read."""
    from kdlab.provenance import code_fingerprint

    tree = _package_copy(tmp_path)
    assert not (tree / ".git").exists() and fingerprint_of(tree) == code_fingerprint()


SPEC4 = {"name": "one-row", "workload": "perftest", "params": {"test": "write_bw", "iterations": 60},
         "sweep": {"size": [64, 256, 1024, 4096]}}  # fmt: skip


def _kdlab(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdlab.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip


def test_after_two_concurrent_runs_and_a_recompute_each_reader_returns_one_row_per_point(tmp_path: Path) -> None:
    spec = tmp_path / "one-row.yaml"
    spec.write_text(yaml.safe_dump(SPEC4))
    results = str(tmp_path / "results")
    common = ["run", str(spec), "-q", "--no-figures", "-j", "1", "--results-dir", results]
    procs = [_kdlab(*common), _kdlab(*common)]  # two concurrent runs of one spec
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert CliRunner().invoke(main, [*common, "--recompute"]).exit_code == 0
    on_disk = pd.read_parquet(Path(results) / "one-row")
    assert len(on_disk) in (8, 12)  # two or three computations of four points are on disk ...
    got = load_results(results, "one-row")  # ... and every reader sees one per point, the newest
    assert len(got.frame) == 4 and sorted(got.frame["size"]) == [64, 256, 1024, 4096]
    assert got.superseded == len(on_disk) - 4 and got.frame["created_utc"].min() >= sorted(on_disk["created_utc"])[-4]
    out = CliRunner().invoke(main, ["query", "select size, count(*) as n from one_row group by size order by size",
                                    "--results-dir", results])  # fmt: skip
    assert out.exit_code == 0, out.output
    counts = [line.split() for line in out.stdout.strip().splitlines()[1:]]
    assert counts == [["64", "1"], ["256", "1"], ["1024", "1"], ["4096", "1"]]
    assert f"left out {len(on_disk) - 4} row(s) of older computations" in out.stderr


def test_rows_of_other_code_versions_are_returned_only_when_asked(tmp_path: Path) -> None:
    run_experiment(SPEC4, results_dir=tmp_path, progress=False, workers=1)
    old = load_results(tmp_path, "one-row", fingerprint="an-older-code")
    assert old.frame.empty and old.other_versions == 4
    every = load_results(tmp_path, "one-row", all_versions=True, fingerprint="an-older-code")
    assert len(every.frame) == 4
    out = CliRunner().invoke(main, ["query", "select count(*) as n from one_row", "--results-dir", str(tmp_path)])
    assert out.stdout.split()[-1] == "4"
