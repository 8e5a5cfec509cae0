"""A chain of group member commits is diffed as the plain computation diffs each one.

What a group member commit's diff now takes as given (analysis/alignment.py,
analysis/kept.py, policy/naming.py, `diffswitches.SHARE_UNNAMED` / `ONLY_DIFFERING`):

* the changed region of a chain from the positions where the old and new steps
  differ, without difflib, when no differing key occurs in the other chain: the
  same region, box for box, as difflib's alignment (property, with keys drawn from a
  few values so that repeats and shifts occur; and the declined case by hand);
* a rule naming no edited group read through the old side's matches and steps, the
  old side kept from the previous commit's new side, the VMs naming the group and
  the rules the group edit's validation checks found through an index: on a chain
  of commits (each policy made from the previous one as the controller makes it,
  `load_edited`), every diff's JSON is the one the plain computation gives on the
  same two policies loaded whole;
* an endpoint's old and new side evaluated as twins (analysis/twins.py: the work of
  their chains' common first steps done once) give each side's own pieces;
* a rule edit's new side takes the old side's steps of the rules the edit left (the
  same RuleRefs, `diffswitches.LEND_STEPS`), makes its own of the edited ones, and
  gives the diff each side building its own gives;
* a kept analyzer is taken only for the same `now` and timezone and while the
  schedules' time windows read the same; it holds nothing of the older revision;
  rule edits keep theirs too, and a chain of commits of every kind is diffed as the
  plain computation diffs each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bench.synth import policy_text
from tests.analysis.diffknobs import diff_knobs
from tests.analysis.policygen import policies
from tests.analysis.test_diff import _peer, dump
from zonewall.analysis import alignment, kept, peers, twins
from zonewall.analysis import space as s
from zonewall.analysis.chains import Chain, SharedPrefix, Step, first_match
from zonewall.analysis.diff import diff_policies
from zonewall.analysis.engine import Analyzer
from zonewall.compiler.plan import rules as plan_rules
from zonewall.policy import incremental
from zonewall.policy.addresses import AddressSet
from zonewall.policy.documents import load_documents, load_edited
from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy_text
from zonewall.policy.resolve import Policy

# -- the changed region without difflib ------------------------------------------------

REGIONS = [
    (s.box(proto=((6, 6),), dport=((port, port),)),) for port in (22, 80, 443)
] + [(s.box(proto=((17, 17),), dport=((53, 53),)), s.box(proto=((6, 6),), dport=((53, 53),)))]


def _step(index: int, action: str) -> Step:
    return Step(REGIONS[index], action, f"r{index}")


steps = st.builds(_step, st.integers(0, len(REGIONS) - 1), st.sampled_from(["accept", "drop"]))


@st.composite
def chain_pairs(draw: st.DrawFn) -> tuple[tuple[Step, ...], tuple[Step, ...]]:
    old = draw(st.lists(steps, max_size=10))
    new = list(old)
    for _ in range(draw(st.integers(0, 3))):
        if new and draw(st.integers(0, 4)) > 0:  # mostly a step replaced in place (a group edit's shape)
            new[draw(st.integers(0, len(new) - 1))] = draw(steps)
        elif draw(st.booleans()) or not new:
            new.insert(draw(st.integers(0, len(new))), draw(steps))
        else:
            del new[draw(st.integers(0, len(new) - 1))]
    return tuple(old), tuple(new)


@settings(max_examples=400, deadline=None)
@given(chain_pairs())
def test_the_changed_region_is_difflibs_box_for_box(pair: tuple[tuple[Step, ...], tuple[Step, ...]]) -> None:
    old, new = pair
    assert alignment.changed_region(old, new) == alignment._by_difflib(old, new)


def test_a_chain_edited_in_place_takes_the_shortcut_and_a_shifted_one_does_not() -> None:
    a, b, c, d = (_step(i, "accept") for i in range(4))
    # b replaced by d: nothing else holds d or b, so the region is b's and d's, in that order
    assert alignment._pairwise((a, b, c), (a, d, c)) == s.union(b.region, d.region)
    assert alignment.changed_region((a, b, c), (a, d, c)) == alignment._by_difflib((a, b, c), (a, d, c))
    # [a, b, c] -> [b, c, c]: position by position a|b and b|c differ, but difflib lines
    # b, c up shifted and reports only a and the added c: the shortcut must decline
    assert alignment._pairwise((a, b, c), (b, c, c)) is None
    assert alignment.changed_region((a, b, c), (b, c, c)) == s.union(a.region, c.region)
    assert alignment._pairwise((a, b), (a, b, c)) is None  # lengths differ: difflib
    assert alignment._pairwise((a, b), (a, b)) == ()


# -- chains of group commits -------------------------------------------------------------


@contextmanager
def plain() -> Iterator[None]:
    """The computation before this round's shortcuts: difflib always, each side's own
    matches and steps, nothing kept, every rule scanned, every pair of sides
    intersected, each side evaluated on its own."""
    with ExitStack() as stack:
        stack.enter_context(diff_knobs(SHARE_UNNAMED=False, ONLY_DIFFERING=False, NAMING_INDEX=False, SHARE_SHAPES=False, LEND_STEPS=False, LEND_CANDIDATES=False))
        for module, name in ((alignment, "PAIRWISE"), (kept, "KEEP"), (incremental, "NAMING_INDEX"), (twins, "TWINS")):
            saved = getattr(module, name)
            setattr(module, name, False)
            stack.callback(setattr, module, name, saved)
        yield


def _json(result: Any) -> str:
    return json.dumps(result.to_json(), sort_keys=True)


def _diff_chain(texts: list[str]) -> list[str]:
    """Each text committed after the one before, as the controller does (each policy
    made from the previous one where the edit allows, each diff against it)."""
    docs = {"policy.yaml": texts[0]}
    policy = load_documents(docs)
    out = []
    for text in texts[1:]:
        new_docs = {"policy.yaml": text}
        new = load_edited(new_docs, (docs, policy))
        out.append(_json(diff_policies(policy, new)))
        docs, policy = new_docs, new
    return out


def _plain_chain(texts: list[str]) -> list[str]:
    with plain():
        return [_json(diff_policies(load_policy_text(a), load_policy_text(b))) for a, b in zip(texts, texts[1:])]


def _flow_groups(doc: dict[str, Any]) -> str:
    """The document with every group on one line (`  NAME: [...]`): the shape a
    group edit is validated incrementally in."""
    text = dump(doc)
    groups = doc.get("groups") or {}
    if not groups:
        return text
    lines = text.split("\n")
    start = lines.index("groups:")
    end = next((n for n in range(start + 1, len(lines)) if lines[n] and not lines[n].startswith(" ")), len(lines))
    flow = [f"  {name}: {json.dumps(body['members'] if isinstance(body, dict) else body)}" for name, body in groups.items()]
    return "\n".join(lines[:start + 1] + flow + lines[end:])


@st.composite
def group_commit_chains(draw: st.DrawFn) -> tuple[list[str], str]:
    text, _desc = draw(policies())
    doc = yaml.safe_load(text)
    groups = doc.get("groups") or {}
    assume(groups)
    doc["groups"] = {name: (body["members"] if isinstance(body, dict) else body) for name, body in groups.items()}
    texts, done = [_flow_groups(doc)], []
    for _ in range(draw(st.integers(2, 3))):
        name = draw(st.sampled_from(sorted(doc["groups"])))
        members = doc["groups"][name]
        if len(members) > 1 and draw(st.booleans()):
            done.append(f"{members.pop(draw(st.integers(0, len(members) - 1)))} removed from {name}")
        else:
            member = _peer(draw, doc)
            assume(member not in members and member != f"group:{name}")
            members.append(member)
            done.append(f"{member} added to {name}")
        texts.append(_flow_groups(doc))
    try:
        for text in texts:
            load_policy_text(text)
    except PolicyError:
        assume(False)  # a cycle of nested groups
    return texts, "; ".join(done)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(group_commit_chains())
def test_a_chain_of_group_commits_is_diffed_as_the_plain_computation_diffs_each(chain: tuple[list[str], str]) -> None:
    texts, what = chain
    assert _diff_chain(texts) == _plain_chain(texts), what


def _bench_chain(vms: int, commits: int) -> list[str]:
    """bench/commit.py's group edit: one member of g0 replaced, commit after commit."""
    lines = policy_text(vms, nodes=4).split("\n")
    at = next(n for n in range(lines.index("groups:"), len(lines)) if re.match(r"^  g0: \[", lines[n]))
    texts = ["\n".join(lines)]
    for k in range(commits):
        lines[at] = re.sub(r"\[", f"[203.0.113.{k + 1}, ", lines[at], count=1) if k == 0 else re.sub(r"203\.0\.113\.\d+", f"203.0.113.{k + 1}", lines[at], count=1)
        texts.append("\n".join(lines))
    return texts


