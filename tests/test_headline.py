"""The headline table marks every claim reached (within 25%) or not, from result rows and the claim's tool."""

from __future__ import annotations

import pytest

from kdlab.headline import CLAIMS, claimed_range, headline, verdict, write_headline
from kdlab.provenance import code_fingerprint
from kdlab.results import write_part


def test_claimed_numbers_and_ranges_are_read_from_the_claim() -> None:
    assert claimed_range("up to 9x") == (9, 9)
    assert claimed_range("4x lower") == (4, 4)
    assert claimed_range("9x-10x") == (9, 10)
    with pytest.raises(ValueError, match="no ratio"):
        claimed_range("much faster")


@pytest.mark.parametrize(("model", "claimed", "expected"), [
    (9.0, "up to 9x", "within 25%"), (11.25, "up to 9x", "within 25%"), (11.3, "up to 9x", "not reached"),
    (3.0, "4x lower", "within 25%"), (2.9, "4x lower", "not reached"), (12.4, "9x-10x", "within 25%"),
    (6.8, "9x-10x", "within 25%"), (6.7, "9x-10x", "not reached"), (float("nan"), "13x", "no results"),
])  # fmt: skip
def test_the_verdict_is_within_25_percent_of_the_nearer_end(model: float, claimed: str, expected: str) -> None:
    assert verdict(model, claimed) == expected


def test_every_claim_names_its_tool_and_the_table_marks_each(tmp_path) -> None:
    claim = CLAIMS[0]
    rows = [{"experiment": claim.experiment, "config_json": f"{v}{x}", "created_utc": "2026-11-29", "variant": v,
             "engine": "real", "code_fingerprint": code_fingerprint(), claim.x: x, claim.metric: value}
            for v, x, value in
            [(claim.num, 16, 90.0), (claim.den, 16, 10.0), (claim.num, 64, 50.0), (claim.den, 64, 10.0)]]  # fmt: skip
    write_part(rows, tmp_path, claim.experiment)
    table = headline(tmp_path)
    assert list(table["tool"]) == [c.tool for c in CLAIMS] and all(table["tool"])
    first = table.iloc[0]
    assert first["model"] == 9.0 and first["verdict"] == "within 25%" and "5.0x-9.0x" in first["configuration"]
    assert set(table["verdict"][1:]) == {"no results"}
    _, md = write_headline(table, tmp_path, tmp_path)
    text = md.read_text()
    assert text.count("| within 25% |") == 1 and text.count("| no results |") == len(CLAIMS) - 1
