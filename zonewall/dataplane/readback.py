"""Reading our tables back: structure checks against the IR, and a drift digest.

What the kernel holds is read as `nftstate.TableState`s (over netlink; FakeBackend
builds the same from its model): each chain's rule comments in order, each named
set's kind and element count, stateful objects, ct timeout policies, and a digest of
all the rest. Readback never compares rules statement by statement with the IR (the
kernel normalises them: prefixes, merged intervals, implicit dependencies); it
verifies the structure, and detects drift by comparing digests of two reads.

A `KernelView` is one such read with the ruleset generation it was taken at. The
generation moves on with every committed transaction in the namespace, so a view is
still true as long as the generation has not moved: `read_view` then returns it
without asking the kernel for anything but the generation, and after transactions of
our own it reads again only what they touched (`Scope`).

libnftables' JSON listing (`listings`) is still what a snapshot for restore is made of:
it can be fed back to libnftables. It is slow for large tables (netlink.py says why).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zonewall.compiler.ir import Ruleset, Table
from zonewall.dataplane.backend import Backend, Json
from zonewall.dataplane.nftstate import Scope, TableState

TableKey = tuple[str, str]

# Keys whose values the kernel changes on its own (handles, traffic, time).
_VOLATILE = frozenset({"handle", "expires", "used"})
_SET_KINDS = ("set", "map")


@dataclass(frozen=True)
class Shape:
    """The structural facts we verify after an apply."""

    chains: dict[str, tuple[str | None, ...]]  # chain -> rule comments, in order
    sets: dict[str, tuple[str, int | None]]  # name -> (set|map, element count; None = dynamic)
    limits: frozenset[str]


def is_dynamic(flags: Iterable[str], timeout: Any) -> bool:
    # The packet path adds and expires elements of these sets; their count is not ours.
    return "timeout" in flags or "dynamic" in flags or timeout is not None


def shape_of_table(table: Table, *, chains: Iterable[str] | None = None, sets: Iterable[str] | None = None) -> Shape:
    """The IR's shape; with `chains`/`sets`, only the rules of those chains and the
    element counts of those sets (the names of all of them are always there)."""
    only_chains = None if chains is None else set(chains)
    only_sets = None if sets is None else set(sets)
    return Shape(
        chains={c.name: tuple(r.comment or None for r in c.rules) if only_chains is None or c.name in only_chains else () for c in table.chains},
        sets={
            s.name: (
                "map" if s.map is not None else "set",
                None if is_dynamic(s.flags, s.timeout) or (only_sets is not None and s.name not in only_sets) else len(s.elements),
            )
            for s in table.sets
        },
        limits=frozenset(limit.name for limit in table.limits),
    )


def shape_of_state(state: TableState, *, chains: Iterable[str] | None = None, sets: Iterable[str] | None = None) -> Shape:
    only_chains = None if chains is None else set(chains)
    only_sets = None if sets is None else set(sets)
    return Shape(
        chains={name: c.comments if only_chains is None or name in only_chains else () for name, c in state.chains.items()},
        sets={name: (s.kind, s.elements if only_sets is None or name in only_sets else None) for name, s in state.sets.items()},
        limits=frozenset(name for kind, name in state.objects if kind == "limit"),
    )


def shape_of_objects(objects: list[Json]) -> Shape:
    """The shape of libnftables' JSON listing of a table (a snapshot)."""
    chains: dict[str, list[str | None]] = {}
    sets: dict[str, tuple[str, int | None]] = {}
    limits: set[str] = set()
    for obj in objects:
        ((kind, body),) = obj.items()
        if kind == "chain":
            chains.setdefault(body["name"], [])
        elif kind == "rule":
            chains.setdefault(body["chain"], []).append(body.get("comment") or None)
        elif kind in _SET_KINDS:
            dynamic = is_dynamic(body.get("flags", ()), body.get("timeout"))
            sets[body["name"]] = (kind, None if dynamic else len(body.get("elem", ())))
        elif kind == "limit":
            limits.add(body["name"])
    return Shape({k: tuple(v) for k, v in chains.items()}, sets, frozenset(limits))


