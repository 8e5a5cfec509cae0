"""Agents wait for a change instead of polling: the answer comes at the commit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.controller.live import live_controller, three_tier_documents, three_tier_node_documents


def test_desired_answers_at_once_when_the_caller_is_behind(tmp_path: Path, db_url: str) -> None:
    with live_controller(tmp_path, db_url) as live:
        admin, agent = live.tokens.header("admin"), live.tokens.header("node1")
        httpx.put(live.url + "/api/v1/policy", json={"documents": three_tier_documents()}, headers=admin).raise_for_status()
        started = time.monotonic()
        answer = httpx.get(live.url + "/api/v1/nodes/node1/desired", params={"after": 0, "wait": 30}, headers=agent, timeout=40).json()
        assert time.monotonic() - started < 2
        assert answer["changed"] is True and answer["revision"] == 1 and answer["in_policy"] is True
        assert answer["documents"] == three_tier_node_documents("node1")


def test_a_waiting_agent_is_woken_by_the_commit_and_times_out_otherwise(tmp_path: Path, db_url: str) -> None:
    with live_controller(tmp_path, db_url) as live:
        admin, agent = live.tokens.header("admin"), live.tokens.header("node2")
        httpx.put(live.url + "/api/v1/policy", json={"documents": three_tier_documents()}, headers=admin).raise_for_status()

        started = time.monotonic()
        idle = httpx.get(live.url + "/api/v1/nodes/node2/desired", params={"after": 1, "wait": 0.5}, headers=agent, timeout=10).json()
        assert idle["changed"] is False and idle["documents"] is None and 0.45 < time.monotonic() - started < 3

        box: dict = {}

        def wait() -> None:
            response = httpx.get(live.url + "/api/v1/nodes/node2/desired", params={"after": 1, "wait": 30}, headers=agent, timeout=40)
            box["answer"], box["at"] = response.json(), time.monotonic()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.5)
        assert "answer" not in box  # still waiting
        rule = {"id": "web-db", "direction": "in", "action": "accept", "from": "vm:web1", "tcp": 5432}
        response = httpx.post(live.url + "/api/v1/vms/db1/rules", json={"rule": rule}, headers=admin, timeout=30)
        committed = time.monotonic()
        waiter.join(timeout=10)
        assert box["answer"]["changed"] is True and box["answer"]["revision"] == 2
        assert box["at"] - committed < 0.5  # woken by the commit (it may even precede the response)
        assert response.status_code == 201
        node = httpx.get(live.url + "/api/v1/nodes/node2", headers=admin).json()
        assert node["last_contact"] is not None  # long-polls count as contact
