"""policy/incremental.py: a commit that rewrites rules of one VM in place is
validated from the previous policy, and must give exactly what the whole load gives.

* Property: for random in-place edits of rule lines (valid ones, every kind of
  mistake, lines that are no rule, several VMs at once), `load_edit` either answers
  None (the caller loads the whole policy) or a policy equal to the whole load's:
  the same document, the same rules with the same ids and positions, the same
  source tree, the same compiled ruleset for the VM's node. It never answers a
  policy where the whole load refuses.
* The same for one group's member line (members of every kind, references that do
  not exist, cycles through nested groups, an IPv6-only group under a rule with
  `family: ipv4` through a group that holds it), and for chains of edits, each
  from the policy the one before gave (what the controller does commit by commit).
* A VM rule index (policy/ownrules.py) the previous policy had is carried to the
  edited one, filing what the whole load's files (owner, place, rule), each rule the
  edited policy's at its place; the previous policy keeps its own.
* The fast path is taken for the plain cases (a port, an action, a new explicit id;
  in a VM's rules and in a zone's),
  and not for what it cannot judge alone (lines added, a packet limit, an id used twice).
"""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.synth import policy_text
from zonewall.compiler.ir import to_json
from zonewall.compiler.node import compile_node
from zonewall.policy.documents import load_documents, load_edited
from zonewall.policy.errors import PolicyError
from zonewall.policy.incremental import load_edit
from zonewall.policy.ownrules import MEMO as OWN_RULES
from zonewall.policy.resolve import Policy

BASE = policy_text(24, nodes=3).replace(
    "version: 1\n", "version: 1\nsecurity_groups:\n  web: {rules: [{direction: in, action: accept, tcp: 443}]}\n"
    "  fam: {rules: [{direction: in, action: accept, family: ipv4, from: group:gholder, tcp: 8443}]}\n", 1
).replace("\ngroups:\n", "\ngroups:\n  gfam: [198.18.7.0/24]\n  gholder: [group:gfam]\n", 1)
DOCS = {"policy.yaml": BASE}
OLD = load_documents(DOCS)
LINES = BASE.split("\n")
VMS = LINES.index("vms:")
RULE_LINES = [n for n, line in enumerate(LINES) if n > VMS and line.startswith("      - {") and "direction" in line]  # VMs' rules
ZONE_RULE = next(n for n, line in enumerate(LINES) if n < VMS and line.startswith("      - {"))
# a rule with an explicit id somewhere else, for duplicate-id edits
ID_LINE = RULE_LINES[-1]
LINES_WITH_ID = list(LINES)
LINES_WITH_ID[ID_LINE] = LINES[ID_LINE].replace("- {", "- {id: taken-id, ", 1)

REPLACEMENTS = [
    "      - {direction: in, action: accept, tcp: 40001}",
    "      - {direction: out, action: drop, to: group:g1, udp: [53, 5353]}",
    "      - {direction: in, action: reject, from: zone:z1, service: https}",
    "      - {id: fresh-id, direction: in, action: accept, tcp: 8443}",
    "      - {id: taken-id, direction: in, action: accept, tcp: 8443}",  # duplicate (with LINES_WITH_ID)
    "      - {direction: in, action: accept, from: group:nosuchgroup, tcp: 22}",
    "      - {direction: in, action: accept, tcp: 70000}",
    "      - {direction: in, action: accept, tcpp: 22}",
    "      - {direction: in, action: accept, service: nosuchservice}",
    "      - {direction: in, action",
    "      - {direction: in, action: accept, nic: [5], tcp: 22}",
    "      - {direction: in, action: accept, nic: [0], tcp: 22}",
    "      - {security_group: web}",
    "      - {security_group: nosuchgroup}",
    "      - {direction: in, action: accept, family: ipv6, from: 10.9.0.0/16, tcp: 22}",
    "      - {direction: in, action: accept, packet_limit: {rate: 10/second}, tcp: 22}",
    "      - {direction: in, action: accept, tcp: 22}  # a comment",
    "      - {direction: in, action: accept, tcp: 22, comment: \"\u00e9t\u00e9\"}",
    "      - {direction: in, action: accept, tcp: 22, comment: \"\x07\"}",
    "      - [direction, in]",
    "      - {direction: in, action: accept, tcp: 22}, {direction: out, action: accept}",
    "    zone: z1",
]


