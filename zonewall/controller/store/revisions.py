"""Policy revisions: every accepted change is a new, numbered, immutable revision.

A proposal is validated as a whole policy before anything is written; a refused one
leaves the current revision in place. The semantic diff against the previous
revision is computed after the commit (agents are already told about the revision
while it runs: on a large policy the diff takes far longer than the apply).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ...analysis.diff import diff_policies
from ...compiler.schedule import local_timezone
from ...policy.model import PolicyDocument
from ...policy.resolve import Policy
from ..documents import Documents, content_hash, load_documents
from .db import utcnow
from .models import RevisionRow

log = logging.getLogger("zonewall.controller.revisions")


class Conflict(RuntimeError):
    """The change was made against a revision that is no longer the current one."""


@dataclass(frozen=True)
class Proposal:
    documents: Documents
    author: str
    message: str
    kind: str  # upload | change | rollback
    change: dict[str, Any] = field(default_factory=dict)
    rollback_of: int | None = None
    base_revision: int | None = None  # optimistic concurrency: refuse if not current


@dataclass(frozen=True)
class Committed:
    row: RevisionRow
    created: bool  # False: the documents equal the current revision's, nothing new
    previous: Policy | None = None  # for the diff
    policy: Policy | None = None


def _empty_policy() -> Policy:
    return Policy(PolicyDocument(version=1), None)


class RevisionStore:
    def __init__(self, sessions: sessionmaker[Session], on_commit: Callable[[int], None] = lambda number: None) -> None:
        self._sessions = sessions
        self._on_commit = on_commit
        # One writer at a time: "validate against current, then insert current+1" must
        # not interleave. (Several controller processes on one database would also
        # collide on the primary key, which is refused rather than lost.)
        self._write_lock = threading.Lock()
        self._loaded: tuple[int, Policy] | None = None  # current revision, parsed
        self._latest: RevisionRow | None = None  # the last revision this process committed or read

    # -- reading ------------------------------------------------------------------

    def current_number(self) -> int | None:
        with self._sessions() as session:
            return session.scalar(select(func.max(RevisionRow.number)))

    def current(self) -> RevisionRow | None:
        with self._sessions() as session:
            row = session.scalars(select(RevisionRow).order_by(RevisionRow.number.desc()).limit(1)).first()
        if row is not None:
            self._latest = row
        return row

    def cached(self, number: int) -> RevisionRow | None:
        """Revision `number` without a query if it is the one last seen (a commit
        wakes every agent at once: they all ask for the same row)."""
        latest = self._latest
        if latest is not None and latest.number == number:
            return latest
        return self.get(number)

    def get(self, number: int) -> RevisionRow | None:
        with self._sessions() as session:
            return session.get(RevisionRow, number)

    def history(self, limit: int = 50, before: int | None = None) -> list[RevisionRow]:
        with self._sessions() as session:
            query = select(RevisionRow).order_by(RevisionRow.number.desc()).limit(limit)
            if before is not None:
                query = query.where(RevisionRow.number < before)
            return list(session.scalars(query))

    def policy_of(self, row: RevisionRow) -> Policy:
        loaded = self._loaded
        if loaded is not None and loaded[0] == row.number:
            return loaded[1]
        return load_documents(json.loads(row.documents))

    # -- writing ------------------------------------------------------------------

    def commit(self, proposal: Proposal) -> Committed:
        """Validate and store; raises PolicyError (refused) or Conflict."""
        with self._write_lock:
            current = self.current()
            if proposal.base_revision is not None and (current.number if current else 0) != proposal.base_revision:
                raise Conflict(f"the change was made against revision {proposal.base_revision}, but the current revision is {current.number if current else 0}")
            policy = load_documents(proposal.documents)  # PolicyError: refused, nothing written
            digest = content_hash(proposal.documents)
            if current is not None and current.content_hash == digest and proposal.kind != "rollback":
                return Committed(current, created=False)
            previous = self.policy_of(current) if current else _empty_policy()
            row = RevisionRow(
                number=(current.number if current else 0) + 1,
                created_at=utcnow(),
                author=proposal.author,
                message=proposal.message,
                kind=proposal.kind,
                change=json.dumps(proposal.change, sort_keys=True),
                rollback_of=proposal.rollback_of,
                documents=json.dumps(proposal.documents, sort_keys=True),
                content_hash=digest,
            )
            with self._sessions() as session, session.begin():
                session.add(row)
            self._loaded = (row.number, policy)
            self._latest = row
        log.info("revision %d by %s (%s): %s", row.number, row.author, row.kind, row.message)
        self._on_commit(row.number)
        return Committed(row, created=True, previous=previous, policy=policy)

    def attach_diff(self, committed: Committed) -> RevisionRow:
        """Compute and store the semantic diff of a new revision against its parent."""
        row = committed.row
        if not committed.created or committed.previous is None or committed.policy is None:
            return row
        diff: str | None = None
        error: str | None = None
        try:
            result = diff_policies(committed.previous, committed.policy, timezone=local_timezone())
            diff = json.dumps(result.to_json(), sort_keys=True)
        except Exception as exc:  # noqa: BLE001 - a diff failure must not lose the revision
            log.exception("diff of revision %d failed", row.number)
            error = f"{type(exc).__name__}: {exc}"
        with self._sessions() as session, session.begin():
            stored = session.get(RevisionRow, row.number)
            assert stored is not None
            stored.diff, stored.diff_error = diff, error
        row.diff, row.diff_error = diff, error
        return row
