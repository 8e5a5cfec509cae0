"""Incremental update: the one transaction that turns ruleset `old` into `new`.

Why: a full replace re-creates every chain and set on each policy change, which costs
time proportional to the whole ruleset and resets every counter. Like Calico's felix,
we rewrite only what changed. The kernel applies the batch atomically, but it checks
references command by command, so order matters:

1. declare new chains (empty) and update changed base-chain policies;
2. flush chains whose rules changed, chains that use a set/limit being redefined,
   and chains being removed (this drops their references);
3. delete sets/maps/limits being redefined (now unreferenced);
4. add new and redefined limits, then sets/maps with their elements;
5. element deltas for kept sets/maps (delete gone keys, add new ones as the set's
   definition with them; a map key whose value changed is deleted and re-added);
6. add the rules of new and changed chains;
7. delete removed sets/maps, then removed limits, then removed chains (maps go
   before chains because verdict elements reference chains).

Changes the kernel cannot make in place fall back to rebuilding that table inside
the same transaction (`recreate_commands`: rules flushed, objects replaced, the table
itself never deleted): a base chain whose type/hook/priority changed (EOPNOTSUPP)
and a chain turning base <-> regular. Chain comments are never sent to the kernel
(ir.chain_object), so they cannot force a rebuild.

The output is a pure function of (old, new): same input, same command list.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from zonewall.compiler.ir import (
    Chain,
    Json,
    Ruleset,
    Table,
    chain_object,
    limit_object,
    rule_object,
    set_object,
    table_body_commands,
    table_object,
)
from zonewall.compiler.stmt import LimitRef, Mangle, Match, SetUpdate, VMap


def diff_commands(old: Ruleset, new: Ruleset) -> list[Json]:
    """Libnftables JSON commands (one transaction) turning `old` into `new`."""
    old_tables = {(t.family, t.name): t for t in old.tables}
    new_keys = {(t.family, t.name) for t in new.tables}
    commands: list[Json] = []
    for table in new.tables:
        before = old_tables.get((table.family, table.name))
        if before is None:
            commands += [{"add": table_object(table)}] + table_body_commands(table)
        elif before == table:
            continue
        elif recreate_reason(before, table) is not None:
            commands += recreate_commands(table, before)
        else:
            commands += table_delta(before, table)
    for table in old.tables:
        if (table.family, table.name) not in new_keys:
            commands.append({"delete": table_object(table)})
    return commands


def recreate_commands(table: Table, old: Table | None = None) -> list[Json]:
    """Rebuild `table` from scratch in one transaction.

    Not by deleting the table: base chain hooks are (un)registered outside the
    generation switch, so a deleted-and-re-added base chain leaves packets a moment
    with no filtering. Instead rules are flushed and every other object replaced;
    base chains whose hook stays keep it.
    """
    if old is None:
        return [{"add": table_object(table)}, {"delete": table_object(table)}, {"add": table_object(table)}] + table_body_commands(table)
    keep = {c.name: (c.hook.type, c.hook.hook, c.hook.priority) for c in table.chains if c.hook is not None}
    where = {"family": table.family, "table": table.name}
    commands: list[Json] = [{"flush": table_object(table)}]
    commands += [{"delete": {("map" if s.map is not None else "set"): {**where, "name": s.name}}} for s in old.sets]
    commands += [{"delete": {"limit": {**where, "name": limit.name}}} for limit in old.limits]
    commands += [{"delete": {"ct helper": {**where, "name": helper.name}}} for helper in old.helpers]
    kept: dict[str, str] = {}
    for chain in old.chains:
        if chain.hook is None or keep.get(chain.name) != (chain.hook.type, chain.hook.hook, chain.hook.priority):
            commands.append({"delete": {"chain": {**where, "name": chain.name}}})
        else:
            kept[chain.name] = chain.hook.policy
    # an `add chain` on a kept base chain (same hook and policy) would let packets
    # slip through while the transaction commits (measured), so it is left out
    new_policy = {c.name: c.hook.policy for c in table.chains if c.hook is not None}
    body = [
        c for c in table_body_commands(table)
        if not ("chain" in c.get("add", {}) and c["add"]["chain"]["name"] in kept and kept[c["add"]["chain"]["name"]] == new_policy[c["add"]["chain"]["name"]])
    ]
    return commands + body


def recreate_reason(old: Table, new: Table) -> str | None:
    """Why `old` cannot be turned into `new` in place, or None if it can."""
    if old.helpers != new.helpers:
        return "conntrack helper objects change"
    old_chains = {c.name: c for c in old.chains}
    for chain in new.chains:
        before = old_chains.get(chain.name)
        if before is None:
            continue
        if (before.hook is None) != (chain.hook is None):
            return f"chain {chain.name} changes between base and regular"
        if before.hook is not None and chain.hook is not None:
            old_hook, new_hook = before.hook, chain.hook
            if (old_hook.type, old_hook.hook, old_hook.priority) != (new_hook.type, new_hook.hook, new_hook.priority):
                return f"base chain {chain.name} changes type/hook/priority"
    return None


def _set_definition(named: Any) -> tuple[Any, ...]:
    return (named.type, named.flags, named.map, named.timeout, named.size, named.comment)


def _element_key(named: Any, element: Any) -> str:
    if isinstance(element, dict) and "elem" in element:  # {"elem": {"val": .., "timeout": ..}}
        element = element["elem"]["val"]
    if named.map is not None and isinstance(element, (list, tuple)):
        element = element[0]
    return json.dumps(element, sort_keys=True)


def _json_element(element: Any) -> Any:
    return list(element) if isinstance(element, tuple) else element


def _references(chain: Chain) -> tuple[set[str], set[str]]:
    """(set/map names, limit names) that the chain's rules use."""
    sets: set[str] = set()
    limits: set[str] = set()
    stack: list[Any] = [rule.statements for rule in chain.rules]
    while stack:
        value = stack.pop()
        if isinstance(value, LimitRef):
            limits.add(value.name)
        elif isinstance(value, (VMap, SetUpdate)):
            sets.add(value.map if isinstance(value, VMap) else value.set)
            stack.append(value.key if isinstance(value, VMap) else (value.elem, value.statements))
        elif isinstance(value, (Match, Mangle)):
            stack += (value.left, value.right) if isinstance(value, Match) else (value.key, value.value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, str) and value.startswith("@"):
            sets.add(value[1:])
    return sets, limits


