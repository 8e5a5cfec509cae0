"""Rule counters: each node's per-rule packets and bytes, never going backwards.

A row per node and rule (level, scope, direction, rule id) holds what the rule
counted since it was first seen there. Kernel counters restart at 0 whenever an apply
re-creates a rule, so each reading is compared per kernel rule (`instances`): a
known one counts from its last reading, a new one from 0.

A rule gone from a node (removed, or its derived id moved by a line added above it)
does not keep a row of its own: its counts are folded into the scope's row of removed
rules with the same verdict (`(removed drop)`...), so a VM's sums never shrink while
the rows stay bounded by the rules that exist (keeping every row of every id ever
seen grew the table, and `/metrics` with it, by one row per chain for every line
added to the policy). A rule whose derived id moved while it stayed the same (the
agent's reading says the id it had: `was`, dataplane/renames.py) takes its row along
to its new id (`_claims`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from .models import RuleCounterRow

COUNTER_KEY = ("level", "scope", "direction", "rule")
# A partial reading naming more owners than this reads the node's rows whole (one
# query without a long list of pairs; at 100 guests that is every VM anyway).
MAX_PARTIAL_OWNERS = 64
# The rows of removed rules are named "(removed VERDICT)": no rule's id. An explicit
# id has no "(" (letters, digits, `._:-`), and a derived one always has a ":"
# (`file-stem:line`, whatever the file is called), which these never have.
REMOVED_PREFIX = "(removed"


def removed_id(verdict: str) -> str:
    """The id of the row that keeps a scope's removed rules of this verdict."""
    return f"{REMOVED_PREFIX} {verdict or 'other'})"


def is_removed(rule: str) -> bool:
    return rule.startswith(REMOVED_PREFIX) and ":" not in rule


def _claims(counters: list[Mapping[str, Any]], old: Mapping[tuple[str, ...], Any]) -> dict[tuple[str, ...], tuple[str, ...]]:
    """The renames a whole reading tells (`was`: the id a rule had before an apply
    only renamed it, dataplane/renames.py): key -> the key whose row it takes. Not
    when its row already follows the rule's kernel rules (the reading was sent again,
    or the rename is an older reading's), nor when two rules would take one row."""
    claims: dict[tuple[str, ...], tuple[str, ...]] = {}
    takers: dict[tuple[str, ...], int] = {}
    for counter in counters:
        was = counter.get("was")
        if not was:
            continue
        key = tuple(str(counter[k]) for k in COUNTER_KEY)
        before = (*key[:3], str(was))
        if before == key or before not in old or is_removed(before[3]):
            continue
        stored = old.get(key)
        if stored is not None and stored.present:
            followed = json.loads(stored.instances or "{}")
            if any(str(instance[0]) in followed for instance in counter.get("instances") or ()):
                continue
        claims[key] = before
        takers[before] = takers.get(before, 0) + 1
    return {key: before for key, before in claims.items() if takers[before] == 1}


def _delete(session: Session, node: str, keys: list[tuple[str, ...]]) -> None:
    """Delete the node's rows of these keys (one DELETE run for all of them)."""
    if not keys:
        return
    table = cast(Table, RuleCounterRow.__table__)  # Core: one statement, many parameter sets
    where = delete(table).where(table.c.node == bindparam("b_node"), table.c.level == bindparam("b_level"), table.c.scope == bindparam("b_scope"),
                                table.c.direction == bindparam("b_direction"), table.c.rule == bindparam("b_rule"))
    session.execute(where, [{"b_node": node, "b_level": key[0], "b_scope": key[1], "b_direction": key[2], "b_rule": key[3]} for key in keys])


