"""A diff row's large sides name the zones they hold (analysis/rowsides.py): exact,
shorter, and only where a side is large."""

from __future__ import annotations

from io import StringIO
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from tests.analysis.test_diff import Pair, pairs
from zonewall.analysis import rowsides
from zonewall.analysis.diff import diff_policies
from zonewall.analysis.render import print_diff_json
from zonewall.analysis.rowsides import NAMED_FROM, SideLister, expand
from zonewall.policy.loader import load_policy_text
from zonewall.policy.resolve import Policy

# ---------------------------------------------------------------- the lister alone

ZONES = {"a": frozenset(f"vm:a{i}" for i in range(6)), "b": frozenset({"vm:b0", "vm:b1@x", "vm:b1@y"}), "c": frozenset({"vm:c0"})}
LABELS = sorted(set().union(*ZONES.values())) + ["host:n1", "outside: any", "vm:free"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.frozensets(st.sampled_from(LABELS)), min_size=1, max_size=5))
def test_a_listed_side_stands_for_exactly_its_labels_and_is_never_longer(sides: list[frozenset[str]]) -> None:
    """Every zone named where it shortens the list: expanded, the list is the side;
    it is never longer than the side; names and labels sorted, exclusions after."""
    as_sets = [set(side) for side in sides]
    with patch.object(rowsides, "NAMED_FROM", 0):
        listed = SideLister(as_sets, lambda: ZONES)
    for side in as_sets:
        out = listed(side)
        assert expand(out, ZONES) == side
        assert len(out) <= len(side)
        kept = [entry for entry in out if not entry.startswith("!")]
        assert out == kept + sorted(entry for entry in out if entry.startswith("!")) and kept == sorted(kept)
        for name, labels in ZONES.items():  # named exactly where that is shorter
            held = len(labels & side)
            assert (f"zone:{name}" in out) == (held > 0 and 2 * (len(labels) - held) + 1 < len(labels)), (name, side, out)


def test_a_zone_all_but_one_of_whose_labels_a_side_holds_is_named_with_that_one_excluded() -> None:
    side = set(ZONES["a"] - {"vm:a3"}) | {"host:n1"}
    with patch.object(rowsides, "NAMED_FROM", 0):
        assert SideLister([side], lambda: ZONES)(side) == ["host:n1", "zone:a", "!vm:a3"]


def test_a_small_side_is_listed_label_by_label() -> None:
    side = set(ZONES["a"])
    assert len(side) < NAMED_FROM
    asked: list[bool] = []
    assert SideLister([side], lambda: asked.append(True) or ZONES)(side) == sorted(side)
    assert not asked  # (the zones are not even looked up)


# ---------------------------------------------------------------- a cluster's zone edit


def _cluster(port: int, blocked_by: int | None = None) -> str:
    """Two zones of 40 VMs and a VM in none; zone db opens `port` to everyone. VM
    web`blocked_by` refuses to send to it."""
    lines = ["version: 1", "settings:", "  default: {in: drop, out: accept}", "hosts:",
             "  node1: {address: [192.168.100.11]}", "networks:", "  lan: {bridge: vmbr0, subnets: [10.1.0.0/16]}",
             "zones:", "  web: {}", "  db:", "    rules:", f"      - {{id: db-open, direction: in, action: accept, tcp: {port}}}", "vms:"]
    for zone, base in (("web", 0), ("db", 100)):
        for i in range(40):
            lines += [f"  {zone}{i}:", "    host: node1", f"    zone: {zone}", f"    nics: [{{network: lan, ips: [10.1.{base // 100}.{i + 10}]}}]"]
            if zone == "web" and i == blocked_by:
                lines += ["    rules:", "      - {direction: out, action: reject, tcp: [1000-2000]}"]
    lines += ["  lone:", "    host: node1", "    nics: [{network: lan, ips: [10.1.9.9]}]"]
    return "\n".join(lines) + "\n"