def test_the_bench_group_commits_give_the_plain_diffs_through_the_kept_old_side() -> None:
    texts = _bench_chain(160, 3)
    made: list[Analyzer] = []
    original = Analyzer.__post_init__

    def counted(self: Analyzer) -> None:
        made.append(self)
        original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Analyzer, "__post_init__", counted)
        fast = _diff_chain(texts)
    assert len(made) == 2 + 1 + 1  # both sides once, then each later commit only its new side
    plain_diffs = _plain_chain(texts)
    assert fast == plain_diffs
    assert all(json.loads(d)["flows"] for d in fast)  # (each commit opens or closes a flow)


def test_a_rule_naming_no_edited_group_is_one_step_for_both_sides() -> None:
    texts = _bench_chain(80, 2)
    docs = {"policy.yaml": texts[0]}
    old = load_documents(docs)
    new = load_edited({"policy.yaml": texts[1]}, (docs, old))
    made: list[int] = []
    original = plan_rules.RulePlanner._step

    def counted(self: plan_rules.RulePlanner, ref: Any) -> Any:
        made.append(self.policy is new)
        return original(self, ref)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plan_rules.RulePlanner, "_step", counted)
        fast = _json(diff_policies(old, new))
    old_steps, new_steps = made.count(False), made.count(True)
    assert 0 < new_steps < old_steps / 5  # the new side makes the steps of the rules naming g0 (or a group holding it) alone
    with plain():
        assert fast == _json(diff_policies(load_policy_text(texts[0]), load_policy_text(texts[1])))


