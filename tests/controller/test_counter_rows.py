"""Counter rows stay those of the rules that exist: a rule gone from a node (removed,
or its derived id moved by a line added above it) leaves its counts to its scope's
removed rules, so the rows, and /metrics with them, do not grow with every edit."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert

from tests.controller.live import Tokens
from zonewall.controller.replica import Controller
from zonewall.controller.store.counters import removed_id
from zonewall.controller.store.models import RuleCounterRow

VMS, RULES = 100, 20


def vm_rules(shift: int, handle_base: int, packets: int) -> list[dict[str, Any]]:
    """Every VM's 20 rules with derived ids `policy:LINE`, LINE moved down by `shift`
    (a line added above them); the kernel rules re-created (new handles)."""
    out = []
    for vm in range(VMS):
        for n in range(RULES):
            line = 1000 + vm * RULES + n + shift
            verdict = "drop" if n == RULES - 1 else "accept"
            handle = handle_base + vm * RULES + n
            out.append({"level": "vm", "scope": f"vm{vm}", "direction": "in", "rule": f"policy:{line}", "verdict": verdict,
                        "packets": packets, "bytes": packets * 100, "instances": [[f"inet:{handle}", packets, packets * 100]]})
    return out


def sums_per_vm(controller: Controller) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for row in controller.counters.per_node():
        key = (row.scope, row.verdict)
        out[key] = out.get(key, 0) + row.packets
    return out


def test_ids_moved_by_lines_added_keep_the_rows_bounded_and_every_vm_sum(controller: Controller) -> None:
    store = controller.counters
    store.report("node1", vm_rules(0, 10_000, 3), now=100.0)
    assert len(store.per_node()) == VMS * RULES
    for shift in (1, 2, 3):  # a line added above every VM's rules, three times
        store.report("node1", vm_rules(shift, 10_000 * (shift + 1), 1), now=100.0 + shift)
        rows = store.per_node()
        present = [row for row in rows if row.present]
        assert len(present) == VMS * RULES  # the rules that exist
        assert len(rows) - len(present) <= VMS * 2  # at most one row of removed rules per VM and verdict
        assert {row.rule for row in rows if not row.present} <= {removed_id("accept"), removed_id("drop")}
    # every VM's counts since the start: 20 rules x 3, then 20 x 1 three times
    sums = sums_per_vm(controller)
    assert sum(sums[(f"vm{vm}", v)] for vm in range(VMS) for v in ("accept", "drop")) == VMS * RULES * 6
    # the id at the head of vm0's rules left each time, folded into one row; a derived
    # id's row counts whichever rule holds the id (policy-guide.md: explicit ids are
    # the stable ones), so what left at the second shift had counted 3 + 1
    removed_accepts = next(row for row in store.per_node() if row.scope == "vm0" and row.rule == removed_id("accept"))
    assert removed_accepts.packets == 3 + (3 + 1) + (3 + 1 + 1)


def test_a_partial_report_folds_nothing(controller: Controller) -> None:
    """A reading of only what moved says nothing of the rules it leaves out: none is
    taken for gone (the negative case of the fold)."""
    store = controller.counters
    store.report("node1", vm_rules(0, 1, 3))
    store.report("node1", vm_rules(0, 1, 5)[:3], complete=False)
    rows = store.per_node()
    assert len(rows) == VMS * RULES and all(row.present for row in rows)


def test_removed_drops_stay_in_the_vm_drop_metric_and_leave_the_rule_series(client: TestClient, tokens: Tokens, controller: Controller, uploaded: dict) -> None:
    def put(counters: list[dict[str, Any]]) -> None:
        assert client.put("/api/v1/nodes/node1/counters", json={"counters": counters}, headers=tokens.header("node1")).status_code == 204

    def counter(rule: str, verdict: str, packets: int) -> dict[str, Any]:
        return {"level": "vm", "scope": "web1", "direction": "in", "rule": rule, "verdict": verdict, "packets": packets, "bytes": packets}

    put([counter("policy:10", "drop", 7), counter("policy:11", "accept", 4), counter("policy:12", "drop", 2)])
    put([counter("policy:12", "drop", 3)])  # policy:10 and policy:11 removed
    text = client.get("/metrics", headers=tokens.header("viewer")).text
    assert 'zonewall_vm_dropped_packets_total{node="node1",vm="web1"} 10.0' in text  # 7 removed + 3: never shrinks
    assert 'rule="policy:12",scope="web1"} 3.0' in text
    assert 'rule="policy:10"' not in text and 'rule="policy:11"' not in text and "(removed" not in text
    body = client.get("/api/v1/counters", params={"window": 60}, headers=tokens.header("viewer")).json()
    assert [rule["rule"] for rule in body["rules"]] == ["policy:12"]  # the removed rules are no rule of the API


def test_rows_left_by_the_store_before_are_folded_at_the_next_whole_reading(controller: Controller) -> None:
    """A database written before the fold holds rows of gone rules (`present` false):
    the next whole reading of their node folds them too; other nodes' stay."""
    store = controller.counters
    legacy = {"level": "vm", "scope": "web1", "direction": "in", "verdict": "accept", "bytes": 0, "first_seen": 50.0, "last_hit": 60.0,
              "updated_at": 60.0, "instances": "{}", "present": False}
    with controller.sessions() as session, session.begin():
        session.execute(insert(RuleCounterRow), [{**legacy, "node": "node1", "rule": f"policy:{n}", "packets": n} for n in range(1, 4)]
                        + [{**legacy, "node": "node2", "rule": "policy:1", "packets": 9}])
    store.report("node1", [{"level": "vm", "scope": "web1", "direction": "in", "rule": "policy:9", "verdict": "accept", "packets": 1, "bytes": 1}], now=70.0)
    rows = {(row.node, row.rule): row for row in store.per_node()}
    assert set(rows) == {("node1", "policy:9"), ("node1", removed_id("accept")), ("node2", "policy:1")}
    folded = rows[("node1", removed_id("accept"))]
    assert (folded.packets, folded.first_seen, folded.last_hit) == (6, 50.0, 60.0)


