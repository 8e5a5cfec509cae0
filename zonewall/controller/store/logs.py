"""Packet logs and rule counters: idempotent ingest, search, retention.

A batch carries an id chosen by the agent; the id and the batch's records are
committed in one transaction, so a batch sent twice (its answer was lost, the agent
restarted with it still on disk) is stored once. Searches use one index per common
filter, walked in time order; addresses are searched as ranges of `*_key` (the
16-byte address in hex, IPv4 mapped into ::ffff:0:0/96), so a CIDR is one range scan.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from . import rollup
from .db import changed_rows
from .models import LogBatchRow, LogRecordRow, LogStatsRow, RuleCounterRow

RECORD_FIELDS = ("time", "node", "vm", "zone", "nic", "direction", "family", "src", "dst", "proto", "sport", "dport",
                 "icmp_type", "verdict", "rule", "scope", "level", "iface", "agent_time")
TEXT_FIELDS = ("vm", "zone", "node", "rule", "scope", "src", "dst", "proto", "iface", "nic")
MAX_LIMIT = 1000
_V4_MAPPED = "0" * 20 + "ffff"
INSERT_COLUMNS = (*RECORD_FIELDS, "src_key", "dst_key")
_SQLITE_INSERT = f"INSERT INTO log_records ({', '.join(INSERT_COLUMNS)}) VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"


def address_key(text: str | None) -> str | None:
    """32 hex digits of the address as IPv6 (IPv4 mapped); None for anything else."""
    if not text:
        return None
    try:  # the fast path (ingest computes two keys per record)
        return _V4_MAPPED + socket.inet_pton(socket.AF_INET, text).hex()
    except OSError:
        pass
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 4:
        address = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + address.packed)
    return address.packed.hex()


def network_range(text: str) -> tuple[str, str]:
    """A CIDR or a single address as the (low, high) keys it covers; ValueError if neither."""
    network = ipaddress.ip_network(text.strip(), strict=False)
    low, high = network.network_address, network.broadcast_address
    key_low, key_high = address_key(str(low)), address_key(str(high))
    assert key_low is not None and key_high is not None
    return key_low, key_high


@dataclass
class LogQuery:
    vm: str | None = None
    zone: str | None = None
    node: str | None = None
    address: str | None = None  # either side, address or CIDR
    src: str | None = None
    dst: str | None = None
    port: int | None = None  # destination port
    proto: str | None = None
    verdict: str | None = None
    rule: str | None = None
    level: str | None = None
    direction: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None  # free text: a substring of any name or address
    limit: int = 100
    cursor: str | None = None  # "TIME:ID" of the last record of the previous page

    def conditions(self) -> list[Any]:
        r = LogRecordRow
        out: list[Any] = []
        for column, value in ((r.vm, self.vm), (r.zone, self.zone), (r.node, self.node), (r.proto, self.proto),
                              (r.verdict, self.verdict), (r.rule, self.rule), (r.level, self.level), (r.direction, self.direction)):
            if value:
                out.append(column == value)
        if self.port is not None:
            out.append(r.dport == self.port)
        if self.since is not None:
            out.append(r.time >= self.since)
        if self.until is not None:
            out.append(r.time < self.until)
        for column, value in ((r.src_key, self.src), (r.dst_key, self.dst)):
            if value:
                low, high = network_range(value)
                out.append(column.between(low, high))
        if self.address:
            low, high = network_range(self.address)
            out.append(or_(r.src_key.between(low, high), r.dst_key.between(low, high)))
        if self.text:
            pattern = f"%{self.text.strip()}%"
            out.append(or_(*(getattr(r, name).like(pattern) for name in TEXT_FIELDS)))
        if self.cursor:
            stamp, _, ident = self.cursor.partition(":")
            moment, row_id = float(stamp), int(ident)
            out.append(or_(r.time < moment, and_(r.time == moment, r.id < row_id)))
        return out


def record_json(row: Any) -> dict[str, Any]:
    out = {name: getattr(row, name) for name in RECORD_FIELDS}
    out["id"] = row.id
    return out


@dataclass(frozen=True)
class Retention:
    max_age_days: float = 30.0
    max_records: int = 5_000_000
    every: float = 30.0  # seconds between two prunes (done after an ingest)


class LogStore:
    def __init__(self, sessions: sessionmaker[Session], retention: Retention = Retention()) -> None:
        self._sessions = sessions
        self.retention = retention
        self._write = threading.Lock()
        self._last_prune = 0.0

    # -- ingest -------------------------------------------------------------------

    def ingest(self, node: str, batch_id: str, records: Iterable[Mapping[str, Any]], *, suppressed: int = 0, dropped: int = 0) -> tuple[int, bool]:
        """Store one batch; (records stored, duplicate). A batch id seen before stores nothing."""
        rows = []
        for record in records:
            row = {name: record.get(name) for name in RECORD_FIELDS}
            row["node"] = node
            row["src_key"], row["dst_key"] = address_key(row["src"]), address_key(row["dst"])
            rows.append(row)
        # Core statements only (no ORM objects): the batch id first (a duplicate
        # fails here, before any record), the records as one executemany, the stats.
        stats = LogStatsRow
        with self._write:
            with self._sessions() as session:
                try:
                    with session.begin():
                        session.execute(insert(LogBatchRow).values(node=node, batch_id=batch_id, received_at=time.time(), records=len(rows)))
                        if rows:
                            self._insert_records(session, rows)
                            rollup.add(session, rows)
                        grown = changed_rows(session, update(stats).where(stats.node == node).values(
                            received=stats.received + len(rows), suppressed=stats.suppressed + suppressed,
                            dropped=stats.dropped + dropped))
                        if not grown:
                            session.execute(insert(stats).values(node=node, received=len(rows), suppressed=suppressed, dropped=dropped))
                except IntegrityError:
                    return 0, True
            if time.monotonic() - self._last_prune > self.retention.every:
                self._last_prune = time.monotonic()
                self.prune()
        return len(rows), False

    @staticmethod
    def _insert_records(session: Session, rows: list[dict[str, Any]]) -> None:
        """One executemany. On SQLite straight through the driver with tuples (SQLAlchemy's
        per-row parameter processing was a fifth of the ingest time); elsewhere Core."""
        connection = session.connection()
        if connection.dialect.name == "sqlite":
            connection.connection.driver_connection.executemany(  # type: ignore[union-attr]
                _SQLITE_INSERT, [tuple(row[name] for name in INSERT_COLUMNS) for row in rows])
        else:
            connection.execute(insert(LogRecordRow), rows)

    def prune(self, now: float | None = None) -> int:
        """Apply the retention: records older than the age, then the oldest beyond the size."""
        moment = time.time() if now is None else now
        removed = 0
        with self._sessions() as session, session.begin():
            cutoff = moment - self.retention.max_age_days * 86400
            removed += changed_rows(session, delete(LogRecordRow).where(LogRecordRow.time < cutoff)) or 0
            rollup.Rollup(self._sessions).prune(session, cutoff)
            session.execute(delete(LogBatchRow).where(LogBatchRow.received_at < cutoff))
            count = session.scalar(select(func.count()).select_from(LogRecordRow)) or 0
            excess = count - self.retention.max_records
            if excess > 0:
                edge = session.scalar(select(LogRecordRow.id).order_by(LogRecordRow.id).offset(excess - 1).limit(1))
                removed += changed_rows(session, delete(LogRecordRow).where(LogRecordRow.id <= edge)) or 0
        return removed

    # -- search -------------------------------------------------------------------

    def search(self, query: LogQuery) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; the cursor of the next page (None on the last one)."""
        limit = max(1, min(query.limit, MAX_LIMIT))
        r = LogRecordRow
        statement = select(r).where(*query.conditions()).order_by(r.time.desc(), r.id.desc()).limit(limit + 1)
        with self._sessions() as session:
            rows = list(session.scalars(statement))
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = f"{rows[-1].time!r}:{rows[-1].id}" if more and rows else None
        return [record_json(row) for row in rows], cursor

    def stats(self) -> dict[str, dict[str, int]]:
        with self._sessions() as session:
            return {row.node: {"received": row.received, "suppressed": row.suppressed, "dropped": row.dropped}
                    for row in session.scalars(select(LogStatsRow))}

    def count(self) -> int:
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(LogRecordRow)) or 0