# -- what is kept, and when it is taken ------------------------------------------------------

SCHEDULED = """\
version: 1
settings:
  default: {in: drop, out: accept}
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  front: {bridge: vmbr1, subnets: [10.0.1.0/24]}
schedules:
  office: {days: [mon, tue, wed, thu, fri], time: "08:00-18:00", timezone: Europe/Berlin}
groups:
  admins: [192.168.100.0/24]
vms:
  web: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:01", ips: [10.0.1.10]}], rules: [{direction: in, action: accept, from: group:admins, tcp: 22, schedule: office}]}
"""


def _committed(text: str, edited: str, now: Any = None) -> tuple[Policy, Policy]:
    docs = {"policy.yaml": text}
    old = load_documents(docs)
    new = load_edited({"policy.yaml": edited}, (docs, old))
    diff_policies(old, new, now=now, timezone="UTC")
    return old, new


def test_a_kept_analyzer_is_taken_for_the_same_arguments_and_time_windows_only() -> None:
    from datetime import UTC, datetime

    winter, summer = datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 7, 15, 12, tzinfo=UTC)
    edited = SCHEDULED.replace("admins: [192.168.100.0/24]", "admins: [192.168.100.0/24, 203.0.113.7]")
    old, new = _committed(SCHEDULED, edited, now=winter)
    found = kept.kept_analyzer(new, winter, "UTC")
    assert found is not None and found.policy is new
    assert kept.kept_analyzer(new, summer, "UTC") is None  # another moment
    assert kept.kept_analyzer(new, winter, "Europe/Paris") is None  # another timezone
    assert kept.kept_analyzer(old, winter, "UTC") is None  # the old side was not kept
    # without `now`, the windows are read at the current offset: a kept analyzer
    # whose windows no longer read the same (daylight saving since) is made anew
    _old, current = _committed(SCHEDULED, edited)
    assert kept.kept_analyzer(current, None, "UTC") is not None
    windows = current.__dict__[kept.KEPT][2].plan.rules._times
    assert windows  # the scheduled rule was read
    windows["office"] = ((0, 1),)
    assert kept.kept_analyzer(current, None, "UTC") is None


