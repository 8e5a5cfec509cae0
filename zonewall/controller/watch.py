"""Waking long-polling agents the moment a revision is committed.

Agents ask "is there anything newer than revision N?" and the request stays open
until there is (or until its wait time ends, when they simply ask again). Commits
happen on worker threads, the waiters live on the event loop: `notify` crosses over
with call_soon_threadsafe. One controller process is assumed; with several on a
shared database a waiter still re-reads the database when its wait ends.
"""

from __future__ import annotations

import asyncio


class RevisionWatch:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Future[None] | None = None
        self.current = 0

    def bind(self, loop: asyncio.AbstractEventLoop, current: int | None) -> None:
        """Called once the event loop runs (application startup)."""
        self._loop = loop
        self.current = current or 0
        self._changed = loop.create_future()

    def notify(self, number: int) -> None:
        """Thread-safe: revision `number` is now the current one."""
        if self._loop is None:
            self.current = number
            return
        self._loop.call_soon_threadsafe(self._advance, number)

    def _advance(self, number: int) -> None:
        self.current = number
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        if self._loop is not None:
            self._changed = self._loop.create_future()

    async def wait_for_change(self, after: int, timeout: float) -> int:
        """The current revision as soon as it differs from `after`, or at `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.current == after and self._changed is not None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), remaining)
            except asyncio.TimeoutError:
                break
        return self.current
