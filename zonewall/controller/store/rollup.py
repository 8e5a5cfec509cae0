"""Denied packets per minute, aggregated in the store as records arrive.

The dashboard's graphs (denied packets over time) and top lists (sources,
destinations, ports, VMs, nodes) read these counts instead of scanning millions of
records: each ingested batch adds, in its own transaction, one count per minute and
dimension value (`all/*`, `src/10.0.1.10`, `dst/...`, `port/tcp/22`, `vm/web1`,
`node/node1`). Only drops and rejects count; `log: true` accepts do not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from .models import LogRollupRow

DIMENSIONS = ("all", "src", "dst", "port", "vm", "node")
DENIED = ("drop", "reject")


def _values(record: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    yield "all", "*"
    for dimension in ("src", "dst", "vm", "node"):
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


def add(session: Session, records: Iterable[Mapping[str, Any]]) -> None:
    """Add a batch's counts (inside the batch's transaction)."""
    found = counts(records)
    if not found:
        return
    rows = [{"minute": m, "dimension": d, "value": v, "records": n} for (m, d, v), n in found.items()]
    dialect = session.get_bind().dialect.name
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make(LogRollupRow).values(rows)
    statement = statement.on_conflict_do_update(index_elements=["minute", "dimension", "value"],
                                                set_={"records": LogRollupRow.records + statement.excluded.records})
    session.execute(statement)


class Rollup:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def series(self, since: float, until: float, *, dimension: str = "all", value: str = "*", buckets: int = 60) -> list[tuple[float, int]]:
        """Denied packets in `buckets` equal slices of [since, until): (slice start, count);
        a minute counts in the slice its start falls in."""
        width = max(60.0, (until - since) / buckets)
        r = LogRollupRow
        with self._sessions() as session:  # at most a day of minutes: summed here
            rows = session.execute(select(r.minute, r.records).where(r.dimension == dimension, r.value == value,
                                                                     r.minute >= int(since // 60), r.minute < int(-(-until // 60)))).all()
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
