"""Anchors: published perftest numbers the profiles must reproduce (the acceptance numbers).

Sources (details in docs/hardware-sources.md):
* ConnectX-4 EDR ib_send_lat RC t_typical: D. Potter, MSc thesis, RWTH Aachen, 2018
  (32 B 0.83 us, the fitted point; 1 KB 1.58 us, 4 KB 2.26 us, 32 KB 4.57 us held out).
* ConnectX-3 FDR ib_read_lat 2 B t_typical 1.79 us: perftest output on CX-3 MT4099, 4X FDR,
  MTU 2048 (hardware-sources.md sec. 1a, "GH file id 3151973737").
* write_bw at 1 MiB: the link's goodput after per-packet and RETH headers
  (kdsim.fabric.WireModel.goodput_gbps), i.e. the wire is the limit for large WRITEs.
"""

from __future__ import annotations

import pytest

from kdlab.spec import Point
from kdlab.workloads.perftest import PerftestWorkload
from kdsim.fabric import RETH_BYTES, WireModel
from kdsim.profile import load_profile


def perftest(profile: str, **params: object) -> dict:
    point = Point("anchor", "perftest", "sim", profile, (), tuple(sorted({"iterations": 200, **params}.items())), 1)
    (row,) = PerftestWorkload().run_point(point)
    return row


@pytest.mark.parametrize(
    ("size", "published_us"),
    [(32, 0.83), (1024, 1.58), (4096, 2.26), (32768, 4.57)],  # Potter 2018, ConnectX-4 EDR, ib_send_lat RC
)
def test_cx4_send_lat_matches_potter_2018(size: int, published_us: float) -> None:
    row = perftest("cx4-edr-100g", test="send_lat", size=size)
    assert row["t_typical_us"] == pytest.approx(published_us, rel=0.10)


def test_cx3_read_lat_2b_matches_published_perftest() -> None:
    row = perftest("cx3-fdr-56g", test="read_lat", size=2)  # CX-3 MT4099 4X FDR: 1.79 us
    assert row["t_typical_us"] == pytest.approx(1.79, rel=0.10)


@pytest.mark.parametrize("profile", ["cx4-edr-100g", "cx3-fdr-56g"])
def test_write_bw_1mib_reaches_the_link_goodput(profile: str) -> None:
    wire = WireModel.from_profile(load_profile(profile))
    goodput = wire.goodput_gbps(1 << 20, RETH_BYTES)
    assert goodput < load_profile(profile).link.data_rate_gbps  # headers cost something
    row = perftest(profile, test="write_bw", size=1 << 20)
    assert row["bw_avg_gbps"] == pytest.approx(goodput, rel=0.05)


def test_latency_grows_with_size_and_bandwidth_saturates() -> None:
    """Shape checks around the anchors: monotone latency, and no bandwidth above the wire."""
    lat = [perftest("cx4-edr-100g", test="send_lat", size=s)["t_typical_us"] for s in (2, 256, 4096, 65536)]
    assert lat == sorted(lat) and len(set(lat)) == len(lat)
    wire = WireModel.from_profile(load_profile("cx4-edr-100g"))
    for size in (4096, 65536):
        bw = perftest("cx4-edr-100g", test="write_bw", size=size, iterations=400)["bw_avg_gbps"]
        assert bw <= wire.goodput_gbps(size, RETH_BYTES) * 1.001
