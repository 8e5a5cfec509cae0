"""Request limits that hold before authentication (an ASGI middleware).

What an unauthenticated caller could do before this (issue 17): a 100 MB body was
read and parsed before the 401 (controller memory 97 MB -> 391 MB for one request,
1.07 GB for four); login had no rate limit; 60 queued policy writers held every
worker thread, and a plain read waited 18.9 s behind them. Here, in order:

1. a declared `Content-Length` over the route's bound: 413 before a byte is read;
2. an API request with a body and without a valid token: 401 before it is read;
3. login, logout and policy writes over a per-client rate: 429 with Retry-After;
4. the body is counted as it arrives (413 past the bound, whatever the headers
   said) and must keep arriving (408 after `body_timeout` of silence);
5. policy writes run `max_writes` at a time; the others wait here, on the event
   loop, holding no worker thread, so reads always find one (503 when more than
   `max_waiting_writes` wait).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIB = 1024 * 1024
# Policy writes: the documents (64 MiB at most, documents.py) as JSON.
POLICY_WRITE = re.compile(r"^/api/v1/(policy|vms/[^/]+/(rules|zone)|zones/[^/]+/rules|revisions/[^/]+/rollback|tokens)(/|$)")
LOGIN = re.compile(r"^/ui/log(in|out)$")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class RequestLimits:
    max_body: int = 80 * MIB  # /api: a whole policy upload
    max_form_body: int = 1 * MIB  # /ui/ forms (an edited rule list at most)
    max_other_body: int = 64 * 1024  # anything else
    body_timeout: float = 30.0  # seconds of silence while a body is being sent
    login_per_minute: float = 20.0  # per client address, burst as large
    writes_per_minute: float = 120.0  # policy writes per client address
    max_writes: int = 4  # policy writes running at once
    max_waiting_writes: int = 256


class TokenBuckets:
    """Per-key token buckets: `rate` per minute, bursts of up to `rate`."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1.0, per_minute)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0 if allowed now, else the seconds until it would be."""
        now = self._clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:  # many addresses: forget the full buckets
                self._buckets = {k: v for k, v in self._buckets.items() if v[0] < self.burst - 1}
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    pass


class LimitsMiddleware:
    def __init__(self, app: ASGIApp, limits: RequestLimits, authenticate: Callable[[str], Awaitable[bool]]) -> None:
        self.app = app
        self.limits = limits
        self._authenticate = authenticate  # token -> valid?
        self._logins = TokenBuckets(limits.login_per_minute)
        self._writes = TokenBuckets(limits.writes_per_minute)
        self._write_slots = asyncio.Semaphore(limits.max_writes)
        self._waiting_writes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        client = (scope.get("client") or ("?", 0))[0]
        bound = self._bound(path)
        declared = _content_length(scope)
        if declared is not None and declared > bound:
            await _answer(send, 413, f"request body of {declared} bytes: at most {bound}")
            return
        has_body = method in BODY_METHODS and (declared is None or declared > 0)
        if has_body and path.startswith("/api/") and not await self._token_ok(scope):
            await _answer(send, 401, "missing, unknown or revoked bearer token", {"www-authenticate": "Bearer"})
            return
        policy_write = method in BODY_METHODS and POLICY_WRITE.match(path) is not None
        wait = self._logins.take(client) if LOGIN.match(path) and method == "POST" else self._writes.take(client) if policy_write else 0.0
        if wait:
            await _answer(send, 429, f"too many requests from {client}: retry in {math.ceil(wait)} s", {"retry-after": str(math.ceil(wait))})
            return
        guarded = self._guarded_receive(receive, bound) if has_body else receive
        try:
            if policy_write:
                await self._one_write(scope, guarded, send)
            else:
                await self.app(scope, guarded, send)
        except BodyTooLarge:
            await _answer(send, 413, f"request body over {bound} bytes")
        except BodyTimeout:
            await _answer(send, 408, f"the request body stopped arriving for {self.limits.body_timeout:.0f} s")

    def _bound(self, path: str) -> int:
        if path.startswith("/api/"):
            return self.limits.max_body
        if path.startswith("/ui/"):
            return self.limits.max_form_body
        return self.limits.max_other_body

    async def _token_ok(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        return await self._authenticate(token.strip())

    def _guarded_receive(self, receive: Receive, bound: int) -> Receive:
        seen = 0

        async def guarded() -> Message:
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), self.limits.body_timeout)
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > bound:
                    raise BodyTooLarge
            return message

        return guarded

    async def _one_write(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._waiting_writes >= self.limits.max_waiting_writes:
            await _answer(send, 503, "too many policy writes waiting; retry later", {"retry-after": "5"})
            return
        self._waiting_writes += 1
        try:
            await self._write_slots.acquire()
        finally:
            self._waiting_writes -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._write_slots.release()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    try:
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})
    except RuntimeError:  # the app had already started its answer: nothing more to say
        pass
