"""Putting a node's Ruleset into the kernel safely, at the speed of `nft -f`.

Guarantees, in order of importance:

* Only zonewall's own tables are touched (those named in the ruleset, plus tables of
  `previous` that the new ruleset drops). There is never a `flush ruleset`; Docker's,
  libvirt's or the distribution's tables survive every apply.
* Every change is ONE transaction. If libnftables or the kernel refuses it, nothing
  changed and the previous ruleset keeps filtering (NftError propagates). Chains
  whose rules changed only in their comments (ids a rule line added moved) follow
  in transactions of their own, whole chains each: they filter as before either way
  (compiler/transactions.py), and libnftables holds a bounded part at a time. Tables
  created from nothing (a node's first apply) are built in stages whose hooks come
  in the last (stages.py): no packet meets them before it, so they start filtering
  at one commit just the same, and libnftables holds one stage at a time.
* After the change we read back and check the structure. A mismatch restores what was
  there before and raises VerifyError: a half-understood ruleset is worse than the old one.

Where the time goes (docs/performance.md): the kernel's own work is nearly all of
`nft -f`, and libnftables parses JSON as fast as nft text, so the transaction stays a
JSON document (nothing is spliced into nft text). The costs that made a first apply
3x `nft -f` were ours: readback through libnftables' listing (quadratic in the number
of sets in the kernel), a Python pass over that listing, encoding the ruleset twice
(transaction and fingerprint) and the garbage collector walking the IR. Now:

* readback is `readback.read_view`: the kernel's structure over netlink, with digests;
* tables created in stages are encoded and read back while libnftables takes the
  stages (creation.py): a first apply costs the kernel's time and little more;
* a view is reused while the ruleset generation has not moved (`seen`, the view an
  earlier apply returned), and after our own transaction only what it touched is read
  and verified again (`readback.touched`), so an incremental apply costs what changed;
* the transaction is encoded once and the fingerprint hashes that encoding;
* the cyclic garbage collector is paused (zonewall/gcpause.py).

What is restored on a mismatch: for a full replace of tables that existed, their
libnftables JSON listing (a `Snapshot`, taken before; slow for large tables, but the
only form libnftables takes back). For an incremental apply, the kernel verifiably
held `previous` (its digests equal those `seen` recorded, or its structure is that of
`previous`), so `previous` itself is the snapshot, built only if needed.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property

from zonewall.compiler.ir import Ruleset, table_body_commands, table_object, timeout_object
from zonewall.compiler.ir import fingerprint as ir_fingerprint
from zonewall.compiler.transactions import diff_transactions
from zonewall.dataplane.backend import Backend, Json, NftError
from zonewall.dataplane.creation import create_in_stages
from zonewall.dataplane.encodings import Encodings, encode_ruleset, encode_table
from zonewall.dataplane.nftstate import TableState
from zonewall.dataplane.readback import (
    KernelView,
    TableKey,
    listings,
    read_view,
    shape_of_state,
    shape_of_table,
    shape_problems,
    touched,
    verify_problems,
)
from zonewall.dataplane.stages import STAGE_COMMANDS, Stage, creation_size
from zonewall.gcpause import collector_paused


class VerifyError(RuntimeError):
    """The kernel's readback did not match the ruleset; the snapshot was restored."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("readback does not match the applied ruleset: " + "; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Snapshot:
    """Our tables as libnftables lists them (None: table absent), to put them back."""

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

    @classmethod
    def of_ruleset(cls, ruleset: Ruleset, absent: Iterable[TableKey] = ()) -> Snapshot:
        """The listing of a kernel that holds exactly `ruleset` (and not `absent`)."""
        tables: dict[TableKey, list[Json] | None] = dict.fromkeys(absent)
        for table in ruleset.tables:
            tables[(table.family, table.name)] = [table_object(table)] + [command["add"] for command in table_body_commands(table)]
        return cls(tables)


