"""Who may call what. Every /api route depends on one of the guards below.

Roles: `admin` reads and writes everything; `viewer` reads everything but tokens;
`agent` tokens are bound to one node and may only read that node's desired state
and write that node's registration, status and logs. Refusals are 401 (no or an
unknown token) or 403 (a known token without the right), and each is logged with
the caller's address, the method and the path.
"""

from __future__ import annotations

import logging

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from .deps import controller
from .store.tokens import Principal, TokenCache

log = logging.getLogger("zonewall.controller.auth")
bearer = HTTPBearer(auto_error=False, description="a zonewall API token (`zonewall token create`)")


def _refuse(request: Request, status: int, reason: str, who: Principal | None = None) -> HTTPException:
    client = request.client.host if request.client else "?"
    log.warning("refused %d %s %s from %s%s: %s", status, request.method, request.url.path, client, f" as {who.label}" if who else "", reason)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status_code=status, detail=reason, headers=headers)


async def who_is(tokens: TokenCache, secret: str) -> Principal | None:
    """The token's principal: from memory on the event loop when the cache can answer
    (nearly always), else from the database in a thread. Every agent request asks,
    and a thread for each asking cost more than the question (a hop through the
    thread pool per guard: four for a status report)."""
    known, who = tokens.remembered(secret)
    return who if known else await run_in_threadpool(tokens.authenticate, secret)


async def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if credentials is None:
        raise _refuse(request, 401, "missing bearer token")
    found = await who_is(controller(request).tokens, credentials.credentials)
    if found is None:
        raise _refuse(request, 401, "unknown or revoked token")
    return found


# The guards below only compare: `async def` keeps FastAPI from sending each to a thread.
async def reader(request: Request, who: Principal = Depends(principal)) -> Principal:
    """admin or viewer: the policy, revisions, the inventory."""
    if who.role not in ("admin", "viewer"):
        raise _refuse(request, 403, f"a {who.role} token cannot read this", who)
    return who


async def admin(request: Request, who: Principal = Depends(principal)) -> Principal:
    if who.role != "admin":
        raise _refuse(request, 403, f"a {who.role} token cannot change the policy or tokens", who)
    return who


async def node_reader(node: str, request: Request, who: Principal = Depends(principal)) -> Principal:
    """admin, viewer, or the agent of this very node."""
    if who.role in ("admin", "viewer") or (who.role == "agent" and who.node == node):
        return who
    raise _refuse(request, 403, f"this token may only read node {who.node!r}", who)


async def node_agent(node: str, request: Request, who: Principal = Depends(principal)) -> Principal:
    """Only the agent of this node writes its registration, status and logs."""
    if who.role == "agent" and who.node == node:
        return who
    raise _refuse(request, 403, "only the node's own agent token may write its status" if who.role != "agent" else f"this token may only write node {who.node!r}", who)


async def still_valid(request: Request) -> bool:
    """The request's token is still known and unrevoked: checked again after a long
    wait (a long-poll opened before a revocation must not carry the next revision;
    revoked through another controller: once the token cache asks again)."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and await who_is(controller(request).tokens, secret.strip()) is not None