def table_delta(old: Table, new: Table) -> list[Json]:
    """In-place update of a kept table (caller checked recreate_reason is None)."""
    old_chains = {c.name: c for c in old.chains}
    new_chains = {c.name: c for c in new.chains}
    old_sets = {s.name: s for s in old.sets}
    new_sets = {s.name: s for s in new.sets}
    old_limits = {limit.name: limit for limit in old.limits}
    new_limits = {limit.name: limit for limit in new.limits}

    redefined_sets = [
        s for s in new.sets if s.name in old_sets and _set_definition(old_sets[s.name]) != _set_definition(s)
    ]
    redefined_limits = [limit for limit in new.limits if limit.name in old_limits and old_limits[limit.name] != limit]
    redefined_set_names = {s.name for s in redefined_sets}
    redefined_limit_names = {limit.name for limit in redefined_limits}

    # Kept chains to rewrite: their rules changed, or they hold a reference to a set
    # or limit we must delete and re-add (the kernel refuses to delete a used object).
    rewritten: list[Chain] = []
    redefined = bool(redefined_set_names or redefined_limit_names)
    for chain in new.chains:
        before = old_chains.get(chain.name)
        if before is None:
            continue
        if before.rules != chain.rules:
            rewritten.append(chain)
        elif redefined:  # walking every rule is the costly part of a diff: only when needed
            set_refs, limit_refs = _references(before)
            if set_refs & redefined_set_names or limit_refs & redefined_limit_names:
                rewritten.append(chain)
    removed_chains = [c for c in old.chains if c.name not in new_chains]

    commands: list[Json] = []
    # 1. new chains, declared empty so anything may jump to them; policy updates.
    for chain in new.chains:
        before = old_chains.get(chain.name)
        if before is None or (chain.hook is not None and before.hook != chain.hook):
            commands.append({"add": chain_object(new, Chain(chain.name, (), chain.hook, chain.comment))})
    # 2. drop the references held by rules we are about to rewrite or remove.
    for chain in rewritten + removed_chains:
        commands.append({"flush": {"chain": {"family": new.family, "table": new.name, "name": chain.name}}})
    # 3. redefined objects go away ...
    for named in redefined_sets:
        commands.append({"delete": _set_ref_object(new, old_sets[named.name])})
    for limit in redefined_limits:
        commands.append({"delete": {"limit": {"family": new.family, "table": new.name, "name": limit.name}}})
    # 4. ... and come back with new ones.
    for limit in new.limits:
        if limit.name not in old_limits or limit.name in redefined_limit_names:
            commands.append({"add": limit_object(new, limit)})
    for named in new.sets:
        if named.name not in old_sets or named.name in redefined_set_names:
            commands.append({"add": set_object(new, named)})
    # 5. element deltas for kept sets and maps.
    for named in new.sets:
        old_set = old_sets.get(named.name)
        if old_set is None or named.name in redefined_set_names or old_set.elements == named.elements:
            continue
        commands += _element_delta(new, old_set, named)
    # 6. rules of new and rewritten chains, in table order.
    rewritten_names = {c.name for c in rewritten}
    for chain in new.chains:
        if chain.name in old_chains and chain.name not in rewritten_names:
            continue
        for rule in chain.rules:
            commands.append({"add": rule_object(new, chain, rule)})
    # 7. removals, once nothing references them.
    for named in old.sets:
        if named.name not in new_sets:
            commands.append({"delete": _set_ref_object(new, named)})
    for limit in old.limits:
        if limit.name not in new_limits:
            commands.append({"delete": {"limit": {"family": new.family, "table": new.name, "name": limit.name}}})
    for chain in removed_chains:
        commands.append({"delete": {"chain": {"family": new.family, "table": new.name, "name": chain.name}}})
    return commands