def renumbered(shift: int, handle_base: int, packets: int, *, told: bool = True) -> list[dict[str, Any]]:
    """`vm_rules` after a line added above them, each rule telling the id it had (the
    agent's counter reader: dataplane/renames.py) unless not `told`."""
    out = vm_rules(shift, handle_base, packets)
    if told:
        for counter in out:
            line = int(counter["rule"].split(":")[1])
            counter["was"] = f"policy:{line - 1}"
    return out


def per_rule(controller: Controller, scope: str = "vm0") -> dict[str, int]:
    return {row.rule: row.packets for row in controller.counters.per_node() if row.scope == scope and row.present}


def test_a_renamed_rule_keeps_its_counts_under_its_new_id(controller: Controller) -> None:
    store = controller.counters
    first = vm_rules(0, 10_000, 0)
    for n, counter in enumerate(first[:RULES]):  # vm0's rules: rule n counted n packets
        counter.update(packets=n, bytes=n * 100, instances=[[counter["instances"][0][0], n, n * 100]])
    store.report("node1", first, now=100.0)
    store.report("node1", renumbered(1, 20_000, 0), now=200.0)
    # each rule's count moved with it: the rule that was policy:1000+n is policy:1001+n
    assert per_rule(controller) == {f"policy:{1001 + n}": n for n in range(RULES)}
    assert not any(not row.present for row in store.per_node())  # nothing removed: nothing folded
    moved = next(row for row in store.per_node() if row.scope == "vm0" and row.rule == "policy:1005")
    assert moved.first_seen == 100.0  # the rule's, not the id's


