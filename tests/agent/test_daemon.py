"""The agent daemon against a real controller (HTTP) and the fake kernel."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.controller.live import live_controller, three_tier_documents
from zonewall.agent.daemon import Agent, AgentConfig
from zonewall.dataplane.fake import FakeBackend

RULE = {"id": "web-db", "direction": "in", "action": "accept", "from": "vm:web1", "tcp": 5432}


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def start(config: AgentConfig, backend: FakeBackend) -> tuple[Agent, threading.Thread]:
    agent = Agent(config, backend=backend)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    assert agent.ready.wait(10)
    return agent, thread


def zonewall_rules(backend: FakeBackend) -> str:
    return str(backend.list_table("inet", "zonewall"))


def test_follow_apply_report_and_survive_the_controller(tmp_path: Path) -> None:
    backend = FakeBackend()
    with live_controller(tmp_path / "ctl") as live:
        admin = live.tokens.header("admin")
        config = AgentConfig(live.url, "node2", live.tokens.node2, tmp_path / "agent", monitor=False, observe=False, long_poll=5)
        agent, thread = start(config, backend)
        try:
            httpx.put(live.url + "/api/v1/policy", json={"documents": three_tier_documents()}, headers=admin).raise_for_status()
            eventually(lambda: agent.enforcer.state is not None and agent.enforcer.state.revision == 1)
            eventually(lambda: httpx.get(live.url + "/api/v1/nodes/node2", headers=admin).json()["in_sync"])
            eventually(lambda: backend.caches_released >= 1)  # after its apply, the agent lets libnftables' cache go

            started = time.monotonic()
            httpx.post(live.url + "/api/v1/vms/db1/rules", json={"rule": RULE}, headers=admin, timeout=30).raise_for_status()
            eventually(lambda: "web-db" in zonewall_rules(backend))
            assert time.monotonic() - started < 4  # pushed by the long-poll, not found by polling (every 5 s); slack for a busy machine

            node = httpx.get(live.url + "/api/v1/nodes/node2", headers=admin).json()
            eventually(lambda: httpx.get(live.url + "/api/v1/nodes/node2", headers=admin).json()["applied_revision"] == 2)
            logs = httpx.get(live.url + "/api/v1/nodes/node2/logs", headers=admin).json()
            assert any("revision 2 applied" in line["message"] for line in logs)
            assert node["taps"] == {"db1/0": "db1i0 (default)"}
        finally:
            agent.stop()
            thread.join(10)
    # the controller is gone: a restarted agent restores its last state from disk
    flushed = FakeBackend()
    restarted, thread = start(AgentConfig("http://127.0.0.1:9", "node2", "zw_x", tmp_path / "agent", monitor=False, observe=False), flushed)
    try:
        assert "web-db" in zonewall_rules(flushed)
        assert restarted.enforcer.state is not None and restarted.enforcer.state.revision == 2
    finally:
        restarted.stop()
        thread.join(10)


def test_a_node_missing_from_the_policy_keeps_its_rules(tmp_path: Path) -> None:
    backend = FakeBackend()
    with live_controller(tmp_path / "ctl") as live:
        admin = live.tokens.header("admin")
        httpx.put(live.url + "/api/v1/policy", json={"documents": three_tier_documents()}, headers=admin).raise_for_status()
        agent, thread = start(AgentConfig(live.url, "node2", live.tokens.node2, tmp_path / "agent", monitor=False, observe=False, long_poll=5), backend)
        try:
            eventually(lambda: agent.enforcer.state is not None)
            before = zonewall_rules(backend)
            documents = three_tier_documents()
            text = documents["policy.yaml"]
            text = text.replace('  node2: {address: [192.168.100.12, "fd00:100::12"], uplink: eth0}\n', "").replace("host: node2", "host: node1")
            response = httpx.put(live.url + "/api/v1/policy", json={"documents": {"policy.yaml": text}}, headers=admin, timeout=30)
            assert response.status_code == 201, response.text
            eventually(lambda: httpx.get(live.url + "/api/v1/nodes/node2", headers=admin).json()["state"] == "error")
            node = httpx.get(live.url + "/api/v1/nodes/node2", headers=admin).json()
            assert "no host 'node2'" in node["last_error"] and node["in_policy"] is False
            assert zonewall_rules(backend) == before
        finally:
            agent.stop()
            thread.join(10)
