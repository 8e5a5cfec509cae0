"""`zonewall agent`: the process that keeps one node's firewall as the controller says.

Threads and who does what:

* main loop (the only one touching the kernel, through the Enforcer): applies new
  desired states, repairs drift, re-discovers taps, verifies every few seconds;
* watcher: long-polls the controller with a revision cursor (no fixed polling) and
  queues each new desired state;
* drift watch: `nft monitor`; a foreign change to our tables queues a check;
* notify listener: libvirt hook events queue a re-discovery;
* reporter: sends status and log lines to the controller in the background.

When the controller is unreachable the node keeps its rules: the agent restored
them from disk at start, and goes on repairing drift; the watcher retries with
backoff and everything converges once the controller answers again.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from ..dataplane.backend import Backend, LibNftBackend
from ..policy.delta import DeltaMismatch, apply_delta
from ..policy.documents import Documents, content_hash
from ..service.tls import tls_verify
from . import migrate_steps
from .backoff import Backoff
from .client import ControllerClient, ControllerRefused, ControllerUnavailable, DesiredAnswer, parse_controllers
from .discovery import compile_inputs, discover_taps, local_links
from .drift import DriftWatch
from .enforcer import APPLY_ERRORS, Desired, Enforcer
from .links import LinkWatch
from .memory import release_freed_memory
from .notify import SOCKET_NAME, NotifyListener
from .observe import Observer
from .reporter import Reporter
from .state import StateStore
from .supervise import Health, supervised

log = logging.getLogger("zonewall.agent")


# How long an apply waits for the packet log to listen before it is reported.
OBSERVER_BIND_SECONDS = 2.0


@dataclass(frozen=True)
class AgentConfig:
    controllers: tuple[str, ...] | str  # one URL, a comma list, or several (replicas: the agent fails over)
    node: str
    token: str
    state_dir: Path
    ca: str | None = None
    netns: str | None = None  # manage nftables in this named netns (default: the agent's own)
    verify_interval: float = 5.0  # periodic readback check, besides nft monitor
    refresh_interval: float = 60.0  # recompile (taps, DST) this often
    long_poll: float = 25.0
    monitor: bool = True
    observe: bool = True  # packet logs (NFLOG) and rule counters to the controller
    counter_interval: float = 5.0
    log_buffer: int = 100_000  # records kept on disk while the controller is away

    def __post_init__(self) -> None:
        object.__setattr__(self, "controllers", parse_controllers(self.controllers))


class Agent:
    def __init__(self, config: AgentConfig, backend: Backend | None = None, make_client: Callable[[], ControllerClient] | None = None) -> None:
        self.config = config
        self._backend = backend if backend is not None else LibNftBackend(netns=config.netns)
        if make_client is None:
            tls = tls_verify(config.ca)  # one trust store for the agent's five clients
            make_client = partial(ControllerClient, config.controllers, config.token, config.node, tls=tls)
        self._make_client = make_client
        self._stop = threading.Event()
        self._work: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.enforcer = Enforcer(
            self._backend, config.node, StateStore(config.state_dir),
            discover=lambda policy, node: discover_taps(policy, node, local_links(config.netns)),
            inputs=lambda: compile_inputs(config.netns),
        )
        self.health = Health()  # the agent's own faults: reported as `problems` (state `degraded`)
        self.health.changed = lambda: self._work.put(("publish", None))
        self.reporter = Reporter(self._make_client, self._stop, self.health)
        self._cursor: int | None = None
        self._failed: Desired | None = None  # retried at the next tick
        self._threads: list[threading.Thread] = []
        self._drift: DriftWatch | None = None
        self._notify: NotifyListener | None = None
        self.ready = threading.Event()  # restored and watching (tests wait on it)
        self.observer: Observer | None = None
        self._apply_seconds: float | None = None
        # The watcher asks for the next revision only once the last one is applied:
        # on a node that had no ruleset, conntrack starts with the first apply, and a
        # long-poll sent before it would have its answer (the first packet conntrack
        # sees of that connection) taken for a new inbound connection and dropped.
        self._handled = threading.Condition()
        self._handled_revision: int | None = None
        self.refused = 0  # answers refused as older than the applied revision
        self.answers: Counter[str] = Counter()  # new revisions by what came: same, delta, documents
        self.last_turn = time.monotonic()  # the main loop's heartbeat (systemd's watchdog is fed from it)
        self._published_problems: list[str] = []
        self._whole_loads = -1  # enforcer.loads["whole"] at the last release of memory

    # -- lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the threads; the rules stay in the kernel (stopping is not removing)."""
        self._stop.set()
        self._work.put(("stop", None))

    def run(self) -> None:
        if self.config.monitor:
            self._drift = DriftWatch(lambda why: self._work.put(("check", why)), netns=self.config.netns).start()
        try:
            self._restore()
            self.reporter.start()
            if self.config.observe:
                self.observer = Observer(
                    self.config.node, self._make_client, self._stop, self.config.state_dir / "logs", lambda: self.enforcer.ruleset,
                    netns=self.config.netns, counter_interval=self.config.counter_interval, max_records=self.config.log_buffer,
                    health=self.health,
                ).start()
            self._publish()
            self._threads.append(supervised("controller watcher", self._watch, self._stop, self.health))
            hook_requests = migrate_steps.start(self)  # migration steps from the controller; the hook's requests
            try:
                self._notify = NotifyListener(self.config.state_dir / SOCKET_NAME, lambda text: self._work.put(("rediscover", text)),
                                              on_request=hook_requests).start()
            except OSError as exc:
                log.warning("no hook socket (%s): hypervisor events are seen at the next refresh", exc)
            links = LinkWatch(lambda why: self._work.put(("rediscover", why)), netns=self.config.netns, stop=self._stop)
            self._threads.append(supervised("link events", links.run, self._stop, self.health))  # guests' ports come and go
            self.ready.set()
            self._loop()
        finally:
            self._stop.set()
            if self._drift:
                self._drift.stop()
            if self._notify:
                self._notify.stop()
            self.reporter.wake()
            if self.observer is not None:
                self.observer.wake()

    def _restore(self) -> None:
        try:
            what = self.enforcer.restore()
            log.info("start: %s", what)
            self.reporter.line("info", f"agent started: {what}")
        except APPLY_ERRORS as exc:
            self.enforcer.last_error = f"restoring the saved state failed: {exc}"
            log.error("%s", self.enforcer.last_error)
        if self.enforcer.state is not None:
            self._cursor = self.enforcer.state.revision
        self._release_memory()

    # -- the main loop ------------------------------------------------------------------

    def _loop(self) -> None:
        next_verify = time.monotonic() + self.config.verify_interval
        next_refresh = time.monotonic() + self.config.refresh_interval
        while not self._stop.is_set():
            self.last_turn = time.monotonic()
            try:
                items = [self._work.get(timeout=max(0.0, next_verify - time.monotonic()))]
            except queue.Empty:
                items = [("check", "periodic verification")]
                next_verify = time.monotonic() + self.config.verify_interval
            while True:  # coalesce a burst (several monitor events, revisions in a row)
                try:
                    items.append(self._work.get_nowait())
                except queue.Empty:
                    break
            kinds = {kind for kind, _ in items}
            if "stop" in kinds:
                return
            for kind, value in items:
                if kind == "call":  # a migration step's apply (zonewall/agent/migrate_steps.py)
                    value()
                if kind == "error":
                    self.enforcer.last_error = value
                    self._publish()
            desired = [value for kind, value in items if kind == "desired"]
            compiled = bool(desired)
            if desired:
                self._apply(desired[-1])  # the newest wins; older ones are history
                with self._handled:
                    self._handled_revision = desired[-1].revision
                    self._handled.notify_all()
            elif "check" in kinds and self._failed is not None:
                self._apply(self._failed)
                compiled = True
            if "rediscover" in kinds or time.monotonic() >= next_refresh:
                self._refresh(periodic="rediscover" not in kinds)
                next_refresh = time.monotonic() + self.config.refresh_interval
                compiled = True
            if compiled:
                self._release_memory()  # a compile's garbage would otherwise keep the RSS at its peak
            if "check" in kinds and not desired:
                self._repair(next(value for kind, value in items if kind == "check"))
            if "publish" in kinds or self.health.problems() != self._published_problems:
                self._publish()  # a fault of the agent's own, or its recovery

    def _release_memory(self) -> None:
        """After a compile or an apply: what libnftables cached of the kernel, cyclic
        garbage (everything after a whole load), freed heap pages (agent/memory.py)."""
        try:
            self.enforcer.backend.release_cache()
        except RuntimeError as exc:  # the backend's worker is gone: the next kernel call reports it
            log.warning("cannot release the libnftables cache: %s", exc)
        whole = self.enforcer.loads["whole"]
        release_freed_memory(everything=whole != self._whole_loads)  # a whole load left the previous policy as garbage
        self._whole_loads = whole

    def _apply(self, desired: Desired) -> None:
        started = time.monotonic()
        try:
            result = self.enforcer.enforce(desired)
        except APPLY_ERRORS as exc:
            self._failed = desired
            self.enforcer.last_error = f"revision {desired.revision}: {exc}"
            log.error("apply failed, the previous rules stay: %s", self.enforcer.last_error)
            self.reporter.line("error", self.enforcer.last_error)
        else:
            self._failed = None
            self._apply_seconds = time.monotonic() - started
            log.info("revision %d applied (%s, %d commands)", desired.revision, result.mode, result.commands)
            self.reporter.line("info", f"revision {desired.revision} applied ({result.mode}, {result.commands} commands)")
            if self.observer is not None and not self.observer.wait_bound(self.enforcer.ruleset, OBSERVER_BIND_SECONDS):
                log.warning("the packet log is not listening yet; denied packets may go unlogged for a moment")
        self._publish()

    def _repair(self, reason: str) -> None:
        try:
            result = self.enforcer.repair()
        except APPLY_ERRORS as exc:
            self.enforcer.last_error = f"drift repair failed: {exc}"
            log.error("%s", self.enforcer.last_error)
            self._publish()
            return
        if result is not None:
            self._release_memory()
            self.reporter.line("warning", f"drift repaired ({reason}): {result.commands} commands")
            self._publish()

    def _refresh(self, *, periodic: bool) -> None:
        try:
            if self.enforcer.refresh(only_if_inputs_changed=periodic) is not None:
                self.reporter.line("info", "recompiled after a hypervisor event or time change, and applied")
                self._publish()
        except APPLY_ERRORS as exc:
            log.error("refresh failed: %s", exc)

    def _publish(self) -> None:
        state = self.enforcer.state
        problems = self._published_problems = self.health.problems()
        self.reporter.status({
            "applied_revision": state.revision if state else None,
            "fingerprint": state.fingerprint if state else None,
            "ruleset_hash": self.enforcer.expected_hash,
            "state": "error" if self.enforcer.last_error else "degraded" if problems else "ok",
            "last_error": self.enforcer.last_error,
            "problems": problems,
            "drift_repairs": self.enforcer.drift_repairs,
            "taps": state.taps if state else {},
            "apply_seconds": self._apply_seconds,
        })

    # -- the watcher thread ----------------------------------------------------------------

    def _watch(self) -> None:
        client = self._make_client()
        registered = False
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                try:
                    if not registered:
                        client.register(socket.gethostname())
                        registered = True
                        log.info("registered with %s as %s", client.controller, self.config.node)
                    state = self.enforcer.state
                    answer = client.desired(self._cursor, self.config.long_poll, state.content_hash if state else None)
                    if self._older_than_applied(answer):
                        client.skip()  # that controller is behind: ask another one, later
                        self._stop.wait(backoff.next())
                        continue
                    backoff.reset()
                    self._take(self._whole(answer, client))
                except ControllerUnavailable as exc:
                    wait = backoff.next()
                    log.info("no controller answered (%s); retrying in %.1fs, rules stay enforced", exc, wait)
                    self._stop.wait(wait)
                except ControllerRefused as exc:
                    log.error("%s", exc)
                    self._stop.wait(10.0)  # a token problem will not fix itself in a second
        finally:
            client.close()

    def _older_than_applied(self, answer: DesiredAnswer) -> bool:
        """Never step back: a revision older than the applied one (a controller whose
        database lost revisions, or one that is behind) is refused, and said so."""
        state = self.enforcer.state
        if not answer.changed or state is None:
            return False
        if answer.revision > state.revision or (answer.revision == state.revision and answer.content_hash == state.content_hash):
            return False
        self.refused += 1
        message = (f"refused revision {answer.revision} from {answer.controller}: older than the applied revision {state.revision}"
                   if answer.revision < state.revision else
                   f"refused revision {answer.revision} from {answer.controller}: other documents than the applied revision of that number")
        log.warning("%s; the rules stay as they are", message)
        self.reporter.line("warning", message)
        return True

    def _whole(self, answer: DesiredAnswer, client: ControllerClient) -> DesiredAnswer:
        """The answer with the node's documents in it: those applied (`same`), those
        with the delta applied, or, when a delta does not fit, asked for in full."""
        state = self.enforcer.state  # stable: the main loop applies nothing while the watcher is here
        if answer.changed:
            self.answers["same" if answer.same else "delta" if answer.delta else "documents"] += 1
        if not answer.changed or answer.documents is not None or state is None or not (answer.same or answer.delta):
            return answer
        documents: Documents | None = None
        if answer.same and answer.content_hash == state.content_hash:
            return replace(answer, documents=state.documents)  # those applied, hashed when they were: not hashed again (~7 ms at 10,000 VMs)
        if answer.delta and answer.delta.get("base") == state.content_hash:
            try:
                documents = apply_delta(state.documents, answer.delta)
            except DeltaMismatch as exc:
                log.warning("revision %d: %s; asking for the whole documents", answer.revision, exc)
        if documents is None or content_hash(documents) != answer.content_hash:
            log.warning("revision %d: the answer does not fit the applied documents; asking for them whole", answer.revision)
            return client.desired(None, 0)
        return replace(answer, documents=documents)

    def _take(self, answer: DesiredAnswer) -> None:
        if not answer.changed:
            return
        self._cursor = answer.revision
        if not answer.in_policy or answer.documents is None or answer.content_hash is None:
            message = f"revision {answer.revision} has no host {self.config.node!r}; the rules stay as they are"
            log.error("%s", message)
            self._work.put(("error", message))  # the main loop owns the enforcer's state
            return
        self._work.put(("desired", Desired(answer.revision, answer.documents, answer.content_hash)))
        with self._handled:
            self._handled.wait_for(lambda: self._handled_revision == answer.revision or self._stop.is_set(), timeout=120)
