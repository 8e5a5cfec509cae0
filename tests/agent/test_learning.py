"""The agent keeps what learning NICs learned across re-applies, restarts and flushes."""

from __future__ import annotations

import json
from pathlib import Path

from zonewall.agent import learning
from zonewall.agent.enforcer import Desired, Enforcer
from zonewall.agent.state import StateStore
from zonewall.dataplane.fake import FakeBackend
from zonewall.policy.documents import content_hash

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "guard-learning" / "policy.yaml"


def desired(text: str | None = None, revision: int = 1) -> Desired:
    documents = {"policy.yaml": text if text is not None else SCENARIO.read_text()}
    return Desired(revision, documents, content_hash(documents))


def enforcer(backend: FakeBackend, state_dir: Path) -> Enforcer:
    return Enforcer(backend, "node1", StateStore(state_dir), discover=lambda policy, node: {}, timezone=lambda: "UTC")


def learn(backend: FakeBackend, set_name: str, address: str) -> None:
    """What the packet path does: `add @learned4-PORT { ip saddr }`."""
    backend.run([{"add": {"element": {"family": "bridge", "table": "zonewall", "name": set_name, "elem": [address]}}}])


def in_kernel(backend: FakeBackend, set_name: str) -> list[str]:
    return (learning.read_kernel(backend) or {}).get(set_name, [])


def test_learned_address_survives_reapply_restart_and_flush(tmp_path: Path) -> None:
    backend = FakeBackend()
    agent = enforcer(backend, tmp_path)
    agent.enforce(desired())
    assert in_kernel(backend, "learned4-dyni0") == []
    learn(backend, "learned4-dyni0", "10.60.1.50")
    # a new revision: a full replace would recreate the set empty without the agent
    assert agent.enforce(desired(revision=2)).mode in ("full", "incremental", "unchanged")
    assert in_kernel(backend, "learned4-dyni0") == ["10.60.1.50"]
    saved = json.loads((tmp_path / learning.LEARNED_FILE).read_text())
    assert saved["learned"] == [{"ipv4": ["10.60.1.50"], "nic": 0, "vm": "dyn"}]
    assert agent.repair() is None  # learned elements are not drift
    # reboot / `nft flush ruleset`: restored from the state directory
    flushed = FakeBackend()
    restarted = enforcer(flushed, tmp_path)
    assert "restored" in restarted.restore()
    assert in_kernel(flushed, "learned4-dyni0") == ["10.60.1.50"]
    assert in_kernel(flushed, "learned4-nosubi0") == []


def test_kernel_wins_over_saved_and_stale_entries_go(tmp_path: Path) -> None:
    learning.save(tmp_path, "node1", {("dyn", 0): ["10.60.1.50"], ("gone", 0): ["10.9.9.9"]})
    backend = FakeBackend()
    agent = enforcer(backend, tmp_path)
    agent.enforce(desired())
    assert in_kernel(backend, "learned4-dyni0") == ["10.60.1.50"]  # no table yet: the saved one
    assert learning.load(tmp_path, "node1") == {("dyn", 0): ["10.60.1.50"]}  # `gone` is no learning NIC here
    # an operator releases the lock: `nft flush set bridge zonewall learned4-dyni0`
    backend.run([{"flush": {"set": {"family": "bridge", "table": "zonewall", "name": "learned4-dyni0"}}}])
    agent.enforce(desired(revision=2))
    assert in_kernel(backend, "learned4-dyni0") == [] and learning.load(tmp_path, "node1") == {}
    # the NIC gets `ips`: no longer learning, nothing kept
    learn(backend, "learned4-dyni0", "10.60.1.60")
    text = SCENARIO.read_text().replace('mac: "52:54:00:60:01:0a"}', 'mac: "52:54:00:60:01:0a", ips: [10.60.1.60]}')
    agent.enforce(desired(text, revision=3))
    assert "learned4-dyni0" not in (learning.read_kernel(backend) or {})
    assert ("dyn", 0) not in learning.load(tmp_path, "node1")


def test_unreadable_or_foreign_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / learning.LEARNED_FILE).write_text("{not json")
    assert learning.load(tmp_path, "node1") == {}
    learning.save(tmp_path, "node2", {("dyn", 0): ["10.60.1.50"]})
    assert learning.load(tmp_path, "node1") == {}
