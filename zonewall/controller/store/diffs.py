"""The semantic diff of each revision, as a durable job any controller can finish.

A revision is committed together with its job (a `diff_jobs` row), leased to the
controller that made it, which computes the diff at once and answers the request
with it. The lease is renewed while the diff runs (a large policy's diff takes
minutes). If that controller dies, the lease runs out and another controller, or
the same one restarted, takes the job over and finishes it: no revision is left
without its diff. A job whose computation keeps killing its controllers is given up
after MAX_ATTEMPTS, with the reason stored as the revision's diff error.

Lease times are the controllers' wall clocks (keep them in sync, e.g. NTP); a clock
a few seconds off only moves a takeover by that much.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ...analysis.diff import diff_policies
from ...compiler.schedule import local_timezone
from ...gcpause import collector_paused
from ...handover import handing_over_often
from ...policy.model import PolicyDocument
from ...policy.resolve import Policy
from .cache import RevisionCache
from .db import changed_rows
from .models import DiffJobRow, RevisionDiffRow, RevisionRow

log = logging.getLogger("zonewall.controller.diffs")
LEASE_SECONDS = 15.0
MAX_ATTEMPTS = 3
# Failure tests only: hold every diff this long (a real large policy's diff takes
# minutes; this gives a small test policy the same window to kill a controller in).
DELAY_ENV = "ZONEWALL_TEST_DIFF_DELAY"


def _empty_policy() -> Policy:
    return Policy(PolicyDocument(version=1), None)


class DiffJobs:
    def __init__(self, sessions: sessionmaker[Session], cache: RevisionCache, owner: str, *, lease: float = LEASE_SECONDS) -> None:
        self._sessions = sessions
        self._cache = cache
        self.owner = owner  # this controller process, as it appears in the jobs it holds
        self.lease = lease
        self._held: set[int] = set()  # jobs this process is computing (their leases are renewed)
        self._held_lock = threading.Lock()
        self._delay = float(os.environ.get(DELAY_ENV, "0") or 0)

    def job_for(self, number: int) -> DiffJobRow:
        """The job row committed with revision `number`, leased to this controller."""
        return DiffJobRow(revision=number, owner=self.owner, lease_until=time.time() + self.lease, attempts=1)

    # -- computing ------------------------------------------------------------------------

    @contextmanager
    def _holding(self, number: int) -> Iterator[None]:
        with self._held_lock:
            self._held.add(number)
        try:
            yield
        finally:
            with self._held_lock:
                self._held.discard(number)

    def run(self, number: int) -> RevisionRow:
        """Compute and store the diff of revision `number` (its job leased to us)."""
        with self._holding(number):
            diff, error = self._compute(number)
            return self._finish(number, diff, error)

    def _compute(self, number: int) -> tuple[str | None, str | None]:
        if self._delay:
            time.sleep(self._delay)
        try:
            new = self._cache.get(number)
            assert new is not None, f"revision {number} is stored"
            with self._sessions() as session:
                parent = session.scalar(select(func.max(RevisionRow.number)).where(RevisionRow.number < number))
            old = self._cache.get(parent) if parent else None
            # The event loop answers the agents meanwhile and gets the interpreter quickly
            # (handover.py). The diff's objects go by their counts; what it leaves alive is
            # moved to the oldest generation unwalked (a walk of the young ones was ~20 ms;
            # the pause's end unfreezes everything too) and frozen again in `finally`.
            with handing_over_often():
                with collector_paused(long_lived=True):
                    result = diff_policies(old.policy if old else _empty_policy(), new.policy, timezone=local_timezone())
                return json.dumps(result.to_json(), sort_keys=True), None
        except Exception as exc:
            log.exception("diff of revision %d failed", number)
            return None, f"{type(exc).__name__}: {exc}"
        finally:
            self._cache.settle()  # what the commit left alive is frozen (store/cache.py)

    def _finish(self, number: int, diff: str | None, error: str | None) -> RevisionRow:
        """Store the result (once: a late second computation of the same diff changes nothing)."""
        try:
            return self._store(number, diff, error)
        except IntegrityError:  # another controller stored it meanwhile: theirs stays
            return self._store(number, diff, error)

    def _store(self, number: int, diff: str | None, error: str | None) -> RevisionRow:
        with self._sessions() as session, session.begin():
            row = session.get(RevisionRow, number)  # its documents are deferred: not read
            assert row is not None
            if row.diff is None and row.diff_error is None:
                # a row of its own: the revision's row (its documents) is never rewritten
                row.semantic_diff = RevisionDiffRow(revision=number, diff=diff, error=error)
            session.execute(delete(DiffJobRow).where(DiffJobRow.revision == number))
        return row

    # -- taking over ----------------------------------------------------------------------

    def pending(self) -> list[int]:
        with self._sessions() as session:
            return list(session.scalars(select(DiffJobRow.revision).order_by(DiffJobRow.revision)))

    def claim(self) -> int | None:
        """Take the oldest job whose lease ran out (its controller died); None if none."""
        now = time.time()
        with self._sessions() as session, session.begin():
            number = session.scalar(select(DiffJobRow.revision).where(DiffJobRow.lease_until < now).order_by(DiffJobRow.revision).limit(1))
            if number is None:
                return None
            # compare-and-set: of two controllers taking the same job, one updates the row
            taken = changed_rows(session,
                update(DiffJobRow).where(DiffJobRow.revision == number, DiffJobRow.lease_until < now)
                .values(owner=self.owner, lease_until=now + self.lease, attempts=DiffJobRow.attempts + 1)
            )
            attempts = session.scalar(select(DiffJobRow.attempts).where(DiffJobRow.revision == number))
        if not taken:
            return None
        if attempts is not None and attempts > MAX_ATTEMPTS:
            log.error("diff of revision %d: given up after %d attempts", number, MAX_ATTEMPTS)
            self._finish(number, None, f"given up after {MAX_ATTEMPTS} attempts: the controllers computing it stopped")
            return number
        log.info("taking over the diff of revision %d (attempt %s)", number, attempts)
        return number

    def renew(self) -> None:
        """Extend the leases of the jobs this process is computing."""
        with self._held_lock:
            held = sorted(self._held)
        if held:
            with self._sessions() as session, session.begin():
                session.execute(update(DiffJobRow).where(DiffJobRow.revision.in_(held), or_(DiffJobRow.owner == self.owner, DiffJobRow.owner.is_(None)))
                                .values(owner=self.owner, lease_until=time.time() + self.lease))

    def complete(self, number: int) -> None:
        """Compute a claimed job's diff unless it is already stored."""
        with self._sessions() as session:
            row = session.get(RevisionRow, number)
        if row is not None and row.diff is None and row.diff_error is None:
            self.run(number)
        else:
            self._finish(number, None, None)

    def take_over(self) -> int:
        """Finish every orphaned job here and now; how many."""
        done = 0
        while (number := self.claim()) is not None:
            self.complete(number)
            done += 1
        return done
