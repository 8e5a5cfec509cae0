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

Steps, answers and the migrations in progress live in the database, so the agents
may be connected to other controllers than the one running the migration (several
controllers on one PostgreSQL): queuing a step notifies every controller
(`zonewall_migrations`, payload `steps:NODE`), which wakes that node's waiting agent
if it holds it; the orchestrator reads the step's row until it is answered (a
migration has a handful of steps). A notification lost while a controller's
listening connection was down is made up for by its periodic re-check
(controller/follow.py).

A step nobody picks up within `pickup_timeout` fails (the node's agent is down or
not connected), as does one picked up and not answered within `answer_timeout`: the
orchestrator then aborts and the VM stays filtered where it is. A queued step older
than `pickup_timeout` is never handed out (its orchestrator gave up or died).

The "guest arrived" signal the orchestrator's switch waits for (the target's agent
sends it when the hypervisor says the guest runs there: libvirt's `started` hook) is
a flag on the migration's row, so it may arrive through any controller. A migration
whose controller died stops counting as running once its heartbeat (`alive_until`)
has passed, so the VM can be migrated again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .store.db import changed_rows
from .store.models import MigrationRow, MigrationStepRow

CHANNEL = "zonewall_migrations"
POLL_SECONDS = 0.05  # how often the orchestrator reads its step's row
HEARTBEAT_SECONDS = 30.0  # a running migration not heard of for this long is dead
FINISHED_SHOWN = 20


class StepFailed(RuntimeError):
    """The step did not run, or the agent answered with an error."""


@dataclass
class Running:
    """A migration in progress, as its orchestrator holds it."""

    vm: str
    source: str
    target: str
    author: str
    started: float = field(default_factory=time.time)
    phase: str = "planning"  # planning, prepare, pre-copy, switch, post-copy, commit, cleanup, done, failed
    error: str | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    id: int | None = None  # its row
    beaten: float = 0.0  # when its heartbeat was last written (monotonic)


def _out(row: MigrationRow) -> dict[str, Any]:
    return {"vm": row.vm, "from": row.source, "to": row.target, "author": row.author, "started": row.started,
            "phase": row.phase, "error": row.error}


