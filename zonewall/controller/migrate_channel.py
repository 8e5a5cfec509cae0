"""The controller's side of a migration's steps: agents receive them by long-poll and
post the answers (docs/migration.md).

The orchestrator (zonewall/controller/migrate.py) runs in a worker thread and calls
`AgentChannel.step(node, step, args)`, which queues the step for the node and blocks
until the node's agent has answered. Agents wait on
`GET /api/v1/nodes/{node}/migration-steps?wait=S` (an asyncio future, woken the moment
a step is queued: no fixed polling) and answer with
`POST /api/v1/nodes/{node}/migration-steps/{id}`. An export's answer carries the VM's
conntrack entries (zlib + base64: 50,000 entries are about 1.5 MB), handed as they
are to the target's import step.

A step nobody picks up within `pickup_timeout` fails (the node's agent is down or
not connected), as does one picked up and not answered within `answer_timeout`: the
orchestrator then aborts and the VM stays filtered where it is.

`MigrationHub` also keeps the migrations in progress (one per VM) and their phase,
and the "guest arrived" signal the orchestrator's switch waits for: the target's
agent sends it when the hypervisor says the guest runs there (libvirt's `started`
hook).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


class StepFailed(RuntimeError):
    """The step did not run, or the agent answered with an error."""


@dataclass
class Task:
    id: int
    node: str
    step: str
    args: dict[str, Any]
    picked: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None
    error: str | None = None

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "step": self.step, "args": self.args}


@dataclass
class Running:
    """A migration in progress (or finished: the last few are kept for GET /migrations)."""

    vm: str
    source: str
    target: str
    author: str
    started: float = field(default_factory=time.time)
    phase: str = "planning"  # planning, prepare, pre-copy, switch, post-copy, commit, cleanup, done, failed
    error: str | None = None
    arrived: threading.Event = field(default_factory=threading.Event)

    def out(self) -> dict[str, Any]:
        return {"vm": self.vm, "from": self.source, "to": self.target, "author": self.author, "started": self.started,
                "phase": self.phase, "error": self.error}


class MigrationHub:
    """Per-node step queues (the channel) and the migrations in progress."""

    def __init__(self, *, pickup_timeout: float = 5.0, answer_timeout: float = 120.0) -> None:
        self.pickup_timeout, self.answer_timeout = pickup_timeout, answer_timeout
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Task]] = {}
        self._tasks: dict[int, Task] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self.running: dict[str, Running] = {}
        self.finished: deque[Running] = deque(maxlen=20)

    # -- the orchestrator's side (a worker thread) ------------------------------------

    def step(self, node: str, step: str, args: dict[str, Any]) -> dict[str, Any]:
        task = Task(next(self._ids), node, step, args)
        with self._lock:
            self._queues.setdefault(node, deque()).append(task)
            self._tasks[task.id] = task
        self._wake(node)
        try:
            if not task.picked.wait(self.pickup_timeout):
                raise StepFailed(f"the agent of {node} did not take the step within {self.pickup_timeout:g}s (is it running?)")
            if not task.done.wait(self.answer_timeout):
                raise StepFailed(f"the agent of {node} did not answer within {self.answer_timeout:g}s")
        finally:
            with self._lock:
                queue = self._queues.get(node)
                if queue is not None and task in queue:
                    queue.remove(task)
                self._tasks.pop(task.id, None)
        if task.error is not None:
            raise StepFailed(task.error)
        assert task.answer is not None
        return task.answer

    def _wake(self, node: str) -> None:
        loop = self._loop
        if loop is None:
            return
        def wake() -> None:
            for future in self._waiters.pop(node, []):
                if not future.done():
                    future.set_result(None)
        loop.call_soon_threadsafe(wake)

    # -- the agents' side (the event loop) ----------------------------------------------

    async def next_steps(self, node: str, wait: float, gone: Callable[[], Awaitable[bool]] | None = None) -> list[dict[str, Any]]:
        """The node's pending steps, waiting up to `wait` s for one to be queued.
        `gone()`: the asking agent hung up (it died while waiting): take nothing, so
        that the step counts as not picked up."""
        self._loop = asyncio.get_running_loop()
        deadline = self._loop.time() + wait
        while True:
            if gone is not None and await gone():
                return []
            with self._lock:
                queue = self._queues.get(node)
                tasks = list(queue) if queue else []
                if queue:
                    queue.clear()
            if tasks:
                for task in tasks:
                    task.picked.set()
                return [task.wire() for task in tasks]
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return []
            future: asyncio.Future[None] = self._loop.create_future()
            self._waiters.setdefault(node, []).append(future)
            try:
                await asyncio.wait_for(future, remaining)
            except asyncio.TimeoutError:
                return []
            finally:
                waiters = self._waiters.get(node, [])
                if future in waiters:
                    waiters.remove(future)

    def answer(self, node: str, task_id: int, answer: dict[str, Any] | None, error: str | None) -> bool:
        """False when no such step is waiting for this node (unknown, another node's, timed out)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.node != node or task.done.is_set():
                return False
            task.answer, task.error = (answer or {}), error
            task.picked.set()
            task.done.set()
        return True

    # -- migrations in progress ----------------------------------------------------------

    def begin(self, running: Running) -> bool:
        """False when the VM is already migrating."""
        with self._lock:
            if running.vm in self.running:
                return False
            self.running[running.vm] = running
            return True

    def end(self, running: Running) -> None:
        with self._lock:
            self.running.pop(running.vm, None)
            self.finished.append(running)

    def arrived(self, vm: str, node: str) -> bool:
        """The hypervisor says `vm` runs on `node` now: True if a migration there waited for it."""
        with self._lock:
            running = self.running.get(vm)
        if running is None or running.target != node:
            return False
        running.arrived.set()
        return True
