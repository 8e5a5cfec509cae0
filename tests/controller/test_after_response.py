"""Work a request leaves for after its answer runs once the answer is sent, even
when the request fails, and a failing call does not keep the others from running."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from zonewall.controller.after_response import AfterResponseMiddleware, after_response


def _app(events: list[str]) -> Any:
    async def ok(request: Request) -> PlainTextResponse:
        after_response(request, lambda: events.append("first"))
        after_response(request, lambda: 1 / 0)  # type: ignore[func-returns-value]
        after_response(request, lambda: events.append("third"))
        events.append("handled")
        return PlainTextResponse("ok")

    async def broken(request: Request) -> PlainTextResponse:
        after_response(request, lambda: events.append("after the failure"))
        raise RuntimeError("the request fails")

    inner = Starlette(routes=[Route("/ok", ok), Route("/broken", broken)])
    middleware = AfterResponseMiddleware(inner)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        async def sent(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                events.append("answer sent")
            await send(message)
        await middleware(scope, receive, sent)
    return recording


def test_the_calls_run_after_the_answer_is_sent() -> None:
    events: list[str] = []
    with TestClient(_app(events)) as client:
        assert client.get("/ok").text == "ok"
    assert events == ["handled", "answer sent", "first", "third"]


def test_the_calls_run_when_the_request_fails() -> None:
    events: list[str] = []
    with TestClient(_app(events), raise_server_exceptions=True) as client, pytest.raises(RuntimeError):
        client.get("/broken")
    assert events == ["answer sent", "after the failure"]  # (the 500 answer)


def test_without_the_middleware_the_call_runs_at_once() -> None:
    events: list[str] = []

    async def ok(request: Request) -> PlainTextResponse:
        after_response(request, lambda: events.append("called"))
        events.append("handled")
        return PlainTextResponse("ok")

    with TestClient(Starlette(routes=[Route("/ok", ok)])) as client:
        client.get("/ok")
    assert events == ["called", "handled"]
