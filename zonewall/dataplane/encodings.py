"""The libnftables JSON of an applied ruleset's tables, kept to encode the next one.

The fingerprint of an applied ruleset (ir.fingerprint: a hash of its whole JSON
document) encoded every rule again after each apply: at 10,000 VMs ~70-200 ms of a
one-rule change's ~500 ms of agent CPU, for a hash. Consecutive rulesets of a node
share nearly every chain and set, so the encoding of each chain's rules and each set
is kept with the object it encodes, and an equal object of the next ruleset reuses
it (comparing is a fraction of encoding). The text is byte-identical to
`encoded_items(table_body_commands(table))` (tests/dataplane/test_encodings.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..compiler.ir import (
    Chain,
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

    bodies: dict[TableKey, str]
    pieces: dict[TableKey, dict[tuple[str, str], Piece]]


def encode_ruleset(ruleset: Ruleset, reuse: Encodings | None = None) -> Encodings:
    bodies: dict[TableKey, str] = {}
    pieces: dict[TableKey, dict[tuple[str, str], Piece]] = {}
    for table in ruleset.tables:
        key = (table.family, table.name)
        bodies[key], pieces[key] = encode_table(table, reuse.pieces.get(key, {}) if reuse is not None else {})
    return Encodings(bodies, pieces)


def encode_table(table: Table, reuse: dict[tuple[str, str], Piece]) -> tuple[str, dict[tuple[str, str], Piece]]:
    """The table's body in table_body_commands' order: chains declared (empty), limits,
    helpers, timeouts, sets, then each chain's rules."""
    made: dict[tuple[str, str], Piece] = {}

    def piece(kind: str, obj: Chain | NamedSet, encode: Callable[[], str]) -> str:
        old = reuse.get((kind, obj.name))
        if old is not None and (old[0] is obj or old[0] == obj):
            made[(kind, obj.name)] = (obj, old[1])
            return old[1]
        text = encode()
        made[(kind, obj.name)] = (obj, text)
        return text

    parts = [
        encoded_items([{"add": chain_object(table, Chain(chain.name, (), chain.hook, chain.comment))} for chain in table.chains]),
        encoded_items([{"add": limit_object(table, limit)} for limit in table.limits]),
        encoded_items([{"add": helper_object(table, helper)} for helper in table.helpers]),
        encoded_items([{"add": timeout_object(table, timeout)} for timeout in table.timeouts]),
    ]
    for named in table.sets:
        parts.append(piece("set", named, lambda named=named: encoded_items([{"add": set_object(table, named)}])))
    for chain in table.chains:
        parts.append(piece("chain", chain, lambda chain=chain: encoded_items([{"add": rule_object(table, chain, rule)} for rule in chain.rules])))
    return ",".join(part for part in parts if part), made
