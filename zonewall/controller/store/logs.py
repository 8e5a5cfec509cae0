"""Packet logs: idempotent ingest, search, retention (rule counters: counters.py).

A batch carries an id chosen by the agent; the id and the batch's records are
committed in one transaction, so a batch sent twice (its answer was lost, the agent
restarted with it still on disk) is stored once. Searches use one index per common
filter, walked in time order; addresses are searched as ranges of `*_key` (the
16-byte address in hex, IPv4 mapped into ::ffff:0:0/96), so a CIDR is one range scan.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from . import rollup
from .db import changed_rows
from .models import LogBatchRow, LogRecordRow, LogStatsRow

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
