"""The policy API: uploads, targeted changes, refusals, revisions, rollback."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.controller.live import Tokens, three_tier_documents

WEB_TO_DB = {"id": "web-db", "direction": "in", "action": "accept", "from": "vm:web1", "tcp": 5432}


def add_rule(client: TestClient, tokens: Tokens, vm: str, rule: dict, **extra) -> object:
    return client.post(f"/api/v1/vms/{vm}/rules", json={"rule": rule, "message": "test", **extra}, headers=tokens.header("admin"))


def current(client: TestClient, tokens: Tokens) -> int:
    return client.get("/api/v1/policy", headers=tokens.header("viewer")).json()["revision"]


def test_upload_is_revision_one_with_author_message_and_time(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    revision = uploaded["revision"]
    assert uploaded["created"] is True
    assert (revision["number"], revision["author"], revision["message"], revision["kind"]) == (1, "admin", "initial", "upload")
    assert revision["created_at"].endswith("Z") or "+00:00" in revision["created_at"]
    policy = client.get("/api/v1/policy", headers=tokens.header("viewer")).json()
    assert policy == {"revision": 1, "documents": three_tier_documents()}


def test_identical_upload_records_nothing(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    response = client.put("/api/v1/policy", json={"documents": three_tier_documents()}, headers=tokens.header("admin"))
    assert response.status_code == 200 and response.json()["created"] is False
    assert current(client, tokens) == 1


def test_adding_a_vm_rule_is_a_revision_with_its_semantic_diff(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    response = add_rule(client, tokens, "db1", WEB_TO_DB)
    assert response.status_code == 201, response.text
    revision = response.json()["revision"]
    assert revision["number"] == 2 and revision["kind"] == "change"
    assert revision["change"]["op"] == "add-rule" and revision["change"]["target"] == "vms.db1"
    flows = revision["diff"]["flows"]
    assert [(f["change"], f["from"], f["to"], f["services"]) for f in flows] == [("opened", ["vm:web1"], ["vm:db1"], ["tcp 5432"])]
    assert flows[0]["new"]["decided_by"]["rule"] == "web-db"
    shown = client.get("/api/v1/revisions/2", headers=tokens.header("viewer")).json()
    assert shown["diff"] == revision["diff"] and "web-db" in shown["documents"]["policy.yaml"]


def test_a_targeted_change_keeps_other_documents_byte_for_byte(client: TestClient, tokens: Tokens) -> None:
    documents = three_tier_documents()
    text = documents.pop("policy.yaml")
    head, vms = text.split("\nvms:\n")
    documents = {"base.yaml": head + "\n", "vms.yaml": "vms:\n" + vms}
    assert client.put("/api/v1/policy", json={"documents": documents}, headers=tokens.header("admin")).status_code == 201
    assert add_rule(client, tokens, "db1", WEB_TO_DB).status_code == 201
    after = client.get("/api/v1/policy", headers=tokens.header("admin")).json()["documents"]
    assert after["base.yaml"] == documents["base.yaml"]
    assert "web-db" in after["vms.yaml"]


def test_moving_a_vm_to_another_zone(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    response = client.put("/api/v1/vms/web1/zone", json={"zone": "app", "message": "web1 joins app"}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    revision = response.json()["revision"]
    assert revision["change"] == {"op": "move-vm", "target": "vms.web1", "from": "dmz", "to": "app"}
    changes = {(f["change"], tuple(f["from"]), tuple(f["to"])) for f in revision["diff"]["flows"]}
    assert ("closed", ("any",), ("vm:web1",)) in changes or any(c == "closed" and "vm:web1" in to for c, _, to in changes)


def test_removing_a_rule_by_id(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    assert add_rule(client, tokens, "db1", WEB_TO_DB).status_code == 201
    response = client.delete("/api/v1/vms/db1/rules/web-db", params={"message": "undo"}, headers=tokens.header("admin"))
    assert response.status_code == 201
    assert [f["change"] for f in response.json()["revision"]["diff"]["flows"]] == ["closed"]
    assert client.delete("/api/v1/vms/db1/rules/web-db", headers=tokens.header("admin")).status_code == 404


def test_zone_rules(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    rule = {"id": "db-ping", "direction": "in", "action": "accept", "service": "ping"}
    response = client.post("/api/v1/zones/db/rules", json={"rule": rule, "position": 0}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    assert response.json()["revision"]["change"]["position"] == 0
    assert client.post("/api/v1/zones/db/rules", json={"rule": rule}, headers=tokens.header("admin")).status_code == 409  # same id twice
    assert client.delete("/api/v1/zones/db/rules/db-ping", headers=tokens.header("admin")).status_code == 201


def test_an_invalid_change_is_refused_with_file_line_col_and_nothing_changes(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    response = add_rule(client, tokens, "db1", {"id": "bad", "direction": "in", "action": "acept", "tcp": 5432})
    assert response.status_code == 422
    detail = response.json()["detail"]
    (problem,) = detail["problems"]
    assert problem["file"] == "policy.yaml" and problem["line"] > 0 and problem["col"] > 0
    assert problem["key"].endswith(".action") and "acept" in problem["message"]
    assert problem["text"].startswith(f"policy.yaml:{problem['line']}:{problem['col']}: ")
    edited = detail["edited"]["policy.yaml"].splitlines()
    assert "acept" in edited[problem["line"] - 1]  # the position points into the document shown
    assert current(client, tokens) == 1
    assert len(client.get("/api/v1/revisions", headers=tokens.header("viewer")).json()) == 1


def test_an_invalid_upload_is_refused_and_the_current_revision_stays(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    documents = {"policy.yaml": "version: 1\nvms:\n  web1: {host: nowhere, nics: []}\n"}
    response = client.put("/api/v1/policy", json={"documents": documents}, headers=tokens.header("admin"))
    assert response.status_code == 422
    assert any(p["file"] == "policy.yaml" and p["line"] == 3 for p in response.json()["detail"]["problems"])
    assert client.get("/api/v1/policy", headers=tokens.header("viewer")).json()["documents"] == three_tier_documents()


def test_bad_document_names_are_refused(client: TestClient, tokens: Tokens) -> None:
    for name in ("../etc/passwd.yaml", "/abs.yaml", ".hidden.yaml", "notyaml.txt", "a/../b.yaml"):
        response = client.put("/api/v1/policy", json={"documents": {name: "version: 1\n"}}, headers=tokens.header("admin"))
        assert response.status_code == 422, name
    assert client.get("/api/v1/policy", headers=tokens.header("viewer")).status_code == 409  # still no policy


def test_unknown_targets_and_stale_base_revision(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    assert add_rule(client, tokens, "nosuchvm", WEB_TO_DB).status_code == 404
    assert client.put("/api/v1/vms/web1/zone", json={"zone": "nosuchzone"}, headers=tokens.header("admin")).status_code == 422
    assert add_rule(client, tokens, "db1", WEB_TO_DB, base_revision=7).status_code == 409
    assert add_rule(client, tokens, "db1", WEB_TO_DB, base_revision=1).status_code == 201


def test_single_documents_can_be_added_and_removed(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    extra = "groups:\n  partners: [198.51.100.0/24]\n"
    response = client.put("/api/v1/policy/documents/extra/groups.yaml", json={"text": extra}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    assert client.get("/api/v1/policy", headers=tokens.header("viewer")).json()["documents"]["extra/groups.yaml"] == extra
    assert client.delete("/api/v1/policy/documents/extra/groups.yaml", headers=tokens.header("admin")).status_code == 201
    assert client.delete("/api/v1/policy/documents/extra/groups.yaml", headers=tokens.header("admin")).status_code == 404


def test_rollback_is_a_new_revision_with_the_old_documents(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    add_rule(client, tokens, "db1", WEB_TO_DB)
    response = client.post("/api/v1/revisions/1/rollback", json={"message": "undo web-db"}, headers=tokens.header("admin"))
    assert response.status_code == 201
    revision = response.json()["revision"]
    assert (revision["number"], revision["kind"], revision["rollback_of"]) == (3, "rollback", 1)
    assert revision["content_hash"] == uploaded["revision"]["content_hash"]
    assert [f["change"] for f in revision["diff"]["flows"]] == ["closed"]
    history = client.get("/api/v1/revisions", headers=tokens.header("viewer")).json()
    assert [r["number"] for r in history] == [3, 2, 1]
    assert [r["number"] for r in client.get("/api/v1/revisions", params={"before": 3, "limit": 1}, headers=tokens.header("viewer")).json()] == [2]
    assert client.post("/api/v1/revisions/99/rollback", json={}, headers=tokens.header("admin")).status_code == 404


def test_revision_documents_are_immutable_json(client: TestClient, tokens: Tokens, uploaded: dict, controller) -> None:
    add_rule(client, tokens, "db1", WEB_TO_DB)
    first = controller.revisions.get(1)
    assert controller.revisions.documents_of(first) == three_tier_documents()


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/policy", "/api/v1/vms/{vm}/rules", "/api/v1/vms/{vm}/zone", "/api/v1/revisions/{number}/rollback", "/api/v1/nodes/{node}/desired", "/api/v1/tokens"):
        assert path in paths