BASES = {"plain": (LINES, OLD), "with-id": (LINES_WITH_ID, load_documents({"policy.yaml": "\n".join(LINES_WITH_ID)}))}


def compare(base: str, new: dict[str, str], node: str | None = None) -> Policy | None:
    """load_edit from base `base` against the whole load; the incremental policy (or None)."""
    lines, policy = BASES[base]
    try:
        full: Policy | None = load_documents(new)
    except PolicyError:
        full = None
    fast = load_edit({"policy.yaml": "\n".join(lines)}, policy, new, groups=True)
    if full is None:
        assert fast is None, "the incremental path accepted what the whole load refuses"
        return None
    if fast is not None:
        assert fast.doc == full.doc
        assert [(r.id, r.path, r.loc, r.rule) for r in fast.rules] == [(r.id, r.path, r.loc, r.rule) for r in full.rules]
        assert fast.source == full.source
        assert_index_carried(policy, fast, full)
        if node is not None:
            assert json.dumps(to_json(compile_node(fast, node))) == json.dumps(to_json(compile_node(full, node)))
    return fast


def index_view(policy: Policy) -> dict[str, object]:
    """A policy's own-rule indexes as data: each list's rules (owner, place, rule), in order of place."""
    view = lambda refs: sorted((r.owner, r.index, repr(r.rule)) for r in refs)
    return {direction: ({text: view(refs) for text, refs in index.by_text.items()}, {vm: view(refs) for vm, refs in index.everyone.items()},
                        view(index.excluding), sorted(index.grouped))
            for direction, index in policy.__dict__[OWN_RULES].items()}


def assert_index_carried(previous: Policy, fast: Policy, full: Policy) -> None:
    """The index an edit carries (when the previous policy had one) files what the
    whole load's does, and each filed rule is the edited policy's rule at its place
    (a ref's id and line may be older: readers take the ref at that place)."""
    if OWN_RULES not in previous.__dict__:
        return
    assert OWN_RULES in fast.__dict__ and OWN_RULES in full.__dict__
    assert index_view(fast) == index_view(full)
    for index in fast.__dict__[OWN_RULES].values():
        refs = [r for refs in index.by_text.values() for r in refs] + [r for refs in index.everyone.values() for r in refs] + index.excluding
        assert all(fast.rules_of("vm", ref.owner)[ref.index].rule is ref.rule for ref in refs)


def test_an_edit_carries_the_index_with_the_vm_refiled_and_leaves_the_previous_one() -> None:
    vm = LINES.index("  vm3:")
    at = next(n for n in RULE_LINES if n > vm and "to: group:" in LINES[n] and "direction: out" in LINES[n])
    before_text = re.search(r"to: (group:g\d+)", LINES[at]).group(1)  # type: ignore[union-attr]
    lines = list(LINES)
    lines[at] = "      - {direction: out, action: accept, to: 203.0.113.77, tcp: 443}"
    fast = load_edit(DOCS, OLD, {"policy.yaml": "\n".join(lines)})
    assert fast is not None
    outbound = fast.__dict__[OWN_RULES]["out"]
    assert [r.rule.to for r in outbound.by_text["203.0.113.77"]] == [["203.0.113.77"]]
    assert all(r.owner != "vm3" or r.index != at - vm - 6 for r in outbound.by_text.get(before_text, ()))  # no longer filed there
    previous = OLD.__dict__[OWN_RULES]["out"]
    assert "203.0.113.77" not in previous.by_text  # the previous policy's index is its own
    assert any(r.owner == "vm3" for r in previous.by_text[before_text])
    assert index_view(fast) == index_view(load_documents({"policy.yaml": "\n".join(lines)}))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_incremental_equals_the_whole_load(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(sorted(BASES)))
    lines = list(BASES[base][0])
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(RULE_LINES + [RULE_LINES[0] - 1, ZONE_RULE]))
        lines[where] = data.draw(st.sampled_from(REPLACEMENTS + [re.sub(r"tcp: \d+", "tcp: 12345", lines[where])]))
    compare(base, {"policy.yaml": "\n".join(lines)}, "node1")


def edited(index: int, text: str, lines: list[str] | None = None) -> dict[str, str]:
    out = list(lines or LINES)
    out[RULE_LINES[index]] = text
    return {"policy.yaml": "\n".join(out)}


