"""The libnftables JSON of an applied ruleset's tables, kept to encode the next one.

The fingerprint of an applied ruleset (ir.fingerprint: a hash of its whole JSON
document) encoded every rule again after each apply: at 10,000 VMs ~70-200 ms of a
one-rule change's ~500 ms of agent CPU, for a hash. Consecutive rulesets of a node
share nearly every chain and set, so the encoding of each chain's rules and each set
is kept with the object it encodes, and an equal object of the next ruleset reuses
it (comparing is a fraction of encoding). The parts joined by "," are byte-identical
to `encoded_items(table_body_commands(table))` (tests/dataplane/test_encodings.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..compiler.ir import (
    Chain,
    Json,
    NamedSet,
    Ruleset,
    Table,
    chain_object,
    encoded_items,
    helper_object,
    limit_object,
    rule_object,
    set_object,
    timeout_object,
)

TableKey = tuple[str, str]
Piece = tuple[Chain | NamedSet, str]  # an object and the encoding of its commands


@dataclass(frozen=True)
class Encodings:
    """Per table: its body as encoded text, and the pieces to reuse (by kind and name)."""

    # each table's body as its non-empty parts (joined by "," they are its text): the
    # parts are the pieces' own strings, so the body costs no second copy of them
    # (~6 MB at 10,000 VMs, held by an agent for good and made again at each change)
    bodies: dict[TableKey, tuple[str, ...]]
    pieces: dict[TableKey, dict[tuple[str, str], Piece]]


def encode_ruleset(ruleset: Ruleset, reuse: Encodings | None = None) -> Encodings:
    bodies: dict[TableKey, tuple[str, ...]] = {}
    pieces: dict[TableKey, dict[tuple[str, str], Piece]] = {}
    for table in ruleset.tables:
        key = (table.family, table.name)
        bodies[key], pieces[key] = encode_table(table, reuse.pieces.get(key, {}) if reuse is not None else {})
    return Encodings(bodies, pieces)


def encode_table(
    table: Table, reuse: dict[tuple[str, str], Piece], commands: list[Json] | None = None
) -> tuple[tuple[str, ...], dict[tuple[str, str], Piece]]:
    """The table's body in table_body_commands' order, as its non-empty parts: chains
    declared (empty), limits, helpers, timeouts, sets, then each chain's rules. `commands`: the table's
    table_body_commands when the caller built them (a full apply sends them): they are
    encoded slice by slice rather than built again."""
    made: dict[tuple[str, str], Piece] = {}
    at = 0

    def taken(count: int) -> list[Json] | None:
        nonlocal at
        at += count
        return commands[at - count : at] if commands is not None else None

    def piece(kind: str, obj: Chain | NamedSet, built: list[Json] | None) -> str:
        old = reuse.get((kind, obj.name))
        if old is not None and (old[0] is obj or old[0] == obj):
            text = old[1]
        else:
            if built is None:
                built = ([{"add": set_object(table, obj)}] if isinstance(obj, NamedSet)
                         else [{"add": rule_object(table, obj, rule)} for rule in obj.rules])
            text = encoded_items(built)
        made[(kind, obj.name)] = (obj, text)
        return text

    def head(built: list[Json] | None, build: Callable[[], list[Json]]) -> str:
        return encoded_items(built if built is not None else build())

    parts = [
        head(taken(len(table.chains)), lambda: [{"add": chain_object(table, Chain(c.name, (), c.hook, c.comment))} for c in table.chains]),
        head(taken(len(table.limits)), lambda: [{"add": limit_object(table, limit)} for limit in table.limits]),
        head(taken(len(table.helpers)), lambda: [{"add": helper_object(table, helper)} for helper in table.helpers]),
        head(taken(len(table.timeouts)), lambda: [{"add": timeout_object(table, timeout)} for timeout in table.timeouts]),
    ]
    parts += [piece("set", named, taken(1)) for named in table.sets]
    parts += [piece("chain", chain, taken(len(chain.rules))) for chain in table.chains]
    if commands is not None and at != len(commands):
        raise ValueError(f"table {table.family} {table.name}: {len(commands)} commands are not its body ({at})")
    return tuple(part for part in parts if part), made
