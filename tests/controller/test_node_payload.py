"""What a node is sent: its own documents, the revision number alone, or a delta."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bench.synth import policy_text
from tests.controller.live import Tokens
from zonewall.compiler.node import compile_node
from zonewall.controller import api_nodes
from zonewall.controller.api_nodes import desired_answer
from zonewall.controller.app import Controller
from zonewall.policy.delta import apply_delta
from zonewall.policy.documents import content_hash, load_documents
from zonewall.policy.scope import Scoper

PROTOCOL = {"protocol": 2}


def synth_documents(vms: int = 12) -> dict[str, str]:
    """A synthetic policy on node1 and node2, every VM with 20 rules."""
    return {"policy.yaml": policy_text(vms, nodes=2)}


def edit_vm_rule(documents: dict[str, str], vm: str) -> dict[str, str]:
    """One rule of `vm` changed in place (no line moves): its ssh port."""
    text = documents["policy.yaml"]
    at = text.index(f"\n  {vm}:\n")
    rule = text.index(", tcp: 22}", at)
    assert rule < text.find("\n  vm", at + 3) or text.find("\n  vm", at + 3) == -1, "the edit stays inside the VM"
    return {"policy.yaml": text[:rule] + ", tcp: 2222}" + text[rule + len(", tcp: 22}"):]}


def first_group_grown(documents: dict[str, str]) -> dict[str, str]:
    """The first group's line (every node keeps it) with one more member."""
    text = documents["policy.yaml"]
    group = text[text.index("\ngroups:\n") + len("\ngroups:\n"):].split("\n", 1)[0]
    return {"policy.yaml": text.replace(group, group.replace("[", "[203.0.113.77, ", 1), 1)}


def upload(client: TestClient, tokens: Tokens, documents: dict[str, str]) -> int:
    response = client.put("/api/v1/policy", json={"documents": documents}, headers=tokens.header("admin"))
    assert response.status_code == 201, response.text
    return int(response.json()["revision"]["number"])


def ask(client: TestClient, tokens: Tokens, node: str, **params: object) -> dict:
    response = client.get(f"/api/v1/nodes/{node}/desired", params={**PROTOCOL, **params}, headers=tokens.header(node))
    assert response.status_code == 200, response.text
    return response.json()


def test_each_node_gets_its_own_documents_and_unaffected_nodes_only_the_revision(client: TestClient, tokens: Tokens, controller: Controller) -> None:
    first = synth_documents()
    upload(client, tokens, first)
    full = load_documents(first)
    got = {node: ask(client, tokens, node) for node in ("node1", "node2")}
    for node, answer in got.items():
        assert answer["changed"] and answer["protocol"] == 2 and not answer["same"] and answer.get("delta") is None
        assert content_hash(answer["documents"]) == answer["content_hash"] != content_hash(first)
        assert compile_node(load_documents(answer["documents"]), node) == compile_node(full, node)  # as a full compile
    # node1's documents hold its own VMs' rules, not node2's (vm0 is on node1, vm1 on node2)
    mine = load_documents(got["node1"]["documents"]).doc.vms
    assert len(mine["vm0"].rules) == 20 and mine["vm1"].rules == [] and len(got["node1"]["documents"]["policy.yaml"]) < len(first["policy.yaml"])
    view = controller.revisions.view(1)
    assert view is not None and view.states is not None
    built = view.states.built
    ask(client, tokens, "node1")
    assert view.states.built == built  # asked again: served from the cache, not built again

    second = edit_vm_rule(first, "vm1")  # a VM of node2
    upload(client, tokens, second)
    unaffected = client.get("/api/v1/nodes/node1/desired", params={**PROTOCOL, "after": 1, "have": got["node1"]["content_hash"]},
                            headers=tokens.header("node1"))
    assert len(unaffected.content) <= 1024
    body = unaffected.json()
    assert body["revision"] == 2 and body["same"] and body.get("documents") is None and body.get("delta") is None
    assert body["content_hash"] == got["node1"]["content_hash"]

    affected = ask(client, tokens, "node2", after=1, have=got["node2"]["content_hash"])
    assert affected["revision"] == 2 and not affected["same"] and affected.get("documents") is None
    delta = affected["delta"]
    assert delta["base"] == got["node2"]["content_hash"] and list(delta["changed"]) == ["policy.yaml"]
    assert len(str(delta)) < 1024
    documents = apply_delta(got["node2"]["documents"], delta)
    assert content_hash(documents) == affected["content_hash"]
    now = compile_node(load_documents(documents), "node2")
    assert now == compile_node(load_documents(second), "node2") != compile_node(full, "node2")

    # an agent whose documents are not the previous ones gets them whole
    stranger = ask(client, tokens, "node2", after=1, have="0" * 64)
    assert stranger.get("documents") is not None and content_hash(stranger["documents"]) == affected["content_hash"]


