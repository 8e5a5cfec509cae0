"""Creating absent tables in stages, their hooks last.

A node's first apply (or one after zonewall's tables were removed) builds every
table from nothing. As one transaction, a 100-guest node's 6,000 commands make
libnftables hold ~75 MiB for a moment (its JSON tree, its commands and the netlink
batch grow with the transaction: ~12 KiB per command, measured), the largest part of
an agent's peak memory; and the kernel binds each anonymous set by walking the
transaction so far, so its work grows with the square of the transaction.

A table without base chains is inert: no hook leads a packet into it. So the tables,
their regular chains, objects, sets and the regular chains' rules are added in
transactions of at most STAGE_COMMANDS commands (a set's elements counted too,
ELEMENTS_PER_COMMAND to a command), and the base chains with their rules
in the last one: the ruleset starts filtering at one kernel commit, exactly as in a
single transaction, and libnftables never holds more than a stage. Measured
(docs/performance.md): the first apply of a 10,000-VM cluster's 100-guest node
(6,131 commands) peaks the agent at 183 MiB as one transaction, 145 MiB in stages;
the transactions take 16 % less time at 100 guests, 42 % less at 500.

One kind of set cannot be made ahead: a set the packet path writes (a rate limit's
meter, a learning guard's addresses: `update @set` / `add @set` in a rule). The kernel
takes such a statement only into a set created as dynamic, a flag nft sets while
evaluating that statement in the set's own transaction and that nft 1.0.6's JSON
cannot carry (compiler/meters.py); created in an earlier stage, the set is refused
later ("Invalid argument"). So those sets, and every chain whose rules name them, go
in the last stage too.

The stages are built one at a time (encoding included) as they are asked for, so the
caller can encode the next stage while the kernel takes the previous one and read
back what a stage finished (`Stage.finished`) while the next one runs
(dataplane/creation.py).

Only for tables that are all absent: replacing tables that filter traffic stays one
transaction (apply.py). A stage the kernel refuses leaves inert tables behind, which
the caller removes (apply.py restores the snapshot, in which they were absent); an
agent killed between stages leaves them inert too, and its next apply replaces them
in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from ..compiler.ir import (
    Chain,
    Json,
    Ruleset,
    Table,
    chain_object,
    encoded_items,
    helper_object,
    limit_object,
    rule_object,
    set_object,
    table_object,
)
from .encodings import Piece
from .readback import is_dynamic

TableKey = tuple[str, str]
_SET_REFERENCE = re.compile(r'"@([^"\\]+)"')  # "@name" as encoded in a rule (ir._encode)
STAGE_COMMANDS = 500  # per transaction (the agent's peak above: 150 MiB in stages of 1,000); a creation no larger is one transaction
# A set's elements weigh on libnftables as commands do (~0.8 KiB each while a stage is
# parsed and sent): this many count as one command. At node1 of 10,000 VMs / 100 nodes
# one stage of 500 commands held 455 sets with 20,423 elements and took the agent's
# heap 16.6 MiB up, which it kept.
ELEMENTS_PER_COMMAND = 8


@dataclass
class Stage:
    """One transaction: its commands and their encoding (the items of its JSON array;
    apply._Batch is one too)."""

    commands: list[Json] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    # per table, the chains and sets no later stage touches: after this stage commits
    # they are what the whole creation leaves (a chain's rules all come in one stage)
    finished: dict[TableKey, tuple[set[str], set[str]]] = field(default_factory=dict)

    def add(self, commands: list[Json], encoded: Sequence[str] | None = None) -> None:
        """`encoded`: the commands' encoding when the caller has it, in parts (the
        items of the JSON array, each a run of them: `encodings.Encodings.bodies`)."""
        self.commands += commands
        if encoded is None:
            encoded = (encoded_items(commands),)
        self.items += [part for part in encoded if part]

    @property
    def text(self) -> str:
        return '{"nftables":[' + ",".join(self.items) + "]}"


@dataclass
class _Part:
    """Commands that go together, and what they finish of their table."""

    commands: list[Json]
    encoded: str
    hooked: bool  # belongs in the last stage
    table: TableKey
    chains: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()

    def into(self, stage: Stage) -> None:
        stage.add(self.commands, (self.encoded,))
        chains, sets = stage.finished.setdefault(self.table, (set(), set()))
        chains.update(self.chains)
        sets.update(self.sets)


def creation_size(ruleset: Ruleset) -> int:
    """How many commands create `ruleset`'s tables from nothing (ct timeouts aside)."""
    return sum(
        1 + len(t.chains) + len(t.limits) + len(t.helpers) + len(t.sets) + sum(len(c.rules) for c in t.chains) for t in ruleset.tables
    )


