"""Agents on their node's documents: deltas, revision-only answers, restart from disk,
and a VM arriving by the libvirt hook."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.agent.test_daemon import eventually, start
from tests.controller.live import live_controller
from tests.controller.test_node_payload import edit_vm_rule, synth_documents
from zonewall.agent.client import ControllerClient
from zonewall.agent.daemon import AgentConfig
from zonewall.agent.migrate_steps import HookRequests
from zonewall.compiler.node import compile_node
from zonewall.compiler.schedule import local_timezone
from zonewall.dataplane.fake import FakeBackend
from zonewall.policy.documents import load_documents
from zonewall.policy.scope import is_scoped


def full_compile(documents: dict[str, str], node: str):  # type: ignore[no-untyped-def]
    return compile_node(load_documents(documents), node, timezone=local_timezone())


def test_agents_apply_deltas_skip_unaffected_revisions_and_restore_from_disk(tmp_path: Path) -> None:
    backends = {"node1": FakeBackend(), "node2": FakeBackend()}
    first = synth_documents()
    second = edit_vm_rule(first, "vm1")  # vm1 is on node2
    with live_controller(tmp_path / "ctl") as live:
        admin = live.tokens.header("admin")
        agents = {node: start(AgentConfig(live.url, node, getattr(live.tokens, node), tmp_path / node, monitor=False, observe=False, long_poll=5),
                              backends[node]) for node in backends}
        try:
            httpx.put(live.url + "/api/v1/policy", json={"documents": first}, headers=admin, timeout=30).raise_for_status()
            for node, (agent, _) in agents.items():
                eventually(lambda agent=agent: agent.enforcer.state is not None and agent.enforcer.state.revision == 1)
                assert is_scoped(agent.enforcer.state.documents)  # type: ignore[union-attr]
                assert agent.enforcer.ruleset == full_compile(first, node)
            untouched = agents["node1"][0].enforcer.ruleset

            httpx.put(live.url + "/api/v1/policy", json={"documents": second}, headers=admin, timeout=30).raise_for_status()
            for agent, _ in agents.values():
                eventually(lambda agent=agent: agent.enforcer.state is not None and agent.enforcer.state.revision == 2)
            assert agents["node2"][0].enforcer.ruleset == full_compile(second, "node2") != full_compile(first, "node2")
            assert agents["node1"][0].enforcer.ruleset is untouched  # only the revision number was new: nothing compiled
            eventually(lambda: all(httpx.get(f"{live.url}/api/v1/nodes/{node}", headers=admin).json()["in_sync"] for node in backends))

            # a VM migrating here by the libvirt hook brings its own rules from the controller
            applied: list[dict[str, str]] = []
            enforcer = agents["node1"][0].enforcer
            hook = HookRequests("node1", enforcer, applied.append, lambda text: None, lambda: ControllerClient(live.url, live.tokens.node1, "node1"))
            assert hook("qemu vm1 migrate begin -").startswith("ok vm1's rules installed")
            arrived = load_documents(applied[0]).doc.vms["vm1"]
            assert arrived.host == "node1" and len(arrived.rules) == 20
        finally:
            for agent, thread in agents.values():
                agent.stop()
                thread.join(10)
    # the controller is gone: the hook refuses rather than let vm1 arrive without its rules
    offline = HookRequests("node1", enforcer, applied.append, lambda text: None, lambda: ControllerClient("http://127.0.0.1:9", "zw_x", "node1"))
    assert offline("qemu vm1 migrate begin -").startswith("error") and len(applied) == 1
    # and a restarted agent restores its node's documents from disk
    flushed = FakeBackend()
    restarted, thread = start(AgentConfig("http://127.0.0.1:9", "node2", "zw_x", tmp_path / "node2", monitor=False, observe=False), flushed)
    try:
        assert restarted.enforcer.state is not None and restarted.enforcer.state.revision == 2
        assert restarted.enforcer.ruleset == full_compile(second, "node2")
        assert "vm-vm1-in" in str(flushed.list_table("inet", "zonewall"))  # back in the emptied kernel
    finally:
        restarted.stop()
        thread.join(10)
