"""Counters that never go backwards across policy changes, per node (/metrics), and
that follow a rule whose derived id a line added above it moved.

A real lab (examples/three-tier, controller + agents): web1 -> db1 tcp/5432 is dropped
by db1's default on node2. Ten policy changes each add a rule to db1, which makes the
agent refill db1's chain: the kernel's counter of `default-in` restarts at 0 (checked
below, so the test exercises the reset), yet the exported counter only grows and
ends at least at the number of refused datagrams sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.kernel.conftest import _kernel_check
from tests.kernel.test_logs_pipeline import udp_burst, until
from tests.labtools import managed_lab
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.counters import read_counters
from zonewall.lab.managed import ManagedLab

pytestmark = pytest.mark.kernel
THREE_TIER = Path(__file__).resolve().parents[2] / "examples" / "three-tier" / "policy"
DB1 = "10.0.2.30"
METRIC = re.compile(r'^zonewall_vm_dropped_packets_total\{node="node2",vm="db1"\} ([0-9.e+]+)$', re.M)
RULE = re.compile(r'^zonewall_rule_packets_total\{direction="in",level="default",node="node2",rule="default-in",scope="db1"\} ([0-9.e+]+)$', re.M)


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest) -> Iterator[ManagedLab]:
    _kernel_check(request.config)
    with managed_lab(THREE_TIER, "zonewall-counters-", {"ZONEWALL_COUNTER_INTERVAL": "0.3"}) as found:
        yield found


def exported(lab: ManagedLab) -> tuple[float, float]:
    assert lab.controller is not None
    text = httpx.get(lab.controller.url + "/metrics", headers={"Authorization": f"Bearer {lab.admin_token}"}, timeout=30).text
    vm, rule = METRIC.search(text), RULE.search(text)
    return (float(vm.group(1)) if vm else 0.0, float(rule.group(1)) if rule else 0.0)


def kernel_default_in(lab: ManagedLab) -> int:
    with LibNftBackend(netns=lab.lab.nodes["node2"]) as backend:
        return next(c.packets for c in read_counters(backend) if c.scope == "db1" and c.rule == "default-in")


def test_counters_stay_monotonic_across_ten_policy_changes(lab: ManagedLab) -> None:
    seen: list[tuple[float, float]] = [exported(lab)]
    sent = 0
    resets = 0
    for change in range(10):
        udp_burst(lab, "web1", DB1, [5432] * 5)
        sent += 5
        until(lambda: exported(lab)[1] >= sent, 10.0, f"{sent} drops counted")
        seen.append(exported(lab))
        before = kernel_default_in(lab)
        rule = {"id": f"db-extra-{change}", "direction": "in", "action": "accept", "from": "203.0.113.99", "tcp": 6000 + change}
        added = lab.api("POST", "/vms/db1/rules", json={"rule": rule, "position": 0, "message": f"change {change}"})
        assert added.status_code == 201, added.text
        lab.wait_converged(added.json()["revision"]["number"])
        if kernel_default_in(lab) < before:
            resets += 1
        seen.append(exported(lab))
    assert resets >= 5, resets  # the kernel's own counter did go back to 0: what the export must hide
    for earlier, later in zip(seen, seen[1:]):
        assert later[0] >= earlier[0] and later[1] >= earlier[1], seen
    assert seen[-1][1] >= sent and seen[-1][0] >= sent


def db1_counts(lab: ManagedLab) -> dict[str, int]:
    """db1's own rules' counts on node2, by rule id (the API's sums: one node)."""
    body = lab.api("GET", "/counters", params={"window": 60}).json()
    return {rule["rule"]: rule["packets"] for rule in body["rules"] if rule["scope"] == "db1" and rule["level"] == "vm"}


def test_a_rules_count_follows_it_when_a_line_added_above_moves_its_derived_id(lab: ManagedLab) -> None:
    """db1 drops udp/7000 by a rule without an explicit id (`policy:LINE`); a rule added
    above it moves that id down a line. The agent's reading tells the rename, and the
    rule's count goes on under its new id, while the id it left (the rule added there
    now) counts from nothing, where before the id kept its row whichever rule held it."""
    added = lab.api("POST", "/vms/db1/rules", json={"rule": {"direction": "in", "action": "drop", "udp": 7000}, "position": 0, "message": "drop 7000"})
    assert added.status_code == 201, added.text
    lab.wait_converged(added.json()["revision"]["number"])
    udp_burst(lab, "web1", DB1, [7000] * 6)
    until(lambda: any(n >= 6 for n in db1_counts(lab).values()), 10.0, "udp/7000 counted")
    counted = {rule: n for rule, n in db1_counts(lab).items() if n >= 6}
    assert len(counted) == 1, db1_counts(lab)
    (old_id, count), = counted.items()
    above = lab.api("POST", "/vms/db1/rules", json={"rule": {"direction": "in", "action": "accept", "from": "203.0.113.99", "udp": 7001}, "position": 0,
                                                    "message": "a line above"})
    assert above.status_code == 201, above.text
    lab.wait_converged(above.json()["revision"]["number"])
    file, line = old_id.rsplit(":", 1)
    new_id = f"{file}:{int(line) + 1}"
    until(lambda: new_id in db1_counts(lab) and old_id in db1_counts(lab), 10.0, f"{new_id} reported")
    after = db1_counts(lab)
    assert after[new_id] >= count, after  # the udp/7000 rule's count, under its new id
    assert after[old_id] == 0, after  # the rule added at its old line: nothing counted yet