def test_a_commit_readies_the_unaffected_nodes_states_before_any_agent_asks(client: TestClient, tokens: Tokens, controller: Controller,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Which nodes a change leaves alone is worked out by the commit, before the agents
    are woken: their answers (the revision number) need no thread, and no answer waits
    for another's building."""
    first = synth_documents()
    upload(client, tokens, first)
    before = {node: ask(client, tokens, node) for node in ("node1", "node2")}
    upload(client, tokens, edit_vm_rule(first, "vm1"))  # node2's VM
    view = controller.revisions.view(2)
    assert view is not None and view.states is not None
    built = view.states.built
    carried = view.states.ready("node1")
    assert carried is not None and carried.content_hash == before["node1"]["content_hash"]  # carried over, nothing built
    changed_state = view.states.ready("node2")  # the one node it changes: built by the commit too
    assert changed_state is not None and changed_state.content_hash != before["node2"]["content_hash"] and view.states.built == built
    threads: list[object] = []
    real = api_nodes.run_in_threadpool

    async def counted(function, *args):  # type: ignore[no-untyped-def]
        threads.append(function)
        return await real(function, *args)

    monkeypatch.setattr(api_nodes, "run_in_threadpool", counted)
    same = ask(client, tokens, "node1", after=1, have=before["node1"]["content_hash"])
    assert same["same"] and same["revision"] == 2 and desired_answer not in threads
    stranger = ask(client, tokens, "node1", after=1, have="0" * 64)  # not what it had: its documents, built in a thread
    assert stranger["documents"] is not None and desired_answer in threads
    threads.clear()
    changed = ask(client, tokens, "node2", after=1, have=before["node2"]["content_hash"])
    assert changed["delta"] is not None and desired_answer in threads


def test_a_rule_line_added_wakes_first_the_node_holding_it_and_renumbers_the_others_after(client: TestClient, tokens: Tokens,
                                                                                          controller: Controller) -> None:
    """A line added to vm1's rules (node2's VM) moves the derived ids of every later
    rule, node1's too: node1's documents gain a blank line. Nothing node1 filters
    changes, so the commit wakes node2 alone before its diff; node1 gets its blank
    line with the nodes the change leaves alone, at the commit's release."""
    first = synth_documents()
    upload(client, tokens, first)
    before = {node: ask(client, tokens, node) for node in ("node1", "node2")}
    text = first["policy.yaml"]
    at = text.index("      - {", text.index("\n  vm1:\n"))
    added = {"policy.yaml": text[:at] + "      - {direction: in, action: accept, tcp: 2323}\n" + text[at:]}
    upload(client, tokens, added)
    view = controller.revisions.view(2)
    assert view is not None and view.states is not None
    assert view.states.prepare() == frozenset({"node2"})
    for node in ("node1", "node2"):  # each still gets its new documents (node1: the blank line) as a delta
        answer = ask(client, tokens, node, after=1, have=before[node]["content_hash"])
        assert not answer["same"] and answer.get("delta") is not None
        documents = apply_delta(before[node]["documents"], answer["delta"])
        assert compile_node(load_documents(documents), node) == compile_node(load_documents(added), node)
    # a change of what node1 filters (a group every node keeps) wakes it too
    upload(client, tokens, first_group_grown(added))
    view = controller.revisions.view(3)
    assert view is not None and view.states is not None and view.states.prepare() == frozenset({"node1", "node2"})


def test_a_change_of_every_node_reaches_every_node(client: TestClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch) -> None:
    first = synth_documents()
    upload(client, tokens, first)
    before = {node: ask(client, tokens, node) for node in ("node1", "node2")}
    edited = first_group_grown(first)
    assert edited != first
    scoped: list[str] = []
    real = Scoper.scoped
    monkeypatch.setattr(Scoper, "scoped", lambda self, node, keep=(): scoped.append(node) or real(self, node, keep))
    upload(client, tokens, edited)
    for node in ("node1", "node2"):
        answer = ask(client, tokens, node, after=1, have=before[node]["content_hash"])
        assert scoped == []  # a group's line every node keeps: each node's documents are its previous ones edited alike
        assert not answer["same"] and answer.get("delta") is not None  # one line: small, sent as a delta
        documents = apply_delta(before[node]["documents"], answer.get("delta"))
        assert content_hash(documents) == answer["content_hash"]
        assert compile_node(load_documents(documents), node) == compile_node(load_documents(edited), node)


def test_a_zone_rule_change_reaches_only_the_nodes_of_the_zones_vms(client: TestClient, tokens: Tokens) -> None:
    first = synth_documents()
    policy = load_documents(first)
    upload(client, tokens, first)
    before = {node: ask(client, tokens, node) for node in ("node1", "node2")}
    text = first["policy.yaml"]
    z0 = text.index("\n  z0:\n")
    rule = text.index("service: https}", z0)
    assert rule < text.index("\n  z1:\n")
    edited = {"policy.yaml": text[:rule] + "service: http}" + text[rule + len("service: https}"):]}  # in place
    assert {policy.doc.vms[vm].host for vm in policy.doc.vms if policy.doc.vms[vm].zone == "z0"} == {"node1"}
    assert load_documents(before["node2"]["documents"]).doc.zones["z0"].rules == []  # not node2's: left out
    assert load_documents(before["node1"]["documents"]).doc.zones["z0"].rules == policy.doc.zones["z0"].rules
    upload(client, tokens, edited)
    untouched = ask(client, tokens, "node2", after=1, have=before["node2"]["content_hash"])
    assert untouched["same"] and untouched["content_hash"] == before["node2"]["content_hash"]
    assert compile_node(load_documents(before["node2"]["documents"]), "node2") == compile_node(load_documents(edited), "node2")
    changed = ask(client, tokens, "node1", after=1, have=before["node1"]["content_hash"])
    assert not changed["same"] and changed.get("delta") is not None
    documents = apply_delta(before["node1"]["documents"], changed["delta"])
    assert content_hash(documents) == changed["content_hash"]
    now = compile_node(load_documents(documents), "node1")
    assert now == compile_node(load_documents(edited), "node1") != compile_node(policy, "node1")


def test_an_agent_of_the_old_protocol_is_told_to_upgrade(client: TestClient, tokens: Tokens, uploaded: dict) -> None:
    old = client.get("/api/v1/nodes/node1/desired", headers={**tokens.header("node1"), "User-Agent": "zonewall-agent/0.0.9"})
    assert old.status_code == 426
    assert "protocol 2" in old.json()["detail"] and "upgrade zonewall on the node" in old.json()["detail"]
    newer = client.get("/api/v1/nodes/node1/desired", params={"protocol": 3}, headers={**tokens.header("node1"), "User-Agent": "zonewall-agent/9.0"})
    assert newer.status_code == 426 and "upgrade the controller" in newer.json()["detail"]
    current = client.get("/api/v1/nodes/node1/desired", params=PROTOCOL, headers={**tokens.header("node1"), "User-Agent": "zonewall-agent/0.1.0"})
    assert current.status_code == 200 and current.json()["documents"] is not None


def test_arrival_documents_hold_the_migrating_vm_whole(client: TestClient, tokens: Tokens) -> None:
    upload(client, tokens, synth_documents())
    scoped = ask(client, tokens, "node1")["documents"]
    assert load_documents(scoped).doc.vms["vm1"].rules == []  # vm1 is node2's: left out
    assert load_documents(scoped).doc.zones["z1"].rules == []  # and so is its zone (z1: vm1 alone)
    answer = client.get("/api/v1/nodes/node1/arrival/vm1", headers=tokens.header("node1")).json()
    assert content_hash(answer["documents"]) == answer["content_hash"]
    arriving = load_documents(answer["documents"])
    assert len(arriving.doc.vms["vm1"].rules) == 20
    assert arriving.doc.zones["z1"].rules == load_documents(synth_documents()).doc.zones["z1"].rules != []  # it comes with its zone's
    assert client.get("/api/v1/nodes/node1/arrival/nosuch", headers=tokens.header("node1")).status_code == 404
    assert client.get("/api/v1/nodes/node2/arrival/vm1", headers=tokens.header("node1")).status_code == 403