def creation_stages(
    ruleset: Ruleset, size: int = STAGE_COMMANDS, pieces: dict[TableKey, dict[tuple[str, str], Piece]] | None = None
) -> Iterator[Stage]:
    """The transactions that create `ruleset`'s tables, the base chains in the last;
    each is built (and encoded) when asked for. `pieces`: filled with each set's and
    each chain's rules' encoding as they are made (encodings.encode_table reuses them:
    nothing is encoded twice)."""
    hooked: list[_Part] = []
    current, weight = Stage(), 0
    for table in ruleset.tables:
        made = pieces.setdefault((table.family, table.name), {}) if pieces is not None else {}
        for part in _table_parts(table, made):
            if part.hooked:
                hooked.append(part)
                continue
            cost = _weight(part.commands)
            if current.commands and weight + cost > size:
                yield current
                current, weight = Stage(), 0
            part.into(current)
            weight += cost
    if current.commands:
        yield current
    last = Stage()
    for part in hooked:
        part.into(last)
    if last.commands:
        yield last


def _weight(commands: list[Json]) -> int:
    """Commands, with a set's elements counted as commands (ELEMENTS_PER_COMMAND)."""
    elements = sum(len(spec.get("elem") or ()) for command in commands for body in command.values() for spec in body.values() if isinstance(spec, dict))
    return len(commands) + elements // ELEMENTS_PER_COMMAND


def _table_parts(table: Table, made: dict[tuple[str, str], Piece]) -> Iterator[_Part]:
    """The table's commands in table_body_commands' order (chains declared, limits,
    helpers, sets, each chain's rules; ct timeouts are created beforehand as nft
    text, apply.py), in parts that belong together, each marked if it belongs in the
    last stage. Built here part by part, as a stage needs them; they are the commands
    of ir.table_body_commands (tests/dataplane/test_stages.py compares them)."""
    key = (table.family, table.name)
    written = {named.name for named in table.sets if is_dynamic(named.flags, named.timeout)}

    def part(commands: list[Json], hooked: bool, encoded: str | None = None, **finished: tuple[str, ...]) -> _Part:
        return _Part(commands, encoded if encoded is not None else encoded_items(commands), hooked, key, **finished)

    yield part([{"add": table_object(table)}], False)
    for hooks in (False, True):
        declared = [chain for chain in table.chains if (chain.hook is not None) == hooks]
        if declared:
            commands = [{"add": chain_object(table, Chain(c.name, (), c.hook, c.comment))} for c in declared]
            yield part(commands, hooks, chains=tuple(c.name for c in declared if not c.rules))
    if table.limits:
        yield part([{"add": limit_object(table, limit)} for limit in table.limits], False)
    if table.helpers:
        yield part([{"add": helper_object(table, helper)} for helper in table.helpers], False)
    for named in table.sets:
        commands = [{"add": set_object(table, named)}]
        encoded = encoded_items(commands)
        made[("set", named.name)] = (named, encoded)
        yield part(commands, named.name in written, encoded, sets=(named.name,))
    for chain in table.chains:
        if chain.rules:
            commands = [{"add": rule_object(table, chain, rule)} for rule in chain.rules]
            encoded = encoded_items(commands)
            made[("chain", chain.name)] = (chain, encoded)
            last = chain.hook is not None or (bool(written) and not written.isdisjoint(_SET_REFERENCE.findall(encoded)))
            yield part(commands, last, encoded, chains=(chain.name,))
