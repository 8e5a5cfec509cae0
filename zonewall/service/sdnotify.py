"""systemd's service notification protocol (sd_notify(3)), without libsystemd.

A `Type=notify` unit gets `$NOTIFY_SOCKET` (a datagram socket; a leading `@` means
the abstract namespace). The service sends `READY=1` once it does its job (the agent:
once a ruleset is applied; the controller: once it listens with its database
migrated), `STATUS=...` lines for `systemctl status`, `STOPPING=1` when it shuts
down, and `WATCHDOG=1` at least every `$WATCHDOG_USEC` microseconds; systemd kills
and restarts a service that stops pinging (`WatchdogSec=` in the unit).

Without `$NOTIFY_SOCKET` (run by hand, in tests, in the lab) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger("zonewall.service")


def _address(env: dict[str, str] | os._Environ[str]) -> str | None:
    path = env.get("NOTIFY_SOCKET")
    if not path or not path.startswith(("/", "@")):
        return None
    return "\0" + path[1:] if path.startswith("@") else path


def notify(*fields: str, env: dict[str, str] | None = None) -> bool:
    """Send `fields` (e.g. "READY=1", "STATUS=applied revision 4") as one message;
    False when there is no notify socket or systemd is gone."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
        return True
    except OSError as exc:
        log.debug("sd_notify %s: %s", fields, exc)
        return False


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Seconds between two pings (half of what systemd allows), or None: no watchdog.

    `$WATCHDOG_PID`, when set, must be this process (it is not passed to children)."""
    env = dict(os.environ) if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        return None
    return seconds / 2 if seconds > 0 else None


class ServiceNotifier:
    """A thread that tells systemd when the service is ready and keeps its watchdog fed.

    `ready()` says whether the service does its job yet (READY=1 is sent once, the
    first time it is true, with `status()` as STATUS); `alive()` says whether its
    work loop still turns: the watchdog is fed only while it does, so a hung loop
    gets the process restarted instead of a thread pinging on its behalf."""

    def __init__(self, ready: Callable[[], bool], alive: Callable[[], bool], status: Callable[[], str],
                 *, poll: float = 0.2, env: dict[str, str] | None = None) -> None:
        self._ready, self._alive, self._status = ready, alive, status
        self._env = env
        self._poll = poll
        self._interval = watchdog_interval(env)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zonewall-sdnotify", daemon=True)
        self.sent_ready = False
        self.enabled = _address(os.environ if env is None else env) is not None

    def start(self) -> ServiceNotifier:
        if self.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        if self.enabled:
            self._stop.set()
            notify("STOPPING=1", "STATUS=stopping", env=self._env)

    def _run(self) -> None:
        next_ping = 0.0
        last_status = ""
        while not self._stop.is_set():
            if not self.sent_ready and self._ready():
                last_status = self._status()
                self.sent_ready = notify("READY=1", f"STATUS={last_status}", env=self._env)
            elif self.sent_ready and (status := self._status()) != last_status:
                notify(f"STATUS={status}", env=self._env)
                last_status = status
            now = time.monotonic()
            if self._interval is not None and now >= next_ping:
                if self._alive():
                    notify("WATCHDOG=1", env=self._env)
                else:
                    log.error("the work loop has not turned for a while: the watchdog is no longer fed")
                next_ping = now + self._interval
            self._stop.wait(self._poll)
