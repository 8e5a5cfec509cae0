"""The analyzer's shortcuts (issue 13, speed) answer exactly what the plain way does.

Each shortcut is compared with the computation it replaces, on random policies
(tests/analysis/policygen.py) and random interval lists:

* `AddressSet.meets` (bisection) against `intersect(...)` being non-empty;
* a rule's peer filter (`RulePlanner.steps(..., peer)`: one test per reference item)
  against the exact union of its references meeting the peer, for every rule and
  every VM, node and outside address as the peer;
* `diff`'s zone-level delta (a zone rule edit evaluated over the zone's steps once)
  against the aligned change of every member's whole chain: the same rows.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.analysis.policygen import PolicyDesc, policies
from tests.analysis.test_diff import Pair, pairs
from zonewall.analysis import diff as diff_module
from zonewall.analysis.diff import _aligned_change, diff_policies
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

    class WholeChains(diff_module._ZoneDelta):
        def region(self, vm: str, zone: str, direction: str):  # type: ignore[no-untyped-def]
            return _aligned_change(self.a_old.chains.vm(vm, direction), self.a_new.chains.vm(vm, direction))

    original = diff_module._ZoneDelta
    diff_module._ZoneDelta = WholeChains  # type: ignore[misc]
    try:
        plain = diff_policies(load_policy_text(pair.old), load_policy_text(pair.new))
    finally:
        diff_module._ZoneDelta = original  # type: ignore[misc]
    assert _rows(fast) == _rows(plain)
    assert fast.endpoints == plain.endpoints
