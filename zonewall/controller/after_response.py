"""Work a request leaves until its answer is sent (an ASGI middleware).

A commit publishes its revision to the nodes it left alone once its diff is done
(watch.py `release`); done inside the request, waking their ~100 long-polls came
before the commit's own answer on the event loop (~35 ms at 100 nodes). The
request hands that call to `after_response`, and it runs once the answer is out
(or the request failed: it runs all the same).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("zonewall.controller.after_response")
_KEY = "zonewall.after_response"


class AfterResponseMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pending: list[Callable[[], None]] = []
        scope[_KEY] = pending
        try:
            await self.app(scope, receive, send)
        finally:
            for call in pending:
                try:
                    call()
                except Exception:
                    log.exception("work after a response failed")


def after_response(request: Request, call: Callable[[], None]) -> None:
    """Run `call` (quick, thread-safe) once the request's answer is sent; at once
    when no middleware serves the request."""
    pending = request.scope.get(_KEY)
    if pending is None:
        call()
    else:
        pending.append(call)
