"""The agent's own machinery kept alive, and its faults kept visible.

Each background job of the agent (the watcher, the packet-log collector and sender,
the reporter, the drift watch) runs under `supervised`: when its loop raises, the
failure is logged, recorded in `Health`, and the loop is started again after a
back-off, for as long as the agent runs. A thread that died silently used to leave
a node reporting `ok` while, say, its packet log had stopped for good.

`Health` is what the agent reports as `problems` in its status (node state
`degraded`, /metrics, the dashboard): a component's entry stays while it is failing
and for `QUIET_SECONDS` after its last failure, or until the component says it
works again (`clear`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .backoff import Backoff

log = logging.getLogger("zonewall.agent")
QUIET_SECONDS = 60.0  # a restarted job counts as recovered after this long without failing
MAX_MESSAGE = 500  # characters of one problem (a status report stays small)


def bounded_text(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class Health:
    """Thread-safe: component -> (what is wrong, when it last failed, sticky)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._problems: dict[str, tuple[str, float, bool]] = {}
        self.failures = 0  # every failure since the start (metrics)
        self.changed: Callable[[], None] = lambda: None  # set by the agent: report a change at once

    def fail(self, component: str, message: str, *, sticky: bool = False) -> None:
        """Record a fault. `sticky`: it stays until `clear`, not only QUIET_SECONDS."""
        with self._lock:
            new = component not in self._problems
            self._problems[component] = (bounded_text(message), self._clock(), sticky)
            self.failures += 1
        if new:
            self.changed()

    def clear(self, component: str) -> None:
        with self._lock:
            gone = self._problems.pop(component, None) is not None
        if gone:
            self.changed()

    def problems(self) -> list[str]:
        """What is wrong now, one line a component, sorted."""
        now = self._clock()
        with self._lock:
            for component, (_message, since, sticky) in list(self._problems.items()):
                if not sticky and now - since > QUIET_SECONDS:
                    del self._problems[component]
            return [f"{component}: {message}" for component, (message, _since, _sticky) in sorted(self._problems.items())]


def supervised(name: str, loop: Callable[[], None], stop: threading.Event, health: Health, *, backoff: Backoff | None = None) -> threading.Thread:
    """Start `loop` on a daemon thread and start it again whenever it raises.

    `loop` returns when `stop` is set; returning earlier also counts as a failure
    (a job that ends by itself has stopped doing its work)."""
    delays = backoff or Backoff(first=0.5, cap=30.0)

    def run() -> None:
        while not stop.is_set():
            try:
                loop()
            except Exception as exc:
                log.exception("%s failed; restarting it", name)
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if stop.is_set():
                    return
                reason = "stopped by itself"
            wait = delays.next()
            health.fail(name, f"{reason} (restarted in {wait:.1f} s)")
            stop.wait(wait)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
