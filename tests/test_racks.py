"""Racks: a leaf-spine fabric (``switch.hosts_per_leaf``, ``switch.leaf_uplinks``) with ECMP onto the spine links."""

from __future__ import annotations

from typing import Any

import pytest

from kdlab.ops import Clock, PostSend, Publish
from kdlab.program import Role
from kdlab.verbs import Opcode, SendWR
from kdsim.fabric import Fabric, natural_order
from kdsim.profile import ProfileError
from tests.helpers import idle_until, run_sim, setup_rc, sim_profile, wait_n

SIZE = 1 << 20  # 1 MiB WRITEs: ~84 us on the EDR wire
COUNT = 8


def _pair_roles(k: int, src: str, dst: str) -> list[Role]:
    def writer() -> Any:
        side = yield from setup_rc(f"w{k}", f"r{k}", mr_bytes=SIZE)
        t0 = yield Clock()
        for i in range(COUNT):
            wr = SendWR(i, Opcode.RDMA_WRITE, [side.mr.sge(0, SIZE)], remote_addr=side.peer.addr, rkey=side.peer.rkey)
            yield PostSend(side.qp, wr)
        yield from wait_n(side.send_cq, COUNT)
        took = (yield Clock()) - t0
        yield Publish(f"w{k}.done", True)
        return took

    def reader() -> Any:
        yield from setup_rc(f"r{k}", f"w{k}", mr_bytes=SIZE)
        yield from idle_until(f"w{k}.done")

    return [Role(f"w{k}", src, writer), Role(f"r{k}", dst, reader)]


def _streams(pairs: list[tuple[str, str]], per_leaf: int, uplinks: int) -> tuple[float, Any]:
    """Every pair streams COUNT WRITEs at once -> (aggregate Gb/s, engine)."""
    roles = [r for k, (src, dst) in enumerate(pairs) for r in _pair_roles(k, src, dst)]
    over = {"switch.hosts_per_leaf": per_leaf, "switch.leaf_uplinks": uplinks}
    out, eng = run_sim(roles, overrides=over, switch=True)
    slowest = max(out[f"w{k}"] for k in range(len(pairs)))
    return len(pairs) * COUNT * SIZE * 8 / slowest, eng


def test_hosts_fill_leaves_in_natural_name_order() -> None:
    prof = sim_profile(overrides={"switch.hosts_per_leaf": 2, "switch.leaf_uplinks": 1})
    assert natural_order(["c1", "b10", "b2", "p0", "b1"]) == ["b1", "b2", "b10", "c1", "p0"]
    fabric = Fabric(prof, ["b10", "b2", "b1", "c1", "p0"])
    assert {h: leaf for h, (leaf, _) in fabric.leaf_of.items()} == {"b1": 0, "b2": 0, "b10": 1, "c1": 1, "p0": 2}
    assert fabric.spine_links("b1", "b2") == () and len(fabric.spine_links("b1", "c1")) == 2


def test_within_a_leaf_nothing_changes_and_across_the_spine_two_switches_add_their_latency() -> None:
    pairs = [("h1", "h2"), ("h3", "h4")]
    assert _streams(pairs, 4, 1)[0] == _streams(pairs, 0, 0)[0]  # four hosts fill one leaf: no spine at all
    assert _streams(pairs, 2, 1)[0] == _streams(pairs, 0, 0)[0]  # h1, h2 | h3, h4: each pair within its leaf
    across = [("h1", "h3"), ("h2", "h4")]  # both through leaf 0's one uplink: half the rate each
    assert _streams(across, 2, 1)[0] < 0.55 * _streams(across, 0, 0)[0]
    prof = sim_profile()
    fabric = Fabric(prof.with_overrides({"switch.hosts_per_leaf": 1, "switch.leaf_uplinks": 1}), ["h1", "h2", "h3"])
    near = Fabric(prof, ["h1", "h2", "h3"])
    hop = prof.switch.latency_ns + prof.link.propagation_ns
    first = fabric.wire.first_packet_ns(0, 0)
    assert fabric.control("h1", "h2", 0.0, 0) == pytest.approx(near.control("h1", "h2", 0.0, 0) + 2 * (hop + first))


def test_an_oversubscribed_leaf_caps_what_crosses_the_spine_and_a_non_blocking_one_does_not() -> None:
    """Four writers in one rack to four readers in another: one uplink carries ~one link's worth, four ~four."""
    pairs = [(f"a{i}", f"b{i}") for i in range(4)]  # a0..a3 fill leaf 0, b0..b3 leaf 1
    link = sim_profile().link.data_rate_gbps
    oversubscribed, eng = _streams(pairs, 4, 1)
    assert oversubscribed <= link * 1.01 and oversubscribed > 0.8 * link
    assert eng.stats.spine_utilisation["spine_up"] > 0.8
    spread, _ = _streams(pairs, 4, 4)
    flat, _ = _streams(pairs, 0, 0)  # one switch: every pair at the link's rate
    assert spread > 1.9 * link  # flows hashed onto four uplinks (collisions share one)
    assert spread <= flat * 1.01


def test_racks_without_uplinks_are_refused_in_one_line() -> None:
    with pytest.raises(ProfileError, match=r"switch.leaf_uplinks must be >= 1 with switch.hosts_per_leaf = 8"):
        sim_profile(overrides={"switch.hosts_per_leaf": 8})
