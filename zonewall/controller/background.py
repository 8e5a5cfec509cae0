"""A controller's housekeeping thread: what each replica does besides answering requests.

* renew the leases of the semantic diffs it is computing, and take over the diffs
  whose controller died (store/diffs.py);
* write the agents' long-poll contacts in one transaction every few seconds
  (store/nodes.py);
* forget idempotency keys older than a week;
* on SQLite, copy the write-ahead log back into the database every second, so that
  no request's commit does it (store/db.py `checkpoint`).
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from .store.db import checkpoint
from .store.diffs import DiffJobs
from .store.models import IdempotencyKeyRow
from .store.nodes import NodeStore

log = logging.getLogger("zonewall.controller.background")
CONTACT_FLUSH_SECONDS = 5.0
KEY_RETENTION_SECONDS = 7 * 86400
KEY_PRUNE_SECONDS = 3600.0
CHECKPOINT_SECONDS = 1.0


class Housekeeping:
    def __init__(self, sessions: sessionmaker[Session], diffs: DiffJobs, nodes: NodeStore) -> None:
        self._sessions, self._diffs, self._nodes = sessions, diffs, nodes
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zonewall-housekeeping", daemon=True)
        self.diff_interval = max(0.2, diffs.lease / 3)
        self._taking: threading.Thread | None = None

    def start(self) -> Housekeeping:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self._nodes.flush_contacts()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        due = {"diffs": 0.0, "contacts": time.monotonic() + CONTACT_FLUSH_SECONDS, "keys": 0.0, "checkpoint": 0.0}
        while not self._stop.is_set():
            now = time.monotonic()
            for name, every, task in (("diffs", self.diff_interval, self._diff_jobs),
                                      ("contacts", CONTACT_FLUSH_SECONDS, self._nodes.flush_contacts),
                                      ("keys", KEY_PRUNE_SECONDS, self._prune_keys),
                                      ("checkpoint", CHECKPOINT_SECONDS, self._checkpoint)):
                if now >= due[name]:
                    due[name] = now + every
                    try:
                        task()
                    except Exception as exc:  # noqa: BLE001 - the database may be away; next tick
                        log.warning("%s: %s", name, exc)
            self._wake.wait(max(0.05, min(due.values()) - time.monotonic()))
            self._wake.clear()

    def _diff_jobs(self) -> None:
        """Renew our leases; take over one orphaned diff at a time, computed on a thread
        of its own (this thread must go on renewing its lease: a diff can take minutes)."""
        self._diffs.renew()
        if self._taking is not None and self._taking.is_alive():
            return
        number = self._diffs.claim()
        if number is not None:
            self._taking = threading.Thread(target=self._diffs.complete, args=(number,), name=f"zonewall-diff-{number}", daemon=True)
            self._taking.start()

    def _checkpoint(self) -> None:
        checkpoint(self._sessions)

    def _prune_keys(self) -> None:
        with self._sessions() as session, session.begin():
            session.execute(delete(IdempotencyKeyRow).where(IdempotencyKeyRow.created_at < time.time() - KEY_RETENTION_SECONDS))
