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


def test_a_commit_answers_the_nodes_it_changes_before_its_diff_and_the_others_after(tmp_path: Path, db_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A revision is published first to the nodes whose documents it changes, and to
    the others (their agents have nothing to apply) once the commit's diff is done."""
    with live_controller(tmp_path, db_url) as live:
        admin = live.tokens.header("admin")
        documents = three_tier_documents()
        httpx.put(live.url + "/api/v1/policy", json={"documents": documents}, headers=admin).raise_for_status()
        diffs = live.controller.revisions.diffs
        original = diffs.run
        diffing: dict[int, tuple[float, float]] = {}

        def slow_run(number: int):  # type: ignore[no-untyped-def]
            started = time.monotonic()
            time.sleep(1.0)  # a diff at size takes this long
            try:
                return original(number)
            finally:
                diffing[number] = (started, time.monotonic())

        monkeypatch.setattr(diffs, "run", slow_run)
        # and the commit slow to work out which nodes it changes: our own NOTIFY
        # (PostgreSQL) arrives meanwhile and must not publish the revision to everyone
        from zonewall.controller.store.cache import NodeStates

        prepare = NodeStates.prepare

        def slow_prepare(self):  # type: ignore[no-untyped-def]
            time.sleep(0.5)
            return prepare(self)

        monkeypatch.setattr(NodeStates, "prepare", slow_prepare)

        def change(revision: int, commit) -> dict[str, tuple[dict, float]]:  # type: ignore[no-untyped-def]
            answers: dict[str, tuple[dict, float]] = {}
            have = {node: httpx.get(live.url + f"/api/v1/nodes/{node}/desired", headers=live.tokens.header(node)).json()["content_hash"]
                    for node in ("node1", "node2")}

            def wait(node: str) -> None:
                response = httpx.get(live.url + f"/api/v1/nodes/{node}/desired", params={"after": revision - 1, "wait": 30, "have": have[node]},
                                     headers=live.tokens.header(node), timeout=40)
                answers[node] = (response.json(), time.monotonic())

            waiters = [threading.Thread(target=wait, args=(node,)) for node in ("node1", "node2")]
            for waiter in waiters:
                waiter.start()
            time.sleep(0.3)
            response = commit()
            assert response.status_code == 201, response.text
            for waiter in waiters:
                waiter.join(timeout=10)
            assert all(answers[node][0]["revision"] == revision for node in ("node1", "node2"))
            return answers

        rule = {"id": "web-db", "direction": "in", "action": "accept", "from": "vm:web1", "tcp": 5432}
        httpx.post(live.url + "/api/v1/vms/db1/rules", json={"rule": rule}, headers=admin, timeout=30).raise_for_status()  # a line added: both change

        def put(old: str, new: str):  # type: ignore[no-untyped-def]
            current = httpx.get(live.url + "/api/v1/policy", headers=admin).json()["documents"]
            edited = {name: text.replace(old, new) for name, text in current.items()}
            assert edited != current
            return lambda: httpx.put(live.url + "/api/v1/policy", json={"documents": edited}, headers=admin, timeout=30)

        # db1's (node2's) rule edited in place: node1's documents stay as they were
        answers = change(3, put("tcp: 5432}", "tcp: 5433}"))
        started, ended = diffing[3]
        (changed, changed_at), (same, same_at) = answers["node2"], answers["node1"]
        assert changed["same"] is not True and "5433" in str(changed["delta"]) and changed_at < ended  # its change, before the diff's end
        assert same["same"] is True and same_at >= ended  # the revision number alone, after it
        # a group every node uses: both nodes change, both answered before the diff's end
        answers = change(4, put("admins: [192.168.100.0/24", "admins: [192.168.101.0/24"))
        started, ended = diffing[4]
        for node in ("node1", "node2"):
            answer, at = answers[node]
            assert answer["same"] is not True and at < ended, node
