"""A node's scoped documents compile to exactly what the whole policy gives that node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.synth import policy_text
from zonewall.compiler.node import compile_node
from zonewall.policy.delta import apply_delta
from zonewall.policy.documents import load_documents, read_directory
from zonewall.policy.scope import SCOPE_MARK, Scoper, affected, block_edit, rules_blocks, shared_edit, unsafe_yaml

ROOT = Path(__file__).resolve().parents[2]

MICRO = """\
version: 1
hosts:
  node1: {address: [192.168.100.11]}
  node2: {address: [192.168.100.12]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
groups:
  pair: [vm:a, vm:b]
  solo: [10.0.0.9]
  dup:
    - 10.0.0.8
    - group:pair
zones:
  front:
    default: {in: drop}
    rules:   # the zone of a (node1)
      - {direction: in, action: accept, udp: 53}
      - direction: in
        action: accept
        udp: 123
  back: {rules: [{direction: in, action: drop, udp: 9}]}
  idle:
    rules:
      - {direction: in, action: accept, udp: 161}
vms:
  a:
    host: node1
    zone: front
    nics:
      - {network: lan, ips: [10.0.0.10]}
    rules:   # a's own
      - {direction: in, action: accept, from: vm:b, service: ssh}

      - {direction: in, action: accept, from: group:pair, tcp: 8080}
  b:
    host: node2
    zone: back
    nics:
      - {network: lan, ips: [10.0.0.11]}
    rules:
    - {direction: out, action: drop, to: vm:a, tcp: 25}
    - direction: in
      action: accept
      from: group:dup
      tcp: 443
  c:
    host: node2
    nics: [{network: lan, ips: [10.0.0.12]}]
settings:
  default: {in: drop, out: accept}
"""


def policies() -> list[tuple[str, dict[str, str]]]:
    out = [(path.parent.name, read_directory(path)) for path in sorted((ROOT / "examples").glob("*/policy"))]
    out.append(("micro", {"policy.yaml": MICRO}))
    out.append(("synth", {"policy.yaml": policy_text(120, nodes=4, dataplane_extras=True)}))
    return out


@pytest.mark.parametrize(("name", "documents"), policies(), ids=[name for name, _ in policies()])
def test_every_node_compiles_its_scoped_documents_to_the_full_ruleset(name: str, documents: dict[str, str]) -> None:
    policy = load_documents(documents)
    placement = {vm: spec.host for vm, spec in policy.doc.vms.items()}
    zoned = Scoper(documents, placement, zone_of={vm: spec.zone for vm, spec in policy.doc.vms.items()})
    for scoper in (Scoper(documents, placement), zoned):
        for node in sorted(policy.doc.hosts):
            scoped = scoper.scoped(node)
            assert compile_node(load_documents(scoped), node) == compile_node(policy, node), f"{name}: node {node}"



def test_other_nodes_vm_rules_are_left_out_and_positions_kept() -> None:
    documents = {"policy.yaml": MICRO}
    scoper = Scoper(documents, {"a": "node1", "b": "node2", "c": "node2"})
    one = scoper.scoped("node1")["policy.yaml"]
    assert "tcp: 25" not in one and "tcp: 443" not in one and "tcp: 8080" in one  # b's rules gone, a's kept
    assert one.endswith(f"{SCOPE_MARK}node1\n")
    assert len(one.splitlines()) == len(MICRO.splitlines()) + 1  # every line where it was, plus the mark
    assert load_documents({"policy.yaml": one}).doc.vms["b"].rules == []
    arriving = scoper.scoped("node1", keep=["b"])["policy.yaml"]
    assert "tcp: 25" in arriving  # a VM migrating here comes with its rules
    assert scoper.scoped("node2")["policy.yaml"].count("tcp:") == 2  # a's two rules are not node2's


MICRO_ZONES = {"a": "front", "b": "back", "c": None}


def test_a_zones_rules_are_left_out_where_none_of_its_vms_is() -> None:
    documents = {"policy.yaml": MICRO}
    scoper = Scoper(documents, {"a": "node1", "b": "node2", "c": "node2"}, zone_of=MICRO_ZONES)
    one, two = scoper.scoped("node1")["policy.yaml"], scoper.scoped("node2")["policy.yaml"]
    assert "udp: 53" in one and "udp: 123" in one  # front holds a, on node1
    assert "udp: 53" not in two and "udp: 123" not in two  # and no VM of node2
    assert "udp: 161" not in one and "udp: 161" not in two  # idle holds no VM: nobody's
    assert "udp: 9" in one and "udp: 9" in two  # back's rules are flow style: never cut
    assert len(two.splitlines()) == len(MICRO.splitlines()) + 1
    lines = two.split("\n")
    # a VM's block becomes blank lines (it has its host); a zone's keeps `rules: []`
    # (a zone may have no other key): an explicit empty list per VM costs agents memory
    assert lines[scoper.blocks[("vm", "a")].start] == "" and lines[scoper.blocks[("zone", "front")].start] == "    rules: []"
    policy = load_documents({"policy.yaml": two})
    assert policy.doc.zones["front"].rules == [] and policy.doc.zones["idle"].rules == [] and policy.doc.zones["front"].default is not None
    arriving = scoper.scoped("node2", keep=["a"])["policy.yaml"]
    assert "udp: 53" in arriving and "udp: 161" not in arriving  # a VM migrating here comes with its zone's rules
    unknown = Scoper(documents, {"a": "node1", "b": "node2", "c": "node2"}).scoped("node2")["policy.yaml"]
    assert "udp: 53" in unknown and "udp: 161" in unknown  # zones not known: their rules everywhere


UNSAFE_PATTERN = re.compile(r"""(^|[\s\[{,:])[&*!][^\s]|^---|^\.\.\.|<<:|\t""", re.MULTILINE)


@given(st.text(alphabet=" \t\n\r\x0b\x85\xa0ab:-.[]{},&*!<#'\"", max_size=40))
@settings(max_examples=2000, deadline=None)
def test_unsafe_yaml_is_the_pattern_it_replaced(text: str) -> None:
    assert unsafe_yaml(text) == (UNSAFE_PATTERN.search(text) is not None), repr(text)


def test_unsafe_yaml_is_never_cut() -> None:
    assert rules_blocks(MICRO)
    anchored = MICRO.replace("      - {direction: in, action: accept, from: vm:b, service: ssh}", "      - &ssh {direction: in, action: accept, from: vm:b, service: ssh}")
    assert rules_blocks(anchored) == {}
    flow = "vms:\n  a: {host: node1, rules: [{direction: in, action: accept}]}\n"
    assert rules_blocks(flow) == {}


def test_affected_nodes_of_a_change() -> None:
    placement = {"a": "node1", "b": "node2", "c": "node2"}
    nodes = ["node1", "node2", "node3"]
    old = Scoper({"policy.yaml": MICRO}, placement)
    in_place = Scoper({"policy.yaml": MICRO.replace("tcp: 25", "tcp: 26")}, placement)
    assert affected(old, in_place, nodes) == {"node2"}
    assert old.scoped("node1") == in_place.scoped("node1") and old.scoped("node2") != in_place.scoped("node2")
    added = Scoper({"policy.yaml": MICRO.replace("      tcp: 443\n", "      tcp: 443\n    - {direction: in, action: drop}\n")}, placement)
    assert affected(old, added, nodes) == set(nodes)  # lines moved: every node
    zone = Scoper({"policy.yaml": MICRO.replace("default: {in: drop", "default: {in: reject")}, placement)
    assert affected(old, zone, nodes) == set(nodes)
    moved = Scoper({"policy.yaml": MICRO}, {**placement, "c": "node1"})
    assert affected(old, moved, nodes) == set(nodes)
    assert affected(old, Scoper({"policy.yaml": MICRO}, placement), nodes) == set()


def test_groups_a_node_does_not_use_are_left_out() -> None:
    """node1 keeps `pair` (a's rule names it), node2 `dup` and the `pair` it holds (b's
    rule names dup), node3 none (its section becomes `groups: {}`); `solo`, named by
    nobody, is nobody's. Positions are kept, and each node's documents load."""
    scoper = Scoper({"policy.yaml": MICRO}, {"a": "node1", "b": "node2", "c": "node2"}, zone_of=MICRO_ZONES)
    scoped = {node: scoper.scoped(node)["policy.yaml"] for node in ("node1", "node2", "node3")}
    assert "pair: [vm:a, vm:b]" in scoped["node1"] and "dup:" not in scoped["node1"] and "solo:" not in scoped["node1"]
    assert "pair: [vm:a, vm:b]" in scoped["node2"] and "- group:pair" in scoped["node2"] and "solo:" not in scoped["node2"]
    assert "pair:" not in scoped["node3"] and "groups: {}\n" in scoped["node3"]
    for node, text in scoped.items():
        assert len(text.splitlines()) == len(MICRO.splitlines()) + 1, node
        policy = load_documents({"policy.yaml": text})
        assert set(policy.doc.groups) == {"node1": {"pair"}, "node2": {"pair", "dup"}, "node3": set()}[node]
    # a VM arriving on node3 brings the groups its rules name
    assert set(load_documents(scoper.scoped("node3", keep=["b"])).doc.groups) == {"pair", "dup"}
    # a double-quoted escape can spell a reference the scan does not see: every group stays
    escaped = MICRO.replace("from: vm:b, service: ssh", 'from: "gr\\x6fup:solo", service: ssh')
    assert load_documents({"policy.yaml": escaped}).doc.vms["a"].rules[0].from_ == ["group:solo"]
    kept = Scoper({"policy.yaml": escaped}, {"a": "node1", "b": "node2", "c": "node2"}, zone_of=MICRO_ZONES).scoped("node1")
    assert set(load_documents(kept).doc.groups) == {"pair", "solo", "dup"}


def test_a_group_edit_touches_the_nodes_keeping_it() -> None:
    placement = {"a": "node1", "b": "node2", "c": "node2"}
    nodes = ["node1", "node2", "node3"]
    old = Scoper({"policy.yaml": MICRO}, placement, zone_of=MICRO_ZONES)
    edits = {
        "  solo: [10.0.0.9]": ("  solo: [10.0.0.19]", set()),  # named by nobody
        "  pair: [vm:a, vm:b]": ("  pair: [vm:a, 10.0.0.66]", {"node1", "node2"}),  # named by a, held by dup
        "    - 10.0.0.8": ("    - 10.0.0.18", {"node2"}),  # dup's member: b's node only
        "  pair: [vm:a, vm:b]\n": ("  pair: [vm:a, vm:b, group:solo]\n", {"node1", "node2"}),  # nests solo: they keep it too
        "      - {direction: in, action: accept, from: vm:b, service: ssh}": (
            "      - {direction: in, action: accept, from: group:solo, service: ssh}", {"node1"}),  # a's rule names solo
    }
    for before, (after, touched) in edits.items():
        text = MICRO.replace(before, after)
        assert text != MICRO, before
        new = Scoper.following(old, {"policy.yaml": text}, placement, zone_of=MICRO_ZONES)
        fresh = Scoper({"policy.yaml": text}, placement, zone_of=MICRO_ZONES)
        assert affected(old, new, nodes) == touched, after
        shared = shared_edit(old, new)
        for node in nodes:
            assert new.scoped(node) == fresh.scoped(node), (after, node)
            if node not in touched:
                assert new.scoped(node) == old.scoped(node), (after, node)
            elif shared is not None:
                assert apply_delta(old.scoped(node), shared) == new.scoped(node), (after, node)
    # a member's line added to a block-style group: lines move, every node; not shared
    grown = Scoper.following(old, {"policy.yaml": MICRO.replace("    - 10.0.0.8\n", "    - 10.0.0.8\n    - 10.0.0.7\n")}, placement, zone_of=MICRO_ZONES)
    assert affected(old, grown, nodes) == set(nodes) and shared_edit(old, grown) is None


def test_affected_nodes_of_a_zone_rule_change() -> None:
    placement = {"a": "node1", "b": "node2", "c": "node2"}
    nodes = ["node1", "node2", "node3"]

    def scoper(text: str, zone_of: dict[str, str | None] | None = MICRO_ZONES) -> Scoper:
        return Scoper({"policy.yaml": text}, placement, zone_of=zone_of)

    old = scoper(MICRO)
    in_place = scoper(MICRO.replace("udp: 123", "udp: 124"))
    assert affected(old, in_place, nodes) == {"node1"}  # front's VMs are on node1 alone
    assert old.scoped("node2") == in_place.scoped("node2") and old.scoped("node1") != in_place.scoped("node1")
    assert affected(old, scoper(MICRO.replace("udp: 161", "udp: 162")), nodes) == set()  # idle: nobody's
    added = scoper(MICRO.replace("      - {direction: in, action: accept, udp: 53}\n", "      - {direction: in, action: accept, udp: 53}\n      - {direction: in, action: drop}\n"))
    assert affected(old, added, nodes) == set(nodes)  # lines moved: every node
    assert affected(old, scoper(MICRO, {**MICRO_ZONES, "c": "front"}), nodes) == set(nodes)  # a VM changed zone
    unknown = scoper(MICRO, None)
    assert affected(unknown, scoper(MICRO.replace("udp: 123", "udp: 124"), None), nodes) == set(nodes)  # zones not known


# Lines an edit may put anywhere: rule lines at every indentation, blanks, comments,
# a new VM key, a top-level key, an anchor, a dedented key that ends a block.
EDIT_LINES = [
    "      - {direction: in, action: accept, tcp: 9999}",
    "    - {direction: out, action: drop, tcp: 1}",
    "      tcp: 80",
    "        udp: 53",
    "",
    "   # a comment",
    "# top comment",
    "  d:",
    "    host: node1",
    "    rules:",
    "settings: {}",
    "      - &x {direction: in, action: accept}",
    "    nics: [{network: lan, ips: [10.0.0.40]}]",
    # groups: members, nesting, a new entry, a block-style entry, references to them
    "  pair: [vm:a, 10.0.0.77]",
    "  pair: [group:solo, vm:b]",
    "  solo: [10.0.0.78]",
    "  solo:",
    "    - group:pair",
    "    - 10.0.0.79",
    "  - 10.0.0.80",
    "      - {direction: in, action: accept, from: group:solo, tcp: 7}",
    "    - {direction: out, action: accept, to: group:pair}",
    "  management: [group:solo]",
    "groups:",
    "  \"x\": [10.0.0.81]",
]

MICRO_PLACEMENT = {"a": "node1", "b": "node2", "c": "node2", "d": "node1"}
ZONES_OF_EDITED = {**MICRO_ZONES, "d": "idle"}


def _edited_micro(edits: list[tuple[str, int, str]]) -> tuple[dict[str, str], Scoper, dict[str, str]]:
    """MICRO's placement, its scoper, and its documents with `edits` made (an index
    past the end wraps around)."""
    parent = Scoper({"policy.yaml": MICRO, "other.yaml": "version: 1\n"}, MICRO_PLACEMENT, zone_of=ZONES_OF_EDITED)
    lines = MICRO.split("\n")
    for kind, at, text in edits:
        at %= len(lines)
        if kind == "replace":
            lines[at] = text
        elif kind == "insert":
            lines.insert(at, text)
        elif len(lines) > 1:
            del lines[at]
    return MICRO_PLACEMENT, parent, {"policy.yaml": "\n".join(lines), "other.yaml": "version: 1\n"}


@given(st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 10_000), st.sampled_from(EDIT_LINES)),
                min_size=1, max_size=3))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_scoper_following_its_parent_finds_the_blocks_a_scan_finds(edits: list[tuple[str, int, str]]) -> None:
    """Scoper.following reuses the parent's blocks for edits inside one block; whatever
    the edit, its blocks are exactly those of a fresh scan."""
    placement, parent, after = _edited_micro(edits)
    follower, fresh = Scoper.following(parent, after, placement, zone_of=ZONES_OF_EDITED), Scoper(after, placement, zone_of=ZONES_OF_EDITED)
    assert follower.blocks == fresh.blocks
    # the groups likewise: a revision's documents for a node never depend on the path to it
    assert follower.sections == fresh.sections
    use, scanned = follower.group_use, fresh.group_use
    assert (use.held, use.by_owner, use.everywhere) == (scanned.held, scanned.by_owner, scanned.everywhere)
    for node in ("node1", "node2", "node3"):
        assert follower.scoped(node) == fresh.scoped(node), node


def test_a_scoper_following_its_parent_reuses_its_blocks_for_an_edit_inside_one() -> None:
    placement = {"a": "node1", "b": "node2", "c": "node2"}
    parent = Scoper({"policy.yaml": MICRO}, placement)
    added = MICRO.replace("      tcp: 443\n", "      tcp: 443\n    - {direction: in, action: drop}\n")
    follower = Scoper.following(parent, {"policy.yaml": added}, placement)
    assert follower.blocks == Scoper({"policy.yaml": added}, placement).blocks
    assert follower.blocks[("vm", "b")].end == parent.blocks[("vm", "b")].end + 1
    import zonewall.policy.scope as scope

    scans = []
    real = scope.rules_blocks
    scope.rules_blocks = lambda text, *known: scans.append(text) or real(text, *known)  # type: ignore[assignment]
    try:
        Scoper.following(parent, {"policy.yaml": added}, placement)
        assert scans == []  # inside b's block: nothing scanned
        Scoper.following(parent, {"policy.yaml": MICRO.replace("  b:\n", "  bb:\n")}, placement)
        assert len(scans) == 1  # a VM key edited: scanned again
    finally:
        scope.rules_blocks = real  # type: ignore[assignment]


def test_a_scoper_following_its_parent_moves_its_blocks_for_an_edit_of_another_section() -> None:
    """A group's members edited (a line rewritten, a line added): the blocks are the
    parent's, those after the edit moved, and nothing is scanned; an edit that adds a
    top-level key is scanned."""
    import zonewall.policy.scope as scope

    placement = {"a": "node1", "b": "node2", "c": "node2"}
    parent = Scoper({"policy.yaml": MICRO}, placement, zone_of=MICRO_ZONES)
    edits = {
        "member rewritten": MICRO.replace("  pair: [vm:a, vm:b]\n", "  pair: [vm:a, vm:b, 10.0.0.99]\n"),
        "group added": MICRO.replace("  pair: [vm:a, vm:b]\n", "  pair: [vm:a, vm:b]\n  more:\n    - 10.0.0.98\n"),
        "settings edited": MICRO.replace("  default: {in: drop, out: accept}", "  default: {in: reject, out: accept}"),
    }
    scanned = {name: Scoper({"policy.yaml": text}, placement, zone_of=MICRO_ZONES).blocks for name, text in edits.items()}
    scans: list[str] = []
    real = scope.rules_blocks
    scope.rules_blocks = lambda text, *known: scans.append(text) or real(text, *known)  # type: ignore[assignment]
    try:
        for name, text in edits.items():
            follower = Scoper.following(parent, {"policy.yaml": text}, placement, zone_of=MICRO_ZONES)
            assert scans == [], name
            assert follower.blocks == scanned[name], name
        added = Scoper.following(parent, {"policy.yaml": edits["group added"]}, placement, zone_of=MICRO_ZONES)
        assert added.blocks[("vm", "a")].start == parent.blocks[("vm", "a")].start + 2
        top = MICRO.replace("  pair: [vm:a, vm:b]\n", "  pair: [vm:a, vm:b]\nservices: {}\n")
        Scoper.following(parent, {"policy.yaml": top}, placement, zone_of=MICRO_ZONES)
        assert len(scans) == 1  # a top-level key added: scanned
        anchored = MICRO.replace("  pair: [vm:a, vm:b]\n", "  pair: &p [vm:a, vm:b]\n")
        assert Scoper.following(parent, {"policy.yaml": anchored}, placement, zone_of=MICRO_ZONES).blocks == {}  # unsafe now
    finally:
        scope.rules_blocks = real  # type: ignore[assignment]


@given(st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 10_000), st.sampled_from(EDIT_LINES)),
                min_size=1, max_size=3))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_an_edit_every_node_shares_gives_each_node_what_scoping_gives(edits: list[tuple[str, int, str]]) -> None:
    """Whatever the edit: when shared_edit finds one, every node's previous documents
    with it applied are exactly its documents scoped anew."""
    placement, parent, after = _edited_micro(edits)
    new = Scoper.following(parent, after, placement, zone_of=ZONES_OF_EDITED)
    shared = shared_edit(parent, new)
    if shared is not None:  # what NodeStates does: the nodes the edit affects take it, the others keep theirs
        nodes = ("node1", "node2", "node3")
        for node in affected(parent, new, nodes):
            assert apply_delta(parent.scoped(node), shared) == new.scoped(node), node


@given(st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 10_000), st.sampled_from(EDIT_LINES)),
                min_size=1, max_size=3))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_an_edit_inside_one_block_gives_every_node_what_scoping_gives(edits: list[tuple[str, int, str]]) -> None:
    """Whatever the edit: when block_edit finds one, every node's previous documents
    with its delta for that node applied (none: unchanged) are exactly its documents
    scoped anew, and the nodes taking the block's lines are those holding it."""
    placement, parent, after = _edited_micro(edits)
    # the new revision's scoper following its parent's work, and made afresh (a restart)
    for new in (Scoper.following(parent, after, placement, zone_of=ZONES_OF_EDITED), Scoper(after, placement, zone_of=ZONES_OF_EDITED)):
        edit = block_edit(parent, new)
        if edit is not None:
            for node in ("node1", "node2", "node3"):
                delta = edit.delta_for(node)
                assert (apply_delta(parent.scoped(node), delta) if delta is not None else parent.scoped(node)) == new.scoped(node), node


def test_a_rule_line_edited_or_added_in_one_block_is_a_block_edit() -> None:
    """a's rules: a line edited in place goes to a's node only; a line added goes to
    a's node as written and to the others as an empty line; a line naming a group
    a's rules did not name changes what node1 keeps: scoped anew."""
    placement = {"a": "node1", "b": "node2", "c": "node2"}
    old = Scoper({"policy.yaml": MICRO}, placement, zone_of=MICRO_ZONES)
    line = "      - {direction: in, action: accept, from: vm:b, service: ssh}\n"
    in_place = Scoper.following(old, {"policy.yaml": MICRO.replace(line, line.replace("ssh", "http"))}, placement, zone_of=MICRO_ZONES)
    edit = block_edit(old, in_place)
    assert edit is not None and edit.holding == {"node1"} and edit.blanked is None
    assert apply_delta(old.scoped("node1"), edit.kept) == in_place.scoped("node1")
    added = Scoper.following(old, {"policy.yaml": MICRO.replace(line, line + "      - {direction: in, action: drop, udp: 5}\n")}, placement, zone_of=MICRO_ZONES)
    edit = block_edit(old, added)
    assert edit is not None and edit.blanked is not None and edit.blanked["changed"]["policy.yaml"][2] == [""]
    for node in ("node1", "node2", "node3"):
        assert apply_delta(old.scoped(node), edit.delta_for(node)) == added.scoped(node), node  # type: ignore[arg-type]
    naming = Scoper.following(old, {"policy.yaml": MICRO.replace(line, line.replace("vm:b", "group:solo"))}, placement, zone_of=MICRO_ZONES)
    assert block_edit(old, naming) is None
    assert block_edit(old, Scoper.following(old, {"policy.yaml": MICRO.replace("udp: 53", "udp: 54")}, placement, zone_of=MICRO_ZONES)).holding == {"node1"}  # type: ignore[union-attr]


@given(st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 10_000), st.sampled_from(EDIT_LINES)),
                min_size=1, max_size=3))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_nodes_an_edit_leaves_alone_keep_their_documents(edits: list[tuple[str, int, str]]) -> None:
    """Whatever the edit: a node `affected` leaves out has exactly the documents it had."""
    placement, parent, after = _edited_micro(edits)
    new = Scoper.following(parent, after, placement, zone_of=ZONES_OF_EDITED)
    nodes = ("node1", "node2", "node3")
    for node in set(nodes) - affected(parent, new, nodes):
        assert parent.scoped(node) == new.scoped(node), node


