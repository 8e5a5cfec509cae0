"""The analyzer answers for what the dataplane enforces: network modes, NAT, network
rules on every network, the exact source address, the replies through guards.

Each test is one of the cases issue 13 lists (the analyzer of before answered them
wrongly: `diff` saw no difference, `trace` accepted what the kernel blocks, ...).
The kernel side of the same policy: tests/kernel/test_analyzer_modes.py.
"""

from __future__ import annotations

import pytest

from zonewall.analysis.diff import diff_policies
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.reach import reach
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.policy.loader import load_policy_text

# A nat network, a routed network, a libvirt-isolated network and two port
# forwards (one open, one left to the VM's rules), as a new user would write it;
# plus a bridged network whose rules keep its guests off each other's ssh.
POLICY = """\
version: 1
settings: {default: {in: drop, out: accept}}
hosts:
  node1: {address: [192.168.100.11, "fd00:100::11"], uplink: eth0}
  node2: {address: [192.168.100.12, "fd00:100::12"], uplink: eth0}
networks:
  natnet: {bridge: virbr1, subnets: [10.50.0.0/24], gateway: [10.50.0.1], mode: nat, host_services: [dns]}
  routednet: {bridge: virbr2, subnets: [10.60.0.0/24], gateway: [10.60.0.1], mode: routed}
  isonet: {bridge: virbr3, subnets: [10.70.0.0/24], gateway: [10.70.0.1], mode: isolated}
  lan:
    bridge: vmbr0
    subnets: [10.80.0.0/24, "fd00:80::/64"]
    rules:
      - {id: lan-no-ssh, action: drop, tcp: 22}
vms:
  natvm:
    host: node1
    nics: [{network: natnet, ips: [10.50.0.10]}]
    rules: [{id: nat-web, direction: in, action: accept, tcp: 443}]
  routed1:
    host: node1
    nics: [{network: routednet, ips: [10.60.0.10]}]
    rules: [{id: routed-web, direction: in, action: accept, tcp: 443}]
  iso1:
    host: node1
    nics: [{network: isonet, ips: [10.70.0.10]}]
    rules: [{id: iso-web, direction: in, action: accept, tcp: 443}]
  lan1:
    host: node2
    nics: [{network: lan, ips: [10.80.0.10, 10.80.0.11, "fd00:80::10"]}]
    rules: [{id: lan1-in, direction: in, action: accept, tcp: [22, 443]}]
  lan2:
    host: node2
    nics: [{network: lan, ips: [10.80.0.20]}]
    rules: [{id: lan2-in, direction: in, action: accept, tcp: [22, 443]}]
nat:
  - {type: dnat, host: node1, listen: {tcp: 8443}, to: {vm: natvm, port: 443}}
  - {type: dnat, host: node1, listen: {tcp: 2222}, to: {vm: natvm, port: 22}, open: false}
"""
OUTSIDE = "outside:203.0.113.10"


def analyzer(text: str = POLICY) -> Analyzer:
    return Analyzer(load_policy_text(text, "policy.yaml"), timezone="UTC")


def verdict(a: Analyzer, src: str, dst: str, port: int, **kw: object) -> str:
    return trace(a, src, dst, FlowSpec("tcp", port, **kw)).verdict  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def a() -> Analyzer:
    return analyzer()


def test_trace_does_not_route_into_an_isolated_network(a: Analyzer) -> None:
    result = trace(a, "vm:natvm", "vm:iso1", FlowSpec("tcp", 443))
    assert result.verdict == "drop"
    assert result.cases[0].outcome.decisive.label == "isolated network: nothing is routed in"  # type: ignore[union-attr]
    assert verdict(a, OUTSIDE, "vm:iso1", 443) == "drop"
    assert verdict(a, "vm:iso1", OUTSIDE, 443) == "drop"  # nothing routed out either


def test_trace_follows_the_modes_positive_cases(a: Analyzer) -> None:
    assert verdict(a, OUTSIDE, "vm:routed1", 443) == "accept"  # routed: reachable directly
    assert verdict(a, OUTSIDE, "vm:routed1", 444) == "drop"  # its own default still applies
    assert verdict(a, OUTSIDE, "vm:natvm", 443) == "drop"  # nat: not without a forward
    assert verdict(a, OUTSIDE, "host:node1", 8443) == "accept"  # the open forward
    assert verdict(a, OUTSIDE, "host:node1", 2222) == "drop"  # open: false, the VM's default
    assert verdict(a, "vm:natvm", "vm:routed1", 443) == "accept"  # nat -> routed on one node
    assert verdict(a, "vm:natvm", OUTSIDE, 443) == "accept"


def test_trace_shows_the_masqueraded_source_to_the_receiver() -> None:
    # lan2 accepts ssh only from node1's address: natvm gets in (masqueraded behind
    # node1), a routed guest with its own address does not
    text = POLICY.replace("rules: [{id: lan2-in, direction: in, action: accept, tcp: [22, 443]}]",
                          "rules: [{id: lan2-in, direction: in, action: accept, tcp: 443, from: host:node1}]")
    a = analyzer(text)
    masqueraded = trace(a, "vm:natvm", "vm:lan2", FlowSpec("tcp", 443))
    assert masqueraded.verdict == "accept", masqueraded.to_json()
    assert verdict(a, "vm:routed1", "vm:lan2", 443) == "drop"


