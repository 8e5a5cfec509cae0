"""Conntrack timeouts: compiled objects and rules, and how the dataplane carries them.

libnftables 1.0.6 drops a `ct timeout` policy given as JSON and aborts on a JSON
`delete ct timeout`, so apply sends these objects as nft text in their own
transactions: created (only what is missing) before the JSON one, unused ones
collected after it. The JSON batches must never contain them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zonewall.compiler.coverage import not_enforced
from zonewall.compiler.ct_objects import timeout_objects_for
from zonewall.compiler.node import compile_node
from zonewall.compiler.stmt import CtTimeoutSet
from zonewall.dataplane.apply import apply_ruleset, restore_snapshot
from zonewall.dataplane.backend import NftError, text_commands
from zonewall.dataplane.fake import FakeBackend
from zonewall.policy.loader import load_policy

POLICY = """
version: 1
settings:
  conntrack: {timeouts: {udp: 30, udp_stream: 120, tcp_established: 86400, icmp: 30}}
hosts: {node1: {address: 192.168.100.11}}
networks: {lan: {bridge: vmbr1, subnets: [10.2.0.0/24]}}
zones:
  db: {conntrack: {timeouts: {tcp_established: 3600}}}
  web: {}
vms:
  db1: {host: node1, zone: db, nics: [{network: lan, ips: [10.2.0.20]}]}
  web1: {host: node1, zone: web, nics: [{network: lan, ips: [10.2.0.10]}]}
"""


def load(tmp_path: Path, text: str = POLICY, name: str = "p"):
    (tmp_path / f"{name}.yaml").write_text(text)
    return load_policy(tmp_path / f"{name}.yaml")


class TextRecorder(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def run_as_text(self, commands):
        self.text.append(text_commands(commands))
        failing, self._fail_next = self._fail_next, None  # fail_next is meant for the JSON batch
        try:
            super().run_as_text(commands)
        finally:
            self._fail_next = failing


def test_objects_are_named_by_their_policy() -> None:
    a = timeout_objects_for({"udp": 30, "udp_stream": 120})
    assert a == timeout_objects_for({"udp_stream": 120, "udp": 30})
    assert a["udp"].policy == (("replied", 120), ("unreplied", 30))
    assert a["udp"].name != timeout_objects_for({"udp": 31, "udp_stream": 120})["udp"].name
    assert "icmp" not in timeout_objects_for({"icmp": 30})


def test_zone_override_is_bound_to_its_vms_only(tmp_path: Path) -> None:
    table = compile_node(load(tmp_path), "node1").table("inet", "zonewall")
    by_proto = {(t.protocol, dict(t.policy).get("established")): t.name for t in table.timeouts}
    global_tcp, db_tcp, udp = by_proto[("tcp", 86400)], by_proto[("tcp", 3600)], by_proto[("udp", None)]
    assert len(table.timeouts) == 3

    def sets(chain: str) -> list[str]:
        return [s.name for r in table.chain(chain).rules for s in r.statements if isinstance(s, CtTimeoutSet)]

    assert sets("forward") == [global_tcp, udp]
    assert sets("vm-db1-in") == sets("vm-db1-out") == [db_tcp]  # udp unchanged: the global object
    assert sets("vm-web1-in") == sets("vm-web1-out") == []
    assert sets("input") == [global_tcp, udp]  # guest traffic to the node (mark-guarded)


def test_icmp_is_reported_not_enforced(tmp_path: Path) -> None:
    notes = not_enforced(load(tmp_path))
    assert notes == ["settings.conntrack.timeouts.icmp: validated but not enforced (nft 1.0.6 has ct timeout policies for tcp and udp only); the node's default ICMP timeout applies"]
    assert not_enforced(load(tmp_path, POLICY.replace(", icmp: 30", ""))) == []


def test_text_commands_are_checked() -> None:
    body = {"family": "inet", "table": "zonewall", "name": "ct-udp-0a", "protocol": "udp", "l3proto": "inet", "policy": {"unreplied": 30}}
    assert text_commands([{"add": {"table": {"family": "inet", "name": "zonewall"}}}, {"add": {"ct timeout": body}}]) == (
        "add table inet zonewall\nadd ct timeout inet zonewall ct-udp-0a { protocol udp; l3proto inet; policy = { unreplied : 30 }; }\n"
    )
    for bad in ({"name": 'x"; flush ruleset'}, {"protocol": "icmp"}, {"policy": {"unreplied": "30; flush ruleset"}}, {"policy": {"established": 5}}):
        with pytest.raises(NftError):
            text_commands([{"add": {"ct timeout": {**body, **bad}}}])
    with pytest.raises(NftError):
        text_commands([{"add": {"chain": {"family": "inet", "table": "zonewall", "name": "c"}}}])


def test_apply_creates_as_text_and_collects_unused(tmp_path: Path) -> None:
    backend = TextRecorder()
    first = compile_node(load(tmp_path), "node1")
    apply_ruleset(backend, first)
    assert len(backend.text) == 1 and backend.text[0].count("add ct timeout") == 3
    for batch in backend.transactions[1:]:  # the JSON batch: no timeout objects in it
        assert not any("ct timeout" in c.get("add", {}) or "ct timeout" in c.get("delete", {}) for c in batch)

    result = apply_ruleset(backend, first, previous=first)  # nothing missing: no text at all
    assert result.mode == "unchanged" and len(backend.text) == 1

    second = compile_node(load(tmp_path, POLICY.replace("udp: 30", "udp: 10"), "q"), "node1")
    result = apply_ruleset(backend, second, previous=first)
    assert result.mode == "incremental"
    assert backend.text[1].count("add ct timeout") == 1 and backend.text[2].count("delete ct timeout") == 1
    names = {o["ct timeout"]["name"] for o in backend.list_table("inet", "zonewall") if "ct timeout" in o}
    assert names == {t.name for t in second.table("inet", "zonewall").timeouts}


def test_refused_json_leaves_unused_objects_collected_next_time(tmp_path: Path) -> None:
    backend = TextRecorder()
    first = compile_node(load(tmp_path), "node1")
    apply_ruleset(backend, first)
    second = compile_node(load(tmp_path, POLICY.replace("udp: 30", "udp: 10"), "q"), "node1")
    backend.fail_next("refused")
    with pytest.raises(NftError):
        apply_ruleset(backend, second)
    listed = {o["ct timeout"]["name"] for o in backend.list_table("inet", "zonewall") if "ct timeout" in o}
    assert len(listed) == 4  # the new udp object, unused; the old ones still in use
    apply_ruleset(backend, first)
    listed = {o["ct timeout"]["name"] for o in backend.list_table("inet", "zonewall") if "ct timeout" in o}
    assert listed == {t.name for t in first.table("inet", "zonewall").timeouts}
    # a restore re-creates the snapshot's objects as text before its JSON transaction
    snapshot = apply_ruleset(backend, second).snapshot  # first's state; first's udp object collected
    restore_snapshot(backend, snapshot)
    assert backend.text[-1].startswith("add table inet zonewall\nadd ct timeout")
    listed = {o["ct timeout"]["name"] for o in backend.list_table("inet", "zonewall") if "ct timeout" in o}
    assert {t.name for t in first.table("inet", "zonewall").timeouts} <= listed
