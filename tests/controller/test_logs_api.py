"""Packet logs, counters and /metrics through the API (in-process controller)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient

from tests.controller.live import Tokens
from zonewall.controller.replica import Controller
from zonewall.controller.store.counters import MAX_PARTIAL_OWNERS, removed_id
from zonewall.controller.store.logs import LogQuery, Retention, address_key, network_range


def record(t: float, **kw: object) -> dict:
    base = {"time": t, "vm": "db1", "nic": "db1/0", "direction": "in", "family": "ipv4", "src": "10.0.1.10", "dst": "10.0.2.30",
            "proto": "tcp", "sport": 40000, "dport": 5432, "verdict": "drop", "rule": "default-in", "scope": "db1", "level": "default"}
    return {**base, **kw}


def post(client: TestClient, tokens: Tokens, node: str, records: list[dict], batch_id: str | None = None, **counts: int):
    body = {"batch_id": batch_id or uuid.uuid4().hex, "records": records, **counts}
    return client.post(f"/api/v1/nodes/{node}/records", json=body, headers=tokens.header(node))


def test_batches_are_stored_once_and_searchable_by_every_filter(client: TestClient, tokens: Tokens, controller: Controller, uploaded: dict) -> None:
    controller.logs.retention = Retention(max_age_days=100_000)  # records of 1970 stay
    batch = [record(1000.0 + i, sport=40000 + i) for i in range(5)]  # db1 runs on node2
    node1 = [record(2000.0, vm="web1", scope="web1", src="203.0.113.9", dst="10.0.1.10", dport=22, rule="ssh-admins", level="global", verdict="accept"),
             record(2001.0, vm="app1", scope="zone:app", family="ipv6", src="fd00:1::10", dst="fd00:2::20", proto="udp", dport=53, rule="app-dns", level="zone", verdict="reject")]
    first = post(client, tokens, "node2", batch, "batch-0001", suppressed=7, dropped=2)
    assert first.status_code == 200 and first.json() == {"stored": 5, "duplicate": False, "refused": 0, "clamped": 0}
    again = post(client, tokens, "node2", batch, "batch-0001", suppressed=7, dropped=2)
    assert again.json() == {"stored": 0, "duplicate": True, "refused": 0, "clamped": 0}
    assert post(client, tokens, "node1", node1, "batch-0002").json()["stored"] == 2

    def search(**params: object) -> list[dict]:
        response = client.get("/api/v1/logs", params=params, headers=tokens.header("viewer"))
        assert response.status_code == 200, response.text
        return response.json()["records"]

    assert len(search()) == 7
    assert [r["time"] for r in search()][:2] == [2001.0, 2000.0]  # newest first
    assert {r["zone"] for r in search(vm="db1")} == {"db"}  # the VM's zone, from the current revision
    assert len(search(zone="db")) == 5 and len(search(node="node2")) == 5 and len(search(node="node1")) == 2 and search(node="node3") == []
    assert len(search(address="10.0.2.0/24")) == 5 and len(search(src="203.0.113.0/24")) == 1 and len(search(dst="10.0.2.30")) == 5
    assert len(search(address="fd00:2::/64")) == 1 and len(search(address="fd00::/16")) == 1
    assert len(search(port=22)) == 1 and len(search(proto="udp")) == 1 and len(search(verdict="drop")) == 5
    assert len(search(rule="ssh-admins")) == 1 and len(search(level="zone")) == 1
    assert len(search(since=1000.0, until=1003.0)) == 3 and len(search(since="1970-01-01T00:33:20Z")) == 2
    assert len(search(q="203.0.113")) == 1 and len(search(q="app")) == 1
    assert len(search(vm="db1", port=5432, since=1004)) == 1
    page1 = client.get("/api/v1/logs", params={"limit": 3}, headers=tokens.header("admin")).json()
    page2 = client.get("/api/v1/logs", params={"limit": 3, "cursor": page1["next"]}, headers=tokens.header("admin")).json()
    page3 = client.get("/api/v1/logs", params={"limit": 3, "cursor": page2["next"]}, headers=tokens.header("admin")).json()
    ids = [r["id"] for p in (page1, page2, page3) for r in p["records"]]
    assert len(ids) == 7 == len(set(ids)) and page3["next"] is None
    assert client.get("/api/v1/logs", params={"address": "nope"}, headers=tokens.header("admin")).status_code == 422
    stats = client.get("/api/v1/logs/stats", headers=tokens.header("viewer")).json()
    assert stats["node2"] == {"received": 5, "suppressed": 7, "dropped": 2}


def test_only_the_nodes_agent_writes_records_and_agents_cannot_search(client: TestClient, tokens: Tokens) -> None:
    assert post(client, tokens, "node1", [record(1.0)]).status_code == 200
    wrong = client.post("/api/v1/nodes/node2/records", json={"batch_id": uuid.uuid4().hex, "records": []}, headers=tokens.header("node1"))
    assert wrong.status_code == 403
    assert client.post("/api/v1/nodes/node1/records", json={"batch_id": "x" * 10, "records": []}, headers=tokens.header("admin")).status_code == 403
    assert client.get("/api/v1/logs", headers=tokens.header("node1")).status_code == 403
    assert client.get("/api/v1/logs").status_code == 401
    assert client.get("/metrics").status_code == 401


def test_retention_by_age_and_size(controller: Controller) -> None:
    store = controller.logs
    store.retention = Retention(max_age_days=100_000)
    store.ingest("node1", "b" * 16, [record(float(t)) for t in range(100)])
    store.retention = Retention(max_age_days=1, max_records=30)
    removed = store.prune(now=10.0 + 86400)  # records with time < 10 are older than a day
    assert removed == 70 and store.count() == 30
    rows, _ = store.search(LogQuery(limit=1000))
    assert min(r["time"] for r in rows) == 70.0  # the oldest went first


def test_counters_sum_across_nodes_list_unused_rules_and_metrics(client: TestClient, tokens: Tokens, controller: Controller, uploaded: dict) -> None:
    controller.logs.retention = Retention(max_age_days=100_000)
    def counters(node: str, rows: list[tuple[str, str, str, str, str, int]]) -> None:
        body = {"counters": [{"level": l, "scope": s, "direction": d, "rule": r, "verdict": v, "packets": p, "bytes": p * 60} for l, s, d, r, v, p in rows]}
        assert client.put(f"/api/v1/nodes/{node}/counters", json=body, headers=tokens.header(node)).status_code == 204

    counters("node1", [("global", "global", "in", "ssh-admins", "accept", 3), ("default", "web1", "in", "default-in", "drop", 5), ("zone", "zone:dmz", "in", "web-https", "accept", 0)])
    counters("node2", [("global", "global", "in", "ssh-admins", "accept", 4), ("default", "db1", "in", "default-in", "drop", 9)])
    body = client.get("/api/v1/counters", params={"window": 60}, headers=tokens.header("viewer")).json()
    ssh = next(r for r in body["rules"] if r["rule"] == "ssh-admins")
    assert (ssh["packets"], ssh["bytes"], ssh["nodes"]) == (7, 420, 2)
    store = controller.counters
    import time as clock

    later = clock.time() + 3600
    assert {r["rule"] for r in store.unused(60, now=later)} == {"ssh-admins", "default-in", "web-https"}  # nothing since
    assert [r["rule"] for r in store.unused(60)] == []  # too young to say
    store.report("node1", [{"level": "zone", "scope": "zone:dmz", "direction": "in", "rule": "web-https", "verdict": "accept", "packets": 0, "bytes": 0}], now=later - 7200)
    assert "web-https" in {r["rule"] for r in store.unused(60, now=later)}

    client.put("/api/v1/nodes/node1/status", json={"state": "ok", "applied_revision": 1, "apply_seconds": 0.25}, headers=tokens.header("node1"))
    post(client, tokens, "node1", [record(5.0)], suppressed=11)
    text = client.get("/metrics", headers=tokens.header("viewer")).text
    # per node; node1's last reading no longer has ssh-admins nor web1's default: their
    # series end, and web1's drops stay in its VM's sum
    assert 'rule="ssh-admins",scope="global"} 3.0' not in text and 'node="node1",rule="default-in"' not in text
    assert 'zonewall_rule_packets_total{direction="in",level="global",node="node2",rule="ssh-admins",scope="global"} 4.0' in text
    assert 'zonewall_vm_dropped_packets_total{node="node2",vm="db1"} 9.0' in text
    assert 'zonewall_vm_dropped_packets_total{node="node1",vm="web1"} 5.0' in text
    assert "(removed" not in text
    assert 'zonewall_apply_seconds{node="node1"} 0.25' in text
    assert 'zonewall_agent_up{node="node1"} 1.0' in text
    assert 'zonewall_log_records_suppressed_total{node="node1"} 11.0' in text
    assert "# TYPE zonewall_agent_up gauge" in text
    assert "# TYPE zonewall_rule_packets_total counter" in text


def test_counters_never_go_backwards_when_rules_are_recreated_or_removed(controller: Controller) -> None:
    """Kernel counters restart at 0 when an apply re-creates a rule (a new handle): the
    stored count goes on from where it was; a rule removed keeps its count."""
    store = controller.counters

    def reading(handle: int, packets: int) -> dict:
        return {"level": "default", "scope": "web1", "direction": "in", "rule": "default-in", "verdict": "drop",
                "packets": packets, "bytes": packets * 100, "instances": [[f"inet:{handle}", packets, packets * 100]]}

    def total() -> int:  # web1's drops, its removed rules' included
        return sum(r.packets for r in store.per_node() if r.scope == "web1")

    store.report("node1", [reading(10, 5)])
    store.report("node1", [reading(10, 8)])
    assert total() == 8
    store.report("node1", [reading(20, 3)])  # re-created by an apply: 3 new packets, not 3 - 8
    assert total() == 11
    store.report("node1", [reading(20, 150)])  # more than the old reading: still counted from the new rule's 0
    assert total() == 158
    store.report("node1", [])  # the rule is gone from the node
    assert total() == 158 and store.totals() == []
    store.report("node1", [reading(30, 2)])  # back again: its own count starts anew
    assert total() == 160 and [(t["rule"], t["packets"]) for t in store.totals()] == [("default-in", 2)]
    old_agent = {k: v for k, v in reading(0, 7).items() if k != "instances"}  # readings without instances: by the sum
    store.report("node2", [old_agent])
    store.report("node2", [{**old_agent, "packets": 9}])
    assert total() == 169


def test_an_unchanged_reading_writes_nothing_and_a_grown_one_records_its_hit(controller: Controller) -> None:
    """Agents report every rule every few seconds; rows that did not move are left as
    they are (their last hit and change time stay), the ones that grew are updated."""
    store = controller.counters

    def reading(rule: str, packets: int) -> dict:
        return {"level": "vm", "scope": "web1", "direction": "in", "rule": rule, "verdict": "accept",
                "packets": packets, "bytes": packets * 10, "instances": [[f"inet:{len(rule)}", packets, packets * 10]]}

    store.report("node1", [reading("quiet", 4), reading("busy", 1)], now=100.0)
    store.report("node1", [reading("quiet", 4), reading("busy", 6)], now=200.0)
    rows = {r.rule: r for r in store.per_node()}
    assert (rows["quiet"].packets, rows["quiet"].last_hit, rows["quiet"].updated_at) == (4, 100.0, 100.0)
    assert (rows["busy"].packets, rows["busy"].last_hit, rows["busy"].updated_at) == (6, 200.0, 200.0)
    store.report("node1", [reading("busy", 6)], now=300.0)  # `quiet` gone from the node: its counts go to web1's removed accepts
    rows = {r.rule: r for r in store.per_node()}
    assert "quiet" not in rows and rows["busy"].present
    removed = rows[removed_id("accept")]
    assert (removed.present, removed.packets, removed.bytes, removed.first_seen, removed.last_hit) == (False, 4, 40, 100.0, 100.0)
    assert [t["rule"] for t in store.totals()] == ["busy"]


def test_a_partial_report_leaves_the_rules_it_omits_as_they_were(client: TestClient, tokens: Tokens, controller: Controller, uploaded: dict) -> None:
    """Agents send only the counters that moved (`partial`); rules left out are not gone,
    while a whole reading without them marks them gone."""

    def put(rows: list[tuple[str, int]], partial: bool) -> None:
        body = {"partial": partial, "counters": [{"level": "vm", "scope": "web1", "direction": "in", "rule": r, "verdict": "accept",
                                                  "packets": p, "bytes": p * 60} for r, p in rows]}
        assert client.put("/api/v1/nodes/node1/counters", json=body, headers=tokens.header("node1")).status_code == 204

    def present() -> dict[str, int]:
        return {r.rule: r.packets for r in controller.counters.per_node() if r.present}

    put([("a", 3), ("b", 4)], partial=False)
    put([("b", 10)], partial=True)
    assert present() == {"a": 3, "b": 10}
    put([("b", 12)], partial=False)  # a whole reading without `a`: gone from the node
    assert present() == {"b": 12}


def test_a_partial_report_reads_and_grows_exactly_the_rows_of_the_owners_it_names(controller: Controller) -> None:
    """A partial reading reads only the rows of the VMs (and node) it names: each named
    row grows from what it had (none counted twice, none taken for new), the others
    stay; one naming more owners than the store filters by takes the whole read."""
    store = controller.counters

    def counter(level: str, scope: str, rule: str, packets: int) -> dict[str, Any]:
        return {"level": level, "scope": scope, "direction": "in", "rule": rule, "verdict": "accept", "packets": packets, "bytes": packets * 60}

    def packets() -> dict[tuple[str, str], int]:
        return {(row.scope, row.rule): row.packets for row in store.per_node() if row.node == "node1" and row.present}

    many = [counter("vm", f"vm{n}", "r", 1) for n in range(MAX_PARTIAL_OWNERS + 5)]
    store.report("node1", [counter("vm", "web1", "a", 3), counter("vm", "db1", "c", 5), counter("host", "node1", "h", 2), *many])
    store.report("node1", [counter("vm", "db1", "c", 9), counter("host", "node1", "h", 4), counter("vm", "web1", "new", 1)], complete=False)
    seen = packets()
    assert (seen[("web1", "a")], seen[("db1", "c")], seen[("node1", "h")], seen[("web1", "new")]) == (3, 9, 4, 1)
    # more owners than filtered by: the same answer through the whole read
    store.report("node1", [counter("vm", "web1", "a", 6), *(counter("vm", f"vm{n}", "r", 2) for n in range(MAX_PARTIAL_OWNERS + 5))], complete=False)
    seen = packets()
    assert (seen[("web1", "a")], seen[("db1", "c")], seen[("vm0", "r")], seen[(f"vm{MAX_PARTIAL_OWNERS + 4}", "r")]) == (6, 9, 2, 2)


def test_address_keys_make_cidrs_ranges() -> None:
    low, high = network_range("10.0.2.0/24")
    assert low <= address_key("10.0.2.30") <= high  # type: ignore[operator]
    assert not low <= address_key("10.0.3.1") <= high  # type: ignore[operator]
    assert address_key("not an address") is None
