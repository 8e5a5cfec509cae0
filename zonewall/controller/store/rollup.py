"""Denied packets per minute, aggregated in the store as records arrive.

The dashboard's graphs (denied packets over time) and top lists (sources,
destinations, ports, VMs, nodes) read these counts instead of scanning millions of
records: each ingested batch adds, in its own transaction, one count per minute and
dimension value (`src/10.0.1.10`, `dst/...`, `port/tcp/22`, `vm/web1`, `node/node1`;
the total is the sum over nodes). Only drops and rejects count; `log: true` accepts
do not. Where many records share a minute (a flood) the counts collapse into few
rows; sparse records cost up to five upserts each (bench/dashboard.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker

from .models import LogRollupRow

DIMENSIONS = ("src", "dst", "port", "vm", "node")
DENIED = ("drop", "reject")


def _values(record: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    yield "node", str(record.get("node") or "?")[:64]  # every record has its node: the total is their sum
    for dimension in ("src", "dst", "vm"):
        if record.get(dimension):
            yield dimension, str(record[dimension])[:64]
    if record.get("dport") is not None:
        yield "port", f"{record.get('proto') or '?'}/{record['dport']}"
    elif record.get("proto"):
        yield "port", str(record["proto"])[:64]


def counts(records: Iterable[Mapping[str, Any]]) -> Counter[tuple[int, str, str]]:
    found: Counter[tuple[int, str, str]] = Counter()
    for record in records:
        if record.get("verdict") not in DENIED:
            continue
        minute = int(float(record["time"]) // 60)
        for dimension, value in _values(record):
            found[(minute, dimension, value)] += 1
    return found


_SQLITE_UPSERT = ("INSERT INTO log_rollup (minute, dimension, value, records) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT (minute, dimension, value) DO UPDATE SET records = records + excluded.records")


def add(session: Session, records: Iterable[Mapping[str, Any]]) -> None:
    """Add a batch's counts (inside the batch's transaction): one executemany of
    upserts (compiling a multi-row statement per batch cost more than the records' insert)."""
    found = counts(records)
    if not found:
        return
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        connection.connection.driver_connection.executemany(  # type: ignore[union-attr]
            _SQLITE_UPSERT, [(m, d, v, n) for (m, d, v), n in found.items()])
        return
    statement = postgresql.insert(LogRollupRow)
    statement = statement.on_conflict_do_update(index_elements=["minute", "dimension", "value"],
                                                set_={"records": LogRollupRow.records + statement.excluded.records})
    connection.execute(statement, [{"minute": m, "dimension": d, "value": v, "records": n} for (m, d, v), n in found.items()])


class Rollup:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def series(self, since: float, until: float, *, node: str | None = None, buckets: int = 60) -> list[tuple[float, int]]:
        """Denied packets (of one node, or all) in `buckets` equal slices of [since, until):
        (slice start, count); a minute counts in the slice its start falls in."""
        width = max(60.0, (until - since) / buckets)
        r = LogRollupRow
        with self._sessions() as session:  # at most a day of minutes: summed here
            query = select(r.minute, r.records).where(r.dimension == "node", r.minute >= int(since // 60), r.minute < int(-(-until // 60)))
            rows = session.execute(query.where(r.value == node) if node is not None else query).all()
        count = max(1, min(buckets, int(-(-(until - since) // width))))
        totals = [0] * count
        for minute, records in rows:
            totals[min(count - 1, max(0, int((minute * 60 - since) // width)))] += records
        return [(since + i * width, n) for i, n in enumerate(totals)]

    def top(self, dimension: str, since: float, until: float, limit: int = 10) -> list[tuple[str, int]]:
        r = LogRollupRow
        statement = (select(r.value, func.sum(r.records).label("n")).where(r.dimension == dimension, r.minute >= int(since // 60), r.minute < int(-(-until // 60)))
                     .group_by(r.value).order_by(func.sum(r.records).desc(), r.value).limit(limit))
        with self._sessions() as session:
            return [(value, int(n)) for value, n in session.execute(statement)]

    def prune(self, session: Session, before: float) -> None:
        session.execute(delete(LogRollupRow).where(LogRollupRow.minute < int(before // 60)))