def _zone_commit(vms: int) -> list[str]:
    """bench/commit.py's zone edit, once."""
    from bench.commit import edits

    lines = policy_text(vms, nodes=4).split("\n")
    texts = ["\n".join(lines)]
    edits()["zone"](lines, 0)
    return texts + ["\n".join(lines)]


@pytest.mark.parametrize("commit", [_bench_chain, _zone_commit], ids=["group", "zone rule"])
def test_a_kept_analyzer_holds_nothing_of_the_older_revision(commit: Any) -> None:
    import gc
    import weakref

    texts = commit(40, 1) if commit is _bench_chain else commit(40)
    docs = {"policy.yaml": texts[0]}
    old = load_documents(docs)
    new = load_edited({"policy.yaml": texts[1]}, (docs, old))
    diff_policies(old, new)
    analyzer = new.__dict__[kept.KEPT][2]
    assert analyzer.plan.rules._lender is None and analyzer.plan.rules._step_lender is None and analyzer.chains._lender is None
    assert peers._LENT not in analyzer.__dict__  # nor the old side's candidates (peers.lend_candidates)
    assert analyzer.directory.policy is new
    gone = weakref.ref(old)
    del old, docs
    gc.collect()
    assert gone() is None  # the kept analyzer does not keep the older revision alive


def _zone_commit_analyzers(lend: bool, candidates: bool = False) -> tuple[Analyzer, Analyzer, Policy, Policy, str]:
    """bench/commit.py's zone edit committed as the controller commits it: both
    sides' analyzers, both policies, the diff's JSON."""
    texts = _zone_commit(40)
    made: list[Analyzer] = []
    original = Analyzer.__post_init__

    def counted(self: Analyzer) -> None:
        made.append(self)
        original(self)

    docs = {"policy.yaml": texts[0]}
    old = load_documents(docs)
    new = load_edited({"policy.yaml": texts[1]}, (docs, old))
    # (candidates lent, the peers' rules are stepped on the old side alone: what the
    # test below looks at are the steps the new side makes)
    with pytest.MonkeyPatch.context() as patch, diff_knobs(LEND_STEPS=lend, LEND_CANDIDATES=candidates):
        patch.setattr(Analyzer, "__post_init__", counted)
        result = _json(diff_policies(old, new))
    a_old, a_new = made
    return a_old, a_new, old, new, result


def test_a_rule_edit_takes_the_old_sides_steps_of_the_rules_it_left() -> None:
    """`diffswitches.LEND_STEPS`: a policy edited in place keeps the RuleRefs of the
    owners it did not edit, and the new side takes their steps, plan and rendered,
    from the old side (a zone edit's VMs' chains are built from them, and each VM's
    old and new chains share their first steps: twins.py); the edited rules' own are
    its own. The diff is the one of each side building its own."""
    a_old, a_new, old, new, lent = _zone_commit_analyzers(lend=True)
    zone = next(name for name in new.doc.zones if old.rules_of("zone", name) != new.rules_of("zone", name))
    vm = next(name for name, spec in new.doc.vms.items() if spec.zone == zone)
    own = [ref for ref in new.rules_of("vm", vm) if ref.rule.direction in (None, "in")]
    before = {id(ref) for ref in old.rules_of("vm", vm)}
    assert own and all(id(ref) in before for ref in own)  # (the premise: the same RuleRefs)
    planned_old, planned_new = a_old.plan.rules._by_ref, a_new.plan.rules._by_ref
    assert planned_old is not None and planned_new is not None
    stepped = [ref for ref in own if id(ref) in planned_new]  # (those the changed region's peers can meet: Differ.narrow_peer)
    assert stepped
    for ref in stepped:
        assert planned_new[id(ref)][1] is planned_old[id(ref)][1], ref.id  # the VM's own rules: one step for both sides
        rendered_old, rendered_new = a_old.chains._steps.get(id(planned_old[id(ref)][1])), a_new.chains._steps.get(id(planned_new[id(ref)][1]))
        assert rendered_old is not None and rendered_new is rendered_old, ref.id
    kept_refs = {id(ref) for ref in old.rules_of("zone", zone)}
    edited = [ref for ref in new.rules_of("zone", zone) if id(ref) not in kept_refs]
    assert len(edited) == 1 and id(edited[0]) in planned_new  # the edited rule: a new RuleRef, its step made on the new side
    was = old.rules_of("zone", zone)[edited[0].index]
    assert planned_new[id(edited[0])][1] != planned_old[id(was)][1]

    a_old, a_new, _old, _new, built = _zone_commit_analyzers(lend=False)
    assert a_new.plan.rules._by_ref is None  # each side its own steps (the negative case)
    assert built == lent and json.loads(lent)["flows"]
    assert _zone_commit_analyzers(lend=True, candidates=True)[4] == lent  # the candidates lent too (as in production)