COUNTER_KEY = ("level", "scope", "direction", "rule")
# A partial reading naming more owners than this reads the node's rows whole (one
# query without a long list of pairs; at 100 guests that is every VM anyway).
MAX_PARTIAL_OWNERS = 64


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
        """Add the node's reading. A counter that grew records a hit at `now`; a rule no
        longer reported is kept (not present) with what it counted. A reading not
        `complete` (the agent sent only what moved: agent/counter_reports.py) says
        nothing of the rules it leaves out.

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
        query = select(r.level, r.scope, r.direction, r.rule, r.verdict, r.packets, r.bytes, r.last_hit, r.instances, r.present).where(r.node == node)
        if not complete:  # what moved names a few owners (VMs, the node): only their rows are read
            owners = sorted({(str(counter["level"]), str(counter["scope"])) for counter in counters})
            if len(owners) <= MAX_PARTIAL_OWNERS:
                query = query.where(tuple_(r.level, r.scope).in_(owners))
        with self._write, self._sessions() as session, session.begin():
            old: dict[tuple[str, ...], Any] = {(row.level, row.scope, row.direction, row.rule): row for row in session.execute(query)}
            for counter in counters:
                key = tuple(str(counter[k]) for k in COUNTER_KEY)
                if key in fresh:
                    continue
                fresh.add(key)
                row = old.get(key)
                last = json.loads(row.instances or "{}") if row is not None and row.present else {}
                packets, octets, reading = self._growth(last, counter)
                instances = json.dumps(reading)
                ident = {"node": node, **dict(zip(COUNTER_KEY, key))}
                if row is None:
                    added.append({**ident, "verdict": str(counter.get("verdict", "")), "packets": packets, "bytes": octets, "first_seen": moment,
                                  "last_hit": moment if packets else None, "updated_at": moment, "instances": instances, "present": True})
                    continue
                verdict = str(counter.get("verdict", row.verdict))
                if not packets and not octets and row.present and instances == row.instances and verdict == row.verdict:
                    continue  # nothing moved: no write (`updated_at` is when the row last changed)
                changed.append({**ident, "verdict": verdict, "packets": row.packets + packets, "bytes": row.bytes + octets,
                                "last_hit": moment if packets else row.last_hit, "updated_at": moment, "instances": instances, "present": True})
            gone = [{"node": node, **dict(zip(COUNTER_KEY, key)), "present": False, "instances": "{}", "updated_at": moment}
                    for key, row in old.items() if complete and key not in fresh and row.present]  # gone from the node: its counts stay in every sum
            if added:
                session.execute(insert(r), added)
            for batch in (changed, gone):  # bulk UPDATEs by primary key
                if batch:
                    session.execute(update(r), batch)
        return len(fresh)

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
        """Every row, rules gone from their node included (their counts never go away)."""
        r = RuleCounterRow
        with self._sessions() as session:
            return list(session.scalars(select(r).order_by(r.node, r.level, r.scope, r.direction, r.rule)))

    def unused(self, window: float, now: float | None = None) -> list[dict[str, Any]]:
        """Rules known for at least `window` seconds and hit on no node within it."""
        moment = time.time() if now is None else now
        edge = moment - window
        return [t for t in self.totals() if t["first_seen"] <= edge and (t["last_hit"] is None or t["last_hit"] < edge)]