class CounterStore:
    """Per node and rule: packets/bytes counted since first seen, never going backwards
    (kernel counters restart at 0 with each re-created rule: each reading is compared
    per kernel rule, a new one counts from 0); sums across nodes; rules without hits."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._write = threading.Lock()

    @staticmethod
    def _growth(last: dict[str, list[int]], counter: Mapping[str, Any]) -> tuple[int, int, dict[str, list[int]]]:
        """(packets, bytes) counted since the last reading, and this reading per kernel rule.
        A reading without instances (an older agent) is one instance: the rule's sum."""
        instances = counter.get("instances") or [("*", counter["packets"], counter["bytes"])]
        packets = octets = 0
        now: dict[str, list[int]] = {}
        for name, p, b in instances:
            p, b = int(p), int(b)
            before = last.get(str(name))
            if before is not None and p >= before[0]:
                packets, octets = packets + p - before[0], octets + max(0, b - before[1])
            else:  # a rule the kernel created since (or counters reset): all of it is new
                packets, octets = packets + p, octets + b
            now[str(name)] = [p, b]
        return packets, octets, now

    def report(self, node: str, counters: Iterable[Mapping[str, Any]], now: float | None = None, complete: bool = True) -> int:
        """Add the node's reading. A counter that grew records a hit at `now`. A
        `complete` reading folds the rows of the rules it no longer names into their
        scope's removed rules (`removed_id`); one that is not (the agent sent only what
        moved: agent/counter_reports.py) says nothing of the rules it leaves out.

        Every agent reports every rule of its node every few seconds (2,000 and more
        at 100 guests), and most have not moved: only rows that changed are written,
        in bulk, and the node's rows are read as plain rows (no ORM objects), so that a steady
        cluster of 100 nodes does not keep the controller busy; a partial reading reads
        only the rows of the VMs (and the node) it names."""
        moment = time.time() if now is None else now
        r = RuleCounterRow
        changed: list[dict[str, Any]] = []
        added: list[dict[str, Any]] = []
        fresh: set[tuple[str, ...]] = set()
        counters = list(counters)
        query = select(r.level, r.scope, r.direction, r.rule, r.verdict, r.packets, r.bytes, r.first_seen, r.last_hit, r.instances,
                       r.present).where(r.node == node)
        if not complete:  # what moved names a few owners (VMs, the node): only their rows are read
            owners = sorted({(str(counter["level"]), str(counter["scope"])) for counter in counters})
            if len(owners) <= MAX_PARTIAL_OWNERS:
                query = query.where(tuple_(r.level, r.scope).in_(owners))
        with self._write, self._sessions() as session, session.begin():
            old: dict[tuple[str, ...], Any] = {(row.level, row.scope, row.direction, row.rule): row for row in session.execute(query)}
            claims = _claims(counters, old) if complete else {}  # key -> the key its rule had (a rename)
            claimed = set(claims.values())
            for counter in counters:
                key = tuple(str(counter[k]) for k in COUNTER_KEY)
                if key in fresh or is_removed(key[3]):
                    continue
                fresh.add(key)
                stored = old.get(key)  # the row under this key, whoever's it was
                # whose counts this rule goes on from: its own row, the row of the id it
                # had (renamed), none (its id's row went with the rule that had it)
                row = old.get(claims[key]) if key in claims else None if key in claimed else stored
                last = json.loads(row.instances or "{}") if row is not None and row.present else {}
                packets, octets, reading = self._growth(last, counter)
                instances = json.dumps(reading)
                ident = {"node": node, **dict(zip(COUNTER_KEY, key))}
                verdict = str(counter.get("verdict", row.verdict if row is not None else ""))
                values: dict[str, Any]
                if row is None:
                    values = {"packets": packets, "bytes": octets, "first_seen": moment, "last_hit": moment if packets else None}
                elif not packets and not octets and row.present and instances == row.instances and verdict == row.verdict and row is stored:
                    continue  # nothing moved: no write (`updated_at` is when the row last changed)
                else:
                    values = {"packets": row.packets + packets, "bytes": row.bytes + octets, "first_seen": row.first_seen,
                              "last_hit": moment if packets else row.last_hit}
                values.update(ident, verdict=verdict, updated_at=moment, instances=instances, present=True)
                (added if stored is None else changed).append(values)
            if complete:
                gone = [key for key in old if key not in fresh and key not in claimed and not is_removed(key[3])]
                self._fold(session, node, old, gone, added, changed, moment)
                _delete(session, node, [key for key in claimed if key not in fresh])  # their counts went with their rules
            if added:
                session.execute(insert(r), added)
            if changed:  # bulk UPDATE by primary key
                session.execute(update(r), changed)
        return len(fresh)

    @staticmethod
    def _fold(session: Session, node: str, old: Mapping[tuple[str, ...], Any], gone: list[tuple[str, ...]], added: list[dict[str, Any]],
              changed: list[dict[str, Any]], moment: float) -> None:
        """Move the counts of the rules `gone` from the node into their scopes' rows of
        removed rules (made when missing) and delete their own rows."""
        if not gone:
            return
        sums: dict[tuple[str, ...], list[Any]] = {}  # removed row -> [packets, bytes, first seen, last hit, verdict]
        for key in gone:
            row = old[key]
            into = (*key[:3], removed_id(row.verdict))
            total = sums.setdefault(into, [0, 0, row.first_seen, row.last_hit, row.verdict])
            total[0] += row.packets
            total[1] += row.bytes
            total[2] = min(total[2], row.first_seen)
            if row.last_hit is not None and (total[3] is None or row.last_hit > total[3]):
                total[3] = row.last_hit
        for into, (packets, octets, first, last_hit, verdict) in sums.items():
            ident = {"node": node, **dict(zip(COUNTER_KEY, into)), "verdict": verdict}
            row = old.get(into)
            if row is None:
                added.append({**ident, "packets": packets, "bytes": octets, "first_seen": first, "last_hit": last_hit, "updated_at": moment,
                              "instances": "{}", "present": False})
            else:
                if row.last_hit is not None and (last_hit is None or row.last_hit > last_hit):
                    last_hit = row.last_hit
                changed.append({**ident, "packets": row.packets + packets, "bytes": row.bytes + octets, "last_hit": last_hit,
                                "updated_at": moment, "instances": "{}", "present": False})
        _delete(session, node, gone)

    def totals(self) -> list[dict[str, Any]]:
        """Per rule present on some node, summed across nodes: packets, bytes, nodes, first seen, last hit."""
        r = RuleCounterRow
        statement = (select(r.level, r.scope, r.direction, r.rule, func.max(r.verdict), func.sum(r.packets), func.sum(r.bytes),
                            func.count(r.node), func.min(r.first_seen), func.max(r.last_hit))
                     .where(r.present.is_(True))
                     .group_by(r.level, r.scope, r.direction, r.rule).order_by(r.level, r.scope, r.direction, r.rule))
        with self._sessions() as session:
            return [
                {"level": level, "scope": scope, "direction": direction, "rule": rule, "verdict": verdict, "packets": int(packets or 0),
                 "bytes": int(octets or 0), "nodes": nodes, "first_seen": first, "last_hit": last}
                for level, scope, direction, rule, verdict, packets, octets, nodes, first, last in session.execute(statement)
            ]

    def per_node(self) -> list[RuleCounterRow]:
        """Every row: the rules present on each node and each scope's removed rules
        (`present` false: what rules gone from the node counted)."""
        r = RuleCounterRow
        with self._sessions() as session:
            return list(session.scalars(select(r).order_by(r.node, r.level, r.scope, r.direction, r.rule)))

    def unused(self, window: float, now: float | None = None) -> list[dict[str, Any]]:
        """Rules known for at least `window` seconds and hit on no node within it."""
        moment = time.time() if now is None else now
        edge = moment - window
        return [t for t in self.totals() if t["first_seen"] <= edge and (t["last_hit"] is None or t["last_hit"] < edge)]
