"""The FastAPI application around one Controller (replica.py): the API routers, the
request limits, the docs and the dashboard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from . import (
    api_docs,
    api_edits,
    api_gitops,
    api_health,
    api_logs,
    api_metrics,
    api_migrate,
    api_nodes,
    api_policy,
    api_tokens,
    auth,
)
from .after_response import AfterResponseMiddleware
from .limits import LimitsMiddleware, RequestLimits
from .replica import Controller
from .status_reports import StatusReports

API_VERSION = "1"
DESCRIPTION = """\
The zonewall controller keeps the cluster's firewall policy and its history, and
hands each node's agent its desired state.

Every call needs `Authorization: Bearer <token>` (`zonewall token create`). Roles:
**admin** (read and write), **viewer** (read), **agent** (one node: read its
desired state, write its status and logs). See docs/controller.md.
"""


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
    app.state.status_reports = StatusReports(controller.nodes)

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def out_of_range(_request: Request, exc: Exception) -> JSONResponse:
        # a number too large for the database (or for C): the caller's mistake, not a 500
        return JSONResponse({"detail": "a number in the request is out of range"}, status_code=422)
    # outermost: bodies bounded and callers authenticated before anything reads them
    async def token_valid(token: str) -> bool:
        return await auth.who_is(controller.tokens, token) is not None

    app.add_middleware(AfterResponseMiddleware)
    app.add_middleware(LimitsMiddleware, limits=limits, authenticate=token_valid)
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
