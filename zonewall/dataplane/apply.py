"""Putting a node's Ruleset into the kernel safely.

Guarantees, in order of importance:

* Only zonewall's own tables are touched (those named in the ruleset, plus tables of
  `previous` that the new ruleset drops). There is never a `flush ruleset`; Docker's,
  libvirt's or the distribution's tables survive every apply.
* Every change is ONE transaction. If libnftables or the kernel refuses it, nothing
  changed and the previous ruleset keeps filtering (NftError propagates).
* Before changing anything we snapshot our tables as the kernel lists them, and after
  the change we read back and check the structure. A mismatch restores the snapshot
  and raises VerifyError: a half-understood ruleset is worse than the old one.

The one exception to "one transaction": conntrack timeout objects (`ct timeout`).
libnftables 1.0.6 drops their policy when they come as JSON and aborts the whole
process on a JSON `delete ct timeout` (measured; fixed in nftables 1.0.9), and one
libnftables call is either JSON or text, never both. So they travel as nft text in
their own transactions around the JSON one:

1. before it, the objects the new ruleset uses that the kernel lacks are created
   (`add` only, idempotent). Their names are a hash of their policy, so an existing
   name already has the right content, and no object anything uses is touched;
2. the JSON transaction never adds or deletes a `ct timeout` (those commands are
   filtered out of every batch here);
3. after it, objects no rule of the new ruleset uses are deleted, one text
   transaction; the kernel refuses to delete an object a rule still references, so
   this can never remove one in use, and if it fails it is retried on the next apply.

Why that is safe: until the JSON transaction commits, the new objects are referenced
by nothing, so they change no packet's fate; if it is refused (or read back wrong
and the snapshot restored), they are harmless unused objects collected by the next
apply. A restore re-creates the snapshot's objects from their listing first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from zonewall.compiler.diff import diff_commands
from zonewall.compiler.ir import Ruleset, fingerprint, table_body_commands, timeout_object
from zonewall.dataplane.backend import Backend, Json, NftError
from zonewall.dataplane.readback import (
    TableKey,
    hash_readback,
    read_tables,
    shape_of_objects,
    shape_of_table,
    shape_problems,
    verify_problems,
)


class VerifyError(RuntimeError):
    """The kernel's readback did not match the ruleset; the snapshot was restored."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("readback does not match the applied ruleset: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Snapshot:
    """Our tables as the kernel listed them before a change (None: table absent)."""

    tables: dict[TableKey, list[Json] | None]

    def to_json(self) -> Json:
        return {
            "tables": [
                {"family": family, "name": name, "objects": objects}
                for (family, name), objects in self.tables.items()
            ]
        }

    @classmethod
    def from_json(cls, document: Json) -> Snapshot:
        return cls({(t["family"], t["name"]): t["objects"] for t in document["tables"]})


@dataclass(frozen=True)
class ApplyResult:
    fingerprint: str  # ir.fingerprint of the applied ruleset
    readback_hash: str  # readback.hash_readback of our tables right after the apply
    mode: str  # "incremental" | "full" | "unchanged"
    snapshot: Snapshot  # what was there before; hand it to confirm.arm_revert
    commands: int = 0  # size of the transaction that took effect
    notes: tuple[str, ...] = field(default=())  # why the incremental path was not used


_TIMEOUT = "ct timeout"


def _without_timeouts(commands: list[Json]) -> list[Json]:
    """The JSON batch minus ct timeout adds/deletes (those go as text, see above)."""
    return [c for c in commands if not any(_TIMEOUT in body for body in c.values() if isinstance(body, dict))]


def _timeout_bodies(objects: Iterable[Json]) -> dict[str, Json]:
    """name -> body of the ct timeout objects among listed (or IR) objects."""
    out = {}
    for obj in objects:
        if _TIMEOUT in obj:
            body = {k: v for k, v in obj[_TIMEOUT].items() if k != "handle"}
            out[body["name"]] = body
    return out


def _wanted_timeouts(ruleset: Ruleset) -> dict[TableKey, dict[str, Json]]:
    return {
        (t.family, t.name): _timeout_bodies(timeout_object(t, timeout) for timeout in t.timeouts)
        for t in ruleset.tables
        if t.timeouts
    }


def ensure_timeouts(backend: Backend, wanted: dict[TableKey, dict[str, Json]], current: dict[TableKey, list[Json] | None]) -> int:
    """Create (as nft text, one transaction) the wanted timeout objects the kernel lacks."""
    commands: list[Json] = []
    for (family, name), bodies in wanted.items():
        have = _timeout_bodies(current.get((family, name)) or [])
        missing = [body for key, body in sorted(bodies.items()) if key not in have]
        if missing:
            commands.append({"add": {"table": {"family": family, "name": name}}})
            commands += [{"add": {_TIMEOUT: body}} for body in missing]
    if commands:
        backend.run_as_text(commands)
    return len(commands)


