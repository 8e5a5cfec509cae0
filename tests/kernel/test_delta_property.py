"""Property: any sequence of changes, shipped to agents as node documents, deltas and
revision-only answers, leaves each node's kernel holding exactly what a full compile
of the final policy gives that node (compared with a fresh apply in another
namespace, by content). Agents validate rules edited in place, and rule lines added
or removed, from the policy they parsed last (the incremental path) and load anything
else whole: both are taken."""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.synth import policy_text
from tests.agent.test_daemon import eventually, start
from tests.controller.live import live_controller
from zonewall.agent.daemon import AgentConfig
from zonewall.compiler.node import compile_node
from zonewall.compiler.schedule import local_timezone
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import listing_hash
from zonewall.policy.documents import load_documents

NODES = ("node1", "node2")
OURS = [("inet", "zonewall"), ("bridge", "zonewall")]


def initial() -> str:
    """Ten VMs on two nodes; VM i has a rule `p{i}` and zone z0 a rule `zr` to edit."""
    text = policy_text(10, nodes=2, overrides={i: {0: f"{{id: p{i}, direction: in, action: accept, tcp: 1000}}"} for i in range(10)})
    text = text.replace("  z0:\n    rules:\n", "  z0:\n    rules:\n      - {id: zr, direction: in, action: accept, from: group:pg, tcp: 3000}\n", 1)
    return text.replace("groups:\n", "groups:\n  pg: [198.51.100.1]\n", 1)


def apply_edit(text: str, edit: tuple[str, int, int]) -> str:
    kind, vm, value = edit
    if kind == "port":  # in place: only the VM's node is affected
        return re.sub(rf"(id: p{vm}, direction: in, action: accept, tcp: )\d+", rf"\g<1>{1000 + value}", text)
    if kind == "add":  # a line more: every later position moves
        return text.replace(f"      - {{id: p{vm},", f"      - {{direction: in, action: accept, udp: {2000 + value}}}\n      - {{id: p{vm},", 1)
    if kind == "remove":  # the first added rule of the VM, if any
        return re.sub(rf"      - \{{direction: in, action: accept, udp: \d+\}}\n(      - \{{id: p{vm},)", r"\1", text, count=1)
    if kind == "zone":
        return re.sub(r"(id: zr, direction: in, action: accept, from: group:pg, tcp: )\d+", rf"\g<1>{3000 + value}", text)
    if kind == "group":
        return re.sub(r"(  pg: \[)[0-9.]+\]", rf"\g<1>198.51.100.{value % 250 + 1}]", text)
    assert kind == "move"  # the VM to the other node
    return re.sub(rf"(\n  vm{vm}:\n    host: )node(\d)", lambda m: f"{m.group(1)}node{3 - int(m.group(2))}", text)


EDITS = st.lists(st.tuples(st.sampled_from(["port", "port", "add", "remove", "zone", "group", "move"]), st.integers(0, 9), st.integers(1, 200)),
                 min_size=3, max_size=7)


def test_changes_shipped_as_deltas_end_in_the_full_compile(netns_factory: Callable[[], str]) -> None:
    namespaces = {node: netns_factory() for node in NODES}
    reference = netns_factory()
    kinds: Counter[str] = Counter()

    @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(edits=EDITS)
    def run(edits: list[tuple[str, int, int]]) -> None:
        with tempfile.TemporaryDirectory(prefix="zonewall-delta-") as tmp:
            work = Path(tmp)
            text = initial()
            with live_controller(work / "ctl") as live:
                admin = live.tokens.header("admin")
                agents = {node: start(AgentConfig(live.url, node, getattr(live.tokens, node), work / node, netns=ns, monitor=False, observe=False,
                                                  long_poll=5), LibNftBackend(netns=ns)) for node, ns in namespaces.items()}
                try:
                    revision = 0
                    for edit in [None, *edits]:
                        text = apply_edit(text, edit) if edit else text
                        response = httpx.put(live.url + "/api/v1/policy", json={"documents": {"policy.yaml": text}}, headers=admin, timeout=60)
                        assert response.status_code in (200, 201), response.text
                        revision = response.json()["revision"]["number"]
                        for agent, _ in agents.values():
                            eventually(lambda agent=agent: agent.enforcer.state is not None and agent.enforcer.state.revision == revision, 60)
                    final = load_documents({"policy.yaml": text})
                    for node, (agent, _) in agents.items():
                        assert agent.enforcer.last_error is None
                        expected = compile_node(final, node, timezone=local_timezone())
                        assert agent.enforcer.ruleset == expected
                        with LibNftBackend(netns=reference) as fresh:
                            apply_ruleset(fresh, expected)
                            want = listing_hash(fresh, OURS)
                        with LibNftBackend(netns=namespaces[node]) as kernel:
                            assert listing_hash(kernel, OURS) == want, f"{node} after {edits}"
                        kinds.update(agent.answers)
                        kinds.update({f"load {how}": n for how, n in agent.enforcer.loads.items()})
                finally:
                    for agent, thread in agents.values():
                        agent.stop()
                        thread.join(10)

    run()
    assert kinds["delta"] and kinds["same"] and kinds["documents"], kinds  # every path was taken
    assert kinds["load edited"] and kinds["load whole"], kinds  # rules edited, added or removed were validated from the last policy
