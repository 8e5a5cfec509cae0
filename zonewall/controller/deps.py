"""FastAPI dependencies shared by the API routers and the dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from .replica import Controller


def controller(request: Request) -> Controller:
    """The controller serving this request, typed (`Depends(controller)`, or called with
    the request): `request.app.state` itself is untyped."""
    ctl: Controller = request.app.state.ctl
    return ctl
