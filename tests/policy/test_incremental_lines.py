"""policy/incremental.py, rule lines added or removed (`load_edit(..., lines=True)`, the
controller's commit): every later line of the file moves, and with it the default
rule ids (`file:line`) and positions the whole load derives. Sequences of random
additions, removals, replacements by more or fewer lines, in-place edits and group
edits, each from the policy the one before gave (the controller's chain of commits),
must give exactly what the whole load gives: the same document, rules with the same
ids, paths and positions, the same source, the same compiled ruleset; and where the
whole load refuses, `load_edited` refuses with the whole load's `file:line:col`
messages; a VM rule index carried along files what the whole load's files, and
whether an owner's rules kept their ids and places is told from their lines alone
(`Runs.kept_from`) as comparing the rules tells it; the runs the revisions share
(moved once for all of them) are each revision's own, read in any order, with edits
made beside one another from one revision. The fast path must be taken for plain additions and removals, and not where
a moved line could change an id check (a packet-limited rule below, an explicit id
shaped like a derived one).
"""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.compiler.ir import to_json
from zonewall.compiler.node import compile_node
from zonewall.policy.documents import load_documents, load_edited
from zonewall.policy.errors import PolicyError
from zonewall.policy.incremental import load_edit
from zonewall.policy.resolve import Policy

from .test_incremental import BASE, LINES, REPLACEMENTS, assert_index_carried


def _groups_last(lines: list[str]) -> list[str]:
    """The same policy with `groups:` written after the VMs (their lines move with an edit above them)."""
    start = lines.index("groups:")
    stop = next(n for n in range(start + 1, len(lines)) if lines[n] and not lines[n].startswith(" "))
    rest = lines[:start] + lines[stop:]
    while rest and not rest[-1]:
        rest.pop()
    return rest + lines[start:stop] + [""]


BASES = {"groups-first": LINES, "groups-last": _groups_last(LINES)}
ADDED = [
    "      - {direction: in, action: accept, tcp: 40001}",
    "      - {direction: out, action: drop, to: group:g1, udp: [53, 5353]}",
    "      - {id: fresh-id, direction: in, action: accept, tcp: 8443}",
    "      - {direction: in, action: accept, from: group:nosuchgroup, tcp: 22}",  # a mistake
    "      - {direction: in, action: accept, tcp: 70000}",  # a mistake
    "      - {direction: in, action",  # broken YAML
    "        - {direction: in, action: accept, tcp: 1}",  # deeper: no list item of the rules
    "    - {direction: in, action: accept, tcp: 1}",  # shallower
    "      # a comment",
    "      - {direction: in, action: accept, packet_limit: {rate: 10/second}, tcp: 22}",
]


def rule_lines(lines: list[str]) -> list[int]:
    return [n for n, line in enumerate(lines) if line.startswith("      - {") and "direction" in line]


def step(data: st.DataObject, lines: list[str]) -> None:
    """One random edit of `lines`, in place."""
    rules = rule_lines(lines)
    where = data.draw(st.sampled_from(rules))
    kind = data.draw(st.sampled_from(["add", "add", "add-after", "remove", "remove", "remove-two", "two-for-one", "one-for-two", "in-place", "group"]))
    added = lambda: data.draw(st.sampled_from(ADDED[:3] * 3 + ADDED[3:]))
    if kind == "add":
        lines.insert(where, added())
    elif kind == "add-after":
        lines.insert(where + 1, added())
    elif kind == "remove":
        del lines[where]
    elif kind == "remove-two":
        del lines[where : where + 2]
    elif kind == "two-for-one":
        lines[where : where + 1] = [added(), added()]
    elif kind == "one-for-two":
        lines[where : where + 2] = [added()]
    elif kind == "in-place":
        lines[where] = data.draw(st.sampled_from(REPLACEMENTS[:4] + [re.sub(r"tcp: \d+", "tcp: 23456", lines[where])]))
    else:
        groups = [n for n, line in enumerate(lines) if re.match(r"^  g\d+: \[", line)]
        at = data.draw(st.sampled_from(groups))
        name = lines[at].split(":")[0].strip()
        lines[at] = f"  {name}: [{data.draw(st.sampled_from(['198.18.9.0/24', 'vm:vm3', '203.0.113.7, vm:vm5']))}]"


def same(fast: Policy, full: Policy) -> None:
    assert fast.doc == full.doc and fast.source == full.source
    assert [(r.id, r.level, r.owner, r.index, r.path, r.loc, r.rule) for r in fast.rules] == \
        [(r.id, r.level, r.owner, r.index, r.path, r.loc, r.rule) for r in full.rules]
    for (level, owner), refs in full._rule_table.runs.items():
        assert fast.rules_of(level, owner) == refs


