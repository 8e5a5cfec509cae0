"""The dashboard (in-process): login, every page renders, filters, trace, roles."""

from __future__ import annotations

import re
import uuid

from fastapi.testclient import TestClient

from tests.controller.live import Tokens


def login_form(client: TestClient) -> str:
    """The login form's CSRF token (its cookie is now in the client)."""
    found = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text)
    assert found, "the login form has no CSRF token"
    return found.group(1)


def login(client: TestClient, token: str) -> None:
    response = client.post("/ui/login", data={"token": token, "csrf": login_form(client)}, follow_redirects=False)
    assert response.status_code == 303, response.text


def test_pages_render_for_a_viewer_who_cannot_roll_back(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    assert client.get("/ui/", follow_redirects=False).status_code == 303  # not logged in
    assert client.post("/ui/login", data={"token": tokens.node1, "csrf": login_form(client)}).status_code == 401  # agents cannot log in
    rec = {"time": 1e10, "vm": "db1", "direction": "in", "family": "ipv4", "src": "10.0.1.10", "dst": "10.0.2.30", "proto": "tcp",
           "dport": 5432, "verdict": "drop", "rule": "default-in", "scope": "db1", "level": "default"}
    client.post("/api/v1/nodes/node2/records", json={"batch_id": uuid.uuid4().hex, "records": [rec]}, headers=tokens.header("node2"))
    web = {**rec, "vm": "web1", "scope": "web1", "src": "10.0.2.30", "dst": "10.0.1.10", "dport": 25}  # web1 lives on node1
    client.post("/api/v1/nodes/node1/records", json={"batch_id": uuid.uuid4().hex, "records": [web]}, headers=tokens.header("node1"))
    login(client, tokens.viewer)
    for path, text in (("/ui/", "node1"), ("/ui/matrix", "dmz"), ("/ui/vms", "db1"), ("/ui/vms/db1", "default-in"),
                       ("/ui/logs", "default-in"), ("/ui/revisions", "initial"), ("/ui/revisions/1", "Revision 1")):
        page = client.get(path)
        assert page.status_code == 200 and text in page.text, path
    # the destination cell "address:port" (a bare ":25<" also matches a received time at second 25)
    assert "10.0.1.10:25<" in client.get("/ui/logs").text
    assert "10.0.2.30:5432<" in client.get("/ui/logs", params={"vm": "db1"}).text
    assert "10.0.1.10:25<" not in client.get("/ui/logs", params={"vm": "db1"}).text
    assert "No records match" in client.get("/ui/logs", params={"port": "9"}).text
    assert "not an address" in client.get("/ui/logs", params={"address": "x"}).text
    traced = client.get("/ui/trace", params={"from": "vm:web1", "to": "vm:db1", "proto": "tcp", "port": "5432"})
    assert traced.status_code == 200 and "Verdict" in traced.text and "drop" in traced.text
    assert "Roll back" not in client.get("/ui/revisions/1").text
    assert client.post("/ui/revisions/1/rollback", data={"csrf": "x"}).status_code == 403


def test_admin_rolls_back_with_a_csrf_token_but_not_to_the_current_revision(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    login(client, tokens.admin)
    assert "Roll back" not in client.get("/ui/revisions/1").text  # revision 1 is the current one: nothing to roll back to
    rule = {"id": "partner-8443", "direction": "in", "action": "accept", "from": "203.0.113.10", "tcp": 8443}
    assert client.post("/api/v1/vms/web1/rules", json={"rule": rule}, headers=tokens.header("admin")).status_code == 201
    assert "Roll back" not in client.get("/ui/revisions/2").text
    page = client.get("/ui/revisions/1").text
    assert "Roll back" in page
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    assert client.post("/ui/revisions/1/rollback", data={"csrf": "wrong"}).status_code == 403
    done = client.post("/ui/revisions/1/rollback", data={"csrf": csrf, "message": "m"}, follow_redirects=False)
    assert done.status_code == 303


def csrf_of(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_revision_one_shows_what_it_opened(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    login(client, tokens.viewer)
    page = client.get("/ui/revisions/1").text
    assert "No flow opened or closed" not in page
    assert "vm:web1 nic 0" in page and "added" in page  # the endpoints it created
    opened = page.split('aria-label="opened"', 1)[1]
    assert "dmz" in opened and "tcp 8080" in opened and "tcp 5432" in opened  # dmz -> app 8080, app -> db 5432


def test_the_editor_previews_the_diff_and_commits_a_revision(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    login(client, tokens.admin)
    form = client.get("/ui/edit/vms/web1")
    assert form.status_code == 200 and "<textarea" in form.text
    text = "- {id: partner-8443, direction: in, action: accept, from: 203.0.113.10, tcp: 8443}\n"
    preview = client.post("/ui/edit/vms/web1", data={"csrf": csrf_of(form.text), "text": text, "message": "partner", "action": "preview", "base_revision": "1"})
    assert preview.status_code == 200
    assert "opened" in preview.text and "tcp 8443" in preview.text and "+      - {id: partner-8443" in preview.text
    assert [r["number"] for r in client.get("/api/v1/revisions", headers=tokens.header("admin")).json()] == [1]  # a preview commits nothing
    done = client.post("/ui/edit/vms/web1", data={"csrf": csrf_of(preview.text), "text": text, "message": "partner", "action": "commit", "base_revision": "1"},
                       follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/ui/revisions/2"
    revision = client.get("/api/v1/revisions/2", headers=tokens.header("admin")).json()
    assert revision["message"] == "partner" and revision["change"]["op"] == "set-rules" and revision["diff"]["flows"][0]["services"] == ["tcp 8443"]
    # a commit against an old preview is refused, the editor says so
    stale = client.post("/ui/edit/vms/web1", data={"csrf": csrf_of(preview.text), "text": "", "message": "m", "action": "commit", "base_revision": "1"})
    assert stale.status_code == 409 and "preview again" in stale.text


def test_the_editor_refuses_bad_input_with_the_problems(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    login(client, tokens.admin)
    csrf = csrf_of(client.get("/ui/edit/zones/db").text)
    for text, words in (("- {id: x, action: accept, service: nosuch}", "service nosuch does not exist"), ("- [unclosed", "not YAML"),
                        ("key: value", "expected a YAML list")):
        page = client.post("/ui/edit/zones/db", data={"csrf": csrf, "text": text, "action": "preview"})
        assert page.status_code == 422 and words in page.text, (text, page.text[-2000:])
    members = client.post("/ui/edit/groups/admins", data={"csrf": csrf, "text": "- 192.168.100.0/24\n- 192.168.200.0/24\n", "action": "preview"})
    assert members.status_code == 200 and "192.168.200.0/24" in members.text and "opened" in members.text
    assert client.get("/ui/edit/vms/nosuch").status_code == 404


def test_a_viewer_sees_no_editor_and_cannot_post(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    login(client, tokens.viewer)
    page = client.get("/ui/edit/vms/web1")
    assert page.status_code == 200 and "Read only" in page.text and "Preview the change" not in page.text
    refused = client.post("/ui/edit/vms/web1", data={"csrf": csrf_of(page.text), "text": "", "action": "commit"})
    assert refused.status_code == 403
    assert "edit rules" not in client.get("/ui/zones").text


def test_node_zones_and_paged_lists(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    client.put("/api/v1/nodes/node2/status", json={"state": "error", "applied_revision": 1, "last_error": "apply failed: boom"}, headers=tokens.header("node2"))
    login(client, tokens.viewer)
    node = client.get("/ui/nodes/node2").text
    assert "apply failed: boom" in node and "db1" in node and "Denied packets, last 24 h" in node
    assert client.get("/ui/nodes/nosuch").status_code == 404
    assert "node1" in client.get("/ui/nodes").text
    zones = client.get("/ui/zones").text
    assert 'data-zone="dmz"' in zones and 'data-from="dmz" data-to="app"' in zones and "<script" not in zones
    assert client.get("/ui/vms", params={"zone": "db"}).text.count('href="/ui/vms/') == 1
    assert "db1" in client.get("/ui/vms", params={"q": "10.0.2.3"}).text
    overview = client.get("/ui/").text
    assert "Top blocked sources" in overview and "<svg" in overview


def test_a_large_policys_matrix_is_computed_in_the_background(client: TestClient, tokens: Tokens, uploaded: dict, monkeypatch) -> None:
    import time

    from zonewall.controller.web import routes

    monkeypatch.setattr(routes, "SYNC_MATRIX_VMS", 0)  # as if the policy had thousands of VMs
    monkeypatch.setattr(routes, "_matrix_jobs", {})
    release = __import__("threading").Event()
    real = routes.zone_matrix_of
    monkeypatch.setattr(routes, "zone_matrix_of", lambda ctl, row, progress=None: (release.wait(10), real(ctl, row, progress))[1])
    login(client, tokens.viewer)
    first = client.get("/ui/matrix").text
    assert "computing this revision's matrix" in first and 'http-equiv="refresh"' in first
    assert "computing the zone matrix" in client.get("/ui/zones").text  # the zones page answers meanwhile too
    release.set()
    deadline = time.monotonic() + 10
    while "computing" in (page := client.get("/ui/matrix").text) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "tcp 8080" in page and 'http-equiv="refresh"' not in page


def test_login_and_logout_need_their_csrf_token_and_this_origin(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    """A page on another site can neither log a browser in (with the attacker's token:
    login CSRF) nor log it out."""
    assert client.post("/ui/login", data={"token": tokens.admin}).status_code == 403  # no form token
    csrf = login_form(client)
    assert client.post("/ui/login", data={"token": tokens.admin, "csrf": "guessed"}).status_code == 403
    foreign = {"origin": "https://evil.example"}
    assert client.post("/ui/login", data={"token": tokens.admin, "csrf": csrf}, headers=foreign).status_code == 403
    assert client.get("/ui/", follow_redirects=False).status_code == 303  # still logged out
    login(client, tokens.admin)
    assert client.post("/ui/logout", data={}, follow_redirects=False).status_code == 403  # no session token
    assert client.post("/ui/logout", data={"csrf": "x"}, headers={"referer": "https://evil.example/page"}, follow_redirects=False).status_code == 403
    assert client.get("/ui/", follow_redirects=False).status_code == 200  # still logged in
    page = client.get("/ui/").text
    session_csrf = re.search(r'action="/ui/logout".*?name="csrf" value="([^"]+)"', page, re.S)
    assert session_csrf is not None
    same_site = {"origin": "http://testserver"}
    assert client.post("/ui/logout", data={"csrf": session_csrf.group(1)}, headers=same_site, follow_redirects=False).status_code == 303
    assert client.get("/ui/", follow_redirects=False).status_code == 303
