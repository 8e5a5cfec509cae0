"""API tokens: created once (the secret is shown once), stored as SHA-256 hashes.

Secrets are 256 random bits, so a plain SHA-256 is enough to make a stolen database
useless for logging in (a slow password hash protects low-entropy secrets; these
are not), and lookups stay one indexed query per request.

A controller asks on every request (and again when a long-poll's wait ends), which
at 100 agents made token lookups as costly as a commit: `TokenCache` remembers a
known token for REVALIDATE_SECONDS, and asks again about every token it knows in one
query (one per token was 20 queries a second at 100 agents, ~6 % of a busy
controller's CPU). A token revoked through this controller is
forgotten at once; one revoked through another controller (HA) or the CLI is
refused within REVALIDATE_SECONDS. Unknown and revoked tokens are never remembered:
each is looked up again.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from .db import utcnow
from .models import TokenRow

ROLES = ("admin", "viewer", "agent")
_NODE = re.compile(r"[a-z0-9][a-z0-9_-]{0,30}")  # the policy's name rule for hosts
PREFIX = "zw_"
REVALIDATE_SECONDS = 5.0  # how long a known token is trusted without asking the database


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
    """The token's principal, asking the database (a controller asks its TokenCache)."""
    if not secret.startswith(PREFIX):
        return None
    return _lookup(sessions, hash_secret(secret))


# the columns alone, no ORM object to build
_COLUMNS = (TokenRow.secret_hash, TokenRow.id, TokenRow.name, TokenRow.role, TokenRow.node, TokenRow.revoked_at)
_BATCH = 500  # hashes per IN (...): under SQLite's oldest limit of 999 parameters


def _lookup(sessions: sessionmaker[Session], secret_hash: str) -> Principal | None:
    return _lookup_many(sessions, [secret_hash]).get(secret_hash)


def _lookup_many(sessions: sessionmaker[Session], secret_hashes: list[str]) -> dict[str, Principal]:
    """The unrevoked tokens among `secret_hashes`, by hash."""
    found: dict[str, Principal] = {}
    with sessions() as session:
        for at in range(0, len(secret_hashes), _BATCH):
            for row in session.execute(select(*_COLUMNS).where(TokenRow.secret_hash.in_(secret_hashes[at:at + _BATCH]))):
                if row.revoked_at is None:
                    found[row.secret_hash] = Principal(row.id, row.name, row.role, row.node)
    return found


class TokenCache:
    """`authenticate` for a controller process: a known token is looked up in the
    database at most once per `ttl` seconds; revocations through this process
    (`forget`) take effect at once."""

    def __init__(self, sessions: sessionmaker[Session], ttl: float = REVALIDATE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._clock = clock
        self._known: dict[str, tuple[Principal, float]] = {}  # secret hash -> (who, when looked up)
        self._lock = threading.Lock()
        self._asking = threading.Lock()  # one thread asks again about the known tokens, the others wait for it
        # counts `forget`s: an answer the database gave before one is not remembered
        # (it may predate the revocation, which this controller promises to honour at once)
        self._forgotten = 0
        self.lookups = 0  # database lookups (tests and metrics read it)

    def remembered(self, secret: str) -> tuple[bool, Principal | None]:
        """(True, who) when the answer needs no database (not a token of ours, or one
        looked up within `ttl`): what the event loop may ask without a thread."""
        if not secret.startswith(PREFIX):
            return True, None
        with self._lock:
            found = self._known.get(hash_secret(secret))
        if found is not None and self._clock() - found[1] < self._ttl:
            return True, found[0]
        return False, None

    def authenticate(self, secret: str) -> Principal | None:
        if not secret.startswith(PREFIX):
            return None
        key = hash_secret(secret)
        now = self._clock()
        with self._lock:
            found = self._known.get(key)
        if found is not None and now - found[1] < self._ttl:
            return found[0]
        if found is not None:
            return self._revalidated(key, now)
        self.lookups += 1
        with self._lock:
            forgotten = self._forgotten
        who = _lookup(self._sessions, key)
        if who is not None:
            with self._lock:
                if self._forgotten == forgotten:
                    self._known[key] = (who, now)
        return who

    def _revalidated(self, key: str, now: float) -> Principal | None:
        """Ask again about every token known here, in one query (they were looked up at
        different moments: asked one by one, each would cost a query per interval)."""
        with self._asking:
            with self._lock:
                found = self._known.get(key)
                if found is None or now - found[1] < self._ttl:  # another thread asked meanwhile (or it was revoked here)
                    return found[0] if found is not None else None
                known = list(self._known)
                forgotten = self._forgotten
            self.lookups += 1
            valid = _lookup_many(self._sessions, known)
            with self._lock:
                if self._forgotten != forgotten:  # revoked here meanwhile: ask again next time
                    for each in known:
                        self._known.pop(each, None)
                    return valid.get(key)
                for each in known:
                    if each in valid:
                        self._known[each] = (valid[each], now)
                    else:
                        self._known.pop(each, None)
        return valid.get(key)

    def forget(self, token_id: int) -> None:
        """The token was revoked: ask the database again next time."""
        with self._lock:
            self._forgotten += 1
            for key in [key for key, (who, _) in self._known.items() if who.token_id == token_id]:
                del self._known[key]

    def revoke(self, token_id: int) -> bool:
        """Revoke in the database and forget it here (False: no active token `token_id`)."""
        revoked = revoke_token(self._sessions, token_id)
        self.forget(token_id)
        return revoked


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
