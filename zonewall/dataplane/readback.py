"""Interpreting what the kernel lists back: structure checks and a drift hash.

libnftables does not echo its input (nft 1.0.6, measured): objects come back grouped
by kind (limits, sets, maps, chains, then rules) rather than in the order they were
added; every object carries a kernel `handle`; anonymous counters carry values;
interval-set elements are sorted and normalised (a range covering a whole prefix
becomes a prefix); elements of timeout sets carry a ticking `expires`; a limit's
"unit": "packets" and a chain's comment are not printed. So we never compare readback
with the IR statement by statement; we compare structure (names, rule counts, rule
comments, element counts), and for drift detection we hash a canonical form of the
readback itself.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zonewall.compiler.ir import Ruleset, Table
from zonewall.dataplane.backend import Backend, Json

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


def _is_dynamic(flags: Iterable[str], timeout: Any) -> bool:
    # The packet path adds and expires elements of these sets; their count is not ours.
    return "timeout" in flags or "dynamic" in flags or timeout is not None


def shape_of_table(table: Table) -> Shape:
    return Shape(
        chains={c.name: tuple(r.comment or None for r in c.rules) for c in table.chains},
        sets={
            s.name: (
                "map" if s.map is not None else "set",
                None if _is_dynamic(s.flags, s.timeout) else len(s.elements),
            )
            for s in table.sets
        },
        limits=frozenset(limit.name for limit in table.limits),
    )


def shape_of_objects(objects: list[Json]) -> Shape:
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
            dynamic = _is_dynamic(body.get("flags", ()), body.get("timeout"))
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


def verify_problems(ruleset: Ruleset, readback: dict[TableKey, list[Json] | None]) -> list[str]:
    problems: list[str] = []
    for table in ruleset.tables:
        where = f"table {table.family} {table.name}"
        objects = readback.get((table.family, table.name))
        if objects is None:
            problems.append(f"{where}: missing after apply")
            continue
        problems += shape_problems(shape_of_table(table), shape_of_objects(objects), where)
        problems += timeout_problems(table, objects, where)
    return problems


def timeout_problems(table: Table, objects: list[Json], where: str) -> list[str]:
    """Each ct timeout object of `table` is there, for its protocol, with its values.

    nft lists only the states whose value differs from nft's built-in default, so a
    state missing from the listing is not a difference; a listed value that is not the
    wanted one is (e.g. an object whose policy was lost on its way in). Objects the
    table does not name are not looked at: the apply collects them (dataplane/apply.py).
    """
    listed = {o["ct timeout"]["name"]: o["ct timeout"] for o in objects if "ct timeout" in o}
    problems = []
    for timeout in table.timeouts:
        body = listed.get(timeout.name)
        if body is None:
            problems.append(f"{where}: ct timeout {timeout.name} is missing")
            continue
        got = body.get("policy") or {}
        wrong = {state: got[state] for state, seconds in timeout.policy if state in got and got[state] != seconds}
        if body.get("protocol") != timeout.protocol or wrong:
            problems.append(f"{where}: ct timeout {timeout.name} differs: {body.get('protocol')} {got} != {timeout.protocol} {dict(timeout.policy)}")
    return problems


# ---------------------------------------------------------------------------
# canonical form and hash


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
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
    """Readback with the kernel's noise removed and a stable order.

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
            if _is_dynamic(body.get("flags", ()), body.get("timeout")):
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


def hash_readback(readback: dict[TableKey, list[Json] | None]) -> str:
    text = json.dumps(canonical_readback(readback), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def read_tables(backend: Backend, tables: Iterable[TableKey]) -> dict[TableKey, list[Json] | None]:
    return {key: backend.list_table(*key) for key in dict.fromkeys(tables)}


def readback_hash(backend: Backend, tables: Iterable[TableKey] | Ruleset) -> str:
    """Hash of what the kernel holds for these tables now; compare with ApplyResult's."""
    if isinstance(tables, Ruleset):
        tables = [(t.family, t.name) for t in tables.tables]
    return hash_readback(read_tables(backend, tables))