def shape_problems(expected: Shape, actual: Shape, where: str) -> list[str]:
    """Human-readable differences; empty when the shapes agree."""
    problems: list[str] = []
    if set(expected.chains) != set(actual.chains):
        missing = sorted(set(expected.chains) - set(actual.chains))
        extra = sorted(set(actual.chains) - set(expected.chains))
        problems.append(f"{where}: chains differ (missing {missing}, unexpected {extra})")
    for name in sorted(set(expected.chains) & set(actual.chains)):
        want, got = expected.chains[name], actual.chains[name]
        if len(want) != len(got):
            problems.append(f"{where}: chain {name} has {len(got)} rules, expected {len(want)}")
        elif want != got:
            problems.append(f"{where}: chain {name} rule comments differ: {list(got)} != {list(want)}")
    if set(expected.sets) != set(actual.sets):
        problems.append(f"{where}: sets/maps differ: {sorted(actual.sets)} != {sorted(expected.sets)}")
    for name in sorted(set(expected.sets) & set(actual.sets)):
        (want_kind, want_count), (got_kind, got_count) = expected.sets[name], actual.sets[name]
        if want_kind != got_kind:
            problems.append(f"{where}: {name} is a {got_kind}, expected a {want_kind}")
        elif want_count is not None and got_count is not None and want_count != got_count:
            problems.append(f"{where}: {want_kind} {name} has {got_count} elements, expected {want_count}")
    if expected.limits != actual.limits:
        problems.append(f"{where}: limits differ: {sorted(actual.limits)} != {sorted(expected.limits)}")
    return problems


def verify_problems(ruleset: Ruleset, tables: Mapping[TableKey, TableState | None], scope: Mapping[TableKey, Scope] | None = None) -> list[str]:
    """Does the kernel have the ruleset's structure? With `scope` (what a transaction
    touched, the rest having been verified before), the rules and elements of the
    scope's chains and sets are checked, and the names of all of them."""
    problems: list[str] = []
    for table in ruleset.tables:
        where = f"table {table.family} {table.name}"
        state = tables.get((table.family, table.name))
        if state is None:
            problems.append(f"{where}: missing after apply")
            continue
        part = (scope or {}).get((table.family, table.name))
        chains, sets = (None, None) if part is None else (part.chains, part.sets)
        problems += shape_problems(shape_of_table(table, chains=chains, sets=sets), shape_of_state(state, chains=chains, sets=sets), where)
        problems += timeout_problems(table, state, where)
    return problems


def timeout_problems(table: Table, state: TableState, where: str) -> list[str]:
    """Each ct timeout object of `table` is there, for its protocol, with its values.

    Objects the table does not name are not looked at: the apply collects them
    (dataplane/apply.py)."""
    problems = []
    for timeout in table.timeouts:
        found = state.objects.get(("ct timeout", timeout.name))
        if found is None or found.policy is None:
            problems.append(f"{where}: ct timeout {timeout.name} is missing")
            continue
        protocol, got = found.policy
        wrong = {s: got.get(s) for s, seconds in timeout.policy if got.get(s, seconds) != seconds}
        if protocol != timeout.protocol or wrong:
            problems.append(f"{where}: ct timeout {timeout.name} differs: {protocol} {got} != {timeout.protocol} {dict(timeout.policy)}")
    return problems


# ---------------------------------------------------------------------------
# views: reads at a generation


@dataclass(frozen=True)
class KernelView:
    """Our tables (None: absent) as the kernel held them at `generation`."""

    generation: int
    tables: dict[TableKey, TableState | None]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for (family, name), state in sorted(self.tables.items()):
            h.update(f"{family}\0{name}\0".encode() + (b"absent" if state is None else state.digest()))
        return h.hexdigest()

    def covers(self, tables: Iterable[TableKey]) -> bool:
        return all(key in self.tables for key in tables)

    def exists(self, key: TableKey) -> bool:
        return self.tables.get(key) is not None


def read_view(
    backend: Backend,
    tables: Iterable[TableKey] | Ruleset,
    *,
    base: KernelView | None = None,
    scope: Mapping[TableKey, Scope] | None = None,
    commits: int = 0,
) -> KernelView:
    """What the kernel holds for `tables` now.

    `base`: an earlier view, followed by `commits` transactions of our own, which
    touched no more than `scope` (None: touched nothing). If the generation moved on
    by exactly `commits`, nobody else changed anything meanwhile: with no commits,
    `base` is still true and returned as it is; otherwise only the scope is read
    again. Any other generation means someone else committed: everything is read.
    """
    keys = [(t.family, t.name) for t in tables.tables] if isinstance(tables, Ruleset) else list(dict.fromkeys(tables))
    if base is not None and base.covers(keys):
        if commits == 0 and backend.generation() == base.generation:
            return base if list(base.tables) == keys else KernelView(base.generation, {k: base.tables[k] for k in keys})
        if commits > 0 and backend.generation() == base.generation + commits:
            parts = {key: (scope or {}).get(key, Scope()) for key in keys}
            generation, state = backend.read_state(keys, base=base.tables, scope=parts)
            if generation == base.generation + commits:
                return KernelView(generation, state)
    generation, state = backend.read_state(keys)
    return KernelView(generation, state)