LENDING = """\
version: 1
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
zones:
  web:
    rules:
      - {direction: in, action: accept, tcp: ZONE_PORT}
vms:
  w1: {host: n1, zone: web, nics: [{network: lan, ips: [10.0.0.10]}]}
  w2: {host: n1, zone: web, nics: [{network: lan, ips: [10.0.0.11]}]}
  b:
    host: n1
    nics: [{network: lan, ips: [10.0.0.20]}]
    rules:
      - {direction: out, action: accept, udp: 53}
  p:
    host: n1
    nics: [{network: lan, ips: [10.0.0.21]}]
    rules:
      - P_RULE
"""


def _lending(zone_port: int, p_rule: str) -> str:
    return LENDING.replace("ZONE_PORT", str(zone_port)).replace("P_RULE", p_rule)


def test_a_chain_of_zone_commits_takes_the_peers_candidates_from_the_old_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """`diffswitches.LEND_CANDIDATES`: each peer's own rules that can meet the zone's
    VMs, made in commit 1 (on its old side: b's and p's sides are the same in both
    policies), are kept with its new side (`peers.keep_candidates`), which is commit
    2's old side: commit 2 makes none of them again, on either side. p's own `reject
    tcp 30002`, so taken, still keeps it apart: tcp/30002 opens to b, not to p, and
    the diff is the plain one."""
    reject = "{direction: out, action: reject, tcp: 30002}"
    texts = [_lending(port, reject) for port in (30000, 30001, 30002)]
    docs = {"policy.yaml": texts[0]}
    first = load_documents(docs)
    second = load_edited({"policy.yaml": texts[1]}, (docs, first))
    diff_policies(first, second)
    third = load_edited({"policy.yaml": texts[2]}, ({"policy.yaml": texts[1]}, second))
    asked: list[tuple[bool, str]] = []
    for name in ("_indexed_candidates", "_candidates"):  # (made from the index, or from a scan of the VM's rules)
        real = getattr(peers.PeerSides, name)
        monkeypatch.setattr(peers.PeerSides, name, lambda self, vm, real=real: asked.append((self.policy is third, vm)) or real(self, vm))
    result = _json(diff_policies(second, third))
    assert not {"b", "p"} & {vm for _new_side, vm in asked}  # made in commit 1, kept with its new side, on neither side again
    opened = {peer for row in json.loads(result)["flows"] if row["change"] == "opened" for peer in row["from"]}
    assert "vm:b" in opened and "vm:p" not in opened
    assert [result] == _plain_chain(texts[1:])



def test_a_peer_edited_between_two_commits_to_a_zone_is_not_taken_for_its_old_rules() -> None:
    """Zone, then p's own rule, then the zone again, each commit made from the one
    before as the controller makes them: the candidates kept along the chain (for the
    zone's VMs, from the first commit) leave p's out once its rules were replaced, so
    the third commit sees p's new `reject tcp 30002`: tcp/30002 opens to b, not to p.
    Every diff is the plain one."""
    dns, reject = "{direction: out, action: accept, udp: 53}", "{direction: out, action: reject, tcp: 30002}"
    texts = [_lending(30000, dns), _lending(30001, dns), _lending(30001, reject), _lending(30002, reject)]
    fast = _diff_chain(texts)
    opened = {peer for row in json.loads(fast[2])["flows"] if row["change"] == "opened" for peer in row["from"]}
    assert "vm:b" in opened and "vm:p" not in opened
    assert fast == _plain_chain(texts)

