"""The analyzer's shortcuts (issue 13, speed) answer exactly what the plain way does.

Each shortcut is compared with the computation it replaces, on random policies
(tests/analysis/policygen.py) and random interval lists:

* `AddressSet.meets` (bisection) against `intersect(...)` being non-empty;
* a rule's peer filter (`RulePlanner.steps(..., peer)`: one test per reference item)
  against the exact union of its references meeting the peer, for every rule and
  every VM, node and outside address as the peer;
* `diff`'s zone-level delta (a zone rule edit evaluated over the zone's steps once)
  against the aligned change of every member's whole chain: the same rows;
* `diff` of an edit of VM and zone rules alone (`rule_edits`: only the edited VMs'
  chains and zones' levels, no whole-policy comparison, rule matches and regions
  shared by both analyzers) against the whole comparison: the same JSON, and
  `rule_edits` names nothing when anything else changed.
"""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.analysis.diffknobs import declined, diff_knobs
from tests.analysis.policygen import FLOW_TCP, RULE_TCP, PolicyDesc, policies
from tests.analysis.test_diff import ACTIONS, BASE, Pair, _new_rule, dump, pairs
from zonewall.analysis import diffedits, diffscope
from zonewall.analysis.diff import diff_policies
from zonewall.analysis.diffscope import aligned_change
from zonewall.analysis.engine import Analyzer
from zonewall.compiler.plan.rules import RulePlanner
from zonewall.policy.addresses import AddressSet, _merge
from zonewall.policy.loader import load_policy_text

intervals = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 6)), max_size=40).map(lambda pairs: _merge((low, low + width) for low, width in pairs))


@given(intervals, intervals, intervals, intervals)
def test_meets_is_a_non_empty_intersection(a4, a6, b4, b6) -> None:  # type: ignore[no-untyped-def]
    a, b = AddressSet(a4, a6), AddressSet(b4, b6)
    assert a.meets(b) == (not a.intersect(b).is_empty())
    assert b.meets(a) == a.meets(b)


def test_meets_on_a_long_list_both_ways() -> None:
    zone = AddressSet.of([(n * 10, n * 10) for n in range(5000)])
    assert zone.meets(AddressSet.of([(49_990, 49_990)]))
    assert not zone.meets(AddressSet.of([(49_991, 49_999)]))
    assert AddressSet.of([(5, 15)]).meets(zone)
    assert not AddressSet.of([(11, 19)]).meets(zone)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_the_peer_filter_keeps_exactly_the_rules_whose_other_end_meets_the_peer(generated: tuple[str, PolicyDesc]) -> None:
    text, _desc = generated
    policy = load_policy_text(text)
    peers = [policy.vm_addresses(name) for name in policy.doc.vms]
    peers += [policy.address_set(host.address) for host in policy.doc.hosts.values()]
    peers += [AddressSet.of([(0xCB007100, 0xCB007100)]), AddressSet.of([], [(1, 1)])]  # outside, both families
    refs = list(policy.rules)
    for peer in peers:
        planner = RulePlanner(policy)
        for direction in ("in", "out"):
            kept = {step.label for step in planner.steps(refs, direction, peer)}
            for ref in refs:
                rule = ref.rule
                if not rule.enabled or rule.direction not in (direction, None):
                    continue
                other = rule.to if direction == "out" else rule.from_
                exact = other is None or not policy.address_set(other).intersect(peer).is_empty()
                assert (ref.id in kept) == exact, (ref.id, other, peer)


def _rows(result) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    return [(r.change, sorted(r.src), sorted(r.dst), r.services, r.when) for r in result.rows]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(pairs())
def test_the_zone_level_delta_reports_what_whole_chains_report(pair: Pair) -> None:
    old, new = load_policy_text(pair.old), load_policy_text(pair.new)
    fast = diff_policies(old, new)

    class WholeChains(diffscope.ZoneDelta):
        def region(self, vm: str, zone: str, direction: str):  # type: ignore[no-untyped-def]
            return aligned_change(self.a_old.chains.vm(vm, direction), self.a_new.chains.vm(vm, direction))

    with diff_knobs(ZoneDelta=WholeChains):
        plain = diff_policies(load_policy_text(pair.old), load_policy_text(pair.new))
    assert _rows(fast) == _rows(plain)
    assert fast.endpoints == plain.endpoints


