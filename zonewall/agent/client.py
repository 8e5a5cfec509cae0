"""The agent's side of the controller API (httpx, one client per thread)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from . import AGENT_VERSION


class ControllerUnavailable(RuntimeError):
    """No answer (down, unreachable, 5xx): try again later, keep enforcing."""


class ControllerRefused(RuntimeError):
    """An answer that will not change by retrying soon (401/403/404/4xx)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"controller refused ({status}): {detail}")
        self.status = status


@dataclass(frozen=True)
class DesiredAnswer:
    changed: bool
    revision: int
    in_policy: bool
    content_hash: str | None
    documents: dict[str, str] | None


def tls_verify(ca: str | None) -> ssl.SSLContext | bool:
    """Verify the controller's certificate: against `ca` if given, else the system's."""
    return ssl.create_default_context(cafile=ca) if ca else True


class ControllerClient:
    def __init__(self, base_url: str, token: str, node: str, *, ca: str | None = None, timeout: float = 10.0) -> None:
        self.node = node
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"zonewall-agent/{AGENT_VERSION}"},
            verify=tls_verify(ca),
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, f"/api/v1/nodes/{self.node}{path}", timeout=timeout or self._timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise ControllerUnavailable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise ControllerUnavailable(f"controller error {response.status_code}")
        if response.status_code >= 400:
            try:
                detail = str(response.json().get("detail"))
            except ValueError:
                detail = response.text[:200]
            raise ControllerRefused(response.status_code, detail)
        return response

    def register(self, hostname: str) -> None:
        self._call("POST", "/register", json={"agent_version": AGENT_VERSION, "hostname": hostname})

    def desired(self, after: int | None, wait: float) -> DesiredAnswer:
        """Long-poll: returns when the revision differs from `after`, or after `wait` s."""
        params: dict[str, Any] = {"wait": wait} if after is not None else {}
        if after is not None:
            params["after"] = after
        body = self._call("GET", "/desired", params=params, timeout=wait + self._timeout).json()
        return DesiredAnswer(body["changed"], body["revision"], body["in_policy"], body.get("content_hash"), body.get("documents"))

    def report(self, status: dict[str, Any]) -> None:
        self._call("PUT", "/status", json=status)

    def logs(self, lines: list[dict[str, str]]) -> None:
        if lines:
            self._call("POST", "/logs", json={"lines": lines})

    def records(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One batch of packet log records (idempotent by its batch_id)."""
        return self._call("POST", "/records", json=batch).json()

    def counters(self, counters: list[dict[str, Any]]) -> None:
        self._call("PUT", "/counters", json={"counters": counters})
