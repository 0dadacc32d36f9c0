"""A profile generated from kdreal's measured host costs sets every host cost itself, none inherited from the JVM."""

from __future__ import annotations

import yaml

from kdreal.host_costs import HOW, profile_yaml
from kdsim.profile import _resolve_base, parse_profile


def test_a_generated_kdreal_profile_gives_every_wake_up_and_append_cost_of_its_own() -> None:
    costs = {key: 1000.0 + i for i, key in enumerate(HOW)}
    doc = yaml.safe_load(profile_yaml(costs, "costs.csv", "the testbed", 2))
    assert {"queue_wakeup_ns", "notify_ns", "handoff_ns", "append_ns", "append_record_ns", "request_ns"} <= set(
        doc["host"]
    )
    host = parse_profile(_resolve_base(doc, "generated"), "generated").host
    assert host.queue_wakeup_ns == costs["host.queue_wakeup_ns"]
    assert host.notify_ns == costs["host.notify_ns"]
    assert (host.handoff_ns, host.append_ns, host.append_record_ns, host.request_ns) == (0, 0, 0, 0)


def test_a_cluster_profile_names_its_base_cites_every_host_and_gives_a_hardware_nic_no_host_cores() -> None:
    from kdreal.cluster_costs import _how

    costs = {key: 1000.0 + i for i, key in enumerate(HOW)}
    per_host = {"n1": costs, "n2": {k: v * 2 for k, v in costs.items()}, "n1->n2": {"tcp.latency_ns": 5000.0}}
    how = _how(per_host, {"tcp_pair": ("n1", "n2")})
    text = profile_yaml({**costs, "tcp.latency_ns": 5000.0}, "c.csv", "two nodes", 16, name="mycluster",
                        base="cx4-edr-100g", how=how, nic_on_host=False)  # fmt: skip
    doc = yaml.safe_load(text)
    assert (doc["name"], doc["base"]) == ("mycluster", "cx4-edr-100g")
    assert "nic" not in doc  # a hardware RNIC's work does not run on the hosts' cores
    assert "on each of 2 hosts" in doc["host"]["op_ns"]["source"]
    assert "between hosts n1 (server) and n2 (client)" in doc["tcp"]["latency_ns"]["source"]
    profile = parse_profile(_resolve_base(doc, "mycluster"), "mycluster")
    assert profile.tcp.latency_ns == 5000.0 and profile.host.machine_cores == 16
