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

from .deps import controller
from .store.tokens import Principal

log = logging.getLogger("zonewall.controller.auth")
bearer = HTTPBearer(auto_error=False, description="a zonewall API token (`zonewall token create`)")


def _refuse(request: Request, status: int, reason: str, who: Principal | None = None) -> HTTPException:
    client = request.client.host if request.client else "?"
    log.warning("refused %d %s %s from %s%s: %s", status, request.method, request.url.path, client, f" as {who.label}" if who else "", reason)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(status_code=status, detail=reason, headers=headers)


def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if credentials is None:
        raise _refuse(request, 401, "missing bearer token")
    found = controller(request).tokens.authenticate(credentials.credentials)
    if found is None:
        raise _refuse(request, 401, "unknown or revoked token")
    return found


def reader(request: Request, who: Principal = Depends(principal)) -> Principal:
    """admin or viewer: the policy, revisions, the inventory."""
    if who.role not in ("admin", "viewer"):
        raise _refuse(request, 403, f"a {who.role} token cannot read this", who)
    return who


def admin(request: Request, who: Principal = Depends(principal)) -> Principal:
    if who.role != "admin":
        raise _refuse(request, 403, f"a {who.role} token cannot change the policy or tokens", who)
    return who


def node_reader(node: str, request: Request, who: Principal = Depends(principal)) -> Principal:
    """admin, viewer, or the agent of this very node."""
    if who.role in ("admin", "viewer") or (who.role == "agent" and who.node == node):
        return who
    raise _refuse(request, 403, f"this token may only read node {who.node!r}", who)


def node_agent(node: str, request: Request, who: Principal = Depends(principal)) -> Principal:
    """Only the agent of this node writes its registration, status and logs."""
    if who.role == "agent" and who.node == node:
        return who
    raise _refuse(request, 403, "only the node's own agent token may write its status" if who.role != "agent" else f"this token may only write node {who.node!r}", who)


def still_valid(request: Request) -> bool:
    """The request's token is still known and unrevoked: checked again after a long
    wait (a long-poll opened before a revocation must not carry the next revision;
    revoked through another controller: once the token cache asks again)."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and controller(request).tokens.authenticate(secret.strip()) is not None
