"""`trace`: the verdict of one flow, every stage passed, and the rule that decides.

The example policies' expected matrices are measured with real packets by
tests/kernel/test_examples.py; here the analyzer must predict every cell of them
without touching a kernel.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.labtools import write_policy
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, TraceError, trace
from zonewall.cli import app
from zonewall.lab.probing import matrix_sources, matrix_targets, policy_services
from zonewall.policy.loader import load_policy, load_policy_text

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.mark.parametrize("example", ["three-tier", "nas-isolation", "microsegmentation"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_trace_predicts_the_measured_example_matrices(example: str, family: str) -> None:
    policy = load_policy(EXAMPLES / example / "policy")
    expected = yaml.safe_load((EXAMPLES / example / "expected-matrix.yaml").read_text())
    analyzer = Analyzer(policy)
    checked = 0
    for label, source in matrix_sources(policy, family):  # type: ignore[arg-type]
        for target in matrix_targets(policy, family):  # type: ignore[arg-type]
            if target.split("@")[0] == source:
                continue
            predicted = []
            for service in policy_services(policy):
                result = trace(analyzer, source, target, FlowSpec(proto=service.proto, port=service.port, family=4 if family == "ipv4" else 6))
                checked += 1
                if result.delivered:
                    predicted.append(str(service))
            assert sorted(predicted) == sorted((expected.get(label) or {}).get(target, [])), (label, target)
    assert checked > 20


POLICY = """
version: 1
settings:
  default: {in: drop, out: accept}
  host_default: {in: drop}
  management: [192.168.100.0/24]
hosts:
  node1: {address: [192.168.100.11, "fd00:100::11"]}
networks:
  lan: {bridge: br-lan, subnets: [10.0.1.0/24, "fd00:1::/64"]}
  nas: {bridge: br-nas, subnets: [10.0.9.0/24], isolated: true,
        rules: [{id: to-nfs, action: accept, to: vm:nfs, service: nfs}]}
groups:
  admins: [192.168.100.0/24]
schedules:
  office: {days: [mon, tue, wed, thu, fri], time: "08:00-18:00", timezone: UTC}
filters:
  no-smtp:
    rules: [{direction: out, action: drop, tcp: 25}]
zones:
  web:
    rules:
      - {id: https, direction: in, action: accept, service: https}
      - {id: office-ssh, direction: in, action: accept, tcp: 22, schedule: office}
      - {id: limited, direction: in, action: accept, tcp: 8080, limit: {rate: 5/minute}}
      - {id: high-sports, direction: in, action: accept, tcp: 9000, sport: 1024-65535}
vms:
  web1:
    host: node1
    zone: web
    nics: [{network: lan, mac: "52:54:00:00:00:01", ips: [10.0.1.10, "fd00:1::10"]}]
    filters: [clean-traffic, no-smtp]
  web2:
    host: node1
    zone: web
    nics: [{network: lan, ips: [10.0.1.11]}]
    rules:
      - {id: no-admin-https, direction: in, action: reject, from: group:admins, tcp: 443}
  nfs:
    host: node1
    nics: [{network: nas, ips: [10.0.9.2]}]
    rules: [{id: nfs-in, direction: in, action: accept, service: nfs}]
  client:
    host: node1
    nics: [{network: nas, ips: [10.0.9.3]}, {network: lan, ips: [10.0.1.30]}]
    rules: [{id: client-in, direction: in, action: accept, tcp: 5000}]
