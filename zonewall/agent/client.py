"""The agent's side of the controller API (httpx, one client per thread).

An agent may be given several controllers (replicas on one database): each call
goes to the one that answered last, and on no answer (connection refused or reset,
a timeout, a 5xx) straight on to the next, so a dead controller costs one failed
connection, not a back-off. Every agent is given the same list, so each starts at a
place in it chosen by its node name: the nodes spread evenly over the controllers. Only when every controller failed does the call raise
ControllerUnavailable, and the caller backs off (backoff.py).

A dead process resets its connections at once; a dead host does not, so TCP
keepalive probes an idle long-poll's connection every second after two quiet
seconds: a vanished controller is noticed within about four seconds.
"""

from __future__ import annotations

import logging
import socket
import ssl
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..service.tls import tls_verify
from . import AGENT_VERSION

log = logging.getLogger("zonewall.agent.client")
CONNECT_TIMEOUT = 1.0  # a controller that does not accept within a second is skipped
KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2),
]


class ControllerUnavailable(RuntimeError):
    """No answer (down, unreachable, 5xx): try again later, keep enforcing."""


class ControllerRefused(RuntimeError):
    """An answer that will not change by retrying soon (401/403/404/4xx)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"controller refused ({status}): {detail}")
        self.status = status


PROTOCOL = 2  # what the controller sends: each node its own documents, `same` or a delta (controller/api_nodes.py)


@dataclass(frozen=True)
class DesiredAnswer:
    changed: bool
    revision: int
    in_policy: bool
    content_hash: str | None  # of the node's documents
    documents: dict[str, str] | None
    controller: str = ""  # which controller answered
    same: bool = False  # the documents are those the agent has (`have`): only the revision is new
    delta: dict[str, Any] | None = None  # the change against what the agent has (policy/delta.py)


def parse_controllers(values: str | Iterable[str]) -> tuple[str, ...]:
    """Controller URLs from repeated options and/or comma-separated lists, in order,
    without duplicates; ValueError for anything that is not an http(s) URL."""
    items = [values] if isinstance(values, str) else list(values)
    urls: list[str] = []
    for item in items:
        for part in item.split(","):
            url = part.strip().rstrip("/")
            if not url:
                continue
            if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
                raise ValueError(f"controller {part.strip()!r}: expected an http:// or https:// URL")
            if url not in urls:
                urls.append(url)
    if not urls:
        raise ValueError("no controller URL given")
    return tuple(urls)


def first_choice(node: str, count: int) -> int:
    """The controller a node starts with: the same on every start, even across nodes."""
    return zlib.crc32(node.encode()) % count


class ControllerClient:
    def __init__(self, controllers: str | Sequence[str], token: str, node: str, *, ca: str | None = None, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None, tls: ssl.SSLContext | None = None) -> None:
        """`tls`: the verifying context, shared by the clients of one process (made
        from `ca` when not given)."""
        self.node = node
        self.controllers = parse_controllers(controllers)
        self._current = first_choice(node, len(self.controllers))
        self._timeout = timeout
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"zonewall-agent/{AGENT_VERSION}"},
            transport=transport or httpx.HTTPTransport(verify=tls or tls_verify(ca), socket_options=KEEPALIVE),
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        )

    @property
    def controller(self) -> str:
        """The controller the next call goes to first."""
        return self.controllers[self._current]

    def skip(self) -> None:
        """Go to the next controller (this one answered something we cannot use)."""
        self._current = (self._current + 1) % len(self.controllers)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        failures: list[str] = []
        for attempt in range(len(self.controllers)):
            index = (self._current + attempt) % len(self.controllers)
            base = self.controllers[index]
            try:
                response = self._http.request(method, f"{base}/api/v1/nodes/{self.node}{path}",
                                              timeout=httpx.Timeout(timeout or self._timeout, connect=CONNECT_TIMEOUT), **kwargs)
            except httpx.HTTPError as exc:
                failures.append(f"{base}: {type(exc).__name__}: {exc}")
                continue
            if response.status_code >= 500:
                failures.append(f"{base}: controller error {response.status_code}")
                continue
            if index != self._current:
                log.warning("controller %s did not answer (%s); now using %s", self.controller, failures[-1], base)
                self._current = index
            if response.status_code >= 400:
                try:
                    detail = str(response.json().get("detail"))
                except ValueError:
                    detail = response.text[:200]
                raise ControllerRefused(response.status_code, detail)
            return response
        raise ControllerUnavailable("; ".join(failures))

    def register(self, hostname: str) -> None:
        self._call("POST", "/register", json={"agent_version": AGENT_VERSION, "hostname": hostname})

    def desired(self, after: int | None, wait: float, have: str | None = None) -> DesiredAnswer:
        """Long-poll: returns when there is a revision newer than `after`, or after `wait` s.
        `have`: the content hash of the documents applied here (a delta may come)."""
        params: dict[str, Any] = {"wait": wait, "protocol": PROTOCOL} if after is not None else {"protocol": PROTOCOL}
        if after is not None:
            params["after"] = after
        if have is not None:
            params["have"] = have
        body = self._call("GET", "/desired", params=params, timeout=wait + self._timeout).json()
        return DesiredAnswer(body["changed"], body["revision"], body["in_policy"], body.get("content_hash"), body.get("documents"), self.controller,
                             bool(body.get("same")), body.get("delta"))

    def arrival(self, vm: str) -> dict[str, Any]:
        """This node's documents of the current revision with `vm` in full (it is migrating here)."""
        return self._call("GET", f"/arrival/{vm}", timeout=self._timeout).json()

    def report(self, status: dict[str, Any]) -> None:
        # nothing of the answer is read: the controller need not read the row back
        self._call("PUT", "/status", json=status, headers={"Prefer": "return=minimal"})

    def logs(self, lines: list[dict[str, str]]) -> None:
        if lines:
            self._call("POST", "/logs", json={"lines": lines})

    def records(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One batch of packet log records (idempotent by its batch_id)."""
        return self._call("POST", "/records", json=batch).json()

    def counters(self, counters: list[dict[str, Any]], partial: bool = False) -> None:
        """A counter reading: whole, or (`partial`) only the counters that moved."""
        self._call("PUT", "/counters", json={"counters": counters, "partial": partial})