@st.composite
def rule_edit_pairs(draw: st.DrawFn, texts: st.SearchStrategy[str] | None = None) -> tuple[str, str, str]:
    """A random policy (policygen's, or one of `texts`) and the same with the rules of
    one or two VMs or zones edited (a rule added, removed, swapped with the next, its
    action or ports changed): a commit's change."""
    text = draw(texts) if texts is not None else draw(policies())[0]
    doc = yaml.safe_load(text)
    done = []
    for serial in range(draw(st.integers(1, 2))):
        owners = [("vm", name, body) for name, body in sorted(doc["vms"].items())]
        owners += [("zone", name, body) for name, body in sorted((doc.get("zones") or {}).items())]
        kind_of_owner, name, body = draw(st.sampled_from(owners))
        rules = body.setdefault("rules", [])
        kind = draw(st.sampled_from(["add", "remove", "swap", "action", "port"] if rules else ["add"]))
        if kind == "add":
            rule = _new_rule(draw, doc, f"{kind_of_owner}:{name}", serial)
            rules.insert(draw(st.integers(0, len(rules))), rule)
        elif kind == "remove":
            rule = rules.pop(draw(st.integers(0, len(rules) - 1)))
        elif kind == "swap" and len(rules) > 1:
            i = draw(st.integers(0, len(rules) - 2))
            rules[i], rules[i + 1] = rules[i + 1], rules[i]
            rule = rules[i]
        else:
            plain = [r for r in rules if "security_group" not in r]  # a security group reference has no action or ports of its own
            assume(plain)
            rule = draw(st.sampled_from(plain))
            if kind == "action":
                rule["action"] = draw(st.sampled_from([a for a in ACTIONS if a != rule["action"]]))
            else:
                for key in ("tcp", "udp", "service"):
                    rule.pop(key, None)
                rule["tcp"] = draw(st.sampled_from(RULE_TCP + tuple(FLOW_TCP)))
        done.append(f"{kind} {rule} on {kind_of_owner}:{name}")
    assume(doc != yaml.safe_load(text))  # two swaps of the same pair undo each other
    return text, dump(doc), "; ".join(done)


def _json(result) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(result.to_json(), sort_keys=True)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(rule_edit_pairs())
def test_a_rule_edit_is_diffed_as_the_whole_comparison_diffs_it(pair: tuple[str, str, str]) -> None:
    old_text, new_text, what = pair
    old, new = load_policy_text(old_text), load_policy_text(new_text)
    edits = diffedits.rule_edits(old, new)
    assert edits is not None and 1 <= len(edits.vms) + len(edits.zones) <= 2, what
    fast = diff_policies(old, new)
    with diff_knobs(rule_edits=declined):
        plain = diff_policies(load_policy_text(old_text), load_policy_text(new_text))
    assert _json(fast) == _json(plain), what


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(pairs())
def test_rule_edits_names_only_changes_of_vm_and_zone_rules(pair: Pair) -> None:
    """Any other change (groups, defaults, networks, nat, a VM's zone) takes the
    whole comparison; a change of VM or zone rules alone names exactly those."""
    old, new = load_policy_text(pair.old), load_policy_text(pair.new)
    old_doc, new_doc = yaml.safe_load(pair.old), yaml.safe_load(pair.new)
    edits = diffedits.rule_edits(old, new)
    strip = lambda doc, key: {n: {k: v for k, v in body.items() if k != "rules"} for n, body in (doc.get(key) or {}).items()}
    rest = lambda doc: {k: v for k, v in doc.items() if k not in ("vms", "zones")}
    edited = lambda key: tuple(n for n in (old_doc.get(key) or {}) if old_doc[key][n].get("rules") != new_doc[key][n].get("rules"))
    if rest(old_doc) != rest(new_doc) or any(strip(old_doc, key) != strip(new_doc, key) for key in ("vms", "zones")):
        assert edits is None, pair.changes
    else:
        assert edits == diffedits.RuleEdits(edited("vms"), edited("zones")), pair.changes


def test_rule_edits_on_identical_and_on_a_moved_vm() -> None:
    base = load_policy_text(BASE)
    assert diffedits.rule_edits(base, load_policy_text(BASE)) == diffedits.RuleEdits((), ())
    moved = BASE.replace("zone: web", "zone: app", 1)
    assert moved != BASE
    assert diffedits.rule_edits(base, load_policy_text(moved)) is None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies())