def kept_told_right(previous: Policy, fast: Policy) -> dict[tuple[str, str], bool | None]:
    """`Runs.kept_from` (told from lines, no run made) answers what comparing the made
    runs answers, for every owner; its answers."""
    before, after = previous._rule_table.runs, fast._rule_table.runs
    replaced = fast.rules_replaced_since(previous)  # before anything is made too
    told = {key: after.kept_from(before, key) for key in after}  # before anything is made
    for key in after if replaced is not None else ():
        if key not in replaced:  # (Runs.replaced_since: an edit in place; every other owner's run is the same)
            assert before[key] == after[key], key
    for key, answer in told.items():
        if answer is not None:
            a, b = before[key], after[key]
            assert answer == (len(a) == len(b) and all(x == y for x, y in zip(a, b))), key
    return told


def test_an_edit_in_place_tells_which_owners_it_replaced() -> None:
    """A rule edited in place: only its owner's run may differ (a diff then compares no
    other VM's rules); a line added moves others: not told so, each owner compared."""
    lines = BASES[sorted(BASES)[0]]
    documents = {"policy.yaml": "\n".join(lines)}
    old = load_documents(documents)
    where = rule_lines(lines)[3]
    edited = list(lines)
    edited[where] = re.sub(r"tcp: \d+", "tcp: 23456", edited[where]) if "tcp: " in edited[where] else REPLACEMENTS[0]
    fast = load_edit(documents, old, {"policy.yaml": "\n".join(edited)}, groups=True, lines=True)
    assert fast is not None
    replaced = fast.rules_replaced_since(old)
    changed = {key for key in fast._rule_table.runs if fast._rule_table.runs[key] != old._rule_table.runs[key]}
    assert replaced is not None and len(changed) == 1 and changed <= replaced
    added = load_edit(documents, old, {"policy.yaml": "\n".join(_edited(lines, "add"))}, groups=True, lines=True)
    assert added is not None and added.rules_replaced_since(old) is None


def test_a_run_is_told_kept_or_moved_from_its_lines() -> None:
    """A line added at the fourth VM rule: the owners above keep their runs, those
    below moved (their ids and lines), the edited one is compared; Policy.same_rules
    answers the same."""
    lines = BASES[sorted(BASES)[0]]
    documents = {"policy.yaml": "\n".join(lines)}
    old = load_documents(documents)
    fast = load_edit(documents, old, {"policy.yaml": "\n".join(_edited(lines, "add"))}, groups=True, lines=True)
    assert fast is not None
    told = kept_told_right(old, fast)
    edited = next(key for key, run in fast._rule_table.runs._made.items() if run[0] is not old._rule_table.runs[key])
    assert told[edited] is None
    assert True in told.values() and False in told.values()
    for (level, owner), answer in told.items():
        if answer is not None:
            assert old.same_rules(fast, level, owner) is answer  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_added_and_removed_lines_equal_the_whole_load(data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(sorted(BASES)))
    lines = list(BASES[base])
    documents = {"policy.yaml": "\n".join(lines)}
    policy = load_documents(documents)
    for _ in range(data.draw(st.integers(1, 5))):
        step(data, lines)
        new = {"policy.yaml": "\n".join(lines)}
        try:
            full: Policy | None = load_documents(new)
        except PolicyError as whole:
            with pytest.raises(PolicyError) as through:
                load_edited(new, (documents, policy))
            assert [str(p) for p in through.value.problems] == [str(p) for p in whole.problems]  # file:line:col: message
            assert load_edit(documents, policy, new, groups=True, lines=True) is None
            lines = documents["policy.yaml"].split("\n")  # refused: the next edit starts from the same revision
            continue
        assert full is not None
        if data.draw(st.booleans()):  # an edit beside it, from the same revision (a preview, a commit refused later): its runs are its own
            beside = list(documents["policy.yaml"].split("\n"))
            step(data, beside)
            sibling = {"policy.yaml": "\n".join(beside)}
            try:
                made_beside = load_edit(documents, policy, sibling, groups=True, lines=True)
            except PolicyError:
                made_beside = None
            if made_beside is not None:
                same(made_beside, load_documents(sibling))
        fast = load_edit(documents, policy, new, groups=True, lines=True)
        if fast is not None:
            kept_told_right(policy, fast)
            same(fast, full)
            assert_index_carried(policy, fast, full)
            same(policy, load_documents(documents))  # the older revision read after the newer made its runs (a diff's old side)
        documents, policy = new, fast if fast is not None else full
    assert json.dumps(to_json(compile_node(policy, "node1"))) == json.dumps(to_json(compile_node(load_documents(documents), "node1")))


def _edited(lines: list[str], edit: str) -> list[str]:
    out = list(lines)
    rules = rule_lines(out)
    if edit == "add":
        out.insert(rules[3], ADDED[0])
    elif edit == "add-last":
        out.insert(rules[19] + 1, ADDED[1])
    elif edit == "remove":
        del out[rules[3]]
    elif edit == "two-for-one":
        out[rules[3] : rules[3] + 1] = ADDED[:2]
    return out


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("edit", ["add", "add-last", "remove", "two-for-one"])
def test_plain_additions_and_removals_take_the_fast_path(base: str, edit: str) -> None:
    lines = BASES[base]
    documents = {"policy.yaml": "\n".join(lines)}
    old = load_documents(documents)
    new = {"policy.yaml": "\n".join(_edited(lines, edit))}
    fast = load_edit(documents, old, new, groups=True, lines=True)
    assert fast is not None
    full = load_documents(new)
    same(fast, full)
    assert [r.id for r in fast.rules] != [r.id for r in old.rules]  # (ids below moved)
    assert load_edit(documents, old, new, groups=True) is None  # without `lines` (the agent): the whole load


