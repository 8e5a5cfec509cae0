"""The FastAPI application: wiring of stores, the revision watch and the routers."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from . import api_health, api_logs, api_metrics, api_migrate, api_nodes, api_policy, api_tokens
from .background import Housekeeping
from .follow import RECHECK_SECONDS, Follower
from .migrate_channel import CHANNEL as MIGRATIONS_CHANNEL
from .migrate_channel import MigrationHub
from .store.cache import RevisionCache, RevisionView
from .store.db import open_database
from .store.diffs import LEASE_SECONDS, DiffJobs
from .store.logs import CounterStore, LogStore, Retention
from .store.nodes import NodeStore
from .store.revisions import RevisionStore
from .watch import RevisionWatch

API_VERSION = "1"
DESCRIPTION = """\
The zonewall controller keeps the cluster's firewall policy and its history, and
hands each node's agent its desired state.

Every call needs `Authorization: Bearer <token>` (`zonewall token create`). Roles:
**admin** (read and write), **viewer** (read), **agent** (one node: read its
desired state, write its status and logs). See docs/controller.md.
"""


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

    def current_view(self) -> RevisionView | None:
        """The newest revision this controller knows of, parsed (None: no policy yet)."""
        number = self.watch.current
        return self.revisions.view(number) if number else None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.watch.bind(loop, self.revisions.current_number())
        self.follower.start()
        self.housekeeping.start()

    def stop(self) -> None:
        self.watch.unbind()
        self.follower.stop()
        self.housekeeping.stop()


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
    revisions = RevisionStore(sessions, diffs, cache, on_commit=watch.notify)
    watch.notify(revisions.current_number() or 0)
    migrations = MigrationHub(sessions)
    follower = Follower(sessions.kw["bind"], revisions.current_number, cache.get, watch.notify, recheck=recheck,
                        others={MIGRATIONS_CHANNEL: migrations.notified}, on_recheck=migrations.recheck)
    return Controller(sessions, revisions, nodes, watch, LogStore(sessions, retention), CounterStore(sessions),
                      follower, Housekeeping(sessions, diffs, nodes), migrations)


def create_app(controller: Controller) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        controller.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            controller.stop()

    app = FastAPI(title="zonewall controller", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan)
    app.state.ctl = controller
    app.include_router(api_policy.router)
    app.include_router(api_nodes.router)
    app.include_router(api_tokens.router)
    app.include_router(api_logs.router)
    app.include_router(api_metrics.router)
    app.include_router(api_migrate.router)
    app.include_router(api_health.router)  # /healthz, /readyz (no token)
    from .web import routes as web_routes  # the dashboard (server-rendered)

    web_routes.install(app)
    return app