def collect_timeouts(backend: Backend, ruleset: Ruleset, readback: dict[TableKey, list[Json] | None]) -> str | None:
    """Delete timeout objects of our tables the ruleset does not use; a note if refused."""
    wanted = _wanted_timeouts(ruleset)
    commands: list[Json] = []
    for (family, name), objects in readback.items():
        unused = set(_timeout_bodies(objects or [])) - set(wanted.get((family, name), {}))
        commands += [{"delete": {_TIMEOUT: {"family": family, "table": name, "name": n}}} for n in sorted(unused)]
    if not commands:
        return None
    try:
        backend.run_as_text(commands)
    except NftError as exc:
        return f"unused ct timeout objects kept until the next apply: {exc}"
    return None


def _has_unused_timeouts(ruleset: Ruleset, readback: dict[TableKey, list[Json] | None]) -> bool:
    wanted = _wanted_timeouts(ruleset)
    return any(set(_timeout_bodies(objs or [])) - set(wanted.get(key, {})) for key, objs in readback.items())


def _keys(tables: Ruleset | Iterable[TableKey]) -> list[TableKey]:
    if isinstance(tables, Ruleset):
        return [(t.family, t.name) for t in tables.tables]
    return list(dict.fromkeys(tables))


def take_snapshot(backend: Backend, tables: Ruleset | Iterable[TableKey]) -> Snapshot:
    return Snapshot(read_tables(backend, _keys(tables)))


def _delete_table_commands(family: str, name: str) -> list[Json]:
    # `add` before `delete` makes the delete valid whether or not the table exists.
    table = {"table": {"family": family, "name": name}}
    return [{"add": table}, {"delete": table}]


def _hook_spec(chain: Json) -> tuple[object, ...] | None:
    return (chain.get("type"), chain.get("hook"), chain.get("prio")) if "hook" in chain else None


def _clear_commands(family: str, name: str, current: list[Json], target: list[Json]) -> tuple[list[Json], set[str]]:
    """Empty an existing table in the next generation, reusing same-named objects.

    Neither the table nor a base chain is ever deleted and re-added: their hooks are
    (un)registered outside nf_tables' generation switch. Deleting and re-creating
    regular chains and sets of the same name in one transaction also let packets
    through now and then (measured: 1-5 of a flood both rulesets drop, over 200
    applies). Flushing rules and set elements of the objects that stay, and deleting
    only what the target no longer has, leaked none. Returns the commands and the
    names of objects kept (whose `add` must not be repeated when unchanged).
    """
    wanted: dict[tuple[str, str], Json] = {}
    for command in target:
        ((kind, body),) = command["add"].items()
        if kind != "rule":
            wanted[(kind, body["name"])] = body
    commands: list[Json] = []
    deletions: list[Json] = []
    chain_deletions: list[Json] = []
    kept: set[str] = set()
    for obj in current:
        ((kind, body),) = obj.items()
        if kind in ("table", "rule"):
            continue
        if kind == _TIMEOUT:
            continue  # never through JSON: created before, collected after (module docstring)
        ref = {"family": family, "table": name, "name": body["name"]}
        want = wanted.get((kind, body["name"]))
        if kind == "chain":
            commands.append({"flush": {"chain": ref}})
            if want is None or _hook_spec(want) != _hook_spec(body):
                chain_deletions.append({"delete": {"chain": ref}})
            elif want.get("policy") == body.get("policy"):
                kept.add(f"chain:{body['name']}")
        elif kind in ("set", "map") and want is not None and _set_definition(want) == _set_definition(body):
            commands.append({"flush": {kind: ref}})
            kept.add(f"{kind}:{body['name']}")
        else:  # redefined or gone; stateful objects (limits) are simply re-created
            deletions.append({"delete": {kind: ref}})
    # chain rules are flushed first, so nothing references what is deleted after
    return commands + deletions + chain_deletions, kept


def _set_definition(body: Json) -> tuple[object, ...]:
    return (str(body.get("type")), body.get("map"), tuple(sorted(f for f in body.get("flags", []) if f != "dynamic")), body.get("timeout"), body.get("size"))


def _replace_commands(family: str, name: str, current: list[Json] | None, body: list[Json]) -> list[Json]:
    """One table becomes `body` (add commands) atomically."""
    table = {"table": {"family": family, "name": name}}
    if current is None:
        return [{"add": table}] + body
    clear, kept = _clear_commands(family, name, current, body)
    adds: list[Json] = []
    for command in body:
        ((kind, obj),) = command["add"].items()
        if kind != "rule" and f"{kind}:{obj['name']}" in kept:
            if kind in ("set", "map") and obj.get("elem"):
                adds.append({"add": {"element": {"family": family, "table": name, "name": obj["name"], "elem": obj["elem"]}}})
            continue
        adds.append(command)
    return [{"add": table}] + clear + adds


