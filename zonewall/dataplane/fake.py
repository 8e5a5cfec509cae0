"""An in-memory stand-in for the kernel's nftables, for unit tests.

It records every transaction and keeps a per-table model that follows the kernel
rules that matter for ordering bugs (measured on Linux 6.18 / nft 1.0.6):

* a batch is all-or-nothing;
* deleting a missing object, flushing a missing chain, or referencing a missing
  chain/set/limit is ENOENT;
* deleting a chain still targeted by a jump/goto or a verdict-map element, or a
  set/limit still used by a rule, is EBUSY; deleting a chain that merely has rules
  is fine (the kernel deletes them with it);
* `add` of an existing table/chain/limit is a silent no-op (a changed limit keeps
  its old rate!), except that a base chain's policy is updated and a changed hook
  or priority is EOPNOTSUPP; `add set` with a different definition is EEXIST;
* `add element` of a map key with a different value is EEXIST.

Error messages imitate libnftables' ("Could not process rule: ...").
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from zonewall.dataplane.backend import Json, NftError
from zonewall.dataplane.nftstate import ChainState, ObjectState, Scope, SetState, TableState, digest_of

_ENOENT = "Could not process rule: No such file or directory"
_EEXIST = "Could not process rule: File exists"
_EBUSY = "Could not process rule: Device or resource busy"
_EOPNOTSUPP = "Could not process rule: Operation not supported"

_OBJECT_KINDS = ("limit", "counter", "quota", "ct helper", "ct timeout")  # named objects
_SET_DEFINITION = ("type", "map", "flags", "timeout", "size")
_HOOK_FIELDS = ("type", "hook", "prio")


@dataclass
class _Table:
    handle: int
    next_handle: int = 1
    chains: dict[str, Json] = field(default_factory=dict)
    rules: dict[str, list[Json]] = field(default_factory=dict)
    sets: dict[str, tuple[str, Json]] = field(default_factory=dict)  # name -> (set|map, definition)
    elems: dict[str, list[Any]] = field(default_factory=dict)
    objects: dict[tuple[str, str], Json] = field(default_factory=dict)

    def new_handle(self) -> int:
        self.next_handle += 1
        return self.next_handle - 1


def _key(kind: str, element: Any) -> str:
    """Identity of a set element: the key part (maps) or the value (sets)."""
    if isinstance(element, dict) and "elem" in element:
        element = element["elem"]["val"]
    if kind == "map" and isinstance(element, (list, tuple)):
        element = element[0]
    return json.dumps(element, sort_keys=True)


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)


def _chain_targets(value: Any) -> set[str]:
    return {
        v[verb]["target"]
        for v in _walk(value)
        if isinstance(v, dict)
        for verb in ("jump", "goto")
        if isinstance(v.get(verb), dict)
    }


def _set_refs(value: Any) -> set[str]:
    return {v[1:] for v in _walk(value) if isinstance(v, str) and v.startswith("@")}


def _limit_refs(value: Any) -> set[str]:
    return {v["limit"] for v in _walk(value) if isinstance(v, dict) and isinstance(v.get("limit"), str)}


class _Done:
    """A transaction the fake has already made (or refused)."""

    def __init__(self, error: NftError | None) -> None:
        self._error = error

    def wait(self) -> None:
        if self._error is not None:
            raise self._error


class FakeBackend:
    """Records transactions and applies them to a dict model of the tables."""

    def __init__(self) -> None:
        self.tables: dict[tuple[str, str], _Table] = {}
        self.transactions: list[list[Json]] = []  # committed, in order
        self.failed: list[tuple[list[Json], str]] = []  # (commands, error)
        self._fail_next: str | None = None
        self._next_table_handle = 1
        self._generation = 1
        self.caches_released = 0

    # -- Backend protocol ---------------------------------------------------

    def fail_next(self, message: str) -> None:
        """Make the next run() raise NftError(message) and change nothing."""
        self._fail_next = message

    def run(self, commands: list[Json], *, text: str | None = None) -> None:
        if text is not None and json.loads(text) != {"nftables": commands}:
            raise AssertionError("run(): `text` is not the serialised `commands`")
        commands = copy.deepcopy(commands)
        if self._fail_next is not None:
            message, self._fail_next = self._fail_next, None
            self.failed.append((commands, message))
            raise NftError(message)
        saved = copy.deepcopy((self.tables, self._next_table_handle))
        try:
            for index, command in enumerate(commands):
                self._apply(index, command)
        except NftError as exc:
            self.tables, self._next_table_handle = saved  # all-or-nothing, like the kernel
            self.failed.append((commands, str(exc)))
            raise
        self.transactions.append(commands)
        if commands:
            self._generation += 1

    def start(self, commands: list[Json], *, text: str | None = None) -> _Done:
        """Runs the transaction at once; `wait()` gives its outcome."""
        try:
            self.run(commands, text=text)
        except NftError as exc:
            return _Done(exc)
        return _Done(None)

    def run_as_text(self, commands: list[Json]) -> None:
        """LibNftBackend sends these through nft's text parser; the model is the same."""
        self.run(commands)

    def list_tables(self) -> list[tuple[str, str]]:
        return list(self.tables)

    def generation(self) -> int:
        return self._generation

    def read_state(
        self,
        tables: list[tuple[str, str]],
        *,
        base: Mapping[tuple[str, str], TableState | None] | None = None,
        scope: Mapping[tuple[str, str], Scope] | None = None,
        steady: bool = True,
    ) -> tuple[int, dict[tuple[str, str], TableState | None]]:
        """The model's tables as nftstate.read_tables describes the kernel's (always
        read in full: `base` and `scope` only save the kernel work; nothing commits
        during a read)."""
        return self._generation, {key: self._state(key) for key in dict.fromkeys(tables)}

    def _state(self, key: tuple[str, str]) -> TableState | None:
        table = self.tables.get(key)
        if table is None:
            return None
        chains = {}
        for name, chain in table.chains.items():
            definition = _canonical(chain).encode()
            rules = table.rules[name]
            parts = [_canonical({"handle": r["handle"], "comment": r.get("comment"), "expr": _without_counts(r["expr"])}).encode() for r in rules]
            chains[name] = ChainState(tuple(r.get("comment") or None for r in rules), definition, digest_of(definition, *parts))
        sets = {}
        for name, (kind, definition) in table.sets.items():
            encoded = _canonical(definition).encode()
            dynamic = "timeout" in definition.get("flags", ()) or "dynamic" in definition.get("flags", ()) or "timeout" in definition
            if dynamic:
                sets[name] = SetState(kind, None, encoded, digest_of(encoded))
            else:
                elements = sorted(_canonical(e).encode() for e in table.elems[name])
                sets[name] = SetState(kind, len(elements), encoded, digest_of(encoded, *elements))
        objects = {}
        for (kind, name), body in table.objects.items():
            stable = {k: v for k, v in body.items() if not (kind in ("counter", "quota") and k in ("packets", "bytes", "used"))}
            policy = (body.get("protocol"), dict(body.get("policy") or {})) if kind == "ct timeout" else None
            objects[(kind, name)] = ObjectState(digest_of(_canonical(stable).encode()), policy)
        return TableState(chains, sets, objects)

    def release_cache(self) -> None:
        """Nothing is cached: the fake's state is its tables."""
        self.caches_released += 1

    def list_table(self, family: str, name: str) -> list[Json] | None:
        table = self.tables.get((family, name))
        if table is None:
            return None
        where = {"family": family, "table": name}
        out: list[Json] = [{"table": {"family": family, "name": name, "handle": table.handle}}]
        for (kind, _), obj in table.objects.items():
            out.append({kind: {**where, **obj}})
        for set_name, (kind, obj) in table.sets.items():
            body = {**where, **obj}
            if table.elems[set_name]:
                body["elem"] = copy.deepcopy(table.elems[set_name])
            out.append({kind: body})
        for chain in table.chains.values():
            out.append({"chain": {**where, **chain}})
        for chain_name, rules in table.rules.items():
            for rule in rules:
                out.append({"rule": {**where, "chain": chain_name, **_readback_rule(rule)}})
        return out

    # -- introspection ------------------------------------------------------

    def describe(self, file: TextIO | None = sys.stdout) -> str:
        """The committed transactions as nft-like lines (what the kernel was told)."""
        lines: list[str] = []
        for number, commands in enumerate(self.transactions, 1):
            lines.append(f"# transaction {number}: {len(commands)} commands")
            lines += ["  " + _describe_command(command) for command in commands]
        text = "\n".join(lines) + ("\n" if lines else "")
        if file is not None:
            file.write(text)
        return text

    # -- model ---------------------------------------------------------------

    def _apply(self, index: int, command: Json) -> None:
        if len(command) != 1:
            raise NftError(f"Error: Malformed command object at index {index}.")
        ((verb, body),) = command.items()
        if not isinstance(body, dict) or len(body) != 1:
            raise NftError(f"Error: Malformed command object at index {index}.")
        ((kind, obj),) = body.items()
        handler = getattr(self, f"_{verb}_{kind if kind not in _OBJECT_KINDS else 'object'}", None)
        if kind == "map" and handler is None:
            handler = getattr(self, f"_{verb}_set", None)
        if handler is None:
            raise NftError(f"Error: FakeBackend does not model '{verb} {kind}' (command {index}).")
        handler(kind, obj)

    def _table(self, obj: Json, table_key: str = "table") -> _Table:
        try:
            return self.tables[(obj["family"], obj[table_key])]
        except KeyError:
            raise NftError(_ENOENT) from None

    # tables
    def _add_table(self, _kind: str, obj: Json) -> None:
        key = (obj["family"], obj["name"])
        if key not in self.tables:
            self.tables[key] = _Table(handle=self._next_table_handle)
            self._next_table_handle += 1

    def _create_table(self, kind: str, obj: Json) -> None:
        if (obj["family"], obj["name"]) in self.tables:
            raise NftError(_EEXIST)
        self._add_table(kind, obj)

    def _delete_table(self, _kind: str, obj: Json) -> None:
        if self.tables.pop((obj["family"], obj["name"]), None) is None:
            raise NftError(_ENOENT)

    def _flush_table(self, _kind: str, obj: Json) -> None:
        table = self._table(obj, "name")
        for rules in table.rules.values():
            rules.clear()

    # chains
    def _add_chain(self, _kind: str, obj: Json) -> None:
        table = self._table(obj)
        new = {k: v for k, v in obj.items() if k not in ("family", "table", "handle")}
        old = table.chains.get(obj["name"])
        if old is None:
            table.chains[obj["name"]] = {"name": obj["name"], "handle": table.new_handle(), **new}
            table.rules[obj["name"]] = []
            return
        if any(k in new for k in _HOOK_FIELDS):
            if any(old.get(k) != new.get(k) for k in _HOOK_FIELDS):
                raise NftError(_EOPNOTSUPP)
            if "policy" in new:
                old["policy"] = new["policy"]

    def _create_chain(self, kind: str, obj: Json) -> None:
        if obj["name"] in self._table(obj).chains:
            raise NftError(_EEXIST)
        self._add_chain(kind, obj)

    def _flush_chain(self, _kind: str, obj: Json) -> None:
        table = self._table(obj)
        if obj["name"] not in table.chains:
            raise NftError(_ENOENT)
        table.rules[obj["name"]].clear()

    def _delete_chain(self, _kind: str, obj: Json) -> None:
        table = self._table(obj)
        name = obj["name"]
        if name not in table.chains:
            raise NftError(_ENOENT)
        referenced = any(
            name in _chain_targets(rule["expr"])
            for chain, rules in table.rules.items()
            if chain != name
            for rule in rules
        ) or any(name in _chain_targets(elems) for elems in table.elems.values())
        if referenced:
            raise NftError(_EBUSY)
        del table.chains[name], table.rules[name]

    # sets and maps
    def _add_set(self, kind: str, obj: Json) -> None:
        table = self._table(obj)
        definition = {k: v for k, v in obj.items() if k not in ("family", "table", "handle", "elem")}
        name = obj["name"]
        if name in table.sets:
            old_kind, old = table.sets[name]
            if old_kind != kind or any(old.get(k) != definition.get(k) for k in _SET_DEFINITION):
                raise NftError(_EEXIST)
        else:
            table.sets[name] = (kind, {"name": name, "handle": table.new_handle(), **definition})
            table.elems[name] = []
        self._add_elements(table, name, obj.get("elem", []))

    def _delete_set(self, kind: str, obj: Json) -> None:
        table = self._table(obj)
        name = obj["name"]
        if table.sets.get(name, (None,))[0] != kind:
            raise NftError(_ENOENT)
        if any(name in _set_refs(rule["expr"]) for rules in table.rules.values() for rule in rules):
            raise NftError(_EBUSY)
        del table.sets[name], table.elems[name]

    def _flush_set(self, kind: str, obj: Json) -> None:
        table = self._table(obj)
        if table.sets.get(obj["name"], (None,))[0] != kind:
            raise NftError(_ENOENT)
        table.elems[obj["name"]].clear()

    # elements
    def _add_element(self, _kind: str, obj: Json) -> None:
        table = self._table(obj)
        if obj["name"] not in table.sets:
            raise NftError(_ENOENT)
        self._add_elements(table, obj["name"], obj["elem"])

    def _delete_element(self, _kind: str, obj: Json) -> None:
        table = self._table(obj)
        name = obj["name"]
        if name not in table.sets:
            raise NftError(_ENOENT)
        kind = table.sets[name][0]
        elems = table.elems[name]
        for element in obj["elem"]:
            key = _key(kind, element)
            for position, existing in enumerate(elems):
                if _key(kind, existing) == key:
                    del elems[position]
                    break
            else:
                raise NftError(_ENOENT)

    def _add_elements(self, table: _Table, name: str, elements: list[Any]) -> None:
        kind = table.sets[name][0]
        elems = table.elems[name]
        for element in elements:
            for target in _chain_targets(element):
                if target not in table.chains:
                    raise NftError(_ENOENT)
            existing = [e for e in elems if _key(kind, e) == _key(kind, element)]
            if existing:
                if kind == "map" and existing[0] != element:
                    raise NftError(_EEXIST)
                continue
            elems.append(copy.deepcopy(element))

    # named stateful objects (limit, counter, quota)
    def _add_object(self, kind: str, obj: Json) -> None:
        table = self._table(obj)
        key = (kind, obj["name"])
        if key not in table.objects:  # an existing object is left alone, as the kernel does
            body = {k: v for k, v in obj.items() if k not in ("family", "table", "handle")}
            table.objects[key] = {"name": obj["name"], "handle": table.new_handle(), **body}

    def _delete_object(self, kind: str, obj: Json) -> None:
        table = self._table(obj)
        key = (kind, obj["name"])
        if key not in table.objects:
            raise NftError(_ENOENT)
        if kind == "limit" and any(
            obj["name"] in _limit_refs(rule["expr"]) for rules in table.rules.values() for rule in rules
        ):
            raise NftError(_EBUSY)
        if kind in ("ct helper", "ct timeout") and any(
            v.get(kind) == obj["name"] for rules in table.rules.values() for rule in rules for v in _walk(rule["expr"]) if isinstance(v, dict)
        ):
            raise NftError(_EBUSY)
        del table.objects[key]

    # rules
    def _add_rule(self, _kind: str, obj: Json, *, front: bool = False) -> None:
        table = self._table(obj)
        chain = obj["chain"]
        if chain not in table.chains:
            raise NftError(_ENOENT)
        if "handle" in obj or "index" in obj:
            raise NftError("Error: FakeBackend does not model positioned rules.")
        expr = obj["expr"]
        if not all(t in table.chains for t in _chain_targets(expr)):
            raise NftError(_ENOENT)
        if not all(s in table.sets for s in _set_refs(expr)):
            raise NftError(_ENOENT)
        if not all(("limit", n) in table.objects for n in _limit_refs(expr)):
            raise NftError(_ENOENT)
        rule = {"handle": table.new_handle(), "expr": copy.deepcopy(expr)}
        if obj.get("comment"):
            rule["comment"] = obj["comment"]
        if front:
            table.rules[chain].insert(0, rule)
        else:
            table.rules[chain].append(rule)

    def _insert_rule(self, kind: str, obj: Json) -> None:
        self._add_rule(kind, obj, front=True)

    def _delete_rule(self, _kind: str, obj: Json) -> None:
        table = self._table(obj)
        rules = table.rules.get(obj["chain"])
        if rules is None:
            raise NftError(_ENOENT)
        for position, rule in enumerate(rules):
            if rule["handle"] == obj.get("handle"):
                del rules[position]
                return
        raise NftError(_ENOENT)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _without_counts(expr: Any) -> Any:
    """Rule statements with anonymous counters' values dropped (traffic, not structure)."""
    return [{"counter": None} if isinstance(stmt, dict) and "counter" in stmt else stmt for stmt in expr]


