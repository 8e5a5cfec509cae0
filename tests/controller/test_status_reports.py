"""Agents' status reports are stored together (one transaction for the reports that
arrive at once), each answered only once it is stored, and one report that cannot
be stored fails alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DataError

from tests.controller.live import Tokens
from zonewall.controller.status_reports import StatusReports
from zonewall.controller.store.db import open_database
from zonewall.controller.store.nodes import LOG_LINES_KEPT, NodeReport, NodeStore, Status


def _report(node: str, revision: int, *lines: str) -> NodeReport:
    return NodeReport(node, Status(revision, f"fp{revision}", None, "ok", None, taps={"vm1/0": f"tap{revision}"}), tuple(("info", line) for line in lines))


def test_reports_arriving_together_are_one_batch_and_each_is_stored_before_its_answer(db_url: str) -> None:
    nodes = NodeStore(open_database(db_url))
    reports = StatusReports(nodes)

    async def report_and_read(report: NodeReport) -> int | None:
        await reports.report(report)
        row = nodes.get(report.node)  # what the agent's answer vouches for
        return row.applied_revision if row is not None else None

    async def main() -> list[int | None]:
        return await asyncio.gather(*(report_and_read(_report(f"node{n}", n, f"revision {n} applied")) for n in range(20)))

    assert asyncio.run(main()) == list(range(20))
    assert reports.batches == 1  # twenty reports, one transaction
    for n in (0, 7, 19):
        row = nodes.get(f"node{n}")
        assert row is not None and (row.fingerprint, json.loads(row.taps), row.state) == (f"fp{n}", {"vm1/0": f"tap{n}"}, "ok")
        assert [line.message for line in nodes.logs(f"node{n}")] == [f"revision {n} applied"]


def test_two_reports_of_a_node_in_one_batch_leave_the_later_one(db_url: str) -> None:
    nodes = NodeStore(open_database(db_url))
    nodes.report_many([_report("node1", 3), NodeReport("node1", Status(4, None, None, "error", "boom")), _report("node2", 9)])
    row = nodes.get("node1")
    assert row is not None and (row.applied_revision, row.state, row.last_error) == (4, "error", "boom")
    assert json.loads(row.taps) == {"vm1/0": "tap3"}  # the later report sent no taps: kept
    other = nodes.get("node2")
    assert other is not None and other.applied_revision == 9
    # three of one node, the last two sending different columns: the last one wins
    # what it sent, what only an earlier one sent stays
    nodes.report_many([_report("node3", 1), NodeReport("node3", Status(2, None, None, "error", "boom")), _report("node3", 3)])
    third = nodes.get("node3")
    assert third is not None and (third.applied_revision, third.state, third.last_error, json.loads(third.taps)) == (3, "ok", None, {"vm1/0": "tap3"})
    nodes.report_many([_report("node4", 5), NodeReport("node4", Status(6, None, None, "degraded", None, apply_seconds=0.5))])
    fourth = nodes.get("node4")
    assert fourth is not None and (fourth.applied_revision, fourth.state, json.loads(fourth.taps), fourth.apply_seconds) == (6, "degraded", {"vm1/0": "tap5"}, 0.5)


def test_a_node_keeps_its_newest_log_lines_when_they_come_with_reports(db_url: str) -> None:
    nodes = NodeStore(open_database(db_url))
    nodes.report_many([_report("node1", 1, *(f"line {n}" for n in range(LOG_LINES_KEPT - 1)))])
    nodes.report_many([_report("node1", 2, "newest a", "newest b", "newest c")])
    kept = [line.message for line in nodes.logs("node1", limit=LOG_LINES_KEPT + 10)]
    assert len(kept) == LOG_LINES_KEPT and kept[-3:] == ["newest a", "newest b", "newest c"] and kept[0] == "line 2"


class RefusingStore(NodeStore):
    """The database refuses any transaction holding node `bad`'s report."""

    def report_many(self, reports: Sequence[NodeReport]) -> None:
        if any(report.node == "bad" for report in reports):
            raise ValueError("bad: value out of range")
        super().report_many(reports)


def test_a_report_that_cannot_be_stored_fails_alone(db_url: str) -> None:
    nodes = RefusingStore(open_database(db_url))
    reports = StatusReports(nodes)

    async def main() -> list[object]:
        return await asyncio.gather(*(reports.report(_report(node, 5)) for node in ("node1", "bad", "node2")), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ValueError)
    assert [row.name for row in nodes.all()] == ["node1", "node2"]
    assert all(row.applied_revision == 5 for row in nodes.all())


def test_an_agent_that_prefers_a_minimal_answer_gets_204_and_its_report_is_stored(client: TestClient, tokens: Tokens) -> None:
    status = {"applied_revision": None, "state": "degraded", "problems": ["packet log: no NFLOG"]}
    minimal = client.put("/api/v1/nodes/node1/status", json=status, headers={**tokens.header("node1"), "Prefer": "respond-async, return=minimal"})
    assert minimal.status_code == 204 and minimal.content == b"" and minimal.headers["preference-applied"] == "return=minimal"
    shown = client.get("/api/v1/nodes/node1", headers=tokens.header("admin")).json()
    assert (shown["state"], shown["problems"]) == ("degraded", ["packet log: no NFLOG"])
    # without the preference (a person, a script): the node as stored, as before
    full = client.put("/api/v1/nodes/node1/status", json={**status, "state": "ok", "problems": []}, headers=tokens.header("node1"))
    assert full.status_code == 200 and (full.json()["name"], full.json()["state"], full.json()["registered"]) == ("node1", "ok", True)


@pytest.mark.parametrize("prefer", ["return=representation", "return=minimalist", "handling=lenient"])
def test_other_preferences_get_the_node_back(client: TestClient, tokens: Tokens, prefer: str) -> None:
    answer = client.put("/api/v1/nodes/node2/status", json={"state": "ok"}, headers={**tokens.header("node2"), "Prefer": prefer})
    assert answer.status_code == 200 and answer.json()["state"] == "ok"


def test_a_report_the_database_refuses_fails_alone_and_changes_nothing(db_url: str, client: TestClient, tokens: Tokens) -> None:
    """A number PostgreSQL's integer column cannot hold (the schema allows it, SQLite
    stores it): the batch is written again report by report, the others are stored,
    the refused one gets its error and the node keeps its previous report; through
    the API, a precise 422."""
    nodes = NodeStore(open_database(db_url))
    nodes.report_many([_report("node2", 1)])
    huge = NodeReport("node2", Status(9, None, None, "error", "new", drift_repairs=2**40))
    reports = StatusReports(nodes)

    async def main() -> list[object]:
        return await asyncio.gather(*(reports.report(r) for r in (_report("node1", 5), huge, _report("node3", 5))), return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes[0] is None and outcomes[2] is None
    stored = nodes.get("node2")
    assert stored is not None
    if db_url.startswith("postgresql"):
        assert isinstance(outcomes[1], DataError)
        assert (stored.applied_revision, stored.state) == (1, "ok")  # as it was
        answer = client.put("/api/v1/nodes/node1/status", json={"state": "ok", "drift_repairs": 2**40}, headers=tokens.header("node1"))
        assert answer.status_code == 422 and answer.json()["detail"] == "a number in the request is out of range"
    else:
        assert outcomes[1] is None and (stored.applied_revision, stored.drift_repairs) == (9, 2**40)
    assert [row.applied_revision for row in nodes.all() if row.name in ("node1", "node3")] == [5, 5]