def test_a_vm_whose_rules_were_replaced_finds_its_own_candidates() -> None:
    """`peers.lend_candidates`: the new side takes a VM's candidates from the old
    side's memo only for the VMs whose rules were not replaced; p's, replaced (its
    `accept udp 53` now a `reject tcp 30002`), it makes from its own rules, and
    `keep_candidates` keeps b's of the old side, not p's, for every endpoint."""
    dns, reject = "{direction: out, action: accept, udp: 53}", "{direction: out, action: reject, tcp: 30002}"
    a_old, a_new = Analyzer(load_policy_text(_lending(30000, dns))), Analyzer(load_policy_text(_lending(30000, reject)))
    a_new.share_meanings(a_old)
    endpoint, addresses = ("vm", "w1", 0), AddressSet.of([(167772170, 167772170)], [])  # w1's 10.0.0.10, as receiver

    def sides(analyzer: Analyzer) -> peers.PeerSides:
        return peers.PeerSides(analyzer, endpoint, "receiver", addresses, [], s.SRC)

    w2, own = AddressSet.of([(167772171, 167772171)], []), AddressSet.of([(167772180, 167772180)], [])  # w2's, and b's (an endpoint of the old side's alone)

    def of(analyzer: Analyzer, endpoint: tuple[str, str, int], at: AddressSet) -> peers.PeerSides:
        return peers.PeerSides(analyzer, endpoint, "receiver", at, [], s.SRC)

    before = sides(a_old)
    old_b, old_p = before.candidates("b"), before.candidates("p")
    assert old_p is not None and [entry[0].rule.action for entry in old_p] == ["accept"]
    assert of(a_old, ("vm", "w2", 0), w2).candidates("p") is not None and of(a_old, ("vm", "b", 0), own).candidates("p") is not None
    peers.lend_candidates(a_new, a_old, ["p"])
    assert sides(a_new).candidates("b") is old_b  # b's rules kept: the old side's
    lent_p = of(a_new, ("vm", "w2", 0), w2).candidates("p")
    assert lent_p is not None and [entry[0].rule.action for entry in lent_p] == ["reject"]  # p's replaced: made from its own rules
    peers.keep_candidates(a_new)
    memo = a_new.__dict__[peers._CANDIDATES]
    assert memo[("out", addresses)] == {"b": old_b}  # the old side's p not kept
    assert memo[("out", w2)] == {"p": lent_p}
    assert memo[("out", own)] == {}  # an endpoint of the old side's alone, kept too: but p's, replaced
    assert peers._LENT not in a_new.__dict__


def test_a_kept_side_keeps_the_candidates_of_the_most_recent_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """`peers.keep_candidates` keeps this diff's endpoints first, then those the old
    side kept, most recent first, up to CANDIDATES_KEPT (commits to a few zones in turn
    find theirs; nothing builds up)."""
    dns = "{direction: out, action: accept, udp: 53}"
    a_old, a_new = Analyzer(load_policy_text(_lending(30000, dns))), Analyzer(load_policy_text(_lending(30001, dns)))
    recent, this, older = ("out", "recent"), ("out", "this diff's"), ("out", "older")
    a_old.__dict__[peers._CANDIDATES] = {recent: {"b": ["r"]}, this: {"b": ["t"], "p": ["tp"]}, older: {"b": ["o"]}}
    peers.lend_candidates(a_new, a_old, ["p"])
    a_new.__dict__[peers._CANDIDATES] = {this: {"w1": ["mine"]}}
    monkeypatch.setattr(peers, "CANDIDATES_KEPT", 2)
    peers.keep_candidates(a_new)
    assert a_new.__dict__[peers._CANDIDATES] == {this: {"w1": ["mine"], "b": ["t"]}, recent: {"b": ["r"]}}

# -- the VMs naming a group, from the index ------------------------------------------------


def _scanned(policy: Policy, refs: set[str]) -> list[str]:
    from zonewall.analysis.diffscope import uses

    return [name for name, vm in policy.doc.vms.items() if uses(vm.rules, refs)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.data())
