"""The FastAPI application: wiring of stores, the revision watch and the routers."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from . import api_docs, api_edits, api_gitops, api_health, api_logs, api_metrics, api_migrate, api_nodes, api_policy, api_tokens
from .background import Housekeeping
from .follow import RECHECK_SECONDS, Follower
from .limits import LimitsMiddleware, RequestLimits
from .migrate_channel import CHANNEL as MIGRATIONS_CHANNEL
from .migrate_channel import MigrationHub
from .store.cache import RevisionCache, RevisionView
from .store.db import open_database
from .store.diffs import LEASE_SECONDS, DiffJobs
from .store.logs import CounterStore, LogStore, Retention
from .store.nodes import NodeStore
from .store.revisions import RevisionStore
from .store.tokens import authenticate
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
    gitops: Any = None  # a gitops.GitFollower when the controller follows a git branch (each replica does: one commit is one revision)

    def current_view(self) -> RevisionView | None:
        """The newest revision this controller knows of, parsed (None: no policy yet)."""
        number = self.watch.current
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
    revisions = RevisionStore(sessions, diffs, cache, on_commit=watch.notify)
    watch.notify(revisions.current_number() or 0)
    migrations = MigrationHub(sessions)
    follower = Follower(sessions.kw["bind"], revisions.current_number, cache.get, watch.notify, recheck=recheck,
                        others={MIGRATIONS_CHANNEL: migrations.notified}, on_recheck=migrations.recheck)
    return Controller(sessions, revisions, nodes, watch, LogStore(sessions, retention), CounterStore(sessions),
                      follower, Housekeeping(sessions, diffs, nodes), migrations)


def create_app(controller: Controller, limits: RequestLimits = RequestLimits()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        controller.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            controller.stop()

    # docs_url/redoc_url off: api_docs serves both from vendored assets (no CDN)
    app = FastAPI(title="zonewall controller", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.ctl = controller

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def out_of_range(_request: Request, exc: Exception) -> JSONResponse:
        # a number too large for the database (or for C): the caller's mistake, not a 500
        return JSONResponse({"detail": "a number in the request is out of range"}, status_code=422)
    # outermost: bodies bounded and callers authenticated before anything reads them
    app.add_middleware(LimitsMiddleware, limits=limits, authenticate=lambda token: authenticate(controller.sessions, token) is not None)
    app.include_router(api_policy.router)
    app.include_router(api_nodes.router)
    app.include_router(api_tokens.router)
    app.include_router(api_logs.router)
    app.include_router(api_metrics.router)
    app.include_router(api_migrate.router)
    app.include_router(api_gitops.router)
    app.include_router(api_edits.router)
    api_docs.install(app)
    app.include_router(api_health.router)  # /healthz, /readyz (no token)
    from .web import routes as web_routes  # the dashboard (server-rendered)

    web_routes.install(app)
    return app
