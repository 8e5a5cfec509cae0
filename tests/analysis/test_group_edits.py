"""`diff` of a change of group members alone (`group_edits`: the chains and zone
levels of the VMs and zones whose rules name a group whose addresses changed, no
whole-policy comparison) reports exactly what the whole comparison reports.

* Property: on random policies (tests/analysis/policygen.py) with 1-2 random member
  edits (added or removed: addresses, VMs, zones, networks, nodes, nested groups),
  the diff JSON is the whole comparison's, whenever the shortcut applies; and it
  declines (None) when a group is named anywhere but VM and zone rules.
* Hand-written: a member added to a group that a VM rule names opens exactly that
  flow; a group that global rules name takes the whole comparison.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.analysis.diffknobs import declined, diff_knobs
from tests.analysis.policygen import policies
from tests.analysis.test_diff import _peer, dump
from zonewall.analysis.diff import diff_policies
from zonewall.analysis.diffedits import RuleEdits, group_edits
from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy_text


def _json(result: Any) -> str:
    return json.dumps(result.to_json(), sort_keys=True)


@st.composite
def member_edits(draw: st.DrawFn) -> tuple[str, str, str]:
    text, _desc = draw(policies())
    doc = yaml.safe_load(text)
    groups = doc.get("groups") or {}
    assume(groups)
    done = []
    for _ in range(draw(st.integers(1, 2))):
        name = draw(st.sampled_from(sorted(groups)))
        body = groups[name]
        members = body["members"] if isinstance(body, dict) else body
        if len(members) > 1 and draw(st.booleans()):
            done.append(f"{members.pop(draw(st.integers(0, len(members) - 1)))} removed from {name}")
        else:
            member = _peer(draw, doc)
            assume(member not in members and member != f"group:{name}")
            members.append(member)
            done.append(f"{member} added to {name}")
    new = dump(doc)
    assume(new != text)
    try:
        load_policy_text(new)
    except PolicyError:
        assume(False)  # a cycle of nested groups
    return text, new, "; ".join(done)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(member_edits())
def test_a_group_edit_is_diffed_as_the_whole_comparison_diffs_it(edit: tuple[str, str, str]) -> None:
    old_text, new_text, what = edit
    old, new = load_policy_text(old_text), load_policy_text(new_text)
    old_doc = yaml.safe_load(old_text)
    elsewhere = {k: v for k, v in old_doc.items() if k not in ("vms", "zones", "groups")}
    found = group_edits(old, new)
    if found is None:
        # declined only where a group is named outside VM and zone rules (or nothing resolves differently)
        assert "group:" in json.dumps(elsewhere) or diff_policies(old, new).identical, what
        return
    fast = diff_policies(old, new)
    with diff_knobs(group_edits=declined):
        plain = diff_policies(load_policy_text(old_text), load_policy_text(new_text))
    assert _json(fast) == _json(plain), what


BASE = """\
version: 1
settings:
  default: {in: drop, out: accept}
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  front: {bridge: vmbr1, subnets: [10.0.1.0/24]}
groups:
  admins: [192.168.100.0/24]
  ops: [group:admins]
vms:
  web: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:01", ips: [10.0.1.10]}], rules: [{direction: in, action: accept, from: group:ops, tcp: 22}]}
  db: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:02", ips: [10.0.1.20]}], rules: [{direction: in, action: accept, tcp: 5432}]}
"""


def test_a_member_added_opens_the_flow_of_the_rules_that_name_its_group() -> None:
    new = BASE.replace("admins: [192.168.100.0/24]", "admins: [192.168.100.0/24, 203.0.113.7]")
    old_policy, new_policy = load_policy_text(BASE), load_policy_text(new)
    edits = group_edits(old_policy, new_policy)
    assert edits == RuleEdits(("web",), (), frozenset({"group:admins", "group:ops"}))  # through the nested group ops; db names no group
    rows = diff_policies(old_policy, new_policy).to_json()["flows"]
    assert [(r["change"], r["from"], r["to"], r["services"]) for r in rows] == [("opened", ["outside:203.0.113.7"], ["vm:web"], ["tcp 22"])]


def test_a_group_named_elsewhere_takes_the_whole_comparison() -> None:
    named = BASE.replace("vms:\n", "global_rules:\n  - {direction: in, action: accept, from: group:admins, tcp: 80}\nvms:\n")
    new = named.replace("admins: [192.168.100.0/24]", "admins: [192.168.100.0/24, 203.0.113.7]")
    assert group_edits(load_policy_text(named), load_policy_text(new)) is None
    assert group_edits(load_policy_text(BASE), load_policy_text(BASE)) is None  # nothing edited
    moved = BASE.replace("ips: [10.0.1.20]", "ips: [10.0.1.21]").replace("admins: [192.168.100.0/24]", "admins: [192.168.100.0/24, 203.0.113.7]")
    assert group_edits(load_policy_text(BASE), load_policy_text(moved)) is None  # a VM readdressed too


CUT_BY_AN_EARLIER_RULE = """\
version: 1
settings:
  default: {in: reject, out: accept}
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
groups:
  g1: [vm:a, vm:b]
vms:
  a: {host: n1, nics: [{network: lan, ips: [10.0.0.1]}]}
  b: {host: n1, nics: [{network: lan, ips: [10.0.0.2]}]}
  c: {host: n1, nics: [{network: lan, ips: [10.0.0.3]}]}
  web:
    host: n1
    nics: [{network: lan, ips: [10.0.0.9]}]
    rules:
      - {direction: in, action: accept, from: "!vm:a", tcp: 22}
      - {direction: in, action: accept, from: [vm:c, group:g1], tcp: [22, 443]}
"""


def test_a_member_removed_where_an_earlier_rule_cuts_the_rule_naming_its_group() -> None:
    """The rows are made box by box of the changed region as the whole comparison
    cuts it (here by `!vm:a`, which takes tcp 22 of every other member): a region cut
    to the removed member's address alone gave the same flows written otherwise
    (`tcp 22,443` for `tcp 443`, `tcp 22`), which is why the shortcut reads the
    rules' whole regions (found by the property above)."""
    new = CUT_BY_AN_EARLIER_RULE.replace("g1: [vm:a, vm:b]", "g1: [vm:b]")
    old_policy, new_policy = load_policy_text(CUT_BY_AN_EARLIER_RULE), load_policy_text(new)
    assert group_edits(old_policy, new_policy) is not None
    shortcut = _json(diff_policies(old_policy, new_policy))
    with diff_knobs(group_edits=declined):
        whole = _json(diff_policies(load_policy_text(CUT_BY_AN_EARLIER_RULE), load_policy_text(new)))
    assert shortcut == whole
    rows = json.loads(shortcut)["flows"]
    assert [(r["change"], r["from"], r["to"]) for r in rows] == [("closed", ["vm:a"], ["vm:web"])]
