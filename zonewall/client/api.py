"""A small client of the controller's REST API for operators' commands.

Every failure becomes a `ClientError` with one line for a person: the controller
unreachable (and where we tried), a refused token, the problems of a refused
policy (`file:line:col: key: message`, one per line in `problems`), a conflict.
"""

from __future__ import annotations

from typing import Any

import httpx

from ..service.tls import tls_verify
from .profile import Profile


class ClientError(RuntimeError):
    def __init__(self, message: str, *, status: int | None = None, problems: list[str] | None = None, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems or []
        self.detail = detail


class Api:
    def __init__(self, profile: Profile, *, timeout: float = 120.0) -> None:
        self.profile = profile
        headers = {"User-Agent": "zonewall-cli"}
        if profile.token:
            headers["Authorization"] = f"Bearer {profile.token}"
        try:
            verify = tls_verify(profile.ca)
        except OSError as exc:
            raise ClientError(f"CA certificate {profile.ca}: {exc}") from None
        self._http = httpx.Client(base_url=profile.url, headers=headers, verify=verify, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.profile.token:
            raise ClientError("no token: give --token/--token-file, set $ZONEWALL_TOKEN, or put token_file in the profile (zonewall token create)")
        try:
            response = self._http.request(method, "/api/v1" + path, **kwargs)
        except httpx.ConnectError as exc:
            raise ClientError(f"controller {self.profile.url} unreachable: {exc}") from None
        except httpx.TimeoutException:
            raise ClientError(f"controller {self.profile.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ClientError(f"controller {self.profile.url}: {exc}") from None
        if response.status_code < 400:
            return response.json() if response.content else None
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:300]
        raise _error(response.status_code, detail)


def _error(status: int, detail: Any) -> ClientError:
    if status == 401:
        return ClientError("the controller does not know this token (revoked, or another controller's)", status=status)
    if status == 403:
        return ClientError(f"refused: {detail}", status=status)
    if status == 422 and isinstance(detail, dict) and "problems" in detail:
        problems = [str(p.get("text") or p.get("message")) for p in detail["problems"]]
        return ClientError(f"{detail.get('error', 'policy rejected')}: {len(problems)} problem(s)", status=status, problems=problems, detail=detail)
    if status == 409:
        text = detail.get("error") if isinstance(detail, dict) else detail
        return ClientError(f"conflict: {text}", status=status, detail=detail)
    if isinstance(detail, list):  # FastAPI's own validation errors
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail if isinstance(d, dict))
    return ClientError(f"controller answered {status}: {detail}", status=status, detail=detail)
