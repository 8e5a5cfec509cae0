"""`?dry_run=true` on every policy write: the diff against the current revision, nothing committed."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.controller.live import Tokens, three_tier_documents

PARTNER = {"id": "partner-8443", "direction": "in", "action": "accept", "from": "203.0.113.10", "tcp": 8443}


def revisions(client: TestClient, tokens: Tokens) -> list[int]:
    return [r["number"] for r in client.get("/api/v1/revisions", headers=tokens.header("admin")).json()]


def test_a_dry_run_upload_answers_the_diff_and_commits_nothing(client: TestClient, tokens: Tokens) -> None:
    first = client.put("/api/v1/policy", params={"dry_run": "true"}, json={"documents": three_tier_documents(), "message": "m"}, headers=tokens.header("admin"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["dry_run"] is True and body["base_revision"] == 0 and body["identical"] is False
    assert body["documents"]["added"] == ["policy.yaml"]
    assert {e["endpoint"] for e in body["diff"]["endpoints"] if e["change"] == "added"} >= {"vm:web1 nic 0", "vm:db1 nic 0"}
    assert revisions(client, tokens) == []  # nothing committed, no agent told


def test_a_dry_run_targeted_change_shows_the_opened_flow_and_the_revision_stays(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    answer = client.post("/api/v1/vms/web1/rules", params={"dry_run": "1"}, json={"rule": PARTNER, "message": "m"}, headers=tokens.header("admin"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["base_revision"] == 1 and body["documents"]["modified"] == ["policy.yaml"]
    flows = body["diff"]["flows"]
    assert len(flows) == 1 and flows[0]["change"] == "opened" and flows[0]["services"] == ["tcp 8443"]
    assert body["change"]["op"] == "add-rule"
    assert revisions(client, tokens) == [1]
    policy = client.get("/api/v1/policy", headers=tokens.header("admin")).json()
    assert "partner-8443" not in policy["documents"]["policy.yaml"]


def test_an_identical_dry_run_says_so(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    body = client.put("/api/v1/policy", params={"dry_run": "true"}, json={"documents": three_tier_documents()}, headers=tokens.header("admin")).json()
    assert body["identical"] is True and body["diff"]["identical"] is True


def test_a_dry_run_of_an_invalid_policy_is_refused_like_a_commit(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    bad = {"policy.yaml": three_tier_documents()["policy.yaml"].replace("service: postgres}", "service: nosuch}")}
    answer = client.put("/api/v1/policy", params={"dry_run": "true"}, json={"documents": bad}, headers=tokens.header("admin"))
    assert answer.status_code == 422
    assert any("nosuch" in p["text"] for p in answer.json()["detail"]["problems"])


def test_a_dry_run_rollback_and_a_viewer(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    assert client.post("/api/v1/vms/web1/rules", json={"rule": PARTNER, "message": "m"}, headers=tokens.header("admin")).status_code == 201
    body = client.post("/api/v1/revisions/1/rollback", params={"dry_run": "true"}, json={}, headers=tokens.header("admin")).json()
    assert body["base_revision"] == 2 and [f["change"] for f in body["diff"]["flows"]] == ["closed"]
    assert revisions(client, tokens) == [2, 1]
    refused = client.put("/api/v1/policy", params={"dry_run": "true"}, json={"documents": three_tier_documents()}, headers=tokens.header("viewer"))
    assert refused.status_code == 403


def test_a_dry_run_hands_the_interpreter_over_often_while_it_computes(client: TestClient, tokens: Tokens, uploaded: dict, monkeypatch) -> None:
    import sys

    from zonewall.controller import preview
    from zonewall.handover import QUICK_INTERVAL

    seen: list[float] = []
    real = preview.diff_policies

    def watched(*args, **kwargs):
        seen.append(sys.getswitchinterval())
        return real(*args, **kwargs)

    monkeypatch.setattr(preview, "diff_policies", watched)
    before = sys.getswitchinterval()
    answer = client.post("/api/v1/vms/web1/rules", params={"dry_run": "1"}, json={"rule": PARTNER, "message": "m"}, headers=tokens.header("admin"))
    assert answer.status_code == 200, answer.text
    assert seen == [pytest.approx(QUICK_INTERVAL)] and sys.getswitchinterval() == before