def restore_commands(snapshot: Snapshot, current: dict[TableKey, list[Json] | None]) -> list[Json]:
    """Re-create each snapshotted table exactly; delete those that were absent.

    Listed objects cannot be fed back in listed order: maps are listed before the
    chains their verdicts jump to. Chains go first (empty), then stateful objects and
    sets, then rules. Handles are dropped: on `add rule` a handle means "insert after
    this handle", not "use this handle".
    """
    commands: list[Json] = []
    for (family, name), objects in snapshot.tables.items():
        if objects is None:
            commands += _delete_table_commands(family, name)
            continue
        buckets: dict[str, list[Json]] = {"chain": [], "other": [], "rule": []}
        for obj in objects:
            ((kind, body),) = obj.items()
            if kind == "table":
                continue
            body = {k: copy.deepcopy(v) for k, v in body.items() if k != "handle"}
            buckets[kind if kind in ("chain", "rule") else "other"].append({"add": {kind: body}})
        body_commands = buckets["chain"] + buckets["other"] + buckets["rule"]
        commands += _replace_commands(family, name, current.get((family, name)), body_commands)
    return commands


def restore_snapshot(backend: Backend, snapshot: Snapshot) -> None:
    """One transaction: our tables become exactly what the snapshot recorded."""
    current = read_tables(backend, list(snapshot.tables))
    wanted = {key: _timeout_bodies(objects) for key, objects in snapshot.tables.items() if objects}
    ensure_timeouts(backend, {key: bodies for key, bodies in wanted.items() if bodies}, current)
    backend.run(_without_timeouts(restore_commands(snapshot, current)))


def remove_ruleset(backend: Backend, tables: Ruleset | Iterable[TableKey]) -> None:
    """Delete zonewall's tables (absent ones are fine) in one transaction."""
    commands: list[Json] = []
    for family, name in _keys(tables):
        commands += _delete_table_commands(family, name)
    backend.run(commands)


def _full_commands(ruleset: Ruleset, snapshot: Snapshot, stale: Iterable[TableKey]) -> list[Json]:
    """Replace our tables with `ruleset` in one atomic transaction (see _clear_commands)."""
    commands: list[Json] = []
    for table in ruleset.tables:
        current = snapshot.tables.get((table.family, table.name))
        commands += _replace_commands(table.family, table.name, current, table_body_commands(table))
    for family, name in stale:
        commands += _delete_table_commands(family, name)
    return commands


def _matches_previous(previous: Ruleset, snapshot: Snapshot) -> list[str]:
    """Does the kernel still look like `previous`? Diffs are only valid on top of it."""
    problems: list[str] = []
    for table in previous.tables:
        objects = snapshot.tables.get((table.family, table.name))
        where = f"table {table.family} {table.name}"
        if objects is None:
            problems.append(f"{where} is not in the kernel")
        else:
            problems += shape_problems(shape_of_table(table), shape_of_objects(objects), where)
    return problems


def apply_ruleset(backend: Backend, ruleset: Ruleset, *, previous: Ruleset | None = None) -> ApplyResult:
    """Make the kernel hold `ruleset` (our tables only); see the module docstring.

    With `previous` (the IR applied last time) the change is an incremental diff,
    provided the kernel still has the shape of `previous`; if the diff is refused or
    reads back wrong, a full replace of our tables follows.
    """
    new_keys = _keys(ruleset)
    stale = [k for k in _keys(previous) if k not in new_keys] if previous is not None else []
    snapshot = take_snapshot(backend, new_keys + stale)
    notes: list[str] = []
    incremental_committed = False
    ensure_timeouts(backend, _wanted_timeouts(ruleset), snapshot.tables)

    def read_back() -> dict[TableKey, list[Json] | None]:
        readback = read_tables(backend, new_keys)
        note = collect_timeouts(backend, ruleset, readback)
        if note is None:
            readback = read_tables(backend, new_keys) if _has_unused_timeouts(ruleset, readback) else readback
        else:
            notes.append(note)
        return readback

    if previous is not None:
        drift = _matches_previous(previous, snapshot)
        if drift:
            notes.append("kernel differs from previous: " + "; ".join(drift))
        else:
            commands = _without_timeouts(diff_commands(previous, ruleset))
            try:
                if commands:
                    backend.run(commands)
            except NftError as exc:
                notes.append(f"incremental transaction refused: {exc}")
            else:
                incremental_committed = bool(commands)
                readback = read_back()
                problems = verify_problems(ruleset, readback)
                if not problems:
                    return ApplyResult(
                        fingerprint(ruleset),
                        hash_readback(readback),
                        "incremental" if commands else "unchanged",
                        snapshot,
                        len(commands),
                        tuple(notes),
                    )
                notes.append("incremental readback differs: " + "; ".join(problems))

    # the full replace starts from what the kernel holds now (a committed diff changed it)
    current = take_snapshot(backend, new_keys + stale) if incremental_committed else snapshot
    commands = _without_timeouts(_full_commands(ruleset, current, stale))
    try:
        backend.run(commands)
    except NftError:
        if incremental_committed:
            restore_snapshot(backend, snapshot)  # undo the diff that read back wrong
        raise
    readback = read_back()
    problems = verify_problems(ruleset, readback)
    if problems:
        restore_snapshot(backend, snapshot)
        raise VerifyError(problems)
    return ApplyResult(fingerprint(ruleset), hash_readback(readback), "full", snapshot, len(commands), tuple(notes))
