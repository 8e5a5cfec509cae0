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

Changed nodes first: a commit knows which nodes its change leaves alone (their
documents are the same: store/cache.py). Their agents have nothing to apply, yet
answering them and reading their reports took ~0.25 s of the controller at 100
nodes, before the diff and so before the commit's own answer. So a commit `stage`s
its revision: it is published at once to the nodes it changes, and to everyone
else when the committing request `release`s it, after its diff (or STAGE_SECONDS
later, whatever happened to that request). So are the nodes whose documents gain or
lose only blank lines (a rule line added to a block they do not hold): nothing they
filter changes, only their later rules' derived ids; at 100 nodes, waking them first
held the commit ~3 s. The revision is `hold`-en from the
moment its row is written, before any other reader can see it: a notification of it
(our own NOTIFY, the periodic check, which can come before the commit has worked out
which nodes changed) waits for the release too (`drop`: the write failed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

SETTLE_SECONDS = 1.0  # at most this long a commit waits for the agents' answers before its diff
STAGE_SECONDS = 10.0  # a staged revision reaches every node at the latest this long after its commit


@dataclass
class _Waiter:
    after: int  # the revision the caller has
    node: str | None
    woken: asyncio.Future[None]


class RevisionWatch:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.current = 0  # published to every node
        self.newest = 0  # published to some node at least (a staged revision)
        self._early: dict[str, int] = {}  # node -> a staged revision newer than `current` it was published to
        self._held: set[int] = set()  # staged revisions not yet released (notifications of them wait)
        self._waiting: dict[int, _Waiter] = {}  # long-polls waiting now
        self._owed: set[int] = set()  # long-polls woken by a revision and not answered yet
        self._answered = threading.Condition()
        self._next_id = 0

    def bind(self, loop: asyncio.AbstractEventLoop, current: int | None) -> None:
        """Called once the event loop runs (application startup)."""
        self._loop = loop
        self.notify(current or 0)

    def unbind(self) -> None:
        self._loop = None

    @property
    def bound(self) -> bool:
        """True while the revisions are followed (between application start and stop)."""
        return self._loop is not None

    def revision_for(self, node: str | None) -> int:
        """The newest revision published to `node`."""
        return max(self.current, self._early.get(node, 0)) if node is not None else self.current

    def notify(self, number: int) -> None:
        """Thread-safe: revision `number` exists (ignored unless newer than the current;
        held back while it is staged here)."""
        loop = self._bound_loop(number)
        if loop is not None:
            self._call(loop, self._advance, number)

    def stage(self, number: int, changed: Iterable[str]) -> None:
        """Thread-safe: revision `number`, just committed here, is published to the
        `changed` nodes now and to every node at `release` (or STAGE_SECONDS)."""
        nodes = frozenset(changed)
        loop = self._bound_loop(number)
        if loop is None:
            return
        with self._lock:
            self._held.add(number)  # (a commit held it from its row's write already: `hold`; this is for other callers)
        self._call(loop, self._stage, number, nodes)

    def hold(self, number: int) -> None:
        """Thread-safe: revision `number` is being committed here; a notification of
        it (our own NOTIFY, the periodic check) waits for `committed`."""
        with self._lock:
            if self._loop is not None:
                self._held.add(number)

    def drop(self, number: int) -> None:
        """Thread-safe: the commit of revision `number` failed; nothing is published."""
        with self._lock:
            self._held.discard(number)

    def committed(self, number: int, changed: frozenset[str] | None) -> None:
        """A commit of this controller: staged when the nodes it changes are known,
        else published to every node."""
        if changed is None:
            self.release(number)
        else:
            self.stage(number, changed)

    def release(self, number: int) -> None:
        """Thread-safe: publish revision `number` to every node (a staged one, or not)."""
        with self._lock:
            self._held.discard(number)
        self.notify(number)

    def _bound_loop(self, number: int) -> asyncio.AbstractEventLoop | None:
        with self._lock:
            loop = self._loop
            if loop is None:  # not serving: nobody waits
                self.current = self.newest = max(self.current, number)
            return loop

    @staticmethod
    def _call(loop: asyncio.AbstractEventLoop, *call: object) -> None:
        try:
            loop.call_soon_threadsafe(*call)  # type: ignore[arg-type]
        except RuntimeError:  # the loop closed (shutdown)
            pass

    def _stage(self, number: int, nodes: frozenset[str]) -> None:
        if number <= self.current:
            return
        for node in nodes:
            self._early[node] = max(self._early.get(node, 0), number)
        self.newest = max(self.newest, number)
        self._wake()
        if self._loop is not None:
            self._loop.call_later(STAGE_SECONDS, self.release, number)

    def _advance(self, number: int) -> None:
        with self._lock:
            if number <= self.current or number in self._held:
                return
            self._held = {held for held in self._held if held > number}
        self.current = number
        self.newest = max(self.newest, number)
        self._early = {node: early for node, early in self._early.items() if early > number}
        self._wake()

    def _wake(self) -> None:
        woken = [key for key, waiter in self._waiting.items() if waiter.after < self.revision_for(waiter.node)]
        if not woken:
            return
        with self._answered:
            self._owed.update(woken)
        for key in woken:
            future = self._waiting.pop(key).woken
            if not future.done():
                future.set_result(None)

    async def _wait(self, key: int, after: int, timeout: float, node: str | None) -> int:
        """The revision published to `node` as soon as it is newer than `after`, or at `timeout`."""
        if self.revision_for(node) <= after and self._loop is not None:
            woken = asyncio.get_running_loop().create_future()
            self._waiting[key] = _Waiter(after, node, woken)
            try:
                await asyncio.wait_for(woken, timeout)
            except TimeoutError:
                pass
            finally:
                self._waiting.pop(key, None)
        return self.revision_for(node)

    @asynccontextmanager
    async def long_poll(self, after: int, timeout: float, node: str | None = None) -> AsyncIterator[int]:
        """Wait for a revision newer than `after` published to `node` (None: to
        everyone), at most `timeout` seconds; until the block ends (the answer is
        built) a long-poll the revision woke counts as owed an answer (see `settle`)."""
        key = self._next_id = self._next_id + 1
        try:
            yield await self._wait(key, after, timeout, node)
        finally:
            with self._answered:
                if key in self._owed:
                    self._owed.discard(key)
                    if not self._owed:
                        self._answered.notify_all()

    def settle(self, number: int, timeout: float = SETTLE_SECONDS) -> bool:
        """Thread-safe, blocking: wait until revision `number` is published (to some
        node at least) and every long-poll it woke has its answer, or `timeout` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._answered:
            while self.newest < number or self._owed:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._loop is None:
                    return False
                # the advance itself arrives on the loop without notifying: poll for it briefly
                self._answered.wait(min(remaining, 0.005 if self.newest < number else remaining))
        return True
