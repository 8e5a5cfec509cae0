"""API tokens: created once (the secret is shown once), stored as SHA-256 hashes.

Secrets are 256 random bits, so a plain SHA-256 is enough to make a stolen database
useless for logging in (a slow password hash protects low-entropy secrets; these
are not), and lookups stay one indexed query per request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .db import utcnow
from .models import TokenRow

ROLES = ("admin", "viewer", "agent")
_NODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,30}")  # the policy's name rule for hosts
PREFIX = "zw_"


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name, role, and (agent tokens) its node."""

    token_id: int
    name: str
    role: str
    node: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.role}{':' + self.node if self.node else ''})"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(sessions: sessionmaker[Session], role: str, name: str | None = None, node: str | None = None) -> tuple[TokenRow, str]:
    """A new token; returns the row and the secret (never stored)."""
    if role not in ROLES:
        raise TokenError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    if role == "agent":
        if not node or not _NODE.fullmatch(node):
            raise TokenError("an agent token needs --node NAME (a host name of the policy)")
    elif node is not None:
        raise TokenError("only agent tokens are bound to a node")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = TokenRow(name=name or (f"agent-{node}" if role == "agent" else role), role=role, node=node, secret_hash=hash_secret(secret), created_at=utcnow())
    with sessions() as session, session.begin():
        session.add(row)
    return row, secret


def authenticate(sessions: sessionmaker[Session], secret: str) -> Principal | None:
    if not secret.startswith(PREFIX):
        return None
    # every request asks: the columns alone, no ORM object to build
    columns = (TokenRow.id, TokenRow.name, TokenRow.role, TokenRow.node, TokenRow.revoked_at)
    with sessions() as session:
        row = session.execute(select(*columns).where(TokenRow.secret_hash == hash_secret(secret))).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.id, row.name, row.role, row.node)


def list_tokens(sessions: sessionmaker[Session]) -> list[TokenRow]:
    with sessions() as session:
        return list(session.scalars(select(TokenRow).order_by(TokenRow.id)))


def revoke_token(sessions: sessionmaker[Session], token_id: int) -> bool:
    with sessions() as session, session.begin():
        row = session.get(TokenRow, token_id)
        if row is None or row.revoked_at is not None:
            return False
        row.revoked_at = utcnow()
        return True