class MigrationHub:
    """Per-node step queues (the channel) and the migrations in progress, in the database."""

    def __init__(self, sessions: sessionmaker[Session], *, pickup_timeout: float = 5.0, answer_timeout: float = 120.0) -> None:
        self._sessions = sessions
        self.pickup_timeout, self.answer_timeout = pickup_timeout, answer_timeout
        self._postgres = sessions.kw["bind"].dialect.name == "postgresql"
        self._lock = threading.Lock()
        self._queued: set[str] = set()  # nodes with a step queued (as notified): only they are looked up
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the orchestrator's side (a worker thread) ------------------------------------

    def step(self, node: str, step: str, args: dict[str, Any], running: Running | None = None) -> dict[str, Any]:
        with self._sessions() as session, session.begin():
            row = MigrationStepRow(node=node, step=step, args=json.dumps(args), state="queued", created_at=time.time())
            session.add(row)
            session.flush()
            task_id = row.id
            if self._postgres:  # delivered at commit, to every controller
                session.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": f"steps:{node}"})
        self.queued(node)
        try:
            if not self._wait_state(task_id, ("picked", "done"), self.pickup_timeout, running):
                raise StepFailed(f"the agent of {node} did not take the step within {self.pickup_timeout:g}s (is it running?)")
            if not self._wait_state(task_id, ("done",), self.answer_timeout, running):
                raise StepFailed(f"the agent of {node} did not answer within {self.answer_timeout:g}s")
            with self._sessions() as session:
                done = session.get(MigrationStepRow, task_id)
                assert done is not None
                answer, error = done.answer, done.error
        finally:
            with self._sessions() as session, session.begin():
                session.execute(delete(MigrationStepRow).where(MigrationStepRow.id == task_id))
        if error is not None:
            raise StepFailed(error)
        return json.loads(answer or "{}")

    def _wait_state(self, task_id: int, states: tuple[str, ...], timeout: float, running: Running | None) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self._sessions() as session:
                state = session.scalar(select(MigrationStepRow.state).where(MigrationStepRow.id == task_id))
            if state in states:
                return True
            if time.monotonic() >= deadline:
                return False
            if running is not None:
                self._beat(running)
            time.sleep(POLL_SECONDS)

    # -- the agents' side (the event loop) ----------------------------------------------

    def queued(self, node: str) -> None:
        """Thread-safe: a step was queued for `node` (here or at another controller)."""
        with self._lock:
            self._queued.add(node)
        loop = self._loop
        if loop is None:
            return

        def wake() -> None:
            for future in self._waiters.pop(node, []):
                if not future.done():
                    future.set_result(None)

        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:  # the loop closed (shutdown)
            pass

    def notified(self, payload: str) -> None:
        """A notification on CHANNEL (controller/follow.py)."""
        kind, _, node = payload.partition(":")
        if kind == "steps" and node:
            self.queued(node)

    def recheck(self) -> None:
        """Nodes with steps waiting, read back (a notification may have been lost)."""
        fresh = time.time() - self.pickup_timeout
        with self._sessions() as session:
            nodes = set(session.scalars(select(MigrationStepRow.node).where(MigrationStepRow.state == "queued", MigrationStepRow.created_at >= fresh)))
        for node in nodes:
            self.queued(node)

    def _claim(self, node: str) -> list[dict[str, Any]]:
        with self._lock:
            self._queued.discard(node)
        fresh = time.time() - self.pickup_timeout
        claimed: list[dict[str, Any]] = []
        with self._sessions() as session, session.begin():
            rows = session.scalars(select(MigrationStepRow).where(
                MigrationStepRow.node == node, MigrationStepRow.state == "queued", MigrationStepRow.created_at >= fresh).order_by(MigrationStepRow.id))
            for row in list(rows):
                taken = changed_rows(session, update(MigrationStepRow).where(MigrationStepRow.id == row.id, MigrationStepRow.state == "queued")
                                        .values(state="picked"))
                if taken:
                    claimed.append({"id": row.id, "step": row.step, "args": json.loads(row.args)})
        return claimed

    async def next_steps(self, node: str, wait: float, gone: Callable[[], Awaitable[bool]] | None = None) -> list[dict[str, Any]]:
        """The node's pending steps, waiting up to `wait` s for one to be queued.
        `gone()`: the asking agent hung up (it died while waiting): take nothing, so
        that the step counts as not picked up."""
        self._loop = asyncio.get_running_loop()
        deadline = self._loop.time() + wait
        first = True
        while True:
            if gone is not None and await gone():
                return []
            with self._lock:
                look = first or node in self._queued
            first = False  # the first look reads the database: a step may have been queued between two polls
            if look:
                tasks = await asyncio.to_thread(self._claim, node)
                if tasks:
                    return tasks
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return []
            future: asyncio.Future[None] = self._loop.create_future()
            self._waiters.setdefault(node, []).append(future)
            with self._lock:
                if node in self._queued and not future.done():
                    future.set_result(None)  # queued while we looked
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                return []
            finally:
                waiters = self._waiters.get(node, [])
                if future in waiters:
                    waiters.remove(future)

    def answer(self, node: str, task_id: int, answer: dict[str, Any] | None, error: str | None) -> bool:
        """False when no such step is waiting for this node (unknown, another node's, timed out)."""
        with self._sessions() as session, session.begin():
            return bool(changed_rows(session, update(MigrationStepRow).where(
                MigrationStepRow.id == task_id, MigrationStepRow.node == node, MigrationStepRow.state != "done",
            ).values(state="done", answer=json.dumps(answer or {}), error=error)))

    # -- migrations in progress ----------------------------------------------------------

    def begin(self, running: Running) -> bool:
        """False when the VM is already migrating (through any controller)."""
        now = time.time()
        with self._sessions() as session, session.begin():  # a migration whose controller died is over
            session.execute(update(MigrationRow).where(MigrationRow.running_vm == running.vm, MigrationRow.alive_until < now)
                            .values(running_vm=None, phase="failed", error="its controller stopped"))
        try:
            with self._sessions() as session, session.begin():
                row = MigrationRow(running_vm=running.vm, vm=running.vm, source=running.source, target=running.target, author=running.author,
                                   started=running.started, phase=running.phase, arrived=False, alive_until=now + HEARTBEAT_SECONDS)
                session.add(row)
                session.flush()
                running.id = row.id
        except IntegrityError:
            return False
        return True

    def _beat(self, running: Running, **values: Any) -> None:
        """Write the migration's heartbeat (at most every few seconds) and any `values`."""
        if not values and time.monotonic() - running.beaten < HEARTBEAT_SECONDS / 6:
            return
        running.beaten = time.monotonic()
        with self._sessions() as session, session.begin():
            session.execute(update(MigrationRow).where(MigrationRow.id == running.id).values(alive_until=time.time() + HEARTBEAT_SECONDS, **values))

    def set_phase(self, running: Running, phase: str, error: str | None = None) -> None:
        running.phase, running.error = phase, error if error is not None else running.error
        self._beat(running, phase=phase, error=running.error)

    def end(self, running: Running) -> None:
        self._beat(running, running_vm=None, phase=running.phase, error=running.error)

    def arrived(self, vm: str, node: str) -> bool:
        """The hypervisor says `vm` runs on `node` now: True if a migration there waited for it."""
        with self._sessions() as session, session.begin():
            return bool(changed_rows(session, update(MigrationRow).where(MigrationRow.running_vm == vm, MigrationRow.target == node)
                                        .values(arrived=True)))

    def wait_arrived(self, running: Running, timeout: float) -> bool:
        """Until the guest's arrival is reported (through any controller), or `timeout`."""
        deadline = time.monotonic() + timeout
        while not running.arrived.is_set():
            with self._sessions() as session:
                if session.scalar(select(MigrationRow.arrived).where(MigrationRow.id == running.id)):
                    running.arrived.set()
                    break
            if time.monotonic() >= deadline:
                return False
            self._beat(running)
            time.sleep(POLL_SECONDS * 2)
        return True

    def listing(self) -> dict[str, list[dict[str, Any]]]:
        now = time.time()
        with self._sessions() as session:
            running = session.scalars(select(MigrationRow).where(MigrationRow.running_vm.is_not(None), MigrationRow.alive_until >= now)
                                      .order_by(MigrationRow.id))
            finished = session.scalars(select(MigrationRow).where(MigrationRow.running_vm.is_(None)).order_by(MigrationRow.id.desc()).limit(FINISHED_SHOWN))
            return {"running": [_out(row) for row in running], "finished": [_out(row) for row in reversed(list(finished))]}