def test_whether_a_guard_drops_replies_is_known_without_building_it(generated: tuple[str, PolicyDesc]) -> None:
    """`GuardBuilder.drops_replies` (no NIC stage built) against the built stage's
    `drops_replies`, for every NIC and direction, asked before and after the build."""
    text, _desc = generated
    policy = load_policy_text(text)
    for asked_first in (True, False):
        analyzer = Analyzer(policy)
        for name, vm in policy.doc.vms.items():
            for index in range(len(vm.nics)):
                for direction in ("in", "out"):
                    early = analyzer.guards.drops_replies(name, index, direction) if asked_first else None
                    stage = analyzer.guards.stage(name, index, direction)
                    built = stage is not None and stage.drops_replies
                    assert analyzer.guards.drops_replies(name, index, direction) == built, (name, index, direction)
                    assert early in (None, built), (name, index, direction)


def test_a_guard_that_drops_replies_is_told_from_one_that_does_not() -> None:
    base = load_policy_text(BASE)
    analyzer = Analyzer(base)
    assert not analyzer.guards.drops_replies("web1", 0, "out")
    dropping = BASE.replace("vms:\n", "filters:\n  nodrops:\n    rules:\n      - {direction: inout, action: drop, udp: '32768-60999'}\nvms:\n", 1)
    dropping = dropping.replace("  web1:\n", "  web1:\n    filters: [nodrops]\n", 1)
    analyzer = Analyzer(load_policy_text(dropping))
    assert analyzer.guards.drops_replies("web1", 0, "out") and analyzer.guards.drops_replies("web1", 0, "in")


CONSTRUCTS = """\
version: 1
hosts:
  node1: {address: [192.168.7.11], uplink: eth0}
networks:
  lan: {bridge: vmbr1, subnets: [10.7.0.0/24]}
  lan2: {bridge: vmbr2, subnets: [10.7.1.0/24]}
security_groups:
  web: {rules: [{id: web-80, direction: in, action: accept, tcp: 80}]}
zones:
  z: {rules: [ZONE_RULE]}
vms:
  a:
    host: node1
    zone: z
    nics: [{network: lan, ips: [10.7.0.10], name: net0}, {network: lan2, ips: [10.7.1.10], name: net1}]
    rules: [RULE_A]
  b:
    host: node1
    zone: z
    nics: [{network: lan, ips: [10.7.0.20]}]
    rules: [{security_group: web}]
"""


@pytest.mark.parametrize(
    ("zone_rule", "rule_a"),
    [
        ("{direction: in, action: accept, tcp: 8081}", "{security_group: web, nic: [net0], comment: again}"),  # the zone and a VM of it at once
        ("{direction: in, action: drop, tcp: 80}", "{direction: in, action: accept, tcp: 80, nic: [net1]}"),  # a group reference -> a scoped rule
    ],
)
def test_rule_edits_with_security_groups_nic_scopes_and_a_zone_and_its_vm_at_once(zone_rule: str, rule_a: str) -> None:
    old_text = CONSTRUCTS.replace("ZONE_RULE", "{direction: in, action: accept, tcp: 8080}").replace("RULE_A", "{security_group: web, nic: [net0]}")
    new_text = CONSTRUCTS.replace("ZONE_RULE", zone_rule).replace("RULE_A", rule_a)
    old, new = load_policy_text(old_text), load_policy_text(new_text)
    edits = diffedits.rule_edits(old, new)
    assert edits is not None and edits.vms == ("a",)
    fast = diff_policies(old, new)
    with diff_knobs(rule_edits=declined):
        plain = diff_policies(load_policy_text(old_text), load_policy_text(new_text))
    assert not fast.identical
    assert _json(fast) == _json(plain)


@settings(max_examples=40, deadline=None)
@given(pairs())
def test_peers_built_once_for_many_endpoints_give_the_same_diff(pair: Pair) -> None:
    """diffswitches.SHARED_PEERS_FROM: with many endpoints to compare, each peer's side is
    built whole once instead of filtered per endpoint; the rows must not change."""
    old, new = load_policy_text(pair.old), load_policy_text(pair.new)
    with diff_knobs(SHARED_PEERS_FROM=10**9):
        filtered = diff_policies(old, new).to_json()
    with diff_knobs(SHARED_PEERS_FROM=0):
        shared = diff_policies(old, new).to_json()
    assert shared == filtered


