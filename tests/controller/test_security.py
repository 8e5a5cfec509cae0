"""Every API call is authenticated; roles limit what a token may do; refusals are logged."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.controller.live import Tokens, three_tier_node_documents
from zonewall.controller.app import create_app
from zonewall.controller.replica import Controller
from zonewall.controller.store.models import TokenRow

STATUS = {"applied_revision": 1, "fingerprint": "f", "ruleset_hash": "h", "state": "ok", "last_error": None, "drift_repairs": 0}
RULE = {"rule": {"id": "x", "direction": "in", "action": "accept", "tcp": 1}}


def api_routes(controller: Controller) -> list[tuple[str, str]]:
    """(method, concrete path) of every /api route in the OpenAPI document, placeholders filled in."""
    routes = []
    for path, operations in create_app(controller).openapi()["paths"].items():
        if not path.startswith("/api/"):
            continue
        concrete = path.replace("{name}", "a.yaml").replace("{vm}", "web1").replace("{zone}", "dmz").replace("{node}", "node1")
        concrete = concrete.replace("{rule_id}", "x").replace("{number}", "1").replace("{token_id}", "1")
        routes += [(method.upper(), concrete) for method in operations]
    return routes


def test_every_api_route_refuses_a_missing_or_wrong_token(client: TestClient, tokens: Tokens, uploaded: dict, controller: Controller) -> None:
    routes = api_routes(controller)
    assert len(routes) >= 18
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer zw_not-a-real-token"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}, {"Authorization": f"Bearer {tokens.admin}x"}):
            response = client.request(method, path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.status_code)
            assert response.headers.get("www-authenticate") == "Bearer"


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("PUT", "/api/v1/policy", {"documents": {"p.yaml": "version: 1\n"}}),
        ("PUT", "/api/v1/policy/documents/p.yaml", {"text": "version: 1\n"}),
        ("DELETE", "/api/v1/policy/documents/policy.yaml", None),
        ("POST", "/api/v1/vms/web1/rules", RULE),
        ("PUT", "/api/v1/vms/web1/zone", {"zone": "app"}),
        ("POST", "/api/v1/zones/dmz/rules", RULE),
        ("POST", "/api/v1/revisions/1/rollback", {}),
        ("POST", "/api/v1/tokens", {"role": "admin"}),
        ("GET", "/api/v1/tokens", None),
    ],
)
def test_viewers_and_agents_cannot_write_policy_or_manage_tokens(client: TestClient, tokens: Tokens, uploaded: dict, method: str, path: str, body: dict | None) -> None:
    for who in ("viewer", "node1"):
        response = client.request(method, path, json=body, headers=tokens.header(who))
        assert response.status_code == 403, (who, method, path, response.text)
    assert client.get("/api/v1/revisions", headers=tokens.header("viewer")).json()[0]["number"] == 1  # nothing was written


def test_an_agent_token_reads_only_its_own_node(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    own = client.get("/api/v1/nodes/node1/desired", headers=tokens.header("node1"))
    assert own.status_code == 200 and own.json()["documents"] == three_tier_node_documents("node1")
    for path in ("/api/v1/nodes/node2/desired", "/api/v1/nodes/node2", "/api/v1/nodes/node2/logs", "/api/v1/nodes", "/api/v1/policy", "/api/v1/revisions", "/api/v1/revisions/1"):
        assert client.get(path, headers=tokens.header("node1")).status_code == 403, path


def test_only_a_nodes_own_agent_writes_its_status_and_logs(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    assert client.put("/api/v1/nodes/node1/status", json=STATUS, headers=tokens.header("node1")).status_code == 200
    for who in ("node2", "admin", "viewer"):
        assert client.put("/api/v1/nodes/node1/status", json=STATUS, headers=tokens.header(who)).status_code == 403, who
        assert client.post("/api/v1/nodes/node1/logs", json={"lines": [{"message": "forged"}]}, headers=tokens.header(who)).status_code == 403, who
        assert client.post("/api/v1/nodes/node1/register", json={}, headers=tokens.header(who)).status_code == 403, who
    node = client.get("/api/v1/nodes/node1", headers=tokens.header("viewer")).json()
    assert node["applied_revision"] == 1 and node["in_sync"] is True
    assert client.get("/api/v1/nodes/node1/logs", headers=tokens.header("viewer")).json() == []


def test_viewers_read_everything_but_tokens(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    for path in ("/api/v1/policy", "/api/v1/revisions", "/api/v1/revisions/1", "/api/v1/nodes", "/api/v1/nodes/node2", "/api/v1/nodes/node2/desired"):
        assert client.get(path, headers=tokens.header("viewer")).status_code == 200, path


def test_tokens_are_stored_hashed_and_can_be_revoked(client: TestClient, tokens: Tokens, controller: Controller) -> None:
    with controller.sessions() as session:
        rows = list(session.scalars(select(TokenRow)))
    stored = " ".join(f"{r.name} {r.secret_hash}" for r in rows)
    for secret in (tokens.admin, tokens.viewer, tokens.node1):
        assert secret not in stored and secret[3:] not in stored
    created = client.post("/api/v1/tokens", json={"role": "viewer", "name": "temp"}, headers=tokens.header("admin")).json()
    assert client.get("/api/v1/revisions", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 200
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=tokens.header("admin")).status_code == 204
    assert client.get("/api/v1/revisions", headers={"Authorization": f"Bearer {created['token']}"}).status_code == 401
    listed = client.get("/api/v1/tokens", headers=tokens.header("admin")).json()
    assert all("token" not in t for t in listed) and any(t["revoked_at"] for t in listed)


def test_agent_tokens_need_a_node_and_other_roles_none(client: TestClient, tokens: Tokens) -> None:
    assert client.post("/api/v1/tokens", json={"role": "agent"}, headers=tokens.header("admin")).status_code == 422
    assert client.post("/api/v1/tokens", json={"role": "viewer", "node": "node1"}, headers=tokens.header("admin")).status_code == 422
    assert client.post("/api/v1/tokens", json={"role": "root"}, headers=tokens.header("admin")).status_code == 422


def test_refusals_are_logged_with_who_and_what(client: TestClient, tokens: Tokens, uploaded: dict, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="zonewall.controller.auth"):
        client.get("/api/v1/policy")
        client.put("/api/v1/vms/web1/zone", json={"zone": "app"}, headers=tokens.header("viewer"))
        client.get("/api/v1/nodes/node2/desired", headers=tokens.header("node1"))
    messages = [r.getMessage() for r in caplog.records if r.name == "zonewall.controller.auth"]
    assert any("401 GET /api/v1/policy" in m and "missing bearer token" in m for m in messages)
    assert any("403 PUT /api/v1/vms/web1/zone" in m and "viewer" in m for m in messages)
    assert any("403 GET /api/v1/nodes/node2/desired" in m and "agent:node1" in m for m in messages)