def test_a_group_edit_after_moved_lines_still_takes_the_fast_path() -> None:
    lines = list(BASES["groups-last"])
    documents = {"policy.yaml": "\n".join(lines)}
    policy = load_edit(documents, load_documents(documents), {"policy.yaml": "\n".join(_edited(lines, "add"))}, groups=True, lines=True)
    assert policy is not None
    lines = _edited(lines, "add")
    at = next(n for n, line in enumerate(lines) if re.match(r"^  g5: \[", line))
    lines[at] = "  g5: [198.18.9.0/24]"
    new = {"policy.yaml": "\n".join(lines)}
    fast = load_edit({"policy.yaml": "\n".join(_edited(BASES["groups-last"], "add"))}, policy, new, groups=True, lines=True)
    assert fast is not None
    same(fast, load_documents(new))


def test_what_a_moved_line_could_change_goes_the_whole_way() -> None:
    rules = rule_lines(LINES)
    # a packet-limited rule below the edit: its connection mark comes from its derived id
    limited = list(LINES)
    limited[rules[-1]] = "      - {direction: in, action: accept, packet_limit: {rate: 10/second}, tcp: 22}"
    # an explicit id shaped like a derived one: whether a derived id collides with it would change
    shaped = list(LINES)
    shaped[rules[-1]] = "      - {id: policy:9999, direction: in, action: accept, tcp: 22}"
    for lines in (limited, shaped):
        documents = {"policy.yaml": "\n".join(lines)}
        old = load_documents(documents)
        new = {"policy.yaml": "\n".join(_edited(lines, "add"))}
        assert load_edit(documents, old, new, groups=True, lines=True) is None
        same(load_edited(new, (documents, old)), load_documents(new))
    # the same edit without them is taken (the refusals above are theirs)
    assert load_edit({"policy.yaml": BASE}, load_documents({"policy.yaml": BASE}), {"policy.yaml": "\n".join(_edited(LINES, "add"))}, groups=True, lines=True) is not None
    # a comment line, a deeper or shallower item: not a rule of the list, the whole load
    for text in ADDED[6:9]:
        out = list(LINES)
        out.insert(rules[3], text)
        assert load_edit({"policy.yaml": BASE}, load_documents({"policy.yaml": BASE}), {"policy.yaml": "\n".join(out)}, groups=True, lines=True) is None



def test_a_chain_of_plain_additions_and_removals_is_taken_whole() -> None:
    rng = random.Random(5)
    lines = list(BASES["groups-last"])
    documents = {"policy.yaml": "\n".join(lines)}
    policy = load_documents(documents)
    for k in range(12):
        rules = rule_lines(lines)
        where = rng.choice(rules)
        if k % 3 == 2:
            del lines[where]
        else:
            lines.insert(where + rng.randint(0, 1), f"      - {{direction: in, action: accept, tcp: {30000 + k}}}")
        new = {"policy.yaml": "\n".join(lines)}
        fast = load_edit(documents, policy, new, groups=True, lines=True)
        assert fast is not None, k
        same(fast, load_documents(new))
        documents, policy = new, fast


def test_a_moved_run_is_made_once_for_the_revisions_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """After a line added, each commit's diff reads every owner's run on its old side:
    the next revision (made from it) finds them made, moving no rule again."""
    import zonewall.policy.ruletable as ruletable

    moved: list[int] = []
    real = ruletable.moved_ref
    monkeypatch.setattr(ruletable, "moved_ref", lambda ref, delta: moved.append(1) or real(ref, delta))
    lines = list(BASES["groups-first"])
    documents = {"policy.yaml": "\n".join(lines)}
    policy = load_documents(documents)
    revisions = []
    for port in (None, 23001, 23002):
        if port is None:
            lines.insert(rule_lines(lines)[0], ADDED[0])  # every later rule's line moves
        else:
            at = [n for n in rule_lines(lines) if "tcp: " in lines[n]][-1]
            lines[at] = re.sub(r"tcp: \d+", f"tcp: {port}", lines[at])
        new = {"policy.yaml": "\n".join(lines)}
        fast = load_edit(documents, policy, new, groups=True, lines=True)
        assert fast is not None
        revisions.append((new, fast))
        documents, policy = new, fast
    (_, first), (second_documents, second), (_, third) = revisions
    moved.clear()
    for key in first._rule_table.runs:  # the second commit's diff reads them on its old side
        first.rules_of(*key)
    assert moved, "the line added moved the rules below it"
    moved.clear()
    same(second, load_documents(second_documents))  # every run of the next revision: found made
    same(third, load_documents(documents))
    assert not moved