def test_the_index_finds_the_vms_a_scan_of_their_rules_finds(generated: tuple[str, Any], data: st.DataObject) -> None:
    from zonewall.policy.naming import vms_naming

    policy = load_policy_text(generated[0])
    doc = yaml.safe_load(generated[0])
    refs = set(data.draw(st.lists(st.sampled_from(_references(doc)), max_size=3)))
    assert vms_naming(policy, refs) == _scanned(policy, refs)


def _references(doc: dict[str, Any]) -> list[str]:
    out = [f"group:{g}" for g in doc.get("groups") or {}] + [f"vm:{v}" for v in doc["vms"]] + [f"zone:{z}" for z in doc.get("zones") or {}]
    return out + ["group:nowhere"]


NEGATED = """\
version: 1
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  front: {bridge: vmbr1, subnets: [10.0.1.0/24]}
groups:
  admins: [192.168.100.0/24]
  ops: [192.168.101.0/24]
vms:
  a: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:01", ips: [10.0.1.10]}], rules: [{direction: in, action: accept, from: ["10.0.0.0/8", "!group:admins"], tcp: 22}]}
  b: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:02", ips: [10.0.1.20]}], rules: [{direction: out, action: accept, to: [group:ops], tcp: 22, enabled: false}]}
  c: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:03", ips: [10.0.1.30]}], rules: [{direction: in, action: accept, to: group:admins, tcp: 80}]}
  d: {host: node1, nics: [{network: front, mac: "52:54:00:00:00:04", ips: [10.0.1.40]}], rules: [{direction: in, action: accept, from: 10.0.0.0/8, tcp: 80}]}
"""


def test_the_index_counts_negated_disabled_and_own_end_references_and_nothing_else() -> None:
    from zonewall.policy.naming import vms_naming

    policy = load_policy_text(NEGATED)
    assert vms_naming(policy, {"group:admins"}) == ["a", "c"] == _scanned(policy, {"group:admins"})  # a: negated in a list; c: its own end
    assert vms_naming(policy, {"group:ops"}) == ["b"] == _scanned(policy, {"group:ops"})  # a disabled rule names it too
    assert vms_naming(policy, {"group:nowhere"}) == [] == _scanned(policy, {"group:nowhere"})


def test_twin_sides_share_only_the_leading_steps_both_chains_hold() -> None:
    a, b, c, d = (_step(i, "accept") for i in range(4))
    default = Step((), "drop", "default-in")
    guard = Chain("guards", (a,), default)
    old = (guard, Chain("vm:x in", (a, b, c), default))
    new = (guard, Chain("vm:x in", (a, b, d), default))
    o, n = twins.twin_sides(old, new)
    assert o[0] is guard and isinstance(o[1], SharedPrefix) and o[1].start == n[1].start == 2 and o[1].memo is n[1].memo
    space = s.universe()
    for plain_stages, twinned in ((old, o), (new, n)):
        assert list(first_match(twinned[1], space)) == list(first_match(plain_stages[1], space))
    assert twins.twin_sides(old, (guard, Chain("vm:x in", (d, b, c), default))) == (old, (guard, Chain("vm:x in", (d, b, c), default)))  # nothing shared
    other_guard = Chain("guards", (b,), default)
    assert twins.twin_sides(old, (other_guard, new[1]))[0] is old  # another stage differs too: each on its own


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["vm", "vm-any", "vm-add", "zone", "group"]), min_size=2, max_size=4))
def test_a_chain_of_rule_and_group_commits_is_diffed_as_the_plain_computation_diffs_each(kinds: list[str]) -> None:
    """Rule edits keep their new side too (`diffswitches.KEEP_AFTER_RULE_EDITS`): whatever
    kind of commit comes next takes it as its old side, and every diff is the plain one."""
    from bench.commit import edits

    lines = policy_text(60, nodes=3).split("\n")
    texts = ["\n".join(lines)]
    for k, kind in enumerate(kinds):
        edits()[kind](lines, k)
        texts.append("\n".join(lines))
    taken: list[bool] = []
    real = kept.kept_analyzer
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kept, "kept_analyzer", lambda *a: taken.append((found := real(*a)) is not None) or found)
        fast = _diff_chain(texts)
    assert fast == _plain_chain(texts), kinds
    assert taken == [False] + [True] * (len(kinds) - 1), (kinds, taken)  # each commit's old side the previous one's new side
