"""`reach`: who can reach an endpoint (or what it can reach), on which services, by
which rule - each row checked against `trace` of a flow inside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zonewall.analysis.engine import Analyzer
from zonewall.analysis.reach import ReachError, reach, row_json
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.cli import app
from zonewall.policy.loader import load_policy

THREE_TIER = Path(__file__).parents[2] / "examples" / "three-tier" / "policy"


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer(load_policy(THREE_TIER))


def rows(analyzer: Analyzer, ref: str, direction: str) -> list[dict]:
    (result,) = reach(analyzer, ref, direction)  # type: ignore[arg-type]
    return [row_json(row, result.labels[id(row)]) for row in result.rows]


def test_who_can_reach_the_database(analyzer: Analyzer) -> None:
    found = rows(analyzer, "vm:db1", "to")
    by_peer = {(tuple(r["peers"]), tuple(r["services"])): r for r in found}
    app_row = by_peer[(("vm:app1",), ("tcp 5432",))]
    assert app_row["rule"]["rule"] == "db-from-app" and app_row["peer_rule"]["rule"] == "app-to-db"
    assert app_row["families"] == ["ipv4", "ipv6"]
    assert by_peer[(("group:admins",), ("tcp 22",))]["rule"]["rule"] == "ssh-admins"
    assert by_peer[(("host:node1", "host:node2"), ("tcp 22",))]["peer_kind"] == "host"
    # web1 may not talk to the database: it is in no row
    assert not any("vm:web1" in r["members"] for r in found)
    assert len(found) == 3


def test_what_the_web_server_can_reach(analyzer: Analyzer) -> None:
    found = rows(analyzer, "vm:web1", "from")
    app_rows = [r for r in found if r["peers"] == ["vm:app1"]]
    assert [r["services"] for r in app_rows] == [["tcp 8080"]]
    assert app_rows[0]["rule"]["rule"] == "web-to-app" and app_rows[0]["peer_rule"]["rule"] == "app-from-web"
    outside = {tuple(r["peers"]): r["services"] for r in found if r["peer_kind"] == "outside"}
    # clean-traffic stops a guest's ICMPv6 redirects; everything else leaves by default-out
    assert outside == {("any ipv4",): ["any"], ("any ipv6",): ["any except icmpv6 nd-redirect"]}


def test_every_row_agrees_with_trace(analyzer: Analyzer) -> None:
    """Pick a concrete flow inside each row and trace it: it must be accepted."""
    for vm in ("web1", "app1", "db1"):
        for direction in ("to", "from"):
            for row in rows(analyzer, f"vm:{vm}", direction):
                service = row["services"][0]
                if service == "any":
                    spec = FlowSpec("tcp", 1234)
                else:
                    proto, _, ports = service.partition(" ")
                    spec = FlowSpec(proto, int(ports.split(",")[0].split("-")[0])) if proto in ("tcp", "udp") else FlowSpec("icmp")
                for member in row["members"][:3]:
                    peer = f"vm:{member}" if row["peer_kind"] == "vm" else f"host:{member}" if row["peer_kind"] == "host" else None
                    if peer is None:
                        continue
                    source, target = (peer, f"vm:{vm}") if direction == "to" else (f"vm:{vm}", peer)
                    assert trace(analyzer, source, target, spec).verdict == "accept", (source, target, spec)


def test_a_zone_expands_to_its_vms_and_services_narrow_the_question(analyzer: Analyzer) -> None:
    results = reach(analyzer, "zone:db", "to")
    assert [r.endpoint.name for r in results] == ["db1"]
    from zonewall.cli.cmd_analysis import services_region

    narrowed = reach(analyzer, "vm:db1", "to", services_region(["5432"], [], [], []))  # type: ignore[arg-type]
    services = {tuple(r.services) for r in narrowed[0].rows}
    assert services == {("tcp 5432",)}


def test_unknown_references_are_errors(analyzer: Analyzer) -> None:
    with pytest.raises(ReachError, match="zone nope"):
        reach(analyzer, "zone:nope", "to")
    with pytest.raises(ReachError, match="no VM or node"):
        reach(analyzer, "203.0.113.0/24", "to")


def test_cli_reach_json() -> None:
    result = CliRunner().invoke(app, ["reach", str(THREE_TIER), "--to", "vm:db1", "--tcp", "5432", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (only,) = document["results"]
    assert only["endpoint"] == "vm:db1" and only["direction"] == "to"
    assert [r["peers"] for r in only["rows"]] == [["vm:app1"]]
    assert CliRunner().invoke(app, ["reach", str(THREE_TIER)]).exit_code == 2
