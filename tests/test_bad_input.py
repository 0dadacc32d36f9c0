"""Bad input gets one line naming the field and what is allowed, a non-zero exit, and nothing in results/."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kdlab.cli import main
from kdreal.testbed import has_rdma

PERF = "name: x\nworkload: perftest\n"
BW = PERF + "params: {test: write_bw}\n"
KAFKA = "name: x\nworkload: kafka\n"

#: (spec text, words the one line must contain)
BAD_SPECS = [
    ("name: [unclosed\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "a spec is a mapping"),
    ("", "a spec is a mapping"),
    (PERF + "foo: 1\n", "foo: unknown field; allowed: name"),
    ("name: x\n", "workload: Field required"),
    ("name: x\nworkload: nope\n", "workload: unknown workload 'nope'; allowed: artifact, kafka, perftest"),
    ("name: 'bad name!'\nworkload: perftest\n", "name: String should match pattern"),
    (PERF + "engine: gpu\n", "engine: Input should be 'sim' or 'real'"),
    (PERF + "seeds: [-1]\n", "seeds must be >= 0"),
    (PERF + "seeds: []\n", "seeds: List should have at least 1 item"),
    (PERF + "seeds: one\n", "seeds: Input should be a valid list"),
    (PERF + "params: {test: write_bw, size: 0}\n", "size: Input should be greater than or equal to 1"),
    (PERF + "params: {test: write_bw, size: -5}\n", "size: Input should be greater than or equal to 1"),
    (PERF + "params: {test: write_bw, size: 1000000000000}\n", "size: Input should be less than or equal to 8388608"),
    (PERF + "params: {test: write_bw, size: .nan}\n", "params.size: must be a finite number (got nan)"),
    (PERF + "params: {test: write_bw, size: .inf}\n", "params.size: must be a finite number (got inf)"),
    (KAFKA + "params: {system: kafka, fetch_max_wait_ms: -.inf}\n", "params.fetch_max_wait_ms: must be a finite"),
    (PERF + "params: {test: write_bw, iterations: many}\n", "iterations: Input should be a valid integer"),
    (PERF + "params: {test: write_bw, bogus: 1}\n", "bogus: unknown field; allowed: test, size"),
    (PERF + "params: {test: nosuch_bw}\n", "test: Input should be 'send_lat'"),
    (PERF + "params: [1, 2]\n", "params: Input should be a valid dictionary"),
    (BW + "sweep: {size: {pow2: [3, 64]}}\n", "sweep.size: pow2: [3, 64] must be powers of two"),
    (BW + "sweep: {size: {range: [1, 1e12, 1]}}\n", "1,000,000,000,000 points (size: 1,000,000,000,000"),
    (BW + "sweep: {size: {range: [1, .inf, 1]}}\n", "sweep.size: range: [1.0, inf, 1.0] must be finite"),
    (BW + "sweep: {size: {range: [8, 1, 1]}}\n", "needs step > 0 and stop >= start"),
    (BW + "sweep: {size: []}\n", "sweep.size: needs at least one value"),
    (BW + "sweep: {size: [64, .inf]}\n", "sweep.size: must be a finite number"),
    (BW + "sweep: {nosuch: [1]}\n", "sweep.nosuch: not a perftest parameter; allowed: test"),
    (BW + "sweep: {profile.nic.qpc_cache_entries: [0]}\n", "nic.qpc_cache_entries = 0 is outside the allowed range"),
    (BW + "sweep: {profile.link.propagation_ns: [.inf]}\n", "profile.link.propagation_ns: must be a finite"),
    (BW + "sweep: {profile.nic.nosuch: [1]}\n", "unknown profile parameter 'nic.nosuch'"),
    (BW + "profile: nope\n", "profile: unknown profile 'nope'; available: aws-i3en-2xlarge, cx3-fdr-56g"),
    (KAFKA + "params: {system: nosuch}\n", "system: Input should be 'kafka', 'osu' or 'kafkadirect'"),
    (KAFKA + "params: {system: kafka, acks: 2}\n", "acks: Input should be 0, 1 or -1"),
    (KAFKA + "params: {system: kafka, replication_factor: 4, brokers: 3}\n", "4 replicas cannot be placed on 3"),
    (KAFKA + "params: {system: kafka, replication_factor: 101}\n", "replication_factor: Input should be less than"),
    (KAFKA + "params: {system: kafka, buffer_memory: 4096}\n", "buffer_memory: 4096 B cannot hold one batch"),
    (KAFKA + "params: {system: kafka, topics: 10000, partitions: 100}\n", "partitions: 1000000 in the cluster"),
    (KAFKA + "params: {system: kafka, racks: 4, brokers: 3}\n", "racks: 4 racks for 3 brokers"),
    (KAFKA + "params: {system: kafka, keys: random}\n", "keys: keyed records need partitioner default"),
    (KAFKA + "params: {system: kafkadirect, partitioner: sticky}\n", "partitioner: exclusive KafkaDirect"),
    (KAFKA + "params: {system: kafkadirect, producers: 4, partitions: 2}\n", "partitions (2) must be >= producers (4)"),
    (KAFKA + "params: {system: kafka, record_bytes: 2000000, segment_bytes: 4096}\n", "does not fit a segment"),
]


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize(("text", "says"), BAD_SPECS, ids=[f"spec{i}" for i in range(len(BAD_SPECS))])
def test_a_bad_spec_is_one_line_naming_the_field(tmp_path: Path, command: str, text: str, says: str) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    results = tmp_path / "results"
    args = [command, str(spec)] + (["--results-dir", str(results), "-q"] if command == "run" else [])
    out = CliRunner().invoke(main, args)
    assert out.exit_code != 0
    line = _one_line(out.output)
    assert line.startswith("kdlab: error: ") and says in line, line
    assert not results.exists()


def test_the_table_has_at_least_thirty_malformed_specs() -> None:
    assert len(BAD_SPECS) >= 30


#: (command line, words the one line must contain); {tmp} is a fresh folder
BAD_COMMANDS = [
    (["perftest", "write_bw", "-s", "0"], "'-s' / '--size': 0 is not in the range x>=1"),
    (["perftest", "write_bw", "-q", "0"], "'-q' / '--qp': 0 is not in the range x>=1"),
    (["perftest", "write_bw", "-n", "2"], "'-n' / '--iters': 2 is not in the range x>=5"),
    (["perftest", "write_bw", "-s", "16777216"], "size: Input should be less than or equal to 8388608"),
    (["perftest", "write_bw", "--profile", "nope"], "unknown profile 'nope'; available"),
    (["perftest", "nosuch_bw"], "Invalid value for '{send_lat|"),
    (["perftest", "write_bw", "-s", "many"], "'many' is not a valid integer"),
    (["calibrate-anchor", "eth-10g"], "profile 'eth-10g' has no anchor to fit"),
    (["calibrate-anchor", "nope"], "unknown profile 'nope'"),
    (["profiles", "nope"], "unknown profile 'nope'"),
    (["query", "select 1", "--results-dir", "{tmp}/nothing"], "no results folder"),
    (["query", "select nonsense from", "--results-dir", "{tmp}/results"], "SQL: Parser Error"),
    (["results", "check", "--results-dir", "{tmp}/nothing"], "no results folder"),
    (["reproduce", "--experiments-dir", "{tmp}/nothing", "--results-dir", "{tmp}/results"], "no folder"),
    (["reproduce", "--experiments-dir", "{tmp}/empty", "--results-dir", "{tmp}/results"], "no spec with main: true"),
    (["figures", "--experiments-dir", "{tmp}/nothing"], "--experiments-dir: no folder"),
    (["run", "{tmp}/missing.yaml"], "'{tmp}/missing.yaml' does not exist"),
    (["run", "-j", "0", "{tmp}/ok.yaml", "--results-dir", "{tmp}/results"], "'--workers' / '-j': 0 is not in the"),
    (["run", "{tmp}/big.yaml", "--results-dir", "{tmp}/results"], "20,000 points to compute (more than 10,000)"),
    (["omb", "{tmp}/bad-omb.yaml"], "omb"),
    (["omb", "{tmp}/ok.yaml", "--system", "nosuch"], "Invalid value for '--system'"),
    (["calibrate-kafka", "{tmp}/ok.yaml", "--fit", "host.nosuch", "--results", "{tmp}/results"], "host.nosuch"),
    (["nosuch"], "No such command 'nosuch'"),
]


@pytest.mark.parametrize(("args", "says"), BAD_COMMANDS, ids=[" ".join(a[:2]) for a, _ in BAD_COMMANDS])
def test_a_bad_command_line_is_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "ok.yaml").write_text(BW)
    (tmp_path / "big.yaml").write_text(BW + "sweep: {size: {range: [1, 20000, 1]}}\n")
    (tmp_path / "bad-omb.yaml").write_text("name: w\ntopics: 0\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = CliRunner().invoke(main, argv)
    assert out.exit_code != 0
    line = _one_line(out.output)
    assert "error: " in line and says.replace("{tmp}", str(tmp_path)) in line, line
    assert not any((tmp_path / "results").iterdir())


@pytest.mark.skipif(has_rdma(), reason="this machine has an RDMA device")
def test_a_real_engine_sweep_without_a_device_fails_once_before_the_first_point(tmp_path: Path) -> None:
    spec = tmp_path / "real.yaml"
    spec.write_text(BW + "sweep: {size: [64, 128, 256, 512]}\n")
    out = CliRunner().invoke(main, ["run", str(spec), "--engine", "real", "--results-dir", str(tmp_path / "r")])
    assert out.exit_code == 1
    assert "engine 'real' needs an RDMA device" in _one_line(out.output)
    assert not (tmp_path / "r").exists()


def test_debug_shows_the_traceback_of_an_unexpected_error(tmp_path: Path) -> None:
    measured = tmp_path / "m.csv"
    measured.write_text("nothing,useful\n1,2\n")
    args = ["calibrate", str(measured), "--fit", "nic.pipeline_ns", "--fit-on", "x", "--name", "n"]
    plain = CliRunner().invoke(main, args)
    assert plain.exit_code == 1 and "--debug" in _one_line(plain.output)
    debug = CliRunner().invoke(main, ["--debug", *args])
    assert debug.exit_code == 1 and isinstance(debug.exception, KeyError)
