"""Status and log lines to the controller, off the enforcement path.

The enforcer never waits for the network: it hands its newest status here and
goes on. A background thread sends it (the newest status wins; log lines queue up
to a bound), retrying with backoff while the controller is away.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .backoff import Backoff
from .client import ControllerClient, ControllerRefused, ControllerUnavailable
from .supervise import Health, bounded_text, supervised

log = logging.getLogger("zonewall.agent.reporter")
MAX_QUEUED_LINES = 500


MAX_ERROR = 2000  # characters of `last_error` (a refused ruleset's error once carried all of it)
MAX_LINE = 4000


class Reporter:
    def __init__(self, make_client: Callable[[], ControllerClient], stop: threading.Event, health: Health | None = None) -> None:
        self._make_client = make_client
        self._stop = stop
        self._health = health if health is not None else Health()
        self._status: dict[str, Any] | None = None
        self._lines: deque[dict[str, str]] = deque(maxlen=MAX_QUEUED_LINES)
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.sent = 0  # statuses delivered (tests watch it)

    def start(self) -> Reporter:
        self._thread = supervised("status reporter", self._run, self._stop, self._health)
        return self

    def status(self, status: dict[str, Any]) -> None:
        if status.get("last_error"):
            status = {**status, "last_error": bounded_text(str(status["last_error"]), MAX_ERROR)}
        with self._wake:
            self._status = status
            self._wake.notify()

    def line(self, level: str, message: str) -> None:
        with self._wake:
            self._lines.append({"level": level, "message": bounded_text(message, MAX_LINE - 40)})
            self._wake.notify()

    def wake(self) -> None:
        with self._wake:
            self._wake.notify()

    def _run(self) -> None:
        client = self._make_client()
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                with self._wake:
                    while self._status is None and not self._lines and not self._stop.is_set():
                        self._wake.wait(1.0)
                    status, self._status = self._status, None
                    lines = list(self._lines)[:200]
                try:
                    if status is not None:
                        client.report({**status, "lines": lines})  # one request for both
                        self.sent += 1
                    elif lines:
                        client.logs(lines)
                    if lines:
                        with self._wake:
                            for _ in lines:
                                self._lines.popleft()
                    backoff.reset()
                except ControllerRefused as exc:
                    # Sending the same again would not help; but a node whose report is
                    # refused must not look healthy: say that much, in a form that fits.
                    log.error("status refused: %s", exc)
                    self._health.fail("status reporter", f"the controller refused a status report: {exc}")
                    if status is not None and status.get("state") != "error":
                        with self._wake:
                            if self._status is None:
                                self._status = {**status, "state": "error", "last_error": bounded_text(f"status report refused: {exc}", MAX_ERROR),
                                                "taps": {}, "problems": []}
                    self._stop.wait(1.0)
                except ControllerUnavailable as exc:
                    with self._wake:
                        if self._status is None:
                            self._status = status  # keep it unless a newer one came
                    wait = backoff.next()
                    log.debug("report failed (%s); retrying in %.1fs", exc, wait)
                    self._stop.wait(wait)
        finally:
            client.close()
