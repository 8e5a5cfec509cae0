"""A commit's diff waits until the agents its revision woke have their answers.

The diff takes seconds of CPU at size; computed while the woken long-polls build
their answers, it slows every node's change. RevisionWatch.settle blocks the
committing thread until each long-poll the revision woke has left its block (its
answer built), bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from zonewall.controller.watch import RevisionWatch


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def _bound(loop: asyncio.AbstractEventLoop, current: int) -> RevisionWatch:
    watch = RevisionWatch()
    asyncio.run_coroutine_threadsafe(_bind(watch, loop, current), loop).result(5)
    return watch


async def _bind(watch: RevisionWatch, loop: asyncio.AbstractEventLoop, current: int) -> None:
    watch.bind(loop, current)


def _poller(watch: RevisionWatch, after: int, release: asyncio.Event, seen: list[int]) -> object:
    async def poll() -> None:
        async with watch.long_poll(after, 30) as number:
            seen.append(number)
            await release.wait()  # the answer is still being built until released
    return poll()


def test_settle_waits_for_the_answers_of_the_long_polls_a_revision_woke(loop: asyncio.AbstractEventLoop) -> None:
    watch = _bound(loop, 1)
    release = asyncio.run_coroutine_threadsafe(_event(), loop).result(5)
    seen: list[int] = []
    done = asyncio.run_coroutine_threadsafe(_poller(watch, 1, release, seen), loop)  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(5)
    watch.notify(2)
    assert watch.settle(2, timeout=0.3) is False  # woken, answer not built yet: the diff would wait
    assert seen == [2]
    loop.call_soon_threadsafe(release.set)
    done.result(5)
    assert watch.settle(2, timeout=2.0) is True  # answered: the diff may start


def test_settle_does_not_wait_for_long_polls_the_revision_did_not_wake(loop: asyncio.AbstractEventLoop) -> None:
    watch = _bound(loop, 1)
    release = asyncio.run_coroutine_threadsafe(_event(), loop).result(5)
    seen: list[int] = []
    # an agent that already has revision 5 (this controller has not heard of it yet)
    ahead = asyncio.run_coroutine_threadsafe(_poller(watch, 5, release, seen), loop)  # type: ignore[arg-type]
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(5)
    watch.notify(2)
    assert watch.settle(2, timeout=2.0) is True
    assert seen == [] and not ahead.done()  # still waiting, never owed an answer
    watch.notify(6)
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), loop).result(5)
    assert seen == [6] and watch.settle(6, timeout=0.2) is False  # 6 woke it: owed until answered
    loop.call_soon_threadsafe(release.set)
    ahead.result(5)
    assert watch.settle(6, timeout=2.0) is True


def test_settle_returns_at_once_when_no_loop_serves() -> None:
    watch = RevisionWatch()
    assert watch.settle(1, timeout=0.05) is False  # nothing to wait for: not serving


async def _event() -> asyncio.Event:
    return asyncio.Event()
