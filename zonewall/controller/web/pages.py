"""What every dashboard page shares: sessions, the logged-in principal, CSRF checks, the
controller as a typed dependency, and rendering with the menu.

The session store lives on the app (`install` in routes.py makes it), not in a module
global: two apps in one process (tests, replicas) keep their sessions apart.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..deps import controller
from ..store.db import as_utc
from ..store.tokens import Principal

COOKIE = "zonewall_session"
LOGIN_COOKIE = "zonewall_login"  # the login form's CSRF token (double submit)
SESSION_SECONDS = 12 * 3600
env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"]))


class Sessions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, tuple[str, str, float]] = {}  # id -> (token, csrf, expiry)

    def create(self, token: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._by_id[sid] = (token, secrets.token_urlsafe(16), time.time() + SESSION_SECONDS)
        return sid

    def get(self, sid: str | None) -> tuple[str, str] | None:
        if not sid:
            return None
        with self._lock:
            found = self._by_id.get(sid)
            if found is None or found[2] < time.time():
                self._by_id.pop(sid, None)
                return None
            return found[0], found[1]

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)


class LoginRequired(Exception):
    pass


def same_origin(request: Request) -> bool:
    """A form post comes from the dashboard's own pages: its Origin (or, without one,
    its Referer) names this very scheme, host and port. Browsers send an Origin with
    every POST; a request without either (a script) has no cookie to abuse."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return True
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def render(template: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(env.get_template(template).render(**context))


def when(stamp: float | None) -> str:
    return "-" if stamp is None else datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _utc(moment: datetime | None) -> str:
    """A stored time as the pages show it: to the second, UTC."""
    return "-" if moment is None else when(as_utc(moment).timestamp())  # type: ignore[union-attr]


env.filters["utc"] = _utc


def sessions_of(request: Request) -> Sessions:
    store: Sessions = request.app.state.web_sessions
    return store


def current(request: Request) -> tuple[Principal, str]:
    found = sessions_of(request).get(request.cookies.get(COOKIE))
    if found is None:
        raise LoginRequired()
    who = controller(request).tokens.authenticate(found[0])
    if who is None or who.role not in ("admin", "viewer"):
        raise LoginRequired()
    return who, found[1]


async def to_login(request: Request, _exc: Exception) -> Response:
    """LoginRequired, wherever a page raised it: to the login form."""
    return RedirectResponse("/ui/login", status_code=303)


async def form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def page(request: Request, template: str, title: str, **context: Any) -> HTMLResponse:
    who, csrf = current(request)
    section = "/ui/" + request.url.path.removeprefix("/ui/").split("/")[0]  # the menu entry shown as current
    return render(template, title=title, who=who, csrf=csrf, section=section, **context)


async def admin_form(request: Request) -> tuple[Principal, dict[str, str]]:
    """The fields of a form that changes the policy: an admin's, with the session's CSRF token."""
    who, csrf = current(request)
    fields = await form(request)
    if who.role != "admin":
        raise HTTPException(status_code=403, detail="a viewer cannot change the policy")
    if not same_origin(request) or not secrets.compare_digest(fields.get("csrf", ""), csrf):
        raise HTTPException(status_code=403, detail="stale form or another site (CSRF)")
    return who, fields
