"""`/healthz` and `/readyz`: for systemd, load balancers and probes (no token needed).

- `/healthz`: the process answers HTTP (liveness); nothing else is checked, so a
  database outage does not get a controller restarted in a loop.
- `/readyz`: this replica can serve: its database answers a query and it follows
  the revisions (the watch is bound to the running loop). 503 with the reason
  otherwise, so a load balancer sends agents and people to another replica.

Neither says anything an unauthenticated caller should not know.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from .deps import controller

router = APIRouter(include_in_schema=True, tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def readiness(ctl: Any) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    try:
        with ctl.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means: not ready
        checks["database"] = f"error: {type(exc).__name__}"
    checks["revisions"] = "ok" if ctl.watch.bound else "not following yet"
    return all(value == "ok" for value in checks.values()), checks


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    ready, checks = readiness(controller(request))
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks, "revision": controller(request).watch.current},
                        status_code=200 if ready else 503)