def _set_ref_object(table: Table, named: Any) -> Json:
    kind = "map" if named.map is not None else "set"
    return {kind: {"family": table.family, "table": table.name, "name": named.name}}


def _element_delta(table: Table, old: Any, new: Any) -> list[Json]:
    old_by_key = {_element_key(old, e): e for e in old.elements}
    new_by_key = {_element_key(new, e): e for e in new.elements}
    # A key whose element changed (map value, element timeout/comment) is deleted and
    # re-added: `add element` of an existing map key with another value is EEXIST.
    gone = [e for k, e in old_by_key.items() if k not in new_by_key or new_by_key[k] != e]
    added = [e for k, e in new_by_key.items() if k not in old_by_key or old_by_key[k] != e]
    where = {"family": table.family, "table": table.name, "name": new.name}
    commands: list[Json] = []
    if gone:
        # Deleting needs only the key; a map's value would be ignored anyway.
        keys = [json.loads(_element_key(old, e)) for e in gone]
        commands.append({"delete": {"element": {**where, "elem": keys}}})
    if added:
        # Added as the set's own definition with those elements, not as `add element`:
        # libnftables (1.0.6) answers `add element` by reading every interval set of
        # the table with all its elements into its cache first (~6 MiB of C heap for
        # a 10,000-VM node's 660 sets, an agent's peak memory), `add set` reads only
        # the tables. For a set that exists, `add set` adds the elements and changes
        # nothing else; the kernel refuses it when the definition differs from the
        # set's (then the apply falls back to a full replace, as for any refusal).
        commands.append({"add": set_object(table, replace(new, elements=tuple(added)))})
    return commands
