"""The real perftest tools' reports parse into the perftest workload's columns."""

from pathlib import Path

import pytest

from kdlab.perftest_report import MIB
from kdreal.perftest_tools import PerftestToolError, ToolRun, parse_report

FIXTURES = Path(__file__).parent / "fixtures"


def test_bandwidth_report_parses_to_mib_and_gbps() -> None:
    (row,) = parse_report((FIXTURES / "ib_write_bw.txt").read_text())
    assert row["size"] == 65536 and row["iterations"] == 5000
    assert row["bw_peak_mib_s"] == 105.12 and row["bw_avg_mib_s"] == 104.87
    assert row["msg_rate_mpps"] == pytest.approx(0.001678)
    assert row["bw_avg_gbps"] == pytest.approx(104.87 * MIB * 8 / 1e9)


def test_latency_report_parses_every_column() -> None:
    (row,) = parse_report((FIXTURES / "ib_read_lat.txt").read_text())
    assert (row["size"], row["iterations"]) == (2, 1000)
    assert (row["t_min_us"], row["t_typical_us"], row["t_p999_us"]) == (20.41, 22.90, 61.30)


def test_output_without_a_table_is_an_error() -> None:
    with pytest.raises(PerftestToolError, match="no '#bytes' header"):
        parse_report("Couldn't connect to 127.0.0.1:18515\n")


def test_client_and_server_command_lines() -> None:
    run = ToolRun("write_bw", 65536, iterations=5000)
    assert run.argv(server=True)[:1] == ["ib_write_bw"]
    assert run.argv(server=False)[-1] == "127.0.0.1"
    assert "-x" in run.argv(server=True) and "-F" in run.argv(server=True)
