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

Answers first: a commit's semantic diff is seconds of CPU at 10,000 VMs, and a
thread computing it takes the interpreter from the threads answering the woken
agents. `settle` lets the committing request wait (briefly, bounded) until every
long-poll a revision woke has been answered, and only then compute its diff.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

SETTLE_SECONDS = 1.0  # at most this long a commit waits for the agents' answers before its diff


class RevisionWatch:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Future[None] | None = None
        self._lock = threading.Lock()
        self.current = 0
        self._waiting: dict[int, int] = {}  # long-polls waiting now: id -> the revision they have
        self._owed: set[int] = set()  # long-polls woken by a revision and not answered yet
        self._answered = threading.Condition()
        self._next_id = 0

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
        woken = [key for key, after in self._waiting.items() if after < number]
        if woken:
            with self._answered:
                self._owed.update(woken)
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

    @asynccontextmanager
    async def long_poll(self, after: int, timeout: float) -> AsyncIterator[int]:
        """`wait_for_newer`, and until the block ends (the answer is built) a long-poll
        the revision woke counts as owed an answer (see `settle`)."""
        key = self._next_id = self._next_id + 1
        self._waiting[key] = after
        try:
            number = await self.wait_for_newer(after, timeout)
            self._waiting.pop(key, None)
            yield number
        finally:
            self._waiting.pop(key, None)
            with self._answered:
                if key in self._owed:
                    self._owed.discard(key)
                    if not self._owed:
                        self._answered.notify_all()

    def settle(self, number: int, timeout: float = SETTLE_SECONDS) -> bool:
        """Thread-safe, blocking: wait until revision `number` is published and every
        long-poll it woke has its answer, or `timeout` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._answered:
            while self.current < number or self._owed:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._loop is None:
                    return False
                # the advance itself arrives on the loop without notifying: poll for it briefly
                self._answered.wait(min(remaining, 0.005 if self.current < number else remaining))
        return True
