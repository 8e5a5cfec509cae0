"""Controllers for tests: in-process (TestClient) and a real uvicorn server in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from zonewall.controller.app import create_app
from zonewall.controller.replica import Controller, build_controller
from zonewall.controller.server import Listen, bind
from zonewall.controller.store.db import default_url
from zonewall.controller.store.tokens import create_token
from zonewall.policy.documents import load_documents, read_directory
from zonewall.policy.scope import Scoper

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
THREE_TIER = EXAMPLES / "three-tier" / "policy"


def three_tier_documents() -> dict[str, str]:
    return read_directory(THREE_TIER)


def three_tier_node_documents(node: str) -> dict[str, str]:
    """What `node`'s agent is sent of the three-tier example (policy/scope.py): its
    zones' and VMs' rules, the others' left out."""
    documents = three_tier_documents()
    vms = load_documents(documents).doc.vms
    return Scoper(documents, {name: vm.host for name, vm in vms.items()}, zone_of={name: vm.zone for name, vm in vms.items()}).scoped(node)


@dataclass
class Tokens:
    admin: str
    viewer: str
    node1: str
    node2: str

    def header(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, who)}"}


def make_tokens(controller: Controller) -> Tokens:
    sessions = controller.sessions
    return Tokens(
        admin=create_token(sessions, "admin")[1],
        viewer=create_token(sessions, "viewer")[1],
        node1=create_token(sessions, "agent", node="node1")[1],
        node2=create_token(sessions, "agent", node="node2")[1],
    )


@dataclass
class LiveController:
    controller: Controller
    url: str
    tokens: Tokens
    server: uvicorn.Server


@contextmanager
def live_controller(directory: Path, db_url: str | None = None, *, tokens: Tokens | None = None, **options: float) -> Iterator[LiveController]:
    """A real HTTP server on 127.0.0.1 (a free port), stopped at the end; on `db_url`
    (default: SQLite in `directory`). A second controller on the same database takes
    the first one's `tokens`."""
    directory.mkdir(parents=True, exist_ok=True)
    controller = build_controller(db_url or default_url(directory), **options)
    tokens = tokens or make_tokens(controller)
    sock = bind(Listen("127.0.0.1", 0))
    config = uvicorn.Config(create_app(controller), log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test controller did not start"
        time.sleep(0.01)
    try:
        yield LiveController(controller, f"http://127.0.0.1:{sock.getsockname()[1]}", tokens, server)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        controller.sessions.kw["bind"].dispose()  # type: ignore[union-attr]