@dataclass(frozen=True)
class ApplyResult:
    readback_hash: str  # digest of our tables right after the apply (readback.KernelView)
    mode: str  # "incremental" | "full" | "unchanged"
    view: KernelView  # the kernel right after the apply: pass it as `seen` to the next one
    # The fingerprint and the snapshot of an incremental apply each cost a pass over a
    # whole ruleset: they are made when first asked for, the new rules already in force.
    make_fingerprint: Callable[[], str] = field(repr=False)
    make_snapshot: Callable[[], Snapshot] = field(repr=False)
    commands: int = 0  # size of the transaction that took effect
    notes: tuple[str, ...] = field(default=())  # why the incremental path was not used
    make_encodings: Callable[[], Encodings | None] = field(default=lambda: None, repr=False)

    @cached_property
    def fingerprint(self) -> str:
        """ir.fingerprint of the applied ruleset."""
        return self.make_fingerprint()

    @property
    def encodings(self) -> Encodings | None:
        """The applied ruleset's tables encoded (made with the fingerprint): pass them
        as `encodings` to the next apply, whose fingerprint then encodes only the
        chains and sets that changed (dataplane/encodings.py)."""
        return self.make_encodings()

    @cached_property
    def snapshot(self) -> Snapshot:
        """What was there before; hand it to confirm.arm_revert."""
        return self.make_snapshot()


# ---------------------------------------------------------------- ct timeout objects

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


def _timeout_names(tables: Mapping[TableKey, TableState | None]) -> dict[TableKey, set[str]]:
    return {key: {name for kind, name in state.objects if kind == _TIMEOUT} for key, state in tables.items() if state is not None}


def ensure_timeouts(backend: Backend, wanted: dict[TableKey, dict[str, Json]], have: Mapping[TableKey, set[str]]) -> bool:
    """Create (as nft text, one transaction) the wanted timeout objects the kernel lacks;
    True if a transaction was committed."""
    commands: list[Json] = []
    for (family, name), bodies in wanted.items():
        missing = [body for key, body in sorted(bodies.items()) if key not in have.get((family, name), set())]
        if missing:
            commands.append({"add": {"table": {"family": family, "name": name}}})
            commands += [{"add": {_TIMEOUT: body}} for body in missing]
    if commands:
        backend.run_as_text(commands)
    return bool(commands)


def collect_timeouts(backend: Backend, ruleset: Ruleset, have: Mapping[TableKey, set[str]], notes: list[str]) -> bool:
    """Delete timeout objects of our tables the ruleset does not use; True if a
    transaction was committed (a refusal is noted: retried by the next apply)."""
    wanted = _wanted_timeouts(ruleset)
    commands: list[Json] = []
    for (family, name), names in sorted(have.items()):
        unused = names - set(wanted.get((family, name), {}))
        commands += [{"delete": {_TIMEOUT: {"family": family, "table": name, "name": n}}} for n in sorted(unused)]
    if not commands:
        return False
    try:
        backend.run_as_text(commands)
    except NftError as exc:
        notes.append(f"unused ct timeout objects kept until the next apply: {exc}")
        return False
    return True


# ---------------------------------------------------------------- full replace


def _keys(tables: Ruleset | Iterable[TableKey]) -> list[TableKey]:
    if isinstance(tables, Ruleset):
        return [(t.family, t.name) for t in tables.tables]
    return list(dict.fromkeys(tables))


def take_snapshot(backend: Backend, tables: Ruleset | Iterable[TableKey]) -> Snapshot:
    return Snapshot(listings(backend, _keys(tables)))


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
    with collector_paused():
        current = listings(backend, list(snapshot.tables))
        wanted = {key: _timeout_bodies(objects) for key, objects in snapshot.tables.items() if objects}
        have = {key: set(_timeout_bodies(objects)) for key, objects in current.items() if objects}
        ensure_timeouts(backend, {key: bodies for key, bodies in wanted.items() if bodies}, have)
        backend.run(_without_timeouts(restore_commands(snapshot, current)))


def remove_ruleset(backend: Backend, tables: Ruleset | Iterable[TableKey]) -> None:
    """Delete zonewall's tables (absent ones are fine) in one transaction."""
    commands: list[Json] = []
    for family, name in _keys(tables):
        commands += _delete_table_commands(family, name)
    backend.run(commands)


@dataclass
class _Batch(Stage):
    """A transaction as commands and as the JSON text sent, each table's body encoded
    once; the same encodings make the fingerprint (ir.fingerprint)."""

    bodies: dict[TableKey, tuple[str, ...]] = field(default_factory=dict)


