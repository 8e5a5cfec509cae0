"""The dashboard (in-process): login, every page renders, filters, trace, roles."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from tests.controller.live import Tokens


def login(client: TestClient, token: str) -> None:
    response = client.post("/ui/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text


def test_pages_render_for_a_viewer_who_cannot_roll_back(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    assert client.get("/ui/", follow_redirects=False).status_code == 303  # not logged in
    assert client.post("/ui/login", data={"token": tokens.node1}).status_code == 401  # agents cannot log in
    rec = {"time": 1e10, "vm": "db1", "direction": "in", "family": "ipv4", "src": "10.0.1.10", "dst": "10.0.2.30", "proto": "tcp",
           "dport": 5432, "verdict": "drop", "rule": "default-in", "scope": "db1", "level": "default"}
    client.post("/api/v1/nodes/node2/records", json={"batch_id": uuid.uuid4().hex, "records": [rec, {**rec, "vm": "web1", "dport": 25}]}, headers=tokens.header("node2"))
    login(client, tokens.viewer)
    for path, text in (("/ui/", "node1"), ("/ui/matrix", "dmz"), ("/ui/vms", "db1"), ("/ui/vms/db1", "default-in"),
                       ("/ui/logs", "default-in"), ("/ui/revisions", "initial"), ("/ui/revisions/1", "Revision 1")):
        page = client.get(path)
        assert page.status_code == 200 and text in page.text, path
    assert "5432" in client.get("/ui/logs", params={"vm": "db1"}).text
    assert ":25<" not in client.get("/ui/logs", params={"vm": "db1"}).text
    assert "No records match" in client.get("/ui/logs", params={"port": "9"}).text
    assert "not an address" in client.get("/ui/logs", params={"address": "x"}).text
    traced = client.get("/ui/trace", params={"from": "vm:web1", "to": "vm:db1", "proto": "tcp", "port": "5432"})
    assert traced.status_code == 200 and "Verdict" in traced.text and "drop" in traced.text
    assert "Roll back" not in client.get("/ui/revisions/1").text
    assert client.post("/ui/revisions/1/rollback", data={"csrf": "x"}).status_code == 403


def test_admin_rolls_back_with_a_csrf_token(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    login(client, tokens.admin)
    page = client.get("/ui/revisions/1").text
    assert "Roll back" in page
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert client.post("/ui/revisions/1/rollback", data={"csrf": "wrong"}).status_code == 403
    done = client.post("/ui/revisions/1/rollback", data={"csrf": csrf, "message": "m"}, follow_redirects=False)
    assert done.status_code == 303