def test_plain_edits_take_the_fast_path() -> None:
    for text in REPLACEMENTS[:4]:
        assert compare("plain", edited(3, text), "node1") is not None, text
        zone = list(LINES)
        zone[ZONE_RULE] = text
        assert compare("plain", {"policy.yaml": "\n".join(zone)}, "node1") is not None, text  # a zone's rule


@pytest.mark.parametrize("text", [REPLACEMENTS[5], REPLACEMENTS[6], REPLACEMENTS[9], REPLACEMENTS[10], REPLACEMENTS[13], REPLACEMENTS[14]])
def test_a_mistake_falls_back_to_the_whole_load_and_its_message(text: str) -> None:
    new = edited(3, text)
    assert load_edit(DOCS, OLD, new) is None
    with pytest.raises(PolicyError) as whole:
        load_documents(new)
    with pytest.raises(PolicyError) as through:
        load_edited(new, (DOCS, OLD))
    assert [str(p) for p in through.value.problems] == [str(p) for p in whole.value.problems]


def test_what_it_cannot_judge_alone_goes_the_whole_way() -> None:
    added = list(LINES)
    added.insert(RULE_LINES[3], "      - {direction: in, action: accept, tcp: 1}")
    assert load_edit(DOCS, OLD, {"policy.yaml": "\n".join(added)}) is None  # lines shift: every later id would
    assert load_edit(DOCS, OLD, edited(3, REPLACEMENTS[15])) is None  # packet_limit: marks are checked cluster-wide
    with_id = load_documents({"policy.yaml": "\n".join(LINES_WITH_ID)})
    assert load_edit({"policy.yaml": "\n".join(LINES_WITH_ID)}, with_id, edited(3, REPLACEMENTS[4], LINES_WITH_ID)) is None
    two_vms = list(LINES)
    two_vms[RULE_LINES[0]] = REPLACEMENTS[0]
    two_vms[RULE_LINES[-1]] = REPLACEMENTS[0]
    assert load_edit(DOCS, OLD, {"policy.yaml": "\n".join(two_vms)}) is None
    assert load_edit(DOCS, OLD, {"policy.yaml": BASE, "other.yaml": "version: 1\n"}) is None
    both = list(LINES)
    both[ZONE_RULE] = both[RULE_LINES[0]] = REPLACEMENTS[0]
    assert load_edit(DOCS, OLD, {"policy.yaml": "\n".join(both)}) is None  # a zone's and a VM's at once


def test_random_port_edits_on_every_vm_agree() -> None:
    rng = random.Random(7)
    for line in rng.sample([n for n in RULE_LINES if re.search(r"(tcp|udp): \d+", LINES[n])], 25):
        lines = list(LINES)
        lines[line] = re.sub(r"(tcp|udp): \d+", lambda m: f"{m.group(1)}: {rng.randint(20000, 65535)}", lines[line])
        assert compare("plain", {"policy.yaml": "\n".join(lines)}) is not None


GROUP_LINES = [n for n, line in enumerate(LINES) if re.match(r"^  [a-z0-9]+: \[", line) and LINES.index("groups:") < n < LINES.index("zones:")]
MEMBERS = ["203.0.113.9", "2001:db8::1", "198.18.9.0/24", "group:gfam", "group:gholder", "group:admins", "group:nosuch",
           "vm:vm3", "vm:nosuchvm", "zone:z1", "network:nosuchnet", "10.0.0.300", "any", "'fd00:9::/64'"]


def group_line(data: st.DataObject, line: int) -> str:
    name = LINES[line].split(":")[0].strip()
    kind = data.draw(st.sampled_from(["members", "members", "members", "renamed", "block", "broken", "dict"]))
    members = ", ".join(data.draw(st.lists(st.sampled_from(MEMBERS), min_size=1, max_size=3)))
    return {
        "members": f"  {name}: [{members}]",
        "renamed": f"  {name}x: [{members}]",
        "block": f"  {name}:",
        "broken": f"  {name}: [{members}",
        "dict": f"  {name}: {{members: [{members}], comment: edited}}",
    }[kind]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_group_edit_equals_the_whole_load(data: st.DataObject) -> None:
    lines = list(LINES)
    where = data.draw(st.sampled_from(GROUP_LINES))
    lines[where] = group_line(data, where)
    compare("plain", {"policy.yaml": "\n".join(lines)}, "node1")