def _full_batch(
    ruleset: Ruleset, listing: Mapping[TableKey, list[Json] | None], stale: Iterable[TableKey], reuse: Encodings | None
) -> tuple[_Batch, Encodings]:
    """Replace our tables with `ruleset` in one atomic transaction (see _clear_commands);
    and the tables' encodings, which (timeouts aside) are the transaction's text."""
    batch = _Batch()
    encodings = Encodings({}, {})
    for table in ruleset.tables:
        key = (table.family, table.name)
        body = table_body_commands(table)
        encodings.bodies[key], encodings.pieces[key] = encode_table(table, reuse.pieces.get(key, {}) if reuse is not None else {}, body)
        if table.timeouts:  # sent as text (module docstring); the fingerprint encodes the body itself
            body = _without_timeouts(body)
        else:
            batch.bodies[key] = encodings.bodies[key]
        current = listing.get(key)
        if current is None:
            batch.add([{"add": table_object(table)}])
            batch.add(body, batch.bodies.get(key))
        else:
            batch.add(_replace_commands(table.family, table.name, current, body))
    for family, name in stale:
        batch.add(_delete_table_commands(family, name))
    return batch, encodings


def _full(
    backend: Backend,
    ruleset: Ruleset,
    keys: list[TableKey],
    stale: list[TableKey],
    current: KernelView,
    restore_point: Snapshot | None,
    fingerprint: str | None,
    notes: list[str],
    reuse: Encodings | None = None,
) -> ApplyResult:
    """Replace our tables; `restore_point`: where to go back to on failure, if not to
    what is there now (an incremental transaction already changed it)."""
    present = [key for key in keys if current.exists(key)]
    snapshot = Snapshot(dict.fromkeys(keys) | listings(backend, present))
    ensure_timeouts(backend, _wanted_timeouts(ruleset), _timeout_names(current.tables))
    back_to = restore_point if restore_point is not None else snapshot
    # Tables created from nothing, more than a transaction's worth: in stages, the
    # hooks last, encoded and read back while the kernel works (stages.py,
    # creation.py); replacing tables that filter stays one transaction.
    if not present and restore_point is None and creation_size(ruleset) > STAGE_COMMANDS:
        try:
            after, encodings, commands = create_in_stages(backend, ruleset, STAGE_COMMANDS)
        except NftError:
            restore_snapshot(backend, snapshot)  # the inert tables earlier stages made go
            raise
    else:
        batch, encodings = _full_batch(ruleset, snapshot.tables, stale, reuse)
        try:
            backend.run(batch.commands, text=batch.text)
        except NftError:
            if restore_point is not None:
                restore_snapshot(backend, restore_point)  # undo the diff that read back wrong
            raise
        after = read_view(backend, _keys(ruleset))
        commands = len(batch.commands)
    if collect_timeouts(backend, ruleset, _timeout_names(after.tables), notes):
        after = read_view(backend, _keys(ruleset))
    problems = verify_problems(ruleset, after.tables)
    if problems:
        restore_snapshot(backend, back_to)
        raise VerifyError(problems)
    made = fingerprint or ir_fingerprint(ruleset, encodings.bodies)  # a hash of what is encoded already
    return ApplyResult(
        after.digest,
        "full",
        after,
        lambda: made,
        lambda: back_to,
        commands,
        tuple(notes),
        lambda: encodings,
    )


# ---------------------------------------------------------------- incremental


def _drift(previous: Ruleset, before: KernelView, seen: KernelView | None) -> list[str]:
    """Why the kernel cannot be taken to hold `previous` (a diff is only valid on it)."""
    keys = _keys(previous)
    if seen is not None and seen.covers(keys):
        changed = [f"table {family} {name}" for family, name in keys if before.tables.get((family, name)) != seen.tables[(family, name)]]
        return [f"{where} changed since the last apply" for where in changed]
    problems: list[str] = []
    for table in previous.tables:
        state = before.tables.get((table.family, table.name))
        where = f"table {table.family} {table.name}"
        if state is None:
            problems.append(f"{where} is not in the kernel")
        else:
            problems += shape_problems(shape_of_table(table), shape_of_state(state), where)
    return problems


