"""An in-process controller (fresh SQLite per test) and its tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.controller.live import Tokens, make_tokens, three_tier_documents
from zonewall.controller.app import Controller, build_controller, create_app


@pytest.fixture
def controller(tmp_path: Path) -> Controller:
    return build_controller(f"sqlite:///{tmp_path / 'zonewall.db'}")


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
