"""Waking long-polling agents the moment a revision is committed.

Agents ask "is there anything newer than revision N?" and the request stays open
until there is (or until its wait time ends, when they simply ask again). The watch
knows the newest revision this controller has heard of: from its own commits, and
from the other controllers' through the database (controller/follow.py). Commits and
notifications arrive on worker threads, the waiters live on the event loop: `notify`
crosses over with call_soon_threadsafe.

The number only grows: a late or repeated notification of an older revision
changes nothing, so no waiter is ever handed a revision older than one it was
already shown. Waiting costs no database access; only the wake-up reads (once per
revision, store/cache.py).
"""

from __future__ import annotations

import asyncio
import threading


class RevisionWatch:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self.current = 0

    def bind(self, loop: asyncio.AbstractEventLoop, current: int | None) -> None:
        """Called once the event loop runs (application startup)."""
        self._loop = loop
        self._changed = loop.create_future()
        self.notify(current or 0)

    def unbind(self) -> None:
        self._loop = None

    @property
    def bound(self) -> bool:
        """True while the revisions are followed (between application start and stop)."""
        return self._loop is not None

    def notify(self, number: int) -> None:
        """Thread-safe: revision `number` exists (ignored unless newer than the current)."""
        with self._lock:
            loop = self._loop
            if loop is None:
                self.current = max(self.current, number)
                return
        try:
            loop.call_soon_threadsafe(self._advance, number)
        except RuntimeError:  # the loop closed (shutdown)
            pass

    def _advance(self, number: int) -> None:
        if number <= self.current:
            return
        self.current = number
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        if self._loop is not None:
            self._changed = self._loop.create_future()

    async def wait_for_newer(self, after: int, timeout: float) -> int:
        """The current revision as soon as it is newer than `after`, or at `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.current <= after and self._changed is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), remaining)
            except TimeoutError:
                break
        return self.current