def test_host_services_are_all_a_guest_of_a_routed_network_reaches_of_its_node(a: Analyzer) -> None:
    assert trace(a, "vm:natvm", "host:node1", FlowSpec("udp", 53)).verdict == "accept"
    result = trace(a, "vm:natvm", "host:node1", FlowSpec("tcp", 22))
    assert result.verdict == "drop" and result.cases[0].outcome.decisive.label == "nothing else of the node"  # type: ignore[union-attr]


def test_reach_does_not_list_the_outside_for_a_guest_of_an_isolated_network(a: Analyzer) -> None:
    (result,) = reach(a, "vm:iso1", "to")
    assert not [row for row in result.rows if row.peer_kind == "outside"], [r.services for r in result.rows]
    (routed,) = reach(a, "vm:routed1", "to")
    assert [row.services for row in routed.rows if row.peer_kind == "outside"] == [("tcp 443",)]


def test_network_rules_apply_on_a_network_that_is_not_isolated(a: Analyzer) -> None:
    result = trace(a, "vm:lan1", "vm:lan2", FlowSpec("tcp", 22))
    assert result.verdict == "drop" and result.cases[0].outcome.decisive.label == "lan-no-ssh"  # type: ignore[union-attr]
    assert verdict(a, "vm:lan1", "vm:lan2", 443) == "accept"  # the network's default: accept


def test_trace_from_the_second_address_of_a_nic_uses_that_address(a: Analyzer) -> None:
    text = POLICY.replace("rules: [{id: lan2-in, direction: in, action: accept, tcp: [22, 443]}]",
                          "rules: [{id: lan2-in, direction: in, action: accept, tcp: 443, from: 10.80.0.11}]")
    a = analyzer(text)
    second = trace(a, "10.80.0.11", "vm:lan2", FlowSpec("tcp", 443))
    assert second.src_address == "10.80.0.11" and second.verdict == "accept"
    assert second.to_json()["flow"]["src"] == "10.80.0.11"
    first = trace(a, "10.80.0.10", "vm:lan2", FlowSpec("tcp", 443))
    assert first.src_address == "10.80.0.10" and first.verdict == "drop"


def _diff(old: str, new: str):  # type: ignore[no-untyped-def]
    return diff_policies(load_policy_text(old, "policy.yaml"), load_policy_text(new, "policy.yaml"), timezone="UTC")


def test_diff_sees_an_isolated_network_turned_bridged() -> None:
    new = POLICY.replace("mode: isolated}", "mode: bridged}")
    result = _diff(POLICY, new)
    assert not result.identical
    assert any(row.change == "opened" and "vm:iso1" in row.dst for row in result.rows), [r.to_json() for r in result.rows]


def test_diff_sees_a_deleted_port_forward() -> None:
    new = POLICY.replace("  - {type: dnat, host: node1, listen: {tcp: 8443}, to: {vm: natvm, port: 443}}\n", "")
    result = _diff(POLICY, new)
    assert not result.identical
    # node1 accepts tcp/8443 itself now (host_default accept): delivered elsewhere;
    # routed1, a guest of node1, reached natvm through it and now meets its host_services
    rows = {(row.change, tuple(sorted(row.src)), tuple(row.dst), row.services) for row in result.rows}
    assert rows == {
        ("changed", ("host:node2", "outside: any ipv4", "vm:lan1", "vm:lan2"), ("host:node1",), ("tcp 8443",)),
        ("closed", ("vm:routed1",), ("host:node1",), ("tcp 8443",)),
    }, [r.to_json() for r in result.rows]
    # with a node that drops what it does not serve, the forwarded service is closed
    strict = POLICY.replace("settings: {default: {in: drop, out: accept}}", "settings: {default: {in: drop, out: accept}, host_default: {in: drop}}")
    closed = _diff(strict, strict.replace("  - {type: dnat, host: node1, listen: {tcp: 8443}, to: {vm: natvm, port: 443}}\n", ""))
    assert {(r.change, r.services) for r in closed.rows} == {("closed", ("tcp 8443",))}, [r.to_json() for r in closed.rows]
    assert {"outside: any ipv4", "vm:routed1"} <= set().union(*(r.src for r in closed.rows))


def test_diff_sees_network_rules_of_a_bridged_network() -> None:
    new = POLICY.replace("      - {id: lan-no-ssh, action: drop, tcp: 22}\n", "      - {id: lan-no-ssh, action: drop, tcp: 23}\n")
    result = _diff(POLICY, new)
    assert any(row.change == "opened" and "tcp 22" in row.services for row in result.rows), [r.to_json() for r in result.rows]


def test_a_hairpin_forward_is_traced_as_the_nodes_and_named_so() -> None:
    """A guest using its own node's forward to a guest of its own segment is not
    translated in the analyzer's model (the reply would bypass the translation): trace
    names the node as the destination, as it judges it, not the forward's VM; a guest
    of another network routed by the node is forwarded and named by the VM."""
    text = POLICY.replace("  routed1:\n", "  natvm2:\n    host: node1\n    nics: [{network: natnet, ips: [10.50.0.11]}]\n  routed1:\n")
    a = analyzer(text)
    hairpin = trace(a, "vm:natvm2", "host:node1", FlowSpec("tcp", 8443))
    assert hairpin.dst.label == "host:node1" and hairpin.dst_address == "192.168.100.11", hairpin.to_json()
    assert any("hairpin" in note and "nat[0]" in note for note in hairpin.notes), hairpin.notes
    routed = trace(a, "vm:routed1", "host:node1", FlowSpec("tcp", 8443))
    assert routed.dst.label == "vm:natvm" and routed.verdict == "accept", routed.to_json()
