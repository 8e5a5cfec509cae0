"""The node inventory: agents register, report what they applied, and send logs."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from .db import as_utc, utcnow
from .models import NodeLogRow, NodeRow

LOG_LINES_KEPT = 1000  # per node; older lines are dropped


@dataclass(frozen=True)
class Registration:
    agent_version: str = ""
    hostname: str = ""


@dataclass(frozen=True)
class Status:
    applied_revision: int | None
    fingerprint: str | None
    ruleset_hash: str | None
    state: str  # ok | degraded | error
    last_error: str | None
    drift_repairs: int = 0
    taps: dict[str, str] | None = None
    apply_seconds: float | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeReport:
    """What an agent sent in one status report."""

    node: str
    status: Status
    lines: tuple[tuple[str, str], ...] = ()  # (level, message) log lines sent along


class NodeStore:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        # SQLite has one writer at a time: this process's threads queue here rather
        # than in SQLite's busy handler, which sleeps and polls. PostgreSQL locks rows.
        self._write: AbstractContextManager[Any] = threading.Lock() if sessions.kw["bind"].dialect.name == "sqlite" else nullcontext()
        # Long-polls are contact too, but a database write per long-poll would make
        # every controller write once per agent per wait: they are kept here and
        # written together by flush_contacts() every few seconds.
        self._contacts: dict[str, datetime] = {}
        self._known: set[str] = set()  # nodes with a row (contacts of others are written at once)
        self._contacts_lock = threading.Lock()

    def _row(self, session: Session, node: str) -> NodeRow:
        """The node's row, made if there is none. A new agent's first requests
        (registration, log lines, its long-poll, a report) arrive at once, at one
        controller or several, and each would make it: the insert does nothing where
        another one's row is there or being made (it waits for that one's commit);
        an ORM insert lost there with a unique or foreign-key violation, and lost
        again when retried."""
        row = session.get(NodeRow, node)
        if row is None:
            now = utcnow()
            insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
            values = {"name": node, "registered_at": now, "last_contact": now, "agent_version": "", "hostname": "", "state": "registered", "drift_repairs": 0, "taps": "{}", "problems": "[]"}
            session.execute(insert(NodeRow).values(values).on_conflict_do_nothing(index_elements=[NodeRow.name]))
            row = session.get(NodeRow, node, populate_existing=True)
            assert row is not None  # made by this insert or by the one it waited for
        return row

    def _change(self, node: str, change: Callable[[Session, NodeRow], None]) -> NodeRow:
        """Apply `change` to the node's row in one transaction, creating the row if
        needed (`_row`: safe against the node's other first requests)."""
        with self._write, self._sessions() as session, session.begin():
            row = self._row(session, node)
            change(session, row)
        return row

    def register(self, node: str, registration: Registration) -> NodeRow:
        def change(_session: Session, row: NodeRow) -> None:
            row.registered_at = row.last_contact = utcnow()
            row.agent_version, row.hostname = registration.agent_version, registration.hostname

        return self._change(node, change)

    def touch(self, node: str) -> None:
        """Record contact (a long-poll) from the node's agent: written at once the first
        time this controller hears from it, later in memory until the next flush."""
        with self._contacts_lock:
            known = node in self._known
            if known:
                self._contacts[node] = utcnow()
        if not known:
            self._change(node, lambda _session, row: setattr(row, "last_contact", utcnow()))
            with self._contacts_lock:
                self._known.add(node)

    def flush_contacts(self) -> int:
        """Write the contacts recorded since the last flush; how many nodes."""
        with self._contacts_lock:
            contacts, self._contacts = self._contacts, {}
        if contacts:
            with self._write, self._sessions() as session, session.begin():
                for node, moment in contacts.items():
                    row = self._row(session, node)
                    if as_utc(row.last_contact) is None or as_utc(row.last_contact) < moment:  # type: ignore[operator]
                        row.last_contact = moment
        return len(contacts)

    def _with_contact(self, row: NodeRow | None) -> NodeRow | None:
        """The row with a contact not yet flushed (as this controller saw it)."""
        if row is not None:
            with self._contacts_lock:
                seen = self._contacts.get(row.name)
            if seen is not None and (as_utc(row.last_contact) is None or as_utc(row.last_contact) < seen):  # type: ignore[operator]
                row.last_contact = seen
        return row

    def report(self, node: str, status: Status) -> NodeRow:
        self.report_many([NodeReport(node, status)])
        row = self.get(node)
        assert row is not None  # just written
        return row

    def report_many(self, reports: Sequence[NodeReport]) -> None:
        """Several agents' reports (status and log lines) in one transaction.

        After a revision every agent reports at once: one UPDATE per report, each
        returning its row, in a transaction of its own, cost the controller ~1 ms
        each; together, as one UPDATE executed for many rows, ~0.03 ms. A node's
        first report makes its row. Two reports of one node: the later one wins."""
        with self._write, self._sessions() as session, session.begin():
            self._write_reports(session, reports)  # a node's first report makes its row (`_row`)
        with self._contacts_lock:
            self._known.update(report.node for report in reports)

    def _write_reports(self, session: Session, reports: Sequence[NodeReport]) -> None:
        names = {report.node for report in reports}
        existing = set(session.scalars(select(NodeRow.name).where(NodeRow.name.in_(names))))
        for name in sorted(names - existing):
            self._row(session, name)
        session.flush()
        # a node's reports in order, as one (a report leaves out what it did not send:
        # what an earlier one sent stays), then one statement per set of columns
        merged: dict[str, dict[str, Any]] = {}
        for report in reports:
            merged.setdefault(report.node, {}).update(self._status_values(report.status))
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for node, values in merged.items():
            by_columns.setdefault(tuple(sorted(values)), []).append({**values, "node_name": node})
        for columns, rows in by_columns.items():
            # through the connection: SQLAlchemy's core statement, run once for every row
            statement = update(NodeRow).where(NodeRow.name == bindparam("node_name")).values({column: bindparam(column) for column in columns})
            session.connection().execute(statement, rows)
        with_lines = [report for report in reports if report.lines]
        if with_lines:
            now = utcnow()
            session.add_all(NodeLogRow(node=report.node, time=now, level=level, message=message) for report in with_lines for level, message in report.lines)
            session.flush()
            for node in {report.node for report in with_lines}:
                self._trim_logs(session, node)

    @staticmethod
    def _status_values(status: Status) -> dict[str, Any]:
        values: dict[str, Any] = {
            "last_contact": utcnow(), "applied_revision": status.applied_revision, "fingerprint": status.fingerprint,
            "ruleset_hash": status.ruleset_hash, "state": status.state, "last_error": status.last_error,
            "drift_repairs": status.drift_repairs, "problems": json.dumps(list(status.problems)),
        }
        if status.taps is not None:
            values["taps"] = json.dumps(status.taps, sort_keys=True)
        if status.apply_seconds is not None:
            values["apply_seconds"] = status.apply_seconds
        return values

    def get(self, node: str) -> NodeRow | None:
        with self._sessions() as session:
            return self._with_contact(session.get(NodeRow, node))

    def all(self) -> list[NodeRow]:
        with self._sessions() as session:
            return [self._with_contact(row) for row in session.scalars(select(NodeRow).order_by(NodeRow.name))]  # type: ignore[misc]

    def add_logs(self, node: str, lines: list[tuple[str, str]]) -> None:
        def change(session: Session, row: NodeRow) -> None:
            row.last_contact = now = utcnow()
            session.add_all(NodeLogRow(node=node, time=now, level=level, message=message) for level, message in lines)
            session.flush()
            self._trim_logs(session, node)

        self._change(node, change)

    @staticmethod
    def _trim_logs(session: Session, node: str) -> None:
        count = session.scalar(select(func.count()).select_from(NodeLogRow).where(NodeLogRow.node == node)) or 0
        if count > LOG_LINES_KEPT:
            oldest = select(NodeLogRow.id).where(NodeLogRow.node == node).order_by(NodeLogRow.id).limit(count - LOG_LINES_KEPT)
            session.execute(delete(NodeLogRow).where(NodeLogRow.id.in_(oldest.scalar_subquery())))

    def logs(self, node: str, limit: int = 100) -> list[NodeLogRow]:
        with self._sessions() as session:
            rows = session.scalars(select(NodeLogRow).where(NodeLogRow.node == node).order_by(NodeLogRow.id.desc()).limit(limit))
            return list(reversed(list(rows)))


def taps_of(row: NodeRow) -> dict[str, Any]:
    return json.loads(row.taps or "{}")
