"""An in-process controller and its tokens, on each database the controller supports.

Every test that takes `db_url` (directly or through `controller`, `client`, ...) runs
twice: on SQLite (a fresh file), and on a fresh database of a real PostgreSQL server
that the test session starts from Debian's package (tests/conftest.py: `postgres`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.controller.live import Tokens, make_tokens, three_tier_documents
from zonewall.controller.app import create_app
from zonewall.controller.replica import Controller, build_controller
from zonewall.controller.store.db import default_url
from zonewall.lab.postgres import TemporaryPostgres

DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(params=DATABASES)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield default_url(tmp_path)
        return
    server: TemporaryPostgres = request.getfixturevalue("postgres")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


@pytest.fixture
def controller(db_url: str) -> Iterator[Controller]:
    built = build_controller(db_url)
    yield built
    built.sessions.kw["bind"].dispose()  # type: ignore[union-attr]


@pytest.fixture
def tokens(controller: Controller) -> Tokens:
    return make_tokens(controller)


@pytest.fixture
def client(controller: Controller) -> Iterator[TestClient]:
    with TestClient(create_app(controller)) as test_client:
        yield test_client


@pytest.fixture
def uploaded(client: TestClient, tokens: Tokens) -> dict:
    """The three-tier example as revision 1."""
    response = client.put("/api/v1/policy", json={"documents": three_tier_documents(), "message": "initial"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    return response.json()
