"""diff_commands in the kernel: old + diff lists exactly like a fresh apply of new."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from zonewall.compiler import nftexpr as x
from zonewall.compiler.diff import diff_commands
from zonewall.compiler.ir import Ruleset, replace_commands, set_object
from zonewall.compiler.transactions import diff_transactions
from zonewall.dataplane.apply import remove_ruleset
from zonewall.dataplane.backend import LibNftBackend, NftError
from zonewall.dataplane.readback import canonical_readback, listings

from .samples import TABLE, node_ruleset, random_ruleset, renumbered

pytestmark = pytest.mark.kernel

KEYS = [("inet", "zwr"), ("ip", "zwr2"), ("inet", "zonewall"), ("bridge", "zonewall_br")]


@pytest.fixture
def pair(netns_factory) -> Iterator[tuple[LibNftBackend, LibNftBackend]]:  # type: ignore[no-untyped-def]
    with LibNftBackend(netns_factory()) as a, LibNftBackend(netns_factory()) as b:
        yield a, b


def check(pair: tuple[LibNftBackend, LibNftBackend], old: Ruleset, new: Ruleset) -> None:
    incremental, reference = pair
    remove_ruleset(incremental, KEYS)
    remove_ruleset(reference, KEYS)
    incremental.run(replace_commands(old))
    incremental.run(diff_commands(old, new))
    reference.run(replace_commands(new))
    got = canonical_readback(listings(incremental, KEYS))
    want = canonical_readback(listings(reference, KEYS))
    assert got == want


@pytest.mark.parametrize(
    "old,new",
    [
        (node_ruleset(), node_ruleset({"tap1": 22, "tap2": 80, "tap3": 443})),
        (node_ruleset(), node_ruleset({"tap1": 22})),
        (node_ruleset(), node_ruleset(admins=("10.0.0.0/8",))),  # set redefined: its users rewritten
        (node_ruleset(admins=("10.0.0.0/16", "10.1.0.0/16")), node_ruleset(admins=("10.0.0.0/24", "10.1.0.0/16"))),
        # added elements go as the set's definition with them: beside kept intervals
        # they touch (after one, between two) they stay separate intervals, as fresh
        (node_ruleset(admins=("10.0.0.0/24", "10.9.0.0/16")), node_ruleset(admins=("10.0.0.0/24", "10.0.1.0/24", "10.9.0.0/16"))),
        (node_ruleset(admins=("10.0.0.0/24", "10.0.2.0/24")), node_ruleset(admins=("10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"))),
        (node_ruleset(), node_ruleset(log_rate=77)),  # a plain `add limit` would silently keep 10/s
        (node_ruleset(), node_ruleset(policy="accept")),
        (node_ruleset(), node_ruleset(priority=5)),  # hook change: table re-created
        (node_ruleset(), node_ruleset(bridge_table=False)),
        (node_ruleset(bridge_table=False), node_ruleset({"tap3": 1})),
    ],
    ids=["add-guest", "remove-guest", "redefine-set", "interval-delta", "interval-beside", "interval-between", "limit", "policy", "priority",
         "drop-table", "add-table"],
)
def test_cases(pair: tuple[LibNftBackend, LibNftBackend], old: Ruleset, new: Ruleset) -> None:
    check(pair, old, new)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(random_ruleset(), random_ruleset())
def test_random_rulesets(pair: tuple[LibNftBackend, LibNftBackend], old: Ruleset, new: Ruleset) -> None:
    check(pair, old, new)


def test_renumbered_chains_follow_the_change_in_their_own_transactions(pair: tuple[LibNftBackend, LibNftBackend]) -> None:
    guests = {f"tap{n}": 1000 + n for n in range(8)}
    old = node_ruleset(guests)
    changed = node_ruleset({**guests, "tap0": 2222})
    new = renumbered(changed, {f"g_tap{n}" for n in range(1, 8)})
    incremental, reference = pair
    remove_ruleset(incremental, KEYS)
    incremental.run(replace_commands(old))
    first, *renumbering = diff_transactions(old, new, batch=5)
    incremental.run(first)
    remove_ruleset(reference, KEYS)
    reference.run(replace_commands(changed))  # the change in force, the ids not yet moved
    assert canonical_readback(listings(incremental, KEYS)) == canonical_readback(listings(reference, KEYS))
    assert len(renumbering) == 4  # 7 chains of 4 commands, two a transaction
    for transaction in renumbering:
        incremental.run(transaction)
    remove_ruleset(reference, KEYS)
    reference.run(replace_commands(new))
    assert canonical_readback(listings(incremental, KEYS)) == canonical_readback(listings(reference, KEYS))


def test_an_element_added_as_the_sets_definition_needs_that_very_definition(pair: tuple[LibNftBackend, LibNftBackend]) -> None:
    """What compiler/diff._element_delta relies on: `add set` of an existing set with
    its own definition adds the elements and keeps the others; with another
    definition the kernel refuses it and the set stays as it was (the apply then
    falls back to a full replace, never to a set of the wrong kind)."""
    backend, _ = pair
    remove_ruleset(backend, KEYS)
    ruleset = node_ruleset(admins=("10.0.0.0/24", "10.9.0.0/16"))
    backend.run(replace_commands(ruleset))
    table = ruleset.table("inet", TABLE)
    admins = table.set("admins")

    def elements() -> list[object]:
        listed = backend.list_table("inet", TABLE) or []
        return next(o["set"].get("elem", []) for o in listed if "set" in o and o["set"]["name"] == "admins")

    before = elements()
    backend.run([{"add": set_object(table, dataclasses.replace(admins, elements=(x.prefix("10.1.0.0", 24),)))}])
    assert len(elements()) == len(before) + 1
    grown = elements()
    for other in (dataclasses.replace(admins, flags=()), dataclasses.replace(admins, type="ipv6_addr"), dataclasses.replace(admins, timeout=60)):
        with pytest.raises(NftError):
            backend.run([{"add": set_object(table, dataclasses.replace(other, elements=(x.prefix("10.2.0.0", 24),) if other.type == "ipv4_addr" else ("::1",)))}])
        assert elements() == grown