def test_group_edits_take_the_fast_path_and_mistakes_do_not() -> None:
    gfam = next(n for n in GROUP_LINES if LINES[n].startswith("  gfam:"))
    for members, accepted in (("198.18.7.0/24, 198.18.9.9", True), ("vm:vm3", True), ("'2001:db8::1', 198.18.7.1", True),
                              ("'2001:db8::1'", False),  # the security group's rule is family ipv4 through gholder
                              ("group:gholder", False),  # a cycle
                              ("group:nosuch", False)):
        lines = list(LINES)
        lines[gfam] = f"  gfam: [{members}]"
        fast = compare("plain", {"policy.yaml": "\n".join(lines)}, "node1")
        assert (fast is not None) == accepted, members
        # without `groups` only rule edits are taken: the agent shares the old policy's
        # address memos with what load_edit gives, which a group edit would make stale
        assert load_edit(DOCS, OLD, {"policy.yaml": "\n".join(lines)}) is None


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_a_chain_of_edits_equals_the_whole_load(data: st.DataObject) -> None:
    documents, policy = DOCS, OLD
    lines = list(LINES)
    for _ in range(data.draw(st.integers(2, 4))):
        if data.draw(st.booleans()):
            where = data.draw(st.sampled_from(GROUP_LINES))
            lines[where] = group_line(data, where)
        else:
            where = data.draw(st.sampled_from(RULE_LINES + [ZONE_RULE]))
            lines[where] = data.draw(st.sampled_from(REPLACEMENTS[:4] + [REPLACEMENTS[5], REPLACEMENTS[14], re.sub(r"tcp: \d+", "tcp: 23456", lines[where])]))
        new = {"policy.yaml": "\n".join(lines)}
        try:
            full: Policy | None = load_documents(new)
        except PolicyError:
            full = None
        fast = load_edit(documents, policy, new, groups=True)
        if full is None:
            assert fast is None, "the incremental path accepted what the whole load refuses"
            lines = documents["policy.yaml"].split("\n")  # refused: the next edit starts from the same revision
            continue
        if fast is not None:
            assert fast.doc == full.doc and fast.source == full.source
            assert [(r.id, r.path, r.loc, r.rule) for r in fast.rules] == [(r.id, r.path, r.loc, r.rule) for r in full.rules]
            assert_index_carried(policy, fast, full)
        documents, policy = new, fast if fast is not None else full
    assert json.dumps(to_json(compile_node(policy, "node1"))) == json.dumps(to_json(compile_node(load_documents(documents), "node1")))


def test_explicit_ids_are_checked_against_the_rules_edited_since() -> None:
    """A chain of commits: a rule of one VM takes an explicit id, a rule of another VM
    then cannot (the whole load refuses the duplicate), until the first gives it up;
    the index of the whole load's ids is made once and the edited owners read anew."""
    rules = [n for n in RULE_LINES if LINES[n].startswith("      - {direction")]
    first, other = rules[0], next(n for n in rules if _vm_of(n) != _vm_of(rules[0]))

    def with_id(lines: list[str], at: int, rule_id: str) -> list[str]:
        out = list(lines)
        out[at] = re.sub(r"^(      - \{)(?:id: [^,]+, )?", rf"\g<1>id: {rule_id}, ", lines[at])
        return out

    # from the base whose last VM rule has `taken-id`: the whole load's index names it
    lines = list(LINES_WITH_ID)
    documents = {"policy.yaml": "\n".join(lines)}
    policy = load_documents(documents)
    steps = [(first, "chosen-id", True), (other, "chosen-id", False), (first, "renamed-id", True), (other, "chosen-id", True),
             (first, "taken-id", False), (ID_LINE, "given-up-id", True), (first, "taken-id", True)]
    for at, rule_id, taken in steps:
        edited = with_id(lines, at, rule_id)
        new = {"policy.yaml": "\n".join(edited)}
        fast = load_edit(documents, policy, new, groups=True)
        if not taken:
            with pytest.raises(PolicyError, match=rule_id):
                load_documents(new)
            assert fast is None
            continue
        assert fast is not None, (at, rule_id)
        full = load_documents(new)
        assert [(r.id, r.loc) for r in fast.rules] == [(r.id, r.loc) for r in full.rules]
        documents, policy, lines = new, fast, edited


def _vm_of(line: int) -> str:
    """The VM whose rules hold line `line` of BASE."""
    return next(LINES[n].strip().rstrip(":") for n in range(line, 0, -1) if re.match(r"^  [a-z0-9-]+:$", LINES[n]))