def zone_labels(policy: Policy) -> dict[str, frozenset[str]]:
    """Each zone's labels, as rows write them (one NIC: `vm:NAME`), independently of the diff."""
    found: dict[str, set[str]] = {}
    for name, vm in policy.doc.vms.items():
        if vm.zone is not None:
            found.setdefault(vm.zone, set()).update(f"vm:{name}" if len(vm.nics) == 1 else f"vm:{name}@{nic.network}" for nic in vm.nics)
    return {zone: frozenset(labels) for zone, labels in found.items()}


def test_a_zone_rule_open_to_everyone_names_the_zones_in_its_rows() -> None:
    old, new = load_policy_text(_cluster(1234, blocked_by=7)), load_policy_text(_cluster(1235, blocked_by=7))
    result = diff_policies(old, new)
    rows = result.to_json()["flows"]
    everyone = ["host:node1", "outside: any ipv4", "vm:lone", "zone:db", "zone:web", "!vm:web7"]
    # web7 refuses to send tcp 1000-2000 (its own rule): the one peer left out of the rows
    assert [(r["change"], r["from"], r["to"], r["services"]) for r in rows] == [
        ("closed", everyone, ["zone:db"], ["tcp 1234"]), ("opened", everyone, ["zone:db"], ["tcp 1235"])]
    for row, listed in zip(result.rows, rows):  # exact: each side is the labels it stands for
        assert expand(listed["from"], zone_labels(new)) == row.src and expand(listed["to"], zone_labels(new)) == row.dst


def _opened_to_lone(senders: int) -> list[str]:
    """`from` of the row a rule of VM lone opens to the first `senders` web VMs."""
    group = "groups:\n  some: [" + ", ".join(f"vm:web{i}" for i in range(senders)) + "]\n"
    base = _cluster(1234).replace("zones:\n", group + "zones:\n")
    rule = "  lone:\n    rules:\n      - {direction: in, action: accept, tcp: 22, from: group:some}\n"
    (row,) = diff_policies(load_policy_text(base), load_policy_text(base.replace("  lone:\n", rule))).to_json()["flows"]
    assert row["to"] == ["vm:lone"] and row["change"] == "opened"
    return row["from"]


def test_a_side_of_fewer_than_named_from_labels_lists_them_and_a_larger_one_names_its_zone() -> None:
    assert _opened_to_lone(NAMED_FROM - 1) == sorted(f"vm:web{i}" for i in range(NAMED_FROM - 1))
    assert _opened_to_lone(NAMED_FROM) == ["zone:web"] + sorted(f"!vm:web{i}" for i in range(NAMED_FROM, 40))


# ---------------------------------------------------------------- random policies


@settings(deadline=None, derandomize=True, database=None, max_examples=40)
@given(pairs())
def test_every_side_listed_with_its_zones_named_is_exact_on_random_pairs(pair: Pair) -> None:
    """With every side's zones named (no size floor), each row's JSON sides expand
    to the labels the row holds."""
    new = load_policy_text(pair.new)
    with patch.object(rowsides, "NAMED_FROM", 0):
        result = diff_policies(load_policy_text(pair.old), new)
    zones = zone_labels(new)
    for row, listed in zip(result.rows, result.to_json()["flows"]):
        assert expand(listed["from"], zones) == row.src, (listed, row.src)
        assert expand(listed["to"], zones) == row.dst, (listed, row.dst)


def test_the_diff_table_shows_a_sides_exclusions() -> None:
    """`zonewall diff`'s table (render.print_diff_json): the zones named, then what they leave out."""
    result = diff_policies(load_policy_text(_cluster(1234, blocked_by=7)), load_policy_text(_cluster(1235, blocked_by=7)))
    out = StringIO()
    print_diff_json(Console(file=out, width=400), result.to_json())
    assert "zone:db, zone:web except vm:web7" in out.getvalue()
    assert "!vm:web7" not in out.getvalue()
