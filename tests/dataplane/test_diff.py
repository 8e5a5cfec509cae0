"""diff_commands: minimal, ordered, and equivalent to a fresh apply (FakeBackend)."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings

from zonewall.compiler.diff import diff_commands, recreate_reason
from zonewall.compiler.ir import Hook, Limit, Ruleset, replace_commands, set_object
from zonewall.dataplane.fake import FakeBackend
from zonewall.dataplane.readback import canonical_readback, listings

from .samples import TABLE, node_ruleset, random_ruleset


def _keys(*rulesets: Ruleset) -> list[tuple[str, str]]:
    return sorted({(t.family, t.name) for r in rulesets for t in r.tables})


def fresh(new: Ruleset, keys: list[tuple[str, str]]) -> list:
    fake = FakeBackend()
    fake.run(replace_commands(new))
    return canonical_readback(listings(fake, keys))


def via_diff(old: Ruleset, new: Ruleset, keys: list[tuple[str, str]]) -> tuple[list, FakeBackend]:
    fake = FakeBackend()
    fake.run(replace_commands(old))
    fake.run(diff_commands(old, new))
    return canonical_readback(listings(fake, keys)), fake


def assert_equivalent(old: Ruleset, new: Ruleset) -> list[dict]:
    keys = _keys(old, new)
    got, _ = via_diff(old, new, keys)
    assert got == fresh(new, keys)
    return diff_commands(old, new)


def verbs(commands: list[dict]) -> list[str]:
    return [f"{verb} {kind}" for c in commands for verb, body in c.items() for kind in body]


def test_identical_rulesets_give_an_empty_diff() -> None:
    assert diff_commands(node_ruleset(), node_ruleset()) == []


def test_diff_is_deterministic() -> None:
    old, new = node_ruleset(), node_ruleset({"tap1": 22, "tap3": 443}, admins=("10.0.0.9",))
    assert diff_commands(old, new) == diff_commands(old, new)


def test_adding_a_guest_touches_only_the_new_chain_and_the_map() -> None:
    old, new = node_ruleset(), node_ruleset({"tap1": 22, "tap2": 80, "tap3": 443})
    commands = assert_equivalent(old, new)
    assert verbs(commands) == ["add chain", "add map", "add rule", "add rule", "add rule"]
    assert commands[0]["add"]["chain"]["name"] == "g_tap3"
    # the map's own definition with the one new element (libnftables reads no set's
    # elements for it, as it would for `add element`)
    assert commands[1]["add"]["map"]["name"] == "guest_in"
    assert commands[1]["add"]["map"]["elem"] == [["tap3", {"jump": {"target": "g_tap3"}}]]


def test_removing_a_guest_unhooks_the_map_before_deleting_the_chain() -> None:
    old, new = node_ruleset(), node_ruleset({"tap1": 22})
    commands = assert_equivalent(old, new)
    assert verbs(commands) == ["flush chain", "delete element", "delete chain"]
    assert commands[1]["delete"]["element"]["elem"] == ["tap2"]  # keys only


def test_changed_chain_is_flushed_and_rewritten() -> None:
    old, new = node_ruleset(), node_ruleset({"tap1": 2222, "tap2": 80})
    commands = assert_equivalent(old, new)
    assert verbs(commands) == ["flush chain"] + ["add rule"] * 3
    assert commands[0]["flush"]["chain"]["name"] == "g_tap1"


def test_set_element_delta() -> None:
    old, new = node_ruleset(), node_ruleset(admins=("10.0.0.2", "10.0.0.3"))
    commands = assert_equivalent(old, new)
    assert verbs(commands) == ["delete element", "add set"]
    assert commands[0]["delete"]["element"]["elem"] == ["10.0.0.1"]
    added = commands[1]["add"]["set"]
    assert added["elem"] == ["10.0.0.3"]  # only the new one: the kept 10.0.0.2 is not sent again
    definition = set_object(new.table("inet", TABLE), new.table("inet", TABLE).set("admins"))["set"]
    assert {k: v for k, v in added.items() if k != "elem"} == {k: v for k, v in definition.items() if k != "elem"}


def test_map_value_change_is_delete_then_add() -> None:
    old = node_ruleset()
    inet = old.table("inet", TABLE)
    guest_in = inet.set("guest_in")
    elems = tuple((k, {"goto": {"target": "g_tap2"}}) if k == "tap1" else (k, v) for k, v in guest_in.elements)
    sets = tuple(dataclasses.replace(s, elements=elems) if s.name == "guest_in" else s for s in inet.sets)
    new = dataclasses.replace(old, tables=(dataclasses.replace(inet, sets=sets),) + old.tables[1:])
    commands = assert_equivalent(old, new)
    assert verbs(commands) == ["delete element", "add map"]


def test_redefined_set_rewrites_its_users() -> None:
    # ipv4_addr set -> interval set: delete + re-add, so every chain using @admins is
    # flushed first (the kernel refuses to delete a set a rule still uses).
    old, new = node_ruleset(), node_ruleset(admins=("10.0.0.0/8",))
    commands = assert_equivalent(old, new)
    v = verbs(commands)
    assert v.index("flush chain") < v.index("delete set") < v.index("add set") < v.index("add rule")
    assert v.count("flush chain") == 2  # g_tap1 and g_tap2 use @admins


def test_changed_limit_is_replaced_not_silently_kept() -> None:
    old, new = node_ruleset(), node_ruleset(log_rate=50)
    commands = assert_equivalent(old, new)
    v = verbs(commands)
    assert v.index("flush chain") < v.index("delete limit") < v.index("add limit") < v.index("add rule")
    assert commands[v.index("add limit")]["add"]["limit"]["rate"] == 50


def test_policy_change_updates_the_base_chain_in_place() -> None:
    commands = assert_equivalent(node_ruleset(), node_ruleset(policy="accept"))
    assert verbs(commands) == ["add chain"]
    assert commands[0]["add"]["chain"]["policy"] == "accept"


def test_priority_change_recreates_the_table() -> None:
    old, new = node_ruleset(), node_ruleset(priority=10)
    assert recreate_reason(old.table("inet", TABLE), new.table("inet", TABLE)) is not None
    commands = assert_equivalent(old, new)
    # never by deleting the table (base chain hooks are not switched atomically):
    # rules are flushed, the changed base chain alone is deleted and re-added
    assert "delete table" not in verbs(commands)
    assert verbs(commands)[0] == "flush table"
    # The other table is untouched.
    assert all(body[k].get("family", "inet") == "inet" for c in commands for body in c.values() for k in body)


def test_tables_come_and_go() -> None:
    old, new = node_ruleset(bridge_table=False), node_ruleset()
    assert verbs(assert_equivalent(old, new))[0] == "add table"
    assert verbs(assert_equivalent(new, old)) == ["delete table"]


def test_new_base_chain_and_limit() -> None:
    old = node_ruleset()
    inet = old.table("inet", TABLE)
    extra = dataclasses.replace(inet.chain("input"), name="output", hook=Hook("filter", "output", 0, "accept"))
    new_inet = dataclasses.replace(
        inet, chains=inet.chains + (extra,), limits=inet.limits + (Limit("l2", 3, "minute"),)
    )
    new = dataclasses.replace(old, tables=(new_inet,) + old.tables[1:])
    assert verbs(assert_equivalent(old, new)) == ["add chain", "add limit", "add rule"]


@settings(max_examples=300, deadline=None)
@given(random_ruleset(), random_ruleset())
def test_diff_equals_fresh_apply(old: Ruleset, new: Ruleset) -> None:
    assert_equivalent(old, new)
    assert diff_commands(new, new) == []