def readback_hash(backend: Backend, tables: Iterable[TableKey] | Ruleset) -> str:
    """Digest of what the kernel holds for these tables now; compare with ApplyResult's.
    Handles are in it: equal digests mean nothing was changed, not even re-created."""
    return read_view(backend, tables).digest


def touched(commands: Iterable[Json]) -> dict[TableKey, Scope] | None:
    """The chains and sets whose contents `commands` may change, per table; None if a
    command reaches a whole table (flush or delete table)."""
    chains: dict[TableKey, set[str]] = {}
    sets: dict[TableKey, set[str]] = {}
    for command in commands:
        ((verb, body),) = command.items()
        ((kind, obj),) = body.items()
        if kind == "table":
            if verb != "add":
                return None
            continue
        key = (obj["family"], obj["table"])
        if kind == "rule":
            chains.setdefault(key, set()).add(obj["chain"])
        elif kind == "chain":
            chains.setdefault(key, set()).add(obj["name"])
        elif kind in ("set", "map", "element"):
            sets.setdefault(key, set()).add(obj["name"])
    return {key: Scope(frozenset(chains.get(key, ())), frozenset(sets.get(key, ()))) for key in set(chains) | set(sets)}


# ---------------------------------------------------------------------------
# libnftables' JSON listing (snapshots) and its canonical form (tests)


def listings(backend: Backend, tables: Iterable[TableKey]) -> dict[TableKey, list[Json] | None]:
    return {key: backend.list_table(*key) for key in dict.fromkeys(tables)}


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in _VOLATILE:
                continue
            if key == "counter" and isinstance(item, dict) and set(item) <= {"packets", "bytes"}:
                out[key] = None  # an anonymous counter: keep the statement, drop the numbers
                continue
            out[key] = _strip(item)
        return out
    if isinstance(value, list):
        return [_strip(item) for item in value]
    return value


def canonical_objects(objects: list[Json]) -> list[Json]:
    """A listing with the kernel's noise removed and a stable order.

    Non-rule objects are sorted by kind and name; rules are grouped by chain name
    (stably, so each chain's rule order is kept); set elements are sorted; the
    elements of dynamic sets are dropped (the packet path owns them).
    """
    others: list[tuple[str, str, Json]] = []
    rules: list[tuple[str, Json]] = []
    for obj in objects:
        ((kind, body),) = obj.items()
        body = _strip(body)
        if kind == "counter":  # a named counter object: its numbers are traffic
            body.pop("packets", None)
            body.pop("bytes", None)
        if kind in _SET_KINDS and "elem" in body:
            if is_dynamic(body.get("flags", ()), body.get("timeout")):
                del body["elem"]
            else:
                body["elem"] = sorted(body["elem"], key=lambda e: json.dumps(e, sort_keys=True))
        if kind == "rule":
            rules.append((body["chain"], {kind: body}))
        else:
            others.append((kind, str(body.get("name", "")), {kind: body}))
    others.sort(key=lambda item: (item[0], item[1]))
    rules.sort(key=lambda item: item[0])
    return [obj for _, _, obj in others] + [obj for _, obj in rules]


def canonical_readback(readback: dict[TableKey, list[Json] | None]) -> list[Json]:
    return [
        {"family": family, "name": name, "objects": None if objs is None else canonical_objects(objs)}
        for (family, name), objs in sorted(readback.items())
    ]


def listing_hash(backend: Backend, tables: Iterable[TableKey] | Ruleset) -> str:
    """Hash of what these tables contain, by libnftables' listing: unlike a view's
    digest, handles are left out, so a ruleset restored or applied elsewhere hashes
    the same as the original. Slow for large tables; for comparing rulesets by content."""
    if isinstance(tables, Ruleset):
        tables = [(t.family, t.name) for t in tables.tables]
    text = json.dumps(canonical_readback(listings(backend, tables)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
