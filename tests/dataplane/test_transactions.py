"""diff_transactions: the change of behaviour first, chains renumbered alone after it
in whole chains, and together exactly a fresh apply of the new ruleset (FakeBackend)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.compiler.diff import diff_commands
from zonewall.compiler.ir import Ruleset, replace_commands
from zonewall.compiler.transactions import diff_transactions
from zonewall.dataplane.fake import FakeBackend
from zonewall.dataplane.readback import canonical_readback, listings

from .samples import node_ruleset, random_ruleset, renumbered

GUESTS = {f"tap{n}": 1000 + n for n in range(12)}


def kernel_after(old: Ruleset, transactions: list[list[dict]], keys: list[tuple[str, str]]) -> list:
    fake = FakeBackend()
    fake.run(replace_commands(old))
    for transaction in transactions:
        fake.run(transaction)
    return canonical_readback(listings(fake, keys))


def keys_of(*rulesets: Ruleset) -> list[tuple[str, str]]:
    return sorted({(t.family, t.name) for r in rulesets for t in r.tables})


def flushed(transaction: list[dict]) -> list[str]:
    return [c["flush"]["chain"]["name"] for c in transaction if "flush" in c and "chain" in c["flush"]]


def rules_of(transaction: list[dict], chain: str) -> list[dict]:
    return [c["add"]["rule"] for c in transaction if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain]


def test_the_change_comes_first_and_renumbered_chains_follow_in_whole_chains() -> None:
    old = node_ruleset(GUESTS)
    # tap0's rule changes (and its ids move too); tap1..tap11 only have their ids moved
    new = renumbered(node_ruleset({**GUESTS, "tap0": 2222}), {f"g_tap{n}" for n in range(12)})
    transactions = diff_transactions(old, new, batch=7)
    keys = keys_of(old, new)
    assert flushed(transactions[0]) == ["g_tap0"]  # what changes behaviour, alone: renumbered chains wait
    later = [name for t in transactions[1:] for name in flushed(t)]
    assert sorted(later) == sorted(f"g_tap{n}" for n in range(1, 12))
    for transaction in transactions[1:]:
        # whole chains: each flush is followed by all of that chain's rules, nothing else
        names = flushed(transaction)
        assert transaction == [c for n in names for c in [{"flush": {"chain": {"family": "inet", "table": "zonewall", "name": n}}}]
                               + [{"add": {"rule": r}} for r in rules_of(transaction, n)]]
        assert [len(rules_of(transaction, n)) for n in names] == [3] * len(names)
        assert len(transaction) <= 7 + 4 - 1  # batch, overshot by less than one chain (4 commands)
    # after the first alone the kernel filters as `new` does, under the old ids
    assert kernel_after(old, transactions[:1], keys) == kernel_after(renumbered(node_ruleset({**GUESTS, "tap0": 2222}), {"g_tap0"}), [], keys)
    assert kernel_after(old, transactions, keys) == kernel_after(new, [], keys)


def test_without_renumbered_chains_it_is_the_one_transaction_of_diff_commands() -> None:
    old, new = node_ruleset(GUESTS), node_ruleset({**GUESTS, "tap3": 2222})
    assert diff_transactions(old, new, batch=7) == [diff_commands(old, new)]
    assert diff_transactions(old, old, batch=7) == []
    # ids moved alone: nothing changes behaviour, so no first transaction of it
    moved = diff_transactions(old, renumbered(old, {"g_tap2"}), batch=7)
    assert [flushed(t) for t in moved] == [["g_tap2"]]
    # a base chain whose policy changes is a change of behaviour, its ids moving or not
    turned = renumbered(node_ruleset(GUESTS, policy="accept"), {"forward"})
    transactions = diff_transactions(old, turned, batch=7)
    keys = keys_of(old, turned)
    assert len(transactions) == 1 and kernel_after(old, transactions, keys) == kernel_after(turned, [], keys)


@settings(max_examples=150, deadline=None)
@given(random_ruleset(), random_ruleset(), st.data())
def test_transactions_in_order_equal_a_fresh_apply(old: Ruleset, other: Ruleset, data: st.DataObject) -> None:
    new = other if data.draw(st.booleans()) else old
    names = sorted({c.name for t in new.tables for c in t.chains})
    new = renumbered(new, set(data.draw(st.lists(st.sampled_from(names), unique=True))) if names else set())
    keys = keys_of(old, new)
    transactions = diff_transactions(old, new, batch=data.draw(st.integers(1, 20)))
    assert kernel_after(old, transactions, keys) == kernel_after(new, [], keys)
    assert all(transactions)