def _readback_rule(rule: Json) -> Json:
    """Like the kernel's listing: anonymous counters come back with their values."""
    out = {"handle": rule["handle"]}
    if "comment" in rule:
        out["comment"] = rule["comment"]
    out["expr"] = [
        {"counter": {"packets": 0, "bytes": 0}} if stmt == {"counter": None} else copy.deepcopy(stmt)
        for stmt in rule["expr"]
    ]
    return out


def _describe_command(command: Json) -> str:
    ((verb, body),) = command.items()
    ((kind, obj),) = body.items()
    if kind == "table":
        return f"{verb} table {obj['family']} {obj['name']}"
    where = f"{obj.get('family')} {obj.get('table')}"
    if kind == "rule":
        comment = f' comment "{obj["comment"]}"' if obj.get("comment") else ""
        return f"{verb} rule {where} {obj['chain']} {json.dumps(obj.get('expr', []))}{comment}"
    if kind == "chain" and "hook" in obj:
        return (
            f"{verb} chain {where} {obj['name']} {{ type {obj['type']} hook {obj['hook']} "
            f"priority {obj['prio']}; policy {obj.get('policy', 'accept')}; }}"
        )
    if kind == "element":
        return f"{verb} element {where} {obj['name']} {json.dumps(obj['elem'])}"
    if kind in ("set", "map") and obj.get("elem"):
        return f"{verb} {kind} {where} {obj['name']} ({len(obj['elem'])} elements)"
    return f"{verb} {kind} {where} {obj['name']}"
