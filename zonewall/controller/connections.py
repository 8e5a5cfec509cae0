"""Connections that cannot starve the controller, before anyone has authenticated.

uvicorn times out a connection only between requests (`timeout_keep_alive`): one
that never sends a byte, or sends half a request line and waits, is kept forever.
300 such connections against a `ulimit -n` of 256 made every new request fail
("Too many open files"), no token needed. This protocol (uvicorn's h11 protocol
with two additions) closes:

* a connection whose request head is not complete `header_timeout` seconds after
  it began (slow or silent clients: the timer starts at the first byte of each
  request, or at the connection, and is not extended by trickling bytes);
* when the server holds `max_connections`, the connections that have been idle the
  longest (no request in progress), to make room for the new one. A request in
  progress (a long-poll of an agent, an upload) is never cut for room; if every
  connection is busy, the new one is refused.

`max_connections` defaults to what the process's open-file limit leaves after a
reserve for the database, log files and the TLS keys.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("zonewall.controller.connections")
FD_RESERVE = 64  # descriptors kept for everything but client connections


def default_max_connections() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, soft - FD_RESERVE)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # seconds for a whole request head
    max_connections: int = 0  # 0: from the open-file limit

    def resolved(self) -> ConnectionLimits:
        return self if self.max_connections > 0 else ConnectionLimits(self.header_timeout, default_max_connections())


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """An h11 protocol class bound to `limits` (one per server: no global state)."""
    bound = limits.resolved()

    class GuardedH11Protocol(_Guarded):
        limits = bound

    return GuardedH11Protocol


class _Guarded(H11Protocol):
    limits: ConnectionLimits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.last_active = self.loop.time()
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm()
        self._make_room()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if not self.busy:
            self._arm()  # a new request begins: its head has header_timeout from now
        super().data_received(data)
        if self.busy:
            self._disarm()

    def on_response_complete(self) -> None:
        self.last_active = self.loop.time()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    @property
    def busy(self) -> bool:
        """A request is in progress (its head arrived, its response is not complete)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.busy and not self.transport.is_closing():
            log.info("closing %s: no complete request within %.0f s", _peer(self.client), self.limits.header_timeout)
            self.transport.close()

    def _make_room(self) -> None:
        excess = len(self.connections) - self.limits.max_connections
        if excess <= 0:
            return
        idle = sorted((c for c in self.connections if c is not self and isinstance(c, _Guarded) and not c.busy), key=lambda c: c.last_active)
        for victim in idle[:excess]:
            victim.transport.close()
            victim.connections.discard(victim)  # counted out now: its close completes later
        if len(idle) < excess:
            log.warning("%d connections, every one busy: refusing %s", len(self.connections), _peer(self.client))
            self.transport.close()
        else:
            log.info("%d connections: closed the %d idle the longest", self.limits.max_connections, excess)


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
