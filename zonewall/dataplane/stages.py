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

Only for tables that are all absent: replacing tables that filter traffic stays one
transaction (apply.py). A stage the kernel refuses leaves inert tables behind, which
the caller removes (apply.py restores the snapshot, in which they were absent); an
agent killed between stages leaves them inert too, and its next apply replaces them
in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..compiler.ir import Json, Ruleset, Table, encoded_items, table_object
from .encodings import Encodings, Piece
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

    def add(self, commands: list[Json], encoded: str | None = None) -> None:
        self.commands += commands
        text = encoded if encoded is not None else encoded_items(commands)
        if text:
            self.items.append(text)

    @property
    def text(self) -> str:
        return '{"nftables":[' + ",".join(self.items) + "]}"


def creation_stages(ruleset: Ruleset, bodies: dict[TableKey, list[Json]], encodings: Encodings, size: int = STAGE_COMMANDS) -> list[Stage]:
    """The transactions that create `ruleset`'s tables; the base chains in the last.
    `bodies`: each table's table_body_commands (ct timeouts included: they are skipped,
    apply.py creates them beforehand); `encodings`: their encoding (apply.py's, made
    for the fingerprint), so nothing is encoded twice."""
    inert: list[tuple[list[Json], str]] = []
    hooked: list[tuple[list[Json], str]] = []
    for table in ruleset.tables:
        for part, hooks in _table_parts(table, bodies[(table.family, table.name)], encodings.pieces[(table.family, table.name)]):
            (hooked if hooks else inert).append(part)
    stages: list[Stage] = []
    current, weight = Stage(), 0
    for commands, encoded in inert:
        cost = _weight(commands)
        if current.commands and weight + cost > size:
            stages.append(current)
            current, weight = Stage(), 0
        current.add(commands, encoded)
        weight += cost
    if current.commands:
        stages.append(current)
    last = Stage()
    for commands, encoded in hooked:
        last.add(commands, encoded)
    return stages + [last] if last.commands else stages


def _weight(commands: list[Json]) -> int:
    """Commands, with a set's elements counted as commands (ELEMENTS_PER_COMMAND)."""
    elements = sum(len(spec.get("elem") or ()) for command in commands for body in command.values() for spec in body.values() if isinstance(spec, dict))
    return len(commands) + elements // ELEMENTS_PER_COMMAND


def _table_parts(table: Table, body: list[Json], pieces: dict[tuple[str, str], Piece]) -> Iterator[tuple[tuple[list[Json], str], bool]]:
    """(commands, encoding) of the table in body order, and whether they belong to a
    base chain. The body is table_body_commands' order: chains declared, limits,
    helpers, timeouts, sets, each chain's rules."""
    at = 0
    written = {named.name for named in table.sets if is_dynamic(named.flags, named.timeout)}

    def take(count: int) -> list[Json]:
        nonlocal at
        at += count
        return body[at - count : at]

    add_table = [{"add": table_object(table)}]
    yield (add_table, encoded_items(add_table)), False
    declared = take(len(table.chains))
    for hooks in (False, True):
        commands = [command for chain, command in zip(table.chains, declared) if (chain.hook is not None) == hooks]
        if commands:
            yield (commands, encoded_items(commands)), hooks
    for count in (len(table.limits), len(table.helpers)):
        commands = take(count)
        if commands:
            yield (commands, encoded_items(commands)), False
    take(len(table.timeouts))  # created before the transaction, as nft text (apply.py)
    for named in table.sets:
        yield (take(1), pieces[("set", named.name)][1]), named.name in written
    for chain in table.chains:
        commands = take(len(chain.rules))
        if commands:
            encoded = pieces[("chain", chain.name)][1]
            last = chain.hook is not None or (bool(written) and not written.isdisjoint(_SET_REFERENCE.findall(encoded)))
            yield (commands, encoded), last
    if at != len(body):
        raise ValueError(f"table {table.family} {table.name}: {len(body)} commands are not its body ({at})")
