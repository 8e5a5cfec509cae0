"""Which rules an apply only renamed (dataplane/renames.py): chain by chain, kernel
rules that say the same in the same order under other ids; nothing told where that
is not certain."""

from __future__ import annotations

from zonewall.dataplane.renames import renamed

CHAIN = ("inet", "vm-web1-in")


def key(rule: str, scope: str = "web1") -> tuple[str, str, str, str]:
    return ("vm", scope, "in", rule)


def layout(*rules: tuple[str, str], chain: tuple[str, str] = CHAIN, scope: str = "web1") -> dict:
    """(what the rule says, its id) in order."""
    return {chain: [(said.encode(), key(rule, scope)) for said, rule in rules]}


def test_a_line_added_above_moves_every_id_by_one_and_each_rule_says_which_it_had() -> None:
    before = layout(("ssh", "policy:10"), ("https", "policy:11"), ("dns", "policy:12"))
    after = layout(("ssh", "policy:11"), ("https", "policy:12"), ("dns", "policy:13"))
    assert renamed(before, after) == {key("policy:11"): "policy:10", key("policy:12"): "policy:11", key("policy:13"): "policy:12"}


def test_a_rule_added_to_the_chain_is_new_and_the_rules_after_it_renamed() -> None:
    before = layout(("ssh", "policy:10"), ("https", "policy:11"), ("default", "default-in"))
    after = layout(("smtp", "policy:10"), ("ssh", "policy:11"), ("https", "policy:12"), ("default", "default-in"))
    assert renamed(before, after) == {key("policy:11"): "policy:10", key("policy:12"): "policy:11"}


def test_an_edited_rule_is_not_renamed_and_an_unchanged_chain_tells_nothing() -> None:
    before = layout(("ssh", "policy:10"), ("https", "policy:11"))
    after = layout(("ssh", "policy:11"), ("https-8443", "policy:12"))  # the second rule edited as well
    assert renamed(before, after) == {key("policy:11"): "policy:10"}
    assert renamed(before, before) == {}
    assert renamed({}, after) == {}


def test_rules_of_several_kernel_rules_move_only_when_every_one_of_them_matched() -> None:
    both = layout(("ssh v4", "policy:10"), ("ssh v6", "policy:10"), ("https", "policy:11"))
    moved = layout(("ssh v4", "policy:11"), ("ssh v6", "policy:11"), ("https", "policy:12"))
    assert renamed(both, moved) == {key("policy:11"): "policy:10", key("policy:12"): "policy:11"}
    half = layout(("ssh v4", "policy:11"), ("ssh v6 edited", "policy:11"), ("https", "policy:12"))
    assert renamed(both, half) == {key("policy:12"): "policy:11"}  # policy:11's ipv6 rule says something else now


def test_one_old_rule_taken_by_two_new_ids_or_another_scope_tells_nothing() -> None:
    before = layout(("ssh", "policy:10"))
    after = layout(("ssh", "policy:11"), ("ssh", "policy:12"))  # the twin after it is new: either could be the old one
    found = renamed(before, after)
    assert found in ({key("policy:11"): "policy:10"}, {key("policy:12"): "policy:10"})  # one, never both
    other_scope = {CHAIN: [(b"ssh", ("zone", "zone:dmz", "in", "policy:11"))]}
    assert renamed(before, other_scope) == {}