"""


def _line_of(text: str) -> int:
    return next(n for n, line in enumerate(POLICY.splitlines(), 1) if text in line)


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> Analyzer:
    return Analyzer(load_policy(write_policy(tmp_path_factory.mktemp("p"), POLICY)), timezone="UTC")


def test_the_deciding_rule_is_named_with_its_place(analyzer: Analyzer) -> None:
    result = trace(analyzer, "outside:203.0.113.10", "vm:web1", FlowSpec("tcp", 443))
    assert result.verdict == "accept"
    decided = result.to_json()["cases"][0]["decided_by"]
    assert decided["rule"] == "https" and decided["where"] == f"policy.yaml:{_line_of('id: https')}"
    assert "service: https" in decided["text"]
    blocked = trace(analyzer, "outside:203.0.113.10", "vm:web1", FlowSpec("tcp", 444))
    assert blocked.verdict == "drop" and blocked.cases[0].outcome.decisive.label == "default-in"


def test_vm_rules_come_before_zone_rules(analyzer: Analyzer) -> None:
    result = trace(analyzer, "outside:192.168.100.50", "vm:web2", FlowSpec("tcp", 443))
    assert result.verdict == "reject" and result.cases[0].outcome.decisive.label == "no-admin-https"
    assert trace(analyzer, "outside:203.0.113.10", "vm:web2", FlowSpec("tcp", 443)).verdict == "accept"


def test_a_scheduled_rule_exists_only_inside_its_window(analyzer: Analyzer) -> None:
    monday_noon = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    sunday = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    inside = trace(analyzer, "outside:203.0.113.10", "vm:web1", FlowSpec("tcp", 22, at=monday_noon))
    outside = trace(analyzer, "outside:203.0.113.10", "vm:web1", FlowSpec("tcp", 22, at=sunday))
    assert (inside.verdict, outside.verdict) == ("accept", "drop")
    anytime = trace(analyzer, "outside:203.0.113.10", "vm:web1", FlowSpec("tcp", 22))
    assert anytime.verdict == "depends"
    windows = {case.verdict: case for case in anytime.cases}
    assert windows["accept"].outcome.decisive.label == "office-ssh"
    assert "mon 08:00-mon 17:59" in anytime.to_json()["cases"][0]["when"] + anytime.to_json()["cases"][1]["when"]


def test_a_rate_limited_accept_shows_what_happens_over_the_rate(analyzer: Analyzer) -> None:
    result = trace(analyzer, "outside:203.0.113.10", "vm:web1", FlowSpec("tcp", 8080))
    assert result.verdict == "accept"
    assert [case.verdict for case in result.over_rate] == ["drop"]
    assert any("rate" in note for note in result.notes)


def test_source_ports_split_the_verdict_when_a_rule_matches_them(analyzer: Analyzer) -> None:
    assert trace(analyzer, "outside:203.0.113.10", "vm:web1", FlowSpec("tcp", 9000)).verdict == "accept"  # ephemeral ports
    assert trace(analyzer, "outside:203.0.113.10", "vm:web1", FlowSpec("tcp", 9000, sport=80)).verdict == "drop"


def test_guard_filters_are_final_for_drops(analyzer: Analyzer) -> None:
    result = trace(analyzer, "vm:web1", "outside:203.0.113.25", FlowSpec("tcp", 25))
    assert result.verdict == "drop"
    assert result.cases[0].outcome.decisive.stage == "guards vm:web1 nic 0 out"
    assert trace(analyzer, "vm:web2", "outside:203.0.113.25", FlowSpec("tcp", 25)).verdict == "accept"


def test_an_isolated_network_is_a_third_check_between_its_guests(analyzer: Analyzer) -> None:
    to_nfs = trace(analyzer, "vm:client", "vm:nfs", FlowSpec("tcp", 2049))
    assert to_nfs.verdict == "accept"
    assert "network:nas" in [d.stage for d in to_nfs.cases[0].outcome.decisions]
    back = trace(analyzer, "vm:nfs", "vm:client@nas", FlowSpec("tcp", 5000))
    assert back.verdict == "drop" and back.cases[0].outcome.decisive.label == "net-nas-default"
    # the same client is reachable on its other network, where nothing isolates it
    assert trace(analyzer, "vm:web1", "vm:client@lan", FlowSpec("tcp", 5000)).verdict == "accept"


def test_the_nodes_input_keeps_the_management_anti_lockout(analyzer: Analyzer) -> None:
    assert trace(analyzer, "outside:192.168.100.50", "host:node1", FlowSpec("tcp", 22)).verdict == "accept"
    result = trace(analyzer, "outside:203.0.113.10", "host:node1", FlowSpec("tcp", 22))
    assert result.verdict == "drop" and result.cases[0].outcome.decisive.label == "host-default-in"


def test_icmpv6_neighbour_discovery_is_always_accepted(analyzer: Analyzer) -> None:
    result = trace(analyzer, "outside:2001:db8::5", "vm:web1", FlowSpec("icmp", icmp_type="nd-neighbor-solicit"))
    assert result.verdict == "accept" and result.cases[0].outcome.decisive.label == "icmpv6-essentials"
    assert trace(analyzer, "outside:2001:db8::5", "vm:web1", FlowSpec("icmp", icmp_type="echo-request")).verdict == "drop"


def test_addresses_name_their_owner(analyzer: Analyzer) -> None:
    result = trace(analyzer, "10.0.1.11", "10.0.1.10", FlowSpec("tcp", 443))
    assert (result.src.label, result.dst.label, result.verdict) == ("vm:web2", "vm:web1", "accept")


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("vm:nope", "vm:web1", "vm nope is not in the policy"),
        ("zone:web", "vm:web1", "use `zonewall reach`"),
        ("vm:web2", "outside:2001:db8::1", "has no IPv6 address"),
        ("outside:300.1.1.1", "vm:web1", "expected outside:ADDRESS"),
    ],
)
def test_bad_endpoints_are_clear_errors(analyzer: Analyzer, source: str, target: str, message: str) -> None:
    with pytest.raises(TraceError, match=message.replace("`", ".")):
        trace(analyzer, source, target, FlowSpec("tcp", 443))


def test_cli_trace_exit_status_and_json(tmp_path: Path) -> None:
    policy = str(write_policy(tmp_path, POLICY))
    runner = CliRunner()
    accepted = runner.invoke(app, ["trace", policy, "--from", "outside:203.0.113.10", "--to", "vm:web1", "--tcp", "443", "--json"])
    assert accepted.exit_code == 0, accepted.output
    document = json.loads(accepted.stdout)
    assert document["verdict"] == "accept" and document["flow"]["dst"] == "10.0.1.10"
    assert [s["stage"] for s in document["cases"][0]["stages"]] == ["guards vm:web1 nic 0 in", "vm:web1 in"]
    blocked = runner.invoke(app, ["trace", policy, "--from", "outside:203.0.113.10", "--to", "vm:web1", "--udp", "53"])
    assert blocked.exit_code == 1 and "default-in" in blocked.stdout
    at = runner.invoke(app, ["trace", policy, "--from", "outside:203.0.113.10", "--to", "vm:web1", "--tcp", "22", "--at", "2026-11-23T12:00+00:00", "--json"])
    assert json.loads(at.stdout)["verdict"] == "accept"
    bad = runner.invoke(app, ["trace", policy, "--from", "vm:web1", "--to", "vm:web2"])
    assert bad.exit_code == 2




@pytest.fixture(scope="module")
def reply_analyzer(tmp_path_factory: pytest.TempPathFactory) -> Analyzer:
    from tests.kernel.test_trace_replies import POLICY as REPLY_POLICY  # the kernel checks the same policy

    return Analyzer(load_policy(write_policy(tmp_path_factory.mktemp("r"), REPLY_POLICY)), timezone="UTC")


def test_a_guard_that_drops_the_replies_fails_the_connection(reply_analyzer: Analyzer) -> None:
    # guards are stateless (the bridge family has no conntrack): the SYN leaves, the
    # SYN-ACK to the guest's ephemeral port is dropped on the way back
    result = trace(reply_analyzer, "vm:locked", "vm:server", FlowSpec("tcp", 8443))
    assert result.verdict == "drop"
    decisive = result.cases[0].outcome.decisive
    assert decisive.stage == "guards vm:locked nic 0 in (the reply)" and decisive.label == "filter no-replies-in"
    assert trace(reply_analyzer, "vm:locked", "vm:server", FlowSpec("icmp")).verdict == "drop"
    # the same flows from a NIC without the filter, and the guest as a server, are fine
    assert trace(reply_analyzer, "vm:free", "vm:server", FlowSpec("tcp", 8443)).verdict == "accept"
    assert trace(reply_analyzer, "vm:server", "vm:locked", FlowSpec("tcp", 22)).verdict == "accept"
    # a source port outside the dropped range: the replies pass
    assert trace(reply_analyzer, "vm:locked", "vm:server", FlowSpec("tcp", 8443, sport=1000)).verdict == "accept"


def test_a_datagram_whose_replies_are_dropped_still_arrives_with_a_note(reply_analyzer: Analyzer) -> None:
    result = trace(reply_analyzer, "vm:locked", "vm:server", FlowSpec("udp", 5353))
    assert result.verdict == "accept"
    assert any("replies are dropped by guards vm:locked nic 0 in (the reply)" in note for note in result.notes)


def test_reach_and_diff_judge_the_replies_through_guards(reply_analyzer: Analyzer) -> None:
    from tests.kernel.test_trace_replies import POLICY as REPLY_POLICY
    from zonewall.analysis.diff import diff_policies
    from zonewall.analysis.reach import reach

    # what locked can open: tcp/8443 only from source ports whose replies pass (not the
    # kernel's ephemeral range), no echo at all; a datagram arrives, with a note
    (found,) = reach(reply_analyzer, "vm:locked", "from")
    to_server = sorted(service for row in found.rows if "server" in row.vms for service in row.services)
    assert to_server == ["tcp 8443 sport 0-32767,61000-65535", "udp 5353"], to_server
    assert not any("icmp echo-request" in service and "except" not in service for row in found.rows for service in row.services)
    assert any("replies are dropped by guards vm:locked nic 0 in (the reply)" in note for note in found.notes)
    # a guard rule that dropped the replies removed: diff sees the connections open
    unlocked = load_policy_text(REPLY_POLICY.replace("      - {direction: in, action: drop, tcp: 32768-60999}\n", ""), "policy.yaml")
    result = diff_policies(reply_analyzer.policy, unlocked, timezone="UTC")
    opened = [row for row in result.rows if row.change == "opened" and "vm:locked" in row.src and "vm:server" in row.dst]
    assert opened and any("tcp 8443" in service for row in opened for service in row.services), [r.to_json() for r in result.rows]
    assert diff_policies(reply_analyzer.policy, reply_analyzer.policy, timezone="UTC").identical
