"""What an agent, a stranger or a careless caller can send the controller (issue 17).

Each case reproduces a finding of an adversarial probe: it failed on the controller
before this was built (500s, data about other nodes accepted, a stale long-poll
answered, a refused status leaving the node `ok`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.controller.live import Tokens, three_tier_documents
from zonewall.controller.app import create_app
from zonewall.controller.limits import RequestLimits
from zonewall.controller.replica import Controller


def record(t: float, **kw: object) -> dict:
    base = {"time": t, "vm": "db1", "nic": "db1/0", "direction": "in", "family": "ipv4", "src": "10.0.1.10", "dst": "10.0.2.30",
            "proto": "tcp", "sport": 40000, "dport": 5432, "verdict": "drop", "rule": "default-in", "scope": "db1", "level": "default"}
    return {**base, **kw}


def post_records(client: TestClient, tokens: Tokens, node: str, records: list[dict]) -> dict:
    response = client.post(f"/api/v1/nodes/{node}/records", json={"batch_id": uuid.uuid4().hex, "records": records}, headers=tokens.header(node))
    assert response.status_code == 200, response.text
    return response.json()


def test_an_agent_speaks_only_for_its_own_nodes_vms(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    now = time.time()
    answer = post_records(client, tokens, "node1", [record(now), record(now, vm="web1", scope="web1", dst="10.0.1.10")])
    assert answer["stored"] == 1 and answer["refused"] == 1  # db1 runs on node2
    found = client.get("/api/v1/logs", headers=tokens.header("viewer")).json()["records"]
    assert [(r["vm"], r["node"]) for r in found] == [("web1", "node1")]
    counters = {"counters": [{"level": "default", "scope": "db1", "direction": "in", "rule": "default-in", "verdict": "drop", "packets": 123456, "bytes": 1},
                             {"level": "default", "scope": "web1", "direction": "in", "rule": "default-in", "verdict": "drop", "packets": 7, "bytes": 1}]}
    assert client.put("/api/v1/nodes/node1/counters", json=counters, headers=tokens.header("node1")).status_code == 204
    metrics = client.get("/metrics", headers=tokens.header("viewer")).text
    assert 'zonewall_vm_dropped_packets_total{node="node1",vm="web1"} 7.0' in metrics
    assert 'vm="db1"' not in metrics


def test_records_from_a_wrong_clock_are_stored_at_their_arrival_and_flagged(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    now = time.time()
    year_ahead, month_behind = now + 365 * 86400, now - 31 * 86400
    answer = post_records(client, tokens, "node2", [record(year_ahead, dport=1), record(month_behind, dport=2), record(now, dport=3)])
    assert answer == {"stored": 3, "duplicate": False, "refused": 0, "clamped": 2}
    found = {r["dport"]: r for r in client.get("/api/v1/logs", headers=tokens.header("viewer")).json()["records"]}
    assert set(found) == {1, 2, 3}  # none deleted by the retention at once
    assert abs(found[1]["time"] - now) < 60 and found[1]["agent_time"] == pytest.approx(year_ahead)
    assert abs(found[2]["time"] - now) < 60 and found[2]["agent_time"] == pytest.approx(month_behind)
    assert found[3]["agent_time"] is None and found[3]["time"] == pytest.approx(now)
    lines = client.get("/api/v1/nodes/node2/logs", headers=tokens.header("viewer")).json()
    assert any("check the node's clock" in line["message"] for line in lines)


def test_a_huge_error_still_puts_the_node_in_error(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    status = {"applied_revision": 1, "state": "error", "last_error": "nft: " + "add rule inet zonewall vm-db1-in x; " * 5000,
              "problems": ["packet log buffer: cannot write /var/lib/zonewall/agent/logs: No space left on device" + "!" * 2000]}
    assert client.put("/api/v1/nodes/node2/status", json=status, headers=tokens.header("node2")).status_code == 200
    node = client.get("/api/v1/nodes/node2", headers=tokens.header("viewer")).json()
    assert node["state"] == "error" and node["last_error"].startswith("nft: add rule") and len(node["last_error"]) < 4100
    assert len(node["problems"]) == 1 and node["problems"][0].startswith("packet log buffer: cannot write")
    metrics = client.get("/metrics", headers=tokens.header("viewer")).text
    assert 'zonewall_node_state{node="node2",state="error"} 1.0' in metrics and 'zonewall_node_problems{node="node2"} 1.0' in metrics


def test_a_degraded_node_is_in_sync_and_shows_its_problems(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    status = {"applied_revision": 1, "state": "degraded", "problems": ["packet log collector: OSError: boom (restarted in 0.5 s)"]}
    assert client.put("/api/v1/nodes/node1/status", json=status, headers=tokens.header("node1")).status_code == 200
    node = client.get("/api/v1/nodes/node1", headers=tokens.header("viewer")).json()
    assert node["state"] == "degraded" and node["in_sync"] and node["problems"] == status["problems"]


def test_an_agent_cannot_make_every_node_listing_huge(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    taps = {f"vm{i}/0": "t" * 15 for i in range(5000)}
    assert client.put("/api/v1/nodes/node1/status", json={"state": "ok", "taps": taps}, headers=tokens.header("node1")).status_code == 422
    long_name = {"web1/0": "x" * 100}
    assert client.put("/api/v1/nodes/node1/status", json={"state": "ok", "taps": long_name}, headers=tokens.header("node1")).status_code == 422


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/api/v1/revisions/99999999999999999999999999", None),
    ("POST", "/api/v1/revisions/99999999999999999999999999/rollback", {"message": ""}),
    ("DELETE", "/api/v1/tokens/99999999999999999999999999", None),
    ("GET", "/api/v1/nodes/node1/desired?after=99999999999999999999999999", None),
    ("POST", "/api/v1/vms/web1/rules", {"rule": {"direction": "in", "action": "accept", "tcp": 80}, "position": 10**30}),
    ("PUT", "/api/v1/policy", {"documents": three_tier_documents(), "base_revision": 10**30}),
])
def test_huge_numbers_are_the_callers_mistake_not_a_crash(client: TestClient, tokens: Tokens, uploaded: dict, method: str, path: str, body: dict | None) -> None:
    response = client.request(method, path, json=body, headers=tokens.header("admin"))
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])


def test_a_document_cannot_also_be_a_folder(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    documents = {"p.yaml": "version: 1\n", "p.yaml/x.yaml": "version: 1\n"}
    response = client.put("/api/v1/policy", json={"documents": documents}, headers=tokens.header("admin"))
    assert response.status_code == 422
    assert "is a document and also the folder of 'p.yaml/x.yaml'" in response.text


def test_a_long_poll_opened_before_a_revocation_gets_no_revision(client: TestClient, tokens: Tokens, controller: Controller, uploaded: dict) -> None:
    from zonewall.controller.store.tokens import list_tokens

    answers: list[object] = []

    def wait() -> None:
        answers.append(client.get("/api/v1/nodes/node1/desired", params={"after": 1, "wait": 20}, headers=tokens.header("node1")))

    poller = threading.Thread(target=wait)
    poller.start()
    time.sleep(1.0)
    agent = next(t for t in list_tokens(controller.sessions) if t.role == "agent" and t.node == "node1")
    assert controller.tokens.revoke(agent.id)  # through this controller: at once (elsewhere: tests/controller/test_token_cache.py)
    documents = three_tier_documents()
    documents["policy.yaml"] = documents["policy.yaml"].replace("service: https}", "service: https, log: true}")
    assert client.put("/api/v1/policy", json={"documents": documents}, headers=tokens.header("admin")).status_code == 201
    poller.join(30)
    response = answers[0]
    assert response.status_code == 401, response.text  # type: ignore[attr-defined]
    assert "documents" not in response.text  # type: ignore[attr-defined]


# -------------------------------------------------------------------- before authentication


def test_a_large_body_is_refused_before_it_is_read(controller: Controller) -> None:
    with TestClient(create_app(controller, RequestLimits(max_body=1024 * 1024))) as client:
        big = b"x" * (2 * 1024 * 1024)
        response = client.put("/api/v1/policy", content=big, headers={"content-type": "application/json"})
        assert response.status_code == 413
        small = json.dumps({"documents": {"a.yaml": "version: 1\n"}}).encode()
        response = client.put("/api/v1/policy", content=small, headers={"content-type": "application/json"})
        assert response.status_code == 401  # no token: refused before the body is read

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(3):
                yield b"y" * (1024 * 1024)

        response = client.put("/api/v1/policy", content=chunks(), headers={"content-type": "application/json", "authorization": "Bearer zw_nope"})
        assert response.status_code in (401, 413)
        assert client.post("/ui/login", content=b"token=" + b"a" * (2 * 1024 * 1024)).status_code == 413


def test_logins_are_rate_limited_per_client(controller: Controller) -> None:
    with TestClient(create_app(controller, RequestLimits(login_per_minute=5))) as client:
        codes = [client.post("/ui/login", data={"token": "zw_wrong", "csrf": "x"}).status_code for _ in range(8)]
        assert codes[:5] == [403] * 5 and codes[5:] == [429] * 3
        limited = client.post("/ui/login", data={"token": "zw_wrong"})
        assert int(limited.headers["retry-after"]) >= 1


def test_policy_writes_are_rate_limited_per_client(controller: Controller, tokens: Tokens) -> None:
    with TestClient(create_app(controller, RequestLimits(writes_per_minute=3))) as client:
        body = {"documents": three_tier_documents()}
        codes = [client.put("/api/v1/policy", json=body, headers=tokens.header("admin")).status_code for _ in range(5)]
        assert codes[:3] == [201, 200, 200] and codes[3:] == [429, 429]
        assert client.get("/api/v1/revisions", headers=tokens.header("viewer")).status_code == 200  # reads are not limited


def test_reads_stay_fast_while_policy_writers_queue(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """60 writers waiting for the database (SQLite: one writer at a time) once held
    every worker thread: a plain read took 18.9 s. Writers now wait on the event loop."""
    import sqlite3

    import httpx

    from tests.controller.live import live_controller

    with live_controller(tmp_path) as live:
        headers = live.tokens.header("admin")
        assert httpx.put(live.url + "/api/v1/policy", json={"documents": three_tier_documents()}, headers=headers, timeout=30).status_code == 201
        holder = sqlite3.connect(tmp_path / "zonewall.db", timeout=30)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
        results: list[int] = []

        def write(i: int) -> None:
            documents = three_tier_documents()
            documents["policy.yaml"] = documents["policy.yaml"].replace("service: https}", f"service: https, comment: w{i}}}")
            results.append(httpx.put(live.url + "/api/v1/policy", json={"documents": documents}, headers=headers, timeout=120).status_code)

        writers = [threading.Thread(target=write, args=(i,)) for i in range(60)]
        for thread in writers:
            thread.start()
        time.sleep(3.0)  # every writer has arrived and waits
        started = time.monotonic()
        read = httpx.get(live.url + "/api/v1/revisions", headers=live.tokens.header("viewer"), timeout=60)
        took = time.monotonic() - started
        holder.rollback()
        holder.close()
        for thread in writers:
            thread.join(120)
        assert read.status_code == 200
        assert took < 3.0, f"a read waited {took:.1f} s behind queued writers"
        assert sorted(set(results)) == [201] and len(results) == 60
