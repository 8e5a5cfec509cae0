"""The nftables intermediate representation: typed, immutable, deterministic.

A Ruleset is what one node should have in the kernel. Rule statements are typed
(`stmt`, built by `nftexpr`); `encode` turns them into libnftables JSON statement
objects, so nothing is ever spliced into nft text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .encode import statements_json
from .stmt import Statement

Json = dict[str, Any]


@dataclass(frozen=True)
class Hook:
    """Makes a chain a base chain attached to a netfilter hook."""

    type: str  # filter | nat | route
    hook: str  # prerouting | input | forward | output | postrouting
    priority: int
    policy: str = "accept"


@dataclass(frozen=True)
class Rule:
    statements: tuple[Statement, ...]
    comment: str | None = None


@dataclass(frozen=True)
class Chain:
    name: str
    rules: tuple[Rule, ...] = ()
    hook: Hook | None = None
    comment: str | None = None


@dataclass(frozen=True)
class NamedSet:
    """A named set, or a map when `map` (the value type) is given.

    Elements are JSON element values (strings, ints, {"prefix": ..}, {"range": ..},
    {"concat": ..}); for maps, [key, value] pairs.
    """

    name: str
    type: str | tuple[str, ...]
    elements: tuple[Any, ...] = ()
    flags: tuple[str, ...] = ()
    map: str | None = None
    timeout: int | None = None
    size: int | None = None
    comment: str | None = None


@dataclass(frozen=True)
class Limit:
    """A named limit object (shared token bucket), e.g. the per-node log cap."""

    name: str
    rate: int
    per: str
    burst: int = 0
    unit: str = "packets"


@dataclass(frozen=True)
class CtHelper:
    """A conntrack helper object, assigned to a new connection by `ct helper set NAME`."""

    name: str
    type: str  # the kernel helper's name: ftp, tftp, ...
    protocol: str  # tcp | udp
    l3proto: str = "inet"


@dataclass(frozen=True)
class CtTimeout:
    """A conntrack timeout policy object, bound to a new connection by `ct timeout set NAME`.

    Named after a hash of its policy (compiler/ct_objects.py), so a changed policy is a
    new object and an object of a given name never changes.
    """

    name: str
    protocol: str  # tcp | udp
    policy: tuple[tuple[str, int], ...]  # (nft state, seconds), sorted
    l3proto: str = "inet"


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    chains: tuple[Chain, ...] = ()
    sets: tuple[NamedSet, ...] = ()
    limits: tuple[Limit, ...] = ()
    helpers: tuple[CtHelper, ...] = ()
    timeouts: tuple[CtTimeout, ...] = ()

    def chain(self, name: str) -> Chain:
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise KeyError(name)

    def set(self, name: str) -> NamedSet:
        for named in self.sets:
            if named.name == name:
                return named
        raise KeyError(name)


class NicMeta(TypedDict):
    """A guest NIC of the node, as the log reader needs it (compiler.nics.LocalNic)."""

    vm: str
    nic: int  # the NIC's index on its VM
    tap: str
    network: str
    mac: str | None


class RulesetMeta(TypedDict, total=False):
    """Facts the dataplane and log reader need to interpret packets. `nics` is keyed by
    the NIC index written into packet marks: an int (a JSON round trip would make it a
    string; nothing serialises this, and readers index it with ints only)."""

    node: str
    nics: dict[int, NicMeta]


@dataclass(frozen=True)
class Ruleset:
    """Everything zonewall owns on one node."""

    node: str
    tables: tuple[Table, ...]
    meta: RulesetMeta = field(default_factory=lambda: RulesetMeta(), compare=False, hash=False)

    def table(self, family: str, name: str) -> Table:
        for table in self.tables:
            if table.family == family and table.name == name:
                return table
        raise KeyError((family, name))


# ---------------------------------------------------------------------------
# IR -> libnftables JSON objects


def table_object(table: Table) -> Json:
    return {"table": {"family": table.family, "name": table.name}}


def chain_object(table: Table, chain: Chain) -> Json:
    obj: Json = {"family": table.family, "table": table.name, "name": chain.name}
    if chain.hook is not None:
        obj.update(
            type=chain.hook.type,
            hook=chain.hook.hook,
            prio=chain.hook.priority,
            policy=chain.hook.policy,
        )
    # chain.comment stays out of the kernel: nft 1.0.6 cannot update or reliably list
    # chain comments, so they would only make diffs and readbacks disagree
    return {"chain": obj}


def set_object(table: Table, named: NamedSet) -> Json:
    obj: Json = {
        "family": table.family,
        "table": table.name,
        "name": named.name,
        "type": list(named.type) if isinstance(named.type, tuple) else named.type,
    }
    if named.map is not None:
        obj["map"] = named.map
    if named.flags:
        obj["flags"] = list(named.flags)
    if named.timeout is not None:
        obj["timeout"] = named.timeout
    if named.size is not None:
        obj["size"] = named.size
    if named.comment:
        obj["comment"] = named.comment
    if named.elements:
        obj["elem"] = [list(e) if isinstance(e, tuple) else e for e in named.elements]
    return {"map" if named.map is not None else "set": obj}


def limit_object(table: Table, limit: Limit) -> Json:
    return {
        "limit": {
            "family": table.family,
            "table": table.name,
            "name": limit.name,
            "rate": limit.rate,
            "per": limit.per,
            "burst": limit.burst,
            "unit": limit.unit,
        }
    }


def helper_object(table: Table, helper: CtHelper) -> Json:
    where = {"family": table.family, "table": table.name, "name": helper.name}
    return {"ct helper": {**where, "type": helper.type, "protocol": helper.protocol, "l3proto": helper.l3proto}}


def timeout_object(table: Table, timeout: CtTimeout) -> Json:
    """As the libnftables JSON schema has it. NB: libnftables < 1.0.9 drops the policy
    of such an object on input and aborts on `delete ct timeout`; dataplane/apply.py
    therefore sends these objects as nft text (LibNftBackend.run_as_text)."""
    where = {"family": table.family, "table": table.name, "name": timeout.name}
    return {"ct timeout": {**where, "protocol": timeout.protocol, "l3proto": timeout.l3proto, "policy": dict(timeout.policy)}}


def rule_object(table: Table, chain: Chain, rule: Rule) -> Json:
    obj: Json = {
        "family": table.family,
        "table": table.name,
        "chain": chain.name,
        "expr": statements_json(rule.statements),
    }
    if rule.comment:
        obj["comment"] = rule.comment
    return {"rule": obj}


def table_body_commands(table: Table) -> list[Json]:
    """`add` commands that fill an (empty) table, in dependency order.

    Chains are declared before maps whose verdicts jump to them; sets and limits
    before rules that reference them.
    """
    commands: list[Json] = []
    for chain in table.chains:
        commands.append({"add": chain_object(table, Chain(chain.name, (), chain.hook, chain.comment))})
    for limit in table.limits:
        commands.append({"add": limit_object(table, limit)})
    for helper in table.helpers:
        commands.append({"add": helper_object(table, helper)})
    for timeout in table.timeouts:
        commands.append({"add": timeout_object(table, timeout)})
    for named in table.sets:
        commands.append({"add": set_object(table, named)})
    for chain in table.chains:
        for rule in chain.rules:
            commands.append({"add": rule_object(table, chain, rule)})
    return commands


def replace_commands(ruleset: Ruleset) -> list[Json]:
    """One transaction that loads zonewall's tables and touches nothing else.

    `add table` before `delete table` makes the delete valid whether or not the
    table exists; the kernel applies the whole batch or none of it. Meant for a node
    (or namespace) without zonewall's tables, and for `compile --format json`:
    replacing tables that are filtering traffic this way is not atomic for packets
    (base chain hooks are re-registered), which is why `dataplane.apply` replaces
    them in place instead.
    """
    commands: list[Json] = []
    for table in ruleset.tables:
        commands += [{"add": table_object(table)}, {"delete": table_object(table)}, {"add": table_object(table)}]
        commands += table_body_commands(table)
    return commands


def to_json(ruleset: Ruleset) -> Json:
    """The full ruleset as a libnftables JSON document (replacing our tables)."""
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}] + replace_commands(ruleset)}


def dumps(document: Json, *, pretty: bool = False) -> str:
    """Deterministic serialisation: same IR, byte-identical text.

    Compact by default: `indent` makes the json module fall back to its pure-Python
    encoder, ~7x slower on a 10,000-guest ruleset (docs/performance.md).
    """
    if pretty:
        return json.dumps(document, indent=1, ensure_ascii=True) + "\n"
    return _encode(document) + "\n"


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def encoded_items(commands: list[Json]) -> str:
    """The commands as the comma-separated items of a JSON array, exactly as `dumps`
    writes them inside a document (so one encoding serves a batch and the fingerprint)."""
    return _encode(commands)[1:-1]


def fingerprint(ruleset: Ruleset, bodies: Mapping[tuple[str, str], Sequence[str]] | None = None) -> str:
    """sha256 of `dumps(to_json(ruleset))`. `bodies`: per table, the parts of
    `encoded_items(table_body_commands(t))` (joined by ","), when the caller has encoded
    them already (the dataplane sends them)."""
    items = [_encode({"metainfo": {"json_schema_version": 1}})]
    for table in ruleset.tables:
        add, delete = _encode({"add": table_object(table)}), _encode({"delete": table_object(table)})
        body = (bodies or {}).get((table.family, table.name))
        items += [add, delete, add, *(body if body is not None else [encoded_items(table_body_commands(table))])]
    # hashed piece by piece, the same bytes as the joined document: an agent computes
    # it after every apply, and the document and its bytes were two more copies of the
    # ruleset's encoding (~6 MB each at 10,000 VMs) at the peak of its memory; a long
    # item is encoded a slice at a time for the same reason (it is ASCII: `_encode`)
    digest = hashlib.sha256(b'{"nftables":[')
    separator = b""
    for item in items:
        if item:
            digest.update(separator)
            for start in range(0, len(item), _HASHED_SLICE):
                digest.update(item[start : start + _HASHED_SLICE].encode())
            separator = b","
    digest.update(b"]}\n")
    return digest.hexdigest()


_HASHED_SLICE = 1 << 16
