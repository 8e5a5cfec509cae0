"""policy/incremental.py `moved_empty_lines` (the agent's `load_edit(..., empty_lines=True)`):
empty lines added or removed at one place move every later position and change
nothing else, unless a scalar holds the place (policy/emptylines.py). A node's
documents gain such a line whenever a rule line is added to a VM of another node
(policy/scope.py blanks that VM's rules block): the agent loaded them whole."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.compiler.ir import to_json
from zonewall.compiler.node import compile_node
from zonewall.policy.documents import load_documents
from zonewall.policy.emptylines import outside_scalars
from zonewall.policy.errors import PolicyError
from zonewall.policy.incremental import load_edit
from zonewall.policy.resolve import Policy
from zonewall.policy.scope import Scoper

from .test_incremental_lines import BASES, same


def _agent_load(documents: dict[str, str], policy: Policy, new: dict[str, str]) -> Policy | None:
    return load_edit(documents, policy, new, groups=True, lines=True, empty_lines=True)


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_empty_lines_added_or_removed_anywhere_equal_the_whole_load(data: st.DataObject) -> None:
    """A chain of random empty lines added (anywhere) and removed: each taken from the
    policy the one before gave equals the whole load, ids, positions and source
    included, and so does the ruleset at the end."""
    lines = list(BASES[data.draw(st.sampled_from(sorted(BASES)))])
    documents = {"policy.yaml": "\n".join(lines)}
    policy = load_documents(documents)
    taken = 0
    for _ in range(data.draw(st.integers(1, 4))):
        empty = [n for n, line in enumerate(lines) if not line.strip()]
        if empty and data.draw(st.booleans()):
            at = data.draw(st.sampled_from(empty))
            del lines[at : at + data.draw(st.integers(1, 2))]
        else:
            at = data.draw(st.integers(1, len(lines) - 1))
            lines[at:at] = [""] * data.draw(st.integers(1, 3))
        new = {"policy.yaml": "\n".join(lines)}
        try:
            full = load_documents(new)
        except PolicyError:  # (a removal joined two lines' meaning: not an empty-line edit's business)
            assert _agent_load(documents, policy, new) is None
            lines = documents["policy.yaml"].split("\n")
            continue
        fast = _agent_load(documents, policy, new)
        if fast is not None:
            taken += 1
            same(fast, full)
        documents, policy = new, fast if fast is not None else full
    assert json.dumps(to_json(compile_node(policy, "node1"))) == json.dumps(to_json(compile_node(load_documents(documents), "node1")))
    # what later edits read from the moved policy (where each owner's rules are, where
    # each group's entry is) is where it now is: a rule edited in place and a group's
    # members edited after the moves take their fast paths and equal the whole load
    for pattern, replace in ((re.compile(r"^(      - \{[^\n]*?tcp: )\d+", re.MULTILINE), r"\g<1>4242"),
                             (re.compile(r"^(  g\d+: \[)[^\n]*\]$", re.MULTILINE), r"\g<1>198.18.9.0/24]")):
        edited = {"policy.yaml": pattern.sub(replace, documents["policy.yaml"], count=1)}
        assert edited != documents
        later = load_edit(documents, policy, edited, groups=True, lines=True, empty_lines=True)
        assert later is not None, pattern.pattern
        same(later, load_documents(edited))


def test_an_empty_line_in_a_blanked_block_takes_the_fast_path() -> None:
    """What a node's documents get when a rule line is added to another node's VM:
    an empty line inside that VM's blanked block; the moved rules' ids move."""
    text = "\n".join(BASES["groups-first"])
    placement = {name: vm.host for name, vm in load_documents({"policy.yaml": text}).doc.vms.items()}
    scoper = Scoper({"policy.yaml": text}, placement)
    vm = next(name for name, host in placement.items() if host == "node2")
    block = scoper.blocks[("vm", vm)]
    scoped = scoper.scoped("node1")
    lines = scoped["policy.yaml"].split("\n")
    assert lines[block.start + 1] == ""
    grown = {"policy.yaml": "\n".join(lines[: block.start + 1] + [""] + lines[block.start + 1 :])}
    old = load_documents(scoped)
    fast = _agent_load(scoped, old, grown)
    assert fast is not None
    same(fast, load_documents(grown))
    assert [r.id for r in fast.rules] != [r.id for r in old.rules]  # (derived ids below moved)
    assert load_edit(scoped, old, grown, groups=True, lines=True) is None  # not without `empty_lines` (the controller's commit)


CASES = {
    # a plain multi-line scalar folds each empty line into a line break (the line after holds ": " nowhere)
    "plain": ("version: 1\nhosts:\n  n1: {address: 10.0.0.1}\ngroups:\n  g:\n    members: [10.0.0.2]\n    comment: first\n      second\n", 7),
    # a block scalar keeps an empty line before its content
    "block": ("version: 1\nhosts:\n  n1: {address: 10.0.0.1}\ngroups:\n  g:\n    members: [10.0.0.2]\n    comment: |-\n      first\n  h: [10.0.0.3]\n", 7),
    # a double-quoted scalar over several lines folds them too (the line after holds ": ")
    "quoted": ("version: 1\nhosts:\n  n1: {address: 10.0.0.1}\ngroups:\n  g:\n    members: [10.0.0.2]\n    comment: \"first\n      second: x\"\n", 7),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_empty_line_a_scalar_holds_goes_the_whole_way(case: str) -> None:
    text, at = CASES[case]
    lines = text.split("\n")
    grown = "\n".join(lines[:at] + [""] + lines[at:])
    old = load_documents({"policy.yaml": text})
    # the empty line is the scalar's: a line break, which no policy string may hold
    with pytest.raises(PolicyError, match="line feed"):
        load_documents({"policy.yaml": grown})
    assert _agent_load({"policy.yaml": text}, old, {"policy.yaml": grown}) is None


def test_outside_scalars_reads_the_line_after() -> None:
    assert outside_scalars("a: 1\n", None) and outside_scalars("a: 1\n", "  b: 2") and outside_scalars("a: 1\n", "  # c") and outside_scalars("a: 1\n", "  b:")
    assert not outside_scalars("a: 1\n", "  second")  # a plain scalar's next line
    assert not outside_scalars('a: "x\n', "  b: 2") and not outside_scalars("a: >\n", "  b: 2") and not outside_scalars("a: '\\n'\n", "  b: 2")


def test_what_a_moved_line_could_change_goes_the_whole_way() -> None:
    """As for rule lines added (test_incremental_lines.py): a packet-limited rule with a
    derived id below the empty line, or an explicit id shaped like a derived one."""
    lines = list(BASES["groups-first"])
    last = max(n for n, line in enumerate(lines) if line.startswith("      - {") and "direction" in line)
    at = min(n for n, line in enumerate(lines) if line.startswith("      - {") and "direction" in line)
    for rule in ("      - {direction: in, action: accept, packet_limit: {rate: 10/second}, tcp: 22}",
                 "      - {id: policy:9999, direction: in, action: accept, tcp: 22}"):
        edited = list(lines)
        edited[last] = rule
        documents = {"policy.yaml": "\n".join(edited)}
        grown = {"policy.yaml": "\n".join(edited[:at] + [""] + edited[at:])}
        assert _agent_load(documents, load_documents(documents), grown) is None
    plain = {"policy.yaml": "\n".join(lines)}
    assert _agent_load(plain, load_documents(plain), {"policy.yaml": "\n".join(lines[:at] + [""] + lines[at:])}) is not None  # (the refusals are theirs)
