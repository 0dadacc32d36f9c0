"""Spec and profile validation: every error names the field and what it allows."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from kdlab.spec import Point, SpecError, expand, load_spec
from kdsim.profile import ProfileError, load_profile, parse_profile, profile_path

BASE = {
    "name": "t",
    "workload": "perftest",
    "params": {"test": "write_lat", "size": 64, "iterations": 10},
}


def spec(**changes: object) -> dict:
    doc = copy.deepcopy(BASE)
    for key, value in changes.items():
        if key.startswith("params_"):
            doc["params"][key.removeprefix("params_")] = value
        else:
            doc[key] = value
    return doc


def spec_error(doc: dict) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(doc)
    return str(info.value)


# --- a valid spec ---------------------------------------------------------------------------


def test_valid_spec_expands_sweep_times_seeds_in_a_stable_order() -> None:
    s = load_spec(spec(sweep={"size": {"pow2": [2, 16]}, "profile.nic.max_rd_atomic": [1, 8]}, seeds=[3, 4]))
    points = expand(s)
    assert len(points) == 4 * 2 * 2
    assert [p.params_dict["size"] for p in points[:4]] == [2, 2, 2, 2]
    assert [(dict(p.profile_overrides)["nic.max_rd_atomic"], p.seed) for p in points[:4]] == [
        (1, 3), (1, 4), (8, 3), (8, 4)
    ]  # fmt: skip
    assert sorted({p.params_dict["size"] for p in points}) == [2, 4, 8, 16]
    assert all(isinstance(p, Point) and p.params_dict["test"] == "write_lat" for p in points)
    assert len({p.key("v") for p in points}) == len(points)  # every point has its own cache key


def test_spec_loads_from_yaml_text_and_file(tmp_path: Path) -> None:
    text = yaml.safe_dump(spec())
    assert load_spec(text).name == "t"
    f = tmp_path / "x.yaml"
    f.write_text(text)
    assert load_spec(f).workload == "perftest"
    assert "does not exist" in spec_error_of_path(tmp_path / "missing.yaml")


def spec_error_of_path(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return str(info.value)


# --- errors -----------------------------------------------------------------------------------


def test_unknown_workload_names_the_allowed_workloads() -> None:
    msg = spec_error(spec(workload="kafka-ish"))
    assert "workload" in msg and "kafka-ish" in msg and "perftest" in msg


def test_unknown_test_name_lists_the_tests() -> None:
    msg = spec_error(spec(params_test="write_latency"))
    assert "test" in msg and "write_latency" in msg
    for name in ("send_lat", "write_lat", "read_lat", "atomic_lat", "send_bw", "write_bw", "read_bw", "atomic_bw"):
        assert name in msg


@pytest.mark.parametrize("where", ["params", "sweep"])
def test_size_zero_names_size_and_its_lower_bound(where: str) -> None:
    doc = spec(params_size=0) if where == "params" else spec(sweep={"size": [64, 0]})
    msg = spec_error(doc)
    assert "size" in msg
    assert re.search(r"greater than or equal to 1|>= ?1", msg), msg
    assert "0" in msg


def test_negative_seed_names_seeds_and_the_bound() -> None:
    msg = spec_error(spec(seeds=[1, -2]))
    assert "seeds" in msg and ">= 0" in msg


def test_unknown_top_level_field_is_named() -> None:
    msg = spec_error(spec(sweeps={"size": [1]}))
    assert "sweeps" in msg


def test_unknown_top_level_field_lists_the_allowed_fields() -> None:
    msg = spec_error(spec(sweeps={"size": [1]}))
    assert "sweep" in msg.replace("sweeps", "") and "seeds" in msg and "params" in msg


def test_unknown_sweep_key_lists_the_parameters() -> None:
    msg = spec_error(spec(sweep={"msg_size": [1, 2]}))
    assert "sweep.msg_size" in msg
    assert "size" in msg.replace("msg_size", "") and "qps" in msg and "profile.*" in msg


@pytest.mark.parametrize("bounds", [[3, 64], [64, 8], [0, 4]])
def test_bad_pow2_range_says_what_is_allowed(bounds: list[int]) -> None:
    msg = spec_error(spec(sweep={"size": {"pow2": bounds}}))
    assert "pow2" in msg and "powers of two" in msg and str(bounds[0]) in msg


def test_bad_pow2_range_names_the_sweep_key() -> None:
    msg = spec_error(spec(sweep={"size": {"pow2": [3, 64]}}))
    assert "sweep.size" in msg


def test_bad_range_axis_says_what_is_allowed() -> None:
    msg = spec_error(spec(sweep={"size": {"range": [64, 8, 8]}}))
    assert "range" in msg and "step > 0" in msg


def test_unknown_profile_lists_the_available_profiles() -> None:
    msg = spec_error(spec(profile="cx9-xdr"))
    assert "profile" in msg and "cx9-xdr" in msg and "cx4-edr-100g" in msg and "cx3-fdr-56g" in msg


def test_bad_profile_override_value_names_parameter_and_range() -> None:
    msg = spec_error(spec(sweep={"profile.nic.processing_units": [0]}))
    assert "sweep.profile.nic.processing_units" in msg
    assert "[1, inf]" in msg and "= 0" in msg


def test_fractional_override_of_a_count_is_rejected() -> None:
    msg = spec_error(spec(sweep={"profile.nic.max_rd_atomic": [2.5]}))
    assert "nic.max_rd_atomic" in msg and "whole number" in msg


def test_unknown_profile_parameter_lists_the_known_ones() -> None:
    msg = spec_error(spec(sweep={"profile.nic.cache_size": [64]}))
    assert "nic.cache_size" in msg and "nic.qpc_cache_entries" in msg and "link.mtu_bytes" in msg


def test_not_a_mapping_is_rejected() -> None:
    with pytest.raises(SpecError, match="mapping"):
        load_spec("- just\n- a list\n")


# --- profile files ----------------------------------------------------------------------------


def shipped(name: str = "cx4-edr-100g") -> dict:
    return yaml.safe_load(profile_path(name).read_text())


@pytest.mark.parametrize("name", ["cx4-edr-100g", "cx3-fdr-56g"])
def test_shipped_profiles_parse_and_every_parameter_has_a_source(name: str) -> None:
    profile = parse_profile(shipped(name), origin=name)
    assert profile == load_profile(name)
    assert set(profile.sources) == set(profile.as_dict())
    assert all(src.text and src.tag in "VSAM" for src in profile.sources.values())


def test_profile_missing_a_parameter_names_it() -> None:
    doc = shipped()
    del doc["nic"]["max_rd_atomic"]
    with pytest.raises(ProfileError, match=r"nic\.max_rd_atomic is missing"):
        parse_profile(doc)


def test_profile_missing_a_source_names_the_parameter() -> None:
    doc = shipped()
    del doc["link"]["mtu_bytes"]["source"]
    with pytest.raises(ProfileError) as info:
        parse_profile(doc)
    assert "link.mtu_bytes" in str(info.value) and "source" in str(info.value)


def test_profile_with_a_blank_source_names_the_parameter() -> None:
    doc = shipped()
    doc["pcie"]["write_ns"]["source"] = "   "
    with pytest.raises(ProfileError, match=r"pcie\.write_ns.*source"):
        parse_profile(doc)


def test_profile_with_a_bad_tag_lists_the_tags() -> None:
    doc = shipped()
    doc["host"]["poll_ns"]["tag"] = "X"
    with pytest.raises(ProfileError, match=r"host\.poll_ns.*tag.*\['A', 'M', 'S', 'V'\]"):
        parse_profile(doc)


def test_profile_missing_a_section_names_it() -> None:
    doc = shipped()
    del doc["switch"]
    with pytest.raises(ProfileError, match="section 'switch' is missing"):
        parse_profile(doc)


def test_profile_with_an_unknown_parameter_names_it() -> None:
    doc = shipped()
    doc["nic"]["turbo"] = {"value": 1, "tag": "A", "source": "wishful"}
    with pytest.raises(ProfileError, match=r"nic\.turbo"):
        parse_profile(doc)


def test_profile_value_out_of_range_names_parameter_and_range() -> None:
    doc = shipped()
    doc["link"]["mtu_bytes"]["value"] = 100
    with pytest.raises(ProfileError, match=r"link\.mtu_bytes = 100 is outside the allowed range \[256, 9000\]"):
        parse_profile(doc)


def test_with_overrides_records_them_and_leaves_the_original_alone() -> None:
    base = load_profile("cx4-edr-100g")
    p = base.with_overrides({"nic.qpc_cache_entries": 64}).with_overrides({"nic.max_rd_atomic": 2})
    assert p.nic.qpc_cache_entries == 64 and p.nic.max_rd_atomic == 2
    assert dict(p.overrides) == {"nic.qpc_cache_entries": 64, "nic.max_rd_atomic": 2}
    assert base.nic.qpc_cache_entries == 2048 and base.overrides == ()
    with pytest.raises(ProfileError, match="unknown profile parameter"):
        base.with_overrides({"nic.nope": 1})