def _incremental(
    backend: Backend, ruleset: Ruleset, previous: Ruleset, before: KernelView, keys: list[TableKey], fingerprint: str | None, notes: list[str],
    reuse: Encodings | None = None,
) -> ApplyResult | Snapshot | None:
    """The diff from `previous` in one transaction. Returns the result, or (to go on
    with a full replace) None when nothing was changed, or the snapshot of `previous`
    to restore when the diff committed but read back wrong."""
    absent = [key for key in keys if not before.exists(key)]

    def held() -> Snapshot:
        return Snapshot.of_ruleset(previous, absent)

    transactions = [t for t in (_without_timeouts(c) for c in diff_transactions(previous, ruleset, batch=STAGE_COMMANDS)) if t]
    commits = int(ensure_timeouts(backend, _wanted_timeouts(ruleset), _timeout_names(before.tables)))
    commands: list[Json] = []
    for transaction in transactions:
        try:
            backend.run(transaction)
        except NftError as exc:
            notes.append(f"incremental transaction refused: {exc}")
            # a later one (rules renumbered alone) refused: the kernel filters as
            # `ruleset` but is neither ruleset; a full replace follows, `previous` its restore point
            return held() if commands else None
        commands += transaction
        commits += 1
    commits += collect_timeouts(backend, ruleset, _timeout_names(before.tables), notes)
    new_keys = _keys(ruleset)
    scope = touched(commands)
    after = read_view(backend, new_keys, base=before, scope=scope, commits=commits) if scope is not None else read_view(backend, new_keys)
    # Only what the transaction touched needs checking when nothing else happened
    # meanwhile: the rest is what `previous` had, and `before` was checked against it.
    ours_only = scope is not None and after.generation == before.generation + commits
    problems = verify_problems(ruleset, after.tables, scope if ours_only else None)
    if problems:
        notes.append("incremental readback differs: " + "; ".join(problems))
        return held() if commands else None
    encoded = cache(lambda: encode_ruleset(ruleset, reuse))  # when the fingerprint is asked for: the new rules are in force
    return ApplyResult(
        after.digest,
        "incremental" if commands else "unchanged",
        after,
        lambda: fingerprint or ir_fingerprint(ruleset, encoded().bodies),
        held,
        len(commands),
        tuple(notes),
        encoded,
    )


def apply_ruleset(
    backend: Backend,
    ruleset: Ruleset,
    *,
    previous: Ruleset | None = None,
    seen: KernelView | None = None,
    fingerprint: str | None = None,
    encodings: Encodings | None = None,
) -> ApplyResult:
    """Make the kernel hold `ruleset` (our tables only); see the module docstring.

    `previous`: the IR applied last time; the change is then an incremental diff,
    provided the kernel still holds `previous`. `seen`: the view the apply of
    `previous` returned (ApplyResult.view); with it, "still holds" is a comparison of
    digests, free while the ruleset generation has not moved; without it, of
    structure. If the diff is refused or reads back wrong, a full replace of our
    tables follows. `fingerprint`: ir.fingerprint(ruleset) if the caller has it (a
    controller that compiled the ruleset); otherwise it is computed when first asked
    for (ApplyResult.fingerprint). `encodings`: those of the apply of `previous`
    (ApplyResult.encodings): the fingerprint then encodes only what changed.
    """
    with collector_paused():
        new_keys = _keys(ruleset)
        stale = [k for k in _keys(previous) if k not in new_keys] if previous is not None else []
        keys = new_keys + stale
        before = read_view(backend, keys, base=seen)
        notes: list[str] = []
        restore_point = None
        if previous is not None:
            drift = _drift(previous, before, seen)
            if drift:
                notes.append("kernel differs from previous: " + "; ".join(drift))
            else:
                outcome = _incremental(backend, ruleset, previous, before, keys, fingerprint, notes, encodings)
                if isinstance(outcome, ApplyResult):
                    return outcome
                if outcome is not None:
                    restore_point = outcome
                    before = read_view(backend, keys)  # the committed diff changed it
        return _full(backend, ruleset, keys, stale, before, restore_point, fingerprint, notes, encodings)