@settings(max_examples=60, deadline=None)
@given(pairs())
def test_peers_sides_from_shared_pieces_give_the_same_diff(pair: Pair) -> None:
    """diffswitches.GROUPED_PEERS: with few endpoints (a rule of one VM open to many peers)
    each peer's side comes from pieces the peers share (analysis/peers.py, as
    `reach`); the rows must be those of each side built and reduced on its own."""
    old, new = load_policy_text(pair.old), load_policy_text(pair.new)
    with diff_knobs(SHARED_PEERS_FROM=10**9, GROUPED_PEERS=False):
        alone = diff_policies(old, new).to_json()
    with diff_knobs(SHARED_PEERS_FROM=10**9, GROUPED_PEERS=True):
        grouped = diff_policies(old, new).to_json()
    assert grouped == alone


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(rule_edit_pairs())
def test_peers_whose_side_is_unchanged_are_reduced_once_with_the_same_diff(pair: tuple[str, str, str]) -> None:
    """diffswitches.REUSE_SAME_SIDES: after a rule edit, a peer whose global, own and zone
    rules kept their content, ids and places is reduced and run once for both
    policies; the rows must be those of reducing it in each (an added line moves
    the default ids of later VMs' rules: those are reduced twice)."""
    old_text, new_text, what = pair
    with diff_knobs(SHARED_PEERS_FROM=10**9, REUSE_SAME_SIDES=False):
        twice = diff_policies(load_policy_text(old_text), load_policy_text(new_text)).to_json()
    with diff_knobs(SHARED_PEERS_FROM=10**9, REUSE_SAME_SIDES=True):
        once = diff_policies(load_policy_text(old_text), load_policy_text(new_text)).to_json()
    assert once == twice, what


def test_a_peer_side_is_the_same_only_when_its_rules_kept_content_ids_and_places() -> None:
    text = """\
version: 1
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
zones:
  web: {rules: [{direction: in, action: accept, tcp: 80}]}
vms:
  a:
    host: n1
    zone: web
    nics: [{network: lan, ips: [10.0.0.10]}]
    rules:
      - {direction: out, action: accept, tcp: 22}
  b:
    host: n1
    nics: [{network: lan, ips: [10.0.0.11]}]
    rules:
      - {direction: out, action: accept, tcp: 443}
  c:
    host: n1
    zone: web
    nics: [{network: lan, ips: [10.0.0.12]}]
    rules:
      - {direction: out, action: drop, tcp: 25}
"""
    old = load_policy_text(text)
    in_place = load_policy_text(text.replace("tcp: 22}", "tcp: 23}"))
    edits = diffedits.rule_edits(old, in_place)
    assert edits is not None
    same = diffedits.same_sides(Analyzer(old), Analyzer(in_place), edits)
    assert not same(("vm", "a", 0))  # edited
    assert same(("vm", "b", 0)) and same(("vm", "c", 0))  # untouched, ids in place
    assert not same(("host", "n1", None))  # nodes are always reduced in both
    added = load_policy_text(text.replace("      - {direction: out, action: accept, tcp: 22}\n", "      - {direction: out, action: accept, tcp: 22}\n      - {direction: out, action: accept, tcp: 8080}\n"))
    edits = diffedits.rule_edits(old, added)
    assert edits is not None
    same = diffedits.same_sides(Analyzer(old), Analyzer(added), edits)
    assert not same(("vm", "b", 0)) and not same(("vm", "c", 0))  # a line added above: their default ids moved
    zone = load_policy_text(text.replace("tcp: 80}", "tcp: 81}"))
    edits = diffedits.rule_edits(old, zone)
    assert edits is not None
    same = diffedits.same_sides(Analyzer(old), Analyzer(zone), edits)
    assert not same(("vm", "c", 0)) and same(("vm", "b", 0))  # c's zone edited, b has none
    with diff_knobs(REUSE_SAME_SIDES=False):
        assert not diffedits.same_sides(Analyzer(old), Analyzer(in_place), diffedits.rule_edits(old, in_place))(("vm", "b", 0))  # type: ignore[arg-type]


