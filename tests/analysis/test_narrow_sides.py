"""analysis/differ.py `Differ.narrow_peer`: an endpoint's own side built only with the
steps that can meet the other ends its changed space holds (`NARROW_SIDES`) gives
exactly the diff its whole side gives.

* Property: random rule edits, random group member edits and random changes of any
  kind: the same JSON narrowed and whole.
* A zone rule naming a group, a member added whose flows a VM's own earlier rule
  (naming another peer than the group's first address) decides: the narrowed side
  keeps that rule, so nothing is reported for the member the rule drops, and the
  member the rule does not name is reported opened.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from tests.analysis.test_diff import Pair, pairs
from tests.analysis.test_group_edits import member_edits
from tests.analysis.test_peer_classes import _diff
from tests.analysis.test_reach_grouping import dressed
from tests.analysis.test_shortcuts import rule_edit_pairs

SLOW = [HealthCheck.too_slow, HealthCheck.filter_too_much]


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW)
@given(rule_edit_pairs(dressed()))
def test_narrowed_sides_give_the_whole_sides_diff_after_a_rule_edit(pair: tuple[str, str, str]) -> None:
    old_text, new_text, what = pair
    assert _diff(old_text, new_text, NARROW_SIDES=True) == _diff(old_text, new_text, NARROW_SIDES=False), what


@settings(max_examples=60, deadline=None, suppress_health_check=SLOW)
@given(member_edits())
def test_narrowed_sides_give_the_whole_sides_diff_after_a_group_edit(edit: tuple[str, str, str]) -> None:
    old_text, new_text, what = edit
    assert _diff(old_text, new_text, NARROW_SIDES=True) == _diff(old_text, new_text, NARROW_SIDES=False), what


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW)
@given(pairs())
def test_narrowed_sides_give_the_whole_sides_diff_after_any_change(pair: Pair) -> None:
    assert _diff(pair.old, pair.new, NARROW_SIDES=True) == _diff(pair.old, pair.new, NARROW_SIDES=False), pair.changes


ZONE_NAMES_A_GROUP = """\
version: 1
settings:
  default: {in: drop, out: accept}
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
groups:
  g: [vm:a]
zones:
  z:
    rules:
      - {direction: in, action: accept, from: group:g, tcp: 80}
vms:
  a: {host: n1, nics: [{network: lan, ips: [10.0.0.1]}]}
  b: {host: n1, nics: [{network: lan, ips: [10.0.0.5]}]}
  c: {host: n1, nics: [{network: lan, ips: [10.0.0.9]}]}
  w1:
    host: n1
    zone: z
    nics: [{network: lan, ips: [10.0.0.20]}]
    rules:
      - {direction: in, action: drop, from: vm:c, tcp: 80}
  w2: {host: n1, zone: z, nics: [{network: lan, ips: [10.0.0.30]}]}
"""


def test_a_vm_rule_naming_a_later_peer_of_the_changed_space_still_decides() -> None:
    new = ZONE_NAMES_A_GROUP.replace("g: [vm:a]", "g: [vm:a, vm:b, vm:c]")
    narrowed = _diff(ZONE_NAMES_A_GROUP, new, NARROW_SIDES=True)
    assert narrowed == _diff(ZONE_NAMES_A_GROUP, new, NARROW_SIDES=False)
    rows = {(r["change"], tuple(r["from"]), tuple(r["to"])) for r in json.loads(narrowed)["flows"]}
    assert ("opened", ("vm:b", "vm:c"), ("vm:w2",)) in rows  # w2 has no rule of its own
    assert ("opened", ("vm:b",), ("vm:w1",)) in rows  # w1 drops c by its own rule first
    assert not any("vm:c" in src and "vm:w1" in dst for _change, src, dst in rows)
