"""/api/v1/gitops: the git follower's status, and a sync on demand (e.g. from a push webhook)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from . import auth
from .deps import controller
from .store.tokens import Principal

router = APIRouter(prefix="/api/v1", tags=["gitops"])


def follower_status(ctl: Any) -> dict[str, Any]:
    follower = getattr(ctl, "gitops", None)
    return follower.to_json() if follower is not None else {"enabled": False}


@router.get("/gitops", summary="The git repository the controller follows: last commit taken, a refused commit and its problems")
def gitops_status(request: Request, _: Principal = Depends(auth.reader)) -> dict[str, Any]:
    return follower_status(controller(request))


@router.post("/gitops/sync", summary="Fetch the followed branch now and take its new commits (admin)")
async def gitops_sync(request: Request, _: Principal = Depends(auth.admin)) -> dict[str, Any]:
    follower = getattr(controller(request), "gitops", None)
    if follower is not None:
        await run_in_threadpool(follower.sync)
    return follower_status(controller(request))
