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


# -- staged revisions: the changed nodes first, everyone after the diff -----------


def _node_poller(watch: RevisionWatch, after: int, node: str, seen: list[tuple[str, int]]) -> object:
    async def poll() -> None:
        async with watch.long_poll(after, 30, node) as number:
            seen.append((node, number))
    return poll()


def _turn(loop: asyncio.AbstractEventLoop, seconds: float = 0.05) -> None:
    asyncio.run_coroutine_threadsafe(asyncio.sleep(seconds), loop).result(5)


def test_a_staged_revision_wakes_the_nodes_it_changes_and_the_others_at_its_release(loop: asyncio.AbstractEventLoop) -> None:
    watch = _bound(loop, 1)
    seen: list[tuple[str, int]] = []
    polls = {node: asyncio.run_coroutine_threadsafe(_node_poller(watch, 1, node, seen), loop) for node in ("node1", "node2")}  # type: ignore[arg-type]
    _turn(loop)
    watch.committed(2, frozenset({"node2"}))
    _turn(loop)
    assert seen == [("node2", 2)]  # the changed node at once
    assert watch.settle(2, timeout=2.0) is True  # its answer is all the diff waits for
    assert not polls["node1"].done() and watch.current == 1 and watch.newest == 2
    assert watch.revision_for("node1") == 1 and watch.revision_for("node2") == 2
    watch.notify(2)  # our own NOTIFY, the periodic check: held back while staged
    _turn(loop)
    assert not polls["node1"].done()
    watch.release(2)  # the commit's diff is done
    polls["node1"].result(5)
    assert seen == [("node2", 2), ("node1", 2)] and watch.current == 2


def test_a_commit_whose_changed_nodes_are_unknown_wakes_everyone(loop: asyncio.AbstractEventLoop) -> None:
    watch = _bound(loop, 1)
    seen: list[tuple[str, int]] = []
    polls = [asyncio.run_coroutine_threadsafe(_node_poller(watch, 1, node, seen), loop) for node in ("node1", "node2")]  # type: ignore[arg-type]
    _turn(loop)
    watch.committed(2, None)  # no parent revision to compare with
    for poll in polls:
        poll.result(5)
    assert sorted(seen) == [("node1", 2), ("node2", 2)]


def test_a_staged_revision_reaches_everyone_without_its_release(loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("zonewall.controller.watch.STAGE_SECONDS", 0.2)
    watch = _bound(loop, 1)
    seen: list[tuple[str, int]] = []
    poll = asyncio.run_coroutine_threadsafe(_node_poller(watch, 1, "node1", seen), loop)  # type: ignore[arg-type]
    _turn(loop)
    watch.committed(2, frozenset({"node2"}))  # and the committing request died before its diff
    _turn(loop)
    assert seen == []
    poll.result(5)
    assert seen == [("node1", 2)] and watch.current == 2


def test_a_newer_revision_of_another_controller_is_not_held_by_a_staged_one(loop: asyncio.AbstractEventLoop) -> None:
    watch = _bound(loop, 1)
    seen: list[tuple[str, int]] = []
    poll = asyncio.run_coroutine_threadsafe(_node_poller(watch, 1, "node1", seen), loop)  # type: ignore[arg-type]
    _turn(loop)
    watch.committed(2, frozenset({"node2"}))
    watch.notify(3)  # committed elsewhere right after (its notification)
    poll.result(5)
    assert seen == [("node1", 3)] and watch.current == 3
    watch.release(2)  # late: changes nothing
    _turn(loop)
    assert watch.current == 3 and watch.revision_for("node2") == 3


def test_a_node_asking_after_the_staging_gets_what_was_published_to_it(loop: asyncio.AbstractEventLoop) -> None:
    watch = _bound(loop, 1)
    watch.committed(2, frozenset({"node2"}))
    _turn(loop)
    seen: list[tuple[str, int]] = []
    asyncio.run_coroutine_threadsafe(_node_poller(watch, 1, "node2", seen), loop).result(5)  # type: ignore[arg-type]
    assert seen == [("node2", 2)]
    other = asyncio.run_coroutine_threadsafe(_node_poller(watch, 1, "node1", seen), loop)  # type: ignore[arg-type]
    _turn(loop)
    assert not other.done()
    watch.release(2)
    other.result(5)
    assert seen[-1] == ("node1", 2)


def test_a_revision_held_while_its_commit_works_out_the_changed_nodes(loop: asyncio.AbstractEventLoop) -> None:
    watch = _bound(loop, 1)
    seen: list[tuple[str, int]] = []
    poll = asyncio.run_coroutine_threadsafe(_node_poller(watch, 1, "node1", seen), loop)  # type: ignore[arg-type]
    _turn(loop)
    watch.hold(2)  # its row is written
    watch.notify(2)  # our own NOTIFY arrives before the commit knows which nodes changed
    _turn(loop)
    assert seen == [] and watch.current == 1
    watch.committed(2, frozenset({"node2"}))
    _turn(loop)
    assert seen == []
    watch.release(2)
    poll.result(5)
    assert seen == [("node1", 2)]


def test_a_dropped_hold_lets_the_number_be_published_when_it_is_committed_after_all(loop: asyncio.AbstractEventLoop) -> None:
    watch = _bound(loop, 1)
    watch.hold(2)
    watch.drop(2)  # that write failed; another controller then committed a revision 2
    seen: list[tuple[str, int]] = []
    poll = asyncio.run_coroutine_threadsafe(_node_poller(watch, 1, "node1", seen), loop)  # type: ignore[arg-type]
    _turn(loop)
    watch.notify(2)
    poll.result(5)
    assert seen == [("node1", 2)]
    watch.hold(3)
    watch.committed(3, None)  # which nodes it changes is not known: everyone at once
    _turn(loop)
    assert watch.current == 3
