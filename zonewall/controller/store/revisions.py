"""Policy revisions: every accepted change is a new, numbered, immutable revision.

A proposal is validated as a whole policy before anything is written; a refused one
leaves the current revision in place. Several controllers may share the database:

* writers are serialized in the database (store/locks.py), so "the current revision
  is N, this becomes N+1" is decided by one writer at a time; a change made against
  a revision that is no longer current is refused with the winning revision;
* a write may carry an idempotency key: a retry of a request that was applied gets
  the first answer instead of applying twice (a rule added without an id included);
* numbers only grow: above every stored revision, and above the highest revision an
  agent has reported (the floor), so no number an agent applied is ever reused;
* the documents are stored as content-defined chunks, each once (store/chunks.py):
  a one-rule change at 10,000 VMs adds a chunk or two, not 16 MB;
* the semantic diff against the previous revision is a durable job committed with
  the revision (store/diffs.py): the committing controller computes it at once, and
  any controller finishes it if that one dies;
* on PostgreSQL the commit notifies every controller (NOTIFY), which wakes its
  long-polling agents (controller/follow.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from ...handover import handing_over_often
from ...policy.documents import Documents, content_hash, load_documents, load_edited
from ...policy.incremental import edited_from, index_for_edits
from ...policy.resolve import Policy
from . import chunks
from .cache import RevisionCache, RevisionView
from .db import utcnow
from .diffs import DiffJobs
from .locks import SerializedWrites
from .models import IdempotencyKeyRow, RevisionFloorRow, RevisionRow

log = logging.getLogger("zonewall.controller.revisions")
CHANNEL = "zonewall_revisions"  # PostgreSQL NOTIFY channel; the payload is the new number
# An agent's report of a revision above the stored ones raises the floor by at most
# this much: a bogus report must not exhaust the numbers.
MAX_FLOOR_JUMP = 1_000_000


class Conflict(RuntimeError):
    """The change was made against a revision that is no longer the current one."""

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


class KeyReused(ValueError):
    """An idempotency key already used for a different request."""


@dataclass(frozen=True)
class Idempotency:
    key: str
    request_hash: str  # what the request was: the same key with another request is refused


@dataclass(frozen=True)
class Proposal:
    documents: Documents
    author: str
    message: str
    kind: str  # upload | change | rollback | migrate
    change: dict[str, Any] = field(default_factory=dict)
    rollback_of: int | None = None
    base_revision: int | None = None  # optimistic concurrency: refuse if not current
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class Committed:
    row: RevisionRow
    created: bool  # False: the documents equal the current revision's, nothing new
    replayed: bool = False  # the answer of an earlier request with the same idempotency key


class Publisher(Protocol):
    """Who tells the agents of the revisions committed here (controller/watch.py)."""

    def hold(self, number: int) -> None:
        """Revision `number` is being written: a notification of it waits for `committed`."""

    def drop(self, number: int) -> None:
        """The write of revision `number` failed: nothing of it is published."""

    def committed(self, number: int, changed: frozenset[str] | None) -> None:
        """Revision `number` is stored; it changes the documents of the nodes `changed`
        (None: of every node, or not known)."""

    def release(self, number: int) -> None:
        """The commit of revision `number` is answered: publish it to every node."""


class _Unpublished:
    """No one to tell (a store used without a controller: tools, tests)."""

    def hold(self, number: int) -> None: ...
    def drop(self, number: int) -> None: ...
    def committed(self, number: int, changed: frozenset[str] | None) -> None: ...
    def release(self, number: int) -> None: ...


class RevisionStore:
    def __init__(self, sessions: sessionmaker[Session], diffs: DiffJobs, cache: RevisionCache,
                 publisher: Publisher | None = None) -> None:
        """`publisher`: told of each revision committed here (controller/watch.py)."""
        self._sessions = sessions
        self._writes = SerializedWrites(sessions)
        self.diffs = diffs
        self.cache = cache
        self._publisher = publisher or _Unpublished()
        self._floor_seen = 0  # the highest floor this process wrote (saves repeated writes)
        self._floor_lock = threading.Lock()

    # -- reading ------------------------------------------------------------------

    def current_number(self) -> int | None:
        with self._sessions() as session:
            return session.scalar(select(func.max(RevisionRow.number)))

    def current(self) -> RevisionRow | None:
        with self._sessions() as session:
            return session.scalars(select(RevisionRow).order_by(RevisionRow.number.desc()).limit(1)).first()

    def get(self, number: int) -> RevisionRow | None:
        with self._sessions() as session:
            return session.get(RevisionRow, number)

    def view(self, number: int) -> RevisionView | None:
        """Revision `number` read and parsed once per process (store/cache.py)."""
        return self.cache.get(number)

    def history(self, limit: int = 50, before: int | None = None) -> list[RevisionRow]:
        with self._sessions() as session:
            query = select(RevisionRow).order_by(RevisionRow.number.desc()).limit(limit)
            if before is not None:
                query = query.where(RevisionRow.number < before)
            return list(session.scalars(query))

    def policy_of(self, row: RevisionRow) -> Policy:
        view = self.cache.get(row.number)
        return view.policy if view is not None else load_documents(self.documents_of(row))

    def documents_of(self, row: RevisionRow) -> Documents:
        """The revision's documents: the parsed view's when at hand, else read (a new
        dict: callers edit it)."""
        view = self.cache.peek(row.number)
        if view is not None and view.states is not None:
            return dict(view.states.documents)
        with self._sessions() as session:
            stored = chunks.read(session, row.number)
        if stored is None:
            raise LookupError(f"revision {row.number} is not stored")
        return stored.documents

    # -- writing ------------------------------------------------------------------

    def replay(self, idempotency: Idempotency, session: Session | None = None) -> Committed | None:
        """The answer already given to this idempotency key, or None (not seen yet)."""
        if session is None:
            with self._sessions() as own:
                return self.replay(idempotency, own)
        seen = session.get(IdempotencyKeyRow, idempotency.key)
        if seen is None:
            return None
        if seen.request_hash != idempotency.request_hash:
            raise KeyReused(f"the Idempotency-Key {idempotency.key!r} was used for a different request")
        row = session.get(RevisionRow, seen.revision)
        assert row is not None, "an idempotency key names a stored revision"
        return Committed(row, created=seen.created, replayed=True)

    def commit(self, proposal: Proposal) -> Committed:
        """Validate and store; raises PolicyError (refused), Conflict or KeyReused."""
        if proposal.idempotency is not None:
            replayed = self.replay(proposal.idempotency)
            if replayed is not None:
                return replayed
        with handing_over_often():  # the slow part (seconds when loaded whole), beside the agents' requests (handover.py)
            policy, whole = self._validated(proposal.documents)  # outside the lock; PolicyError: nothing written
        cut = self._chunked(proposal.documents)
        digest = cut.content_hash
        with ExitStack() as hold:
            held = hold.enter_context(self._holding())
            with self._writes() as session:
                if proposal.idempotency is not None:  # a retry racing its original
                    replayed = self.replay(proposal.idempotency, session)
                    if replayed is not None:
                        return replayed
                head = session.execute(select(RevisionRow.number, RevisionRow.content_hash, RevisionRow.layout.is_(None).label("legacy"))
                                       .order_by(RevisionRow.number.desc()).limit(1)).first()
                current = int(head.number) if head else 0
                if proposal.base_revision is not None and current != proposal.base_revision:
                    raise Conflict(f"the change was made against revision {proposal.base_revision}, but the current revision is {current}", current)
                # a head stored before schema 0007 has the hash of its documents' JSON
                same = head is not None and head.content_hash == (content_hash(proposal.documents) if head.legacy else digest)
                if same and proposal.kind != "rollback":
                    self._remember(session, proposal, current, created=False)
                    row = session.get(RevisionRow, current)
                    assert row is not None
                    return Committed(row, created=False)
                floor = session.get(RevisionFloorRow, 1)
                number = max(current, floor.number if floor else 0) + 1
                row = RevisionRow(
                    number=number, created_at=utcnow(), author=proposal.author, message=proposal.message, kind=proposal.kind,
                    change=json.dumps(proposal.change, sort_keys=True), rollback_of=proposal.rollback_of,
                    layout=cut.save(session), legacy_documents="", content_hash=digest,
                )
                session.add(row)
                session.flush()
                held(number)  # before anyone can see it (our NOTIFY, the periodic check): watch.py `hold`
                # whoever asks for it before it is put (our own NOTIFY, the periodic check)
                # waits for this parse instead of making its own
                hold.enter_context(self.cache.filling(number))
                session.add(self.diffs.job_for(number))  # leased to us: we compute it right after
                self._remember(session, proposal, number, created=True)
                if session.connection().dialect.name == "postgresql":  # delivered at commit, to every controller
                    session.execute(text("SELECT pg_notify(:channel, :number)"), {"channel": CHANNEL, "number": str(number)})
            view = RevisionView.of(row, policy, proposal.documents, cut.documents)
            self.cache.put(view, whole=whole)
            log.info("revision %d by %s (%s): %s", row.number, row.author, row.kind, row.message)
            changed: frozenset[str] | None = None
            try:
                changed = view.states.prepare() if view.states is not None else None  # before the agents are woken (cache.py)
            finally:  # (a failed prepare: published to every node at once)
                self._publisher.committed(row.number, changed)
        return Committed(row, created=True)

    def _validated(self, documents: Documents) -> tuple[Policy, bool]:
        """The documents loaded, from the newest parsed revision when they are an edit
        of it that allows (policy/incremental.py: milliseconds instead of seconds at
        10,000 VMs); the same policy or the same PolicyError either way. And whether
        it was loaded whole."""
        head = self.cache.newest()
        previous = (head.states.documents, head.policy) if head is not None and head.states is not None else None
        policy = load_edited(documents, previous)
        whole = previous is None or not edited_from(policy, previous[1])
        if whole:
            index_for_edits(policy)  # the next commit is most likely an edit of it
        return policy, whole

    def _chunked(self, documents: Documents) -> chunks.Chunked:
        """The documents' chunks, cut from the newest parsed revision's where they
        are an edit of it (only the changed chunks cut and hashed: milliseconds)."""
        head = self.cache.newest()
        return chunks.Chunked.of(documents, head.chunked if head is not None else None)

    @staticmethod
    def _remember(session: Session, proposal: Proposal, number: int, *, created: bool) -> None:
        if proposal.idempotency is not None:
            session.add(IdempotencyKeyRow(key=proposal.idempotency.key, request_hash=proposal.idempotency.request_hash,
                                          revision=number, created=created, created_at=time.time()))

    def attach_diff(self, committed: Committed, *, release: bool = True) -> RevisionRow:
        """The revision with its semantic diff, computed now if this request made it;
        then the revision is published to every node (`commit` staged it), unless
        `release` is False: the caller calls `release` itself (after its answer)."""
        if not committed.created or committed.replayed:
            return self.get(committed.row.number) or committed.row  # a replay shows the diff as it is now
        try:
            return self.diffs.run(committed.row.number)
        finally:
            if release:
                self.release(committed.row.number)

    def release(self, number: int) -> None:
        """Publish revision `number` to every node (watch.py `release`)."""
        self._publisher.release(number)

    @contextmanager
    def _holding(self) -> Iterator[Callable[[int], None]]:
        """`hold(number)` for the revision being written; if the write fails, the
        hold is dropped (the number was never committed and may be given again)."""
        held: list[int] = []

        def hold(number: int) -> None:
            self._publisher.hold(number)
            held.append(number)
        try:
            yield hold
        except BaseException:
            for number in held:
                self._publisher.drop(number)
            raise

    def raise_floor(self, number: int) -> None:
        """An agent has applied revision `number`: never give that number to new documents."""
        with self._floor_lock:
            if number <= self._floor_seen:
                return
        current = self.current_number() or 0
        if number <= current:
            return
        if number > current + MAX_FLOOR_JUMP:
            log.warning("an agent reports revision %d, far above the newest stored (%d): ignored", number, current)
            return
        with self._writes() as session:
            session.execute(update(RevisionFloorRow).where(RevisionFloorRow.id == 1, RevisionFloorRow.number < number).values(number=number))
        log.warning("an agent has applied revision %d, newer than any stored (%d): the database lost revisions; "
                    "new revisions are numbered above it", number, current)
        with self._floor_lock:
            self._floor_seen = max(self._floor_seen, number)

