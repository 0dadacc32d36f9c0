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
