"""One controller process: its stores, the revision watch, the follower of other
replicas, housekeeping and live migrations, built from a database URL. The FastAPI
application (app.py) serves it; its routers reach it through deps.controller."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from .background import Housekeeping
from .follow import RECHECK_SECONDS, Follower
from .migrate_channel import CHANNEL as MIGRATIONS_CHANNEL
from .migrate_channel import MigrationHub
from .store.cache import RevisionCache, RevisionView
from .store.counters import CounterStore
from .store.db import open_database
from .store.diffs import LEASE_SECONDS, DiffJobs
from .store.logs import LogStore, Retention
from .store.nodes import NodeStore
from .store.revisions import RevisionStore
from .store.tokens import TokenCache
from .watch import RevisionWatch


@dataclass
class Controller:
    """One controller process: a stateless replica of what the database holds.

    Several may serve one PostgreSQL database (docs/operations.md, high
    availability); what each keeps in memory (the watch, parsed revisions, contacts
    not yet written) is a cache of the database or is written to it shortly."""

    sessions: sessionmaker[Session]
    revisions: RevisionStore
    nodes: NodeStore
    watch: RevisionWatch
    logs: LogStore
    counters: CounterStore
    follower: Follower
    housekeeping: Housekeeping
    migrations: MigrationHub  # live migrations and their agents' steps (docs/migration.md)
    tokens: TokenCache  # who a bearer token is, looked up at most every few seconds
    gitops: Any = None  # a gitops.GitFollower when the controller follows a git branch (each replica does: one commit is one revision)

    def current_view(self) -> RevisionView | None:
        """The newest revision this controller knows of, parsed (None: no policy yet)."""
        number = self.watch.newest
        return self.revisions.view(number) if number else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.watch.bind(loop, self.revisions.current_number())
        self.follower.start()
        self.housekeeping.start()
        if self.gitops is not None:
            self.gitops.start()

    def stop(self) -> None:
        self.watch.unbind()
        self.follower.stop()
        self.housekeeping.stop()
        if self.gitops is not None:
            self.gitops.stop()


def replica_name() -> str:
    """How this process signs the diff jobs it holds: host, pid and a random part."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def build_controller(db_url: str, retention: Retention = Retention(), *, diff_lease: float = LEASE_SECONDS,
                     recheck: float = RECHECK_SECONDS) -> Controller:
    sessions = open_database(db_url)
    watch = RevisionWatch()
    nodes = NodeStore(sessions)
    cache = RevisionCache(sessions)
    diffs = DiffJobs(sessions, cache, replica_name(), lease=diff_lease)
    revisions = RevisionStore(sessions, diffs, cache, publisher=watch)
    watch.notify(revisions.current_number() or 0)
    migrations = MigrationHub(sessions)
    follower = Follower(sessions.kw["bind"], revisions.current_number, cache.get, watch.notify, recheck=recheck,
                        others={MIGRATIONS_CHANNEL: migrations.notified}, on_recheck=migrations.recheck)
    return Controller(sessions, revisions, nodes, watch, LogStore(sessions, retention), CounterStore(sessions),
                      follower, Housekeeping(sessions, diffs, nodes), migrations, TokenCache(sessions))
