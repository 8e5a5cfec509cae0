"""An incremental update as transactions: every change of behaviour in the first, the
chains whose rules changed only in their comments after it, a bounded number a time.

A rule's comment is its id (`policy:LINE` unless the policy gives one: the default id
is derived from the rule's position). A rule line added above others moves the id of
every later rule of its file, so about half the chains of every node are rewritten
with rules that filter exactly as before, only their comments (hence the counters'
and logs' ids) moved. In the one transaction of `diff.diff_commands`, libnftables
held all of them at once: at 10,000 VMs ~2,300 rules, ~50 MiB of an agent's memory
over its steady ~120 MiB, and the changed rule waited for all of them to commit.

Those chains are the same filter before and after, so what enforces the change is
the first transaction alone (`diff_commands` to the new ruleset with their old
comments), and the kernel never filters differently from one of the two rulesets.
The comments follow in transactions of whole chains (a chain is flushed and refilled
in one, so no packet meets it half-written). Between them, counters of those rules
still count under their old ids for a moment, as they would have until the single
transaction committed.
"""

from __future__ import annotations

from dataclasses import replace

from .diff import diff_commands
from .ir import Chain, Json, Ruleset, Table, rule_object


def diff_transactions(old: Ruleset, new: Ruleset, *, batch: int) -> list[list[Json]]:
    """`diff_commands(old, new)` as transactions (none when nothing changes): the
    first with every change of behaviour, then the comment-only rewrites, whole
    chains of about `batch` commands each."""
    renamed: list[tuple[Table, Chain]] = []
    middle = _with_old_comments(old, new, renamed)
    first = diff_commands(old, middle)
    transactions = [first] if first else []
    pending: list[Json] = []
    for table, chain in renamed:
        ref = {"family": table.family, "table": table.name, "name": chain.name}
        pending += [{"flush": {"chain": ref}}] + [{"add": rule_object(table, chain, rule)} for rule in chain.rules]
        if len(pending) >= batch:
            transactions.append(pending)
            pending = []
    if pending:
        transactions.append(pending)
    return transactions


def _with_old_comments(old: Ruleset, new: Ruleset, renamed: list[tuple[Table, Chain]]) -> Ruleset:
    """`new` with each chain whose rules differ from `old`'s only in comments taken
    as it was in `old`; those chains (as in `new`) are added to `renamed`."""
    old_tables = {(t.family, t.name): t for t in old.tables}
    tables = []
    for table in new.tables:
        before = old_tables.get((table.family, table.name))
        old_chains = {c.name: c for c in before.chains} if before is not None and before != table else {}
        chains, swapped = [], False
        for chain in table.chains:
            was = old_chains.get(chain.name)
            if was is not None and was.rules != chain.rules and _comments_alone(was, chain):
                renamed.append((table, chain))
                chain, swapped = was, True
            chains.append(chain)
        tables.append(replace(table, chains=tuple(chains)) if swapped else table)
    return replace(new, tables=tuple(tables)) if renamed else new


def _comments_alone(old: Chain, new: Chain) -> bool:
    return (old.hook == new.hook and len(old.rules) == len(new.rules)
            and all(a.statements == b.statements for a, b in zip(old.rules, new.rules, strict=True)))
