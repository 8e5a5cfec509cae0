"""How a controller learns of revisions other controllers commit.

On PostgreSQL a commit sends NOTIFY on `zonewall_revisions` with its number; every
controller LISTENs on a connection of its own and passes the number on at once.
Notifications are not queued for a listener that is away (its connection broke,
the database restarted), so the newest number is also read back every `recheck`
seconds, and after every reconnection: a missed notification costs at most that
long. On SQLite (one controller) only the periodic read runs. Other channels (migration
steps, controller/migrate_channel.py) ride on the same connection: `others` maps a
channel to what handles its payloads, and `on_recheck` runs with every periodic read.

Before the watch wakes the agents, the new revision is read and parsed here once,
so a wave of long-polls answered at the same moment finds it ready instead of
every request waiting for the parse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine, text

from .store.revisions import CHANNEL

log = logging.getLogger("zonewall.controller.follow")
RECHECK_SECONDS = 2.0


class Follower:
    def __init__(self, engine: Engine, newest: Callable[[], int | None], warm: Callable[[int], object],
                 notify: Callable[[int], None], *, recheck: float = RECHECK_SECONDS,
                 others: dict[str, Callable[[str], None]] | None = None, on_recheck: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._others = others or {}
        self._on_recheck = on_recheck
        self._newest = newest
        self._warm = warm
        self._notify = notify
        self.recheck = recheck
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zonewall-follow", daemon=True)
        self._connection: object | None = None
        self.heard = 0  # notifications received (tests watch it)

    def start(self) -> Follower:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._engine.dialect.name == "postgresql":
            try:  # wake our LISTEN at once (other controllers ignore a notification of 0)
                with self._engine.begin() as connection:
                    connection.execute(text("SELECT pg_notify(:channel, '0')"), {"channel": CHANNEL})
            except Exception:  # noqa: BLE001 - the database is away: the wait ends by itself
                pass
        self._thread.join(timeout=self.recheck + 5)

    def _seen(self, number: int | None) -> None:
        if not number:
            return
        try:
            self._warm(number)
        except Exception:
            log.exception("reading revision %d failed", number)
        self._notify(number)

    def _check(self) -> None:
        try:
            self._seen(self._newest())
            if self._on_recheck is not None:
                self._on_recheck()
        except Exception as exc:  # noqa: BLE001 - the database is away; try again at the next tick
            log.warning("reading the newest revision failed: %s", exc)

    def _run(self) -> None:
        if self._engine.dialect.name != "postgresql":
            while not self._stop.wait(self.recheck):
                self._check()
            return
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._listen()
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - reconnect; meanwhile the periodic read covers
                log.warning("listening for revisions failed (%s); again in %.1fs", exc, backoff)
                self._check()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _listen(self) -> None:
        import psycopg

        url = self._engine.url.set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as connection:
            for channel in (CHANNEL, *self._others):
                connection.execute(f"LISTEN {channel}")
            self._check()  # what was committed while we were not listening
            while not self._stop.is_set():
                for notification in connection.notifies(timeout=self.recheck):
                    if self._stop.is_set():
                        return
                    self.heard += 1
                    if notification.channel in self._others:
                        self._others[notification.channel](notification.payload)
                        continue
                    try:
                        self._seen(int(notification.payload))
                    except ValueError:
                        log.warning("unexpected notification %r", notification.payload)
                self._check()  # the fallback read (cheap: one max() per interval)