def test_a_rename_sent_again_moves_nothing_twice(controller: Controller) -> None:
    """The agent keeps telling a rename until its next apply (and resends a reading
    whose answer it lost): a row that already follows the rule's kernel rules stays."""
    store = controller.counters
    store.report("node1", vm_rules(0, 10_000, 4))
    again = renumbered(1, 20_000, 1)
    store.report("node1", again)
    store.report("node1", again)
    store.report("node1", renumbered(1, 20_000, 3))
    assert per_rule(controller) == {f"policy:{1001 + n}": 4 + 3 for n in range(RULES)}


def test_without_the_rename_told_an_id_keeps_its_row_and_the_rule_that_left_is_folded(controller: Controller) -> None:
    """The negative case: an older agent's reading (no `was`) leaves the rows to the ids."""
    store = controller.counters
    first = vm_rules(0, 10_000, 0)
    for n, counter in enumerate(first[:RULES]):
        counter.update(packets=n, bytes=n, instances=[[counter["instances"][0][0], n, n]])
    store.report("node1", first)
    store.report("node1", renumbered(1, 20_000, 0, told=False))
    rows = per_rule(controller)
    assert rows["policy:1005"] == 5 and rows["policy:1020"] == 0  # the id's counts, whichever rule holds it now
    removed = next(row for row in store.per_node() if row.scope == "vm0" and not row.present)
    assert removed.packets == 0  # policy:1000 (rule 0, no packets) left vm0's rules


def test_a_rule_added_at_a_renamed_ids_place_starts_from_nothing(controller: Controller) -> None:
    store = controller.counters
    store.report("node1", vm_rules(0, 10_000, 9))
    added = renumbered(1, 20_000, 0)
    for vm in range(VMS):  # a new rule at the head of each VM's rules, at the id its first rule left
        added.append({"level": "vm", "scope": f"vm{vm}", "direction": "in", "rule": f"policy:{1000 + vm * RULES}", "verdict": "accept",
                      "packets": 2, "bytes": 2, "instances": [[f"inet:{90_000 + vm}", 2, 2]]})
    store.report("node1", added)
    rows = per_rule(controller)
    assert rows["policy:1000"] == 2 and rows["policy:1001"] == 9 and rows["policy:1020"] == 9


def test_two_rules_that_swapped_lines_swap_their_rows(controller: Controller) -> None:
    store = controller.counters

    def counter(rule: str, handle: int, packets: int, was: str | None = None) -> dict[str, Any]:
        out = {"level": "vm", "scope": "web1", "direction": "in", "rule": rule, "verdict": "accept", "packets": packets, "bytes": packets,
               "instances": [[f"inet:{handle}", packets, packets]]}
        return {**out, "was": was} if was else out

    store.report("node1", [counter("policy:1", 1, 3), counter("policy:2", 2, 8)])
    store.report("node1", [counter("policy:1", 3, 1, was="policy:2"), counter("policy:2", 4, 0, was="policy:1")])
    assert per_rule(controller, "web1") == {"policy:1": 8 + 1, "policy:2": 3}


def test_a_derived_id_from_a_file_named_like_the_removed_rows_is_a_rule(controller: Controller) -> None:
    """A policy file may be called anything: `(removed drop).yaml` gives its rules the
    ids `(removed drop):LINE`, which are rules like any other (counted, listed, folded
    when they leave), never taken for the scope's removed rules."""
    store = controller.counters

    def counter(rule: str, packets: int) -> dict[str, Any]:
        return {"level": "vm", "scope": "web1", "direction": "in", "rule": rule, "verdict": "drop", "packets": packets, "bytes": packets}

    store.report("node1", [counter("(removed drop):3", 4), counter("policy:9", 1)])
    assert per_rule(controller, "web1") == {"(removed drop):3": 4, "policy:9": 1}
    store.report("node1", [counter("policy:9", 1)])  # the odd file's rule left: folded as any rule
    rows = {row.rule: (row.present, row.packets) for row in store.per_node()}
    assert rows == {"policy:9": (True, 1), removed_id("drop"): (False, 4)}
