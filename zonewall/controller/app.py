"""The FastAPI application: wiring of stores, the revision watch and the routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from . import api_docs, api_edits, api_gitops, api_logs, api_metrics, api_migrate, api_nodes, api_policy, api_tokens
from .migrate_channel import MigrationHub
from .store.db import open_database
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
    sessions: sessionmaker[Session]
    revisions: RevisionStore
    nodes: NodeStore
    watch: RevisionWatch
    logs: LogStore
    counters: CounterStore
    gitops: Any = None  # a gitops.GitFollower when the controller follows a git branch


def build_controller(db_url: str, retention: Retention = Retention()) -> Controller:
    sessions = open_database(db_url)
    watch = RevisionWatch()
    return Controller(sessions, RevisionStore(sessions, on_commit=watch.notify), NodeStore(sessions), watch,
                      LogStore(sessions, retention), CounterStore(sessions))


def create_app(controller: Controller) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        controller.watch.bind(asyncio.get_running_loop(), controller.revisions.current_number())
        if controller.gitops is not None:
            controller.gitops.start()
        yield
        if controller.gitops is not None:
            controller.gitops.stop()

    # docs_url/redoc_url off: api_docs serves both from vendored assets (no CDN)
    app = FastAPI(title="zonewall controller", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.ctl = controller
    app.include_router(api_policy.router)
    app.include_router(api_nodes.router)
    app.include_router(api_tokens.router)
    app.include_router(api_logs.router)
    app.include_router(api_metrics.router)
    app.include_router(api_migrate.router)
    app.include_router(api_gitops.router)
    app.include_router(api_edits.router)
    api_docs.install(app)
    app.state.migrations = MigrationHub()  # agents' migration steps (docs/migration.md)
    from .web import routes as web_routes  # the dashboard (server-rendered)

    web_routes.install(app)
    return app