def test_group_zone_and_settings_edits_are_shared_a_vm_rule_edit_is_not() -> None:
    text = policy_text(40, nodes=4)
    documents = {"policy.yaml": text}
    placement = {name: vm.host for name, vm in load_documents(documents).doc.vms.items()}
    parent = Scoper(documents, placement)
    lines = text.split("\n")
    group = next(n for n, line in enumerate(lines) if line.startswith("  g3: ["))
    zone_rule = next(n for n in range(lines.index("zones:"), len(lines)) if lines[n].startswith("      - {") and "tcp:" in lines[n])
    vm_rule = next(n for n in range(lines.index("vms:"), len(lines)) if lines[n].startswith("      - {") and "tcp:" in lines[n])

    def edited(at: int, new: list[str]) -> Scoper:
        return Scoper.following(parent, {"policy.yaml": "\n".join(lines[:at] + new + lines[at + 1:])}, placement)

    zone_of = {name: vm.zone for name, vm in load_documents(documents).doc.vms.items()}
    zoned = Scoper(documents, placement, zone_of=zone_of)
    zone_edit = {"policy.yaml": "\n".join(lines[:zone_rule] + [lines[zone_rule].replace("tcp:", "udp:", 1)] + lines[zone_rule + 1:])}
    # zones known: a zone's rules are some nodes' lines and others' blanks, so no edit of them is shared
    assert shared_edit(zoned, Scoper.following(zoned, zone_edit, placement, zone_of=zone_of)) is None
    cases = {
        "group member": (edited(group, [lines[group].replace("[", "[203.0.113.9, ", 1)]), True),
        "zone rule in place": (edited(zone_rule, [lines[zone_rule].replace("tcp:", "udp:", 1)]), True),
        "zone rule added": (edited(zone_rule, [lines[zone_rule], "      - {direction: in, action: drop, tcp: 7}"]), True),
        "vm rule in place": (edited(vm_rule, [lines[vm_rule].replace("tcp:", "udp:", 1)]), False),
    }
    for name, (new, shares) in cases.items():
        assert new.documents != parent.documents, name  # each case edits something
        shared = shared_edit(parent, new)
        assert (shared is not None) == shares, name
        if shared is not None:  # the nodes it affects take it, the others keep theirs (NodeStates)
            nodes = sorted(set(placement.values()))
            touched = affected(parent, new, nodes)
            for node in nodes:
                before = apply_delta(parent.scoped(node), shared) if node in touched else parent.scoped(node)
                assert before == new.scoped(node), (name, node)
