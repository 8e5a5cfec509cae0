"""Issue 18's policy-level constructs: what the checker refuses (one clear error each,
the negative beside the accepted form) and what the compiler makes of the accepted
ones (a security group rendered once per node, a switched-off VM without chains)."""

from __future__ import annotations

import pytest

from zonewall.compiler.node import compile_node
from zonewall.compiler.render import render_nft
from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy_text

BASE = """\
version: 1
hosts:
  node1: {address: [192.168.7.11], uplink: eth0}
networks:
  lan: {bridge: vmbr1, subnets: [10.7.0.0/24]}
  lan2: {bridge: vmbr2, subnets: [10.7.1.0/24]}
security_groups:
  web: {rules: [{id: web-80, direction: in, action: accept, tcp: 80}]}
vms:
  a:
    host: node1
    nics: [{network: lan, ips: [10.7.0.10], name: net0}, {network: lan2, ips: [10.7.1.10], name: net1}]
    rules: [RULE_A]
  b:
    host: node1
    firewall: FIREWALL_B
    nics: [{network: lan, ips: [10.7.0.20]}]
    rules: [{security_group: web}]
host_rules: [HOST_RULE]
"""
GOOD = {"RULE_A": "{security_group: web, nic: [net1]}", "FIREWALL_B": "true", "HOST_RULE": "{direction: in, action: accept, tcp: 22, interface: [eth0]}"}


def policy_text(**changes: str) -> str:
    text = BASE
    for key, value in {**GOOD, **changes}.items():
        text = text.replace(key, value)
    return text


def problem(**changes: str) -> str:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(policy_text(**changes))
    return str(caught.value)


def test_the_accepted_forms_load() -> None:
    policy = load_policy_text(policy_text())
    assert set(policy.doc.security_groups) == {"web"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"RULE_A": "{security_group: nosuch}"}, "security group nosuch does not exist"),
        ({"RULE_A": "{security_group: web, tcp: 22}"}, "cannot be set on a security group reference"),
        ({"RULE_A": "{direction: in, tcp: 22}"}, "missing required key `action`"),
        ({"RULE_A": "{direction: in, action: accept, tcp: 22, nic: [net7]}"}, "has no NIC 'net7'"),
        ({"RULE_A": "{direction: in, action: accept, tcp: 22, interface: [eth0]}"}, "`interface` scopes host rules"),
        ({"HOST_RULE": "{direction: in, action: accept, tcp: 22, nic: [0]}"}, "`nic` scopes a VM's own rules"),
        ({"RULE_A": "{direction: in, action: accept, icmp: [destination-unreachable/300]}"}, "is not an ICMP type and code"),
        ({"RULE_A": "{direction: in, action: accept, icmp: [echo-request], log: loud}"}, "log"),
    ],
)
def test_each_misuse_is_one_clear_error(changes: dict[str, str], message: str) -> None:
    assert message in problem(**changes)


def test_a_security_group_cannot_reference_another() -> None:
    text = policy_text().replace("security_groups:\n", "security_groups:\n  outer: {rules: [{security_group: web}]}\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_text(text)
    assert "groups do not nest" in str(caught.value)


def test_a_security_group_is_one_chain_per_node_that_every_reference_jumps_to() -> None:
    nft = render_nft(compile_node(load_policy_text(policy_text()), "node1"))
    assert nft.count("chain sg-web-guest-in {") == 1
    assert nft.count("jump sg-web-guest-in") == 2  # a (scoped to net1) and b
    assert nft.count("tcp dport 80") == 1  # the group's rule exists once


def test_a_vm_whose_firewall_is_off_has_no_chains_and_is_not_dispatched() -> None:
    on = render_nft(compile_node(load_policy_text(policy_text()), "node1"))
    off = render_nft(compile_node(load_policy_text(policy_text(FIREWALL_B="false")), "node1"))
    assert "chain vm-b-in {" in on and "jump vm-b-in" in on
    assert "chain vm-b-in {" not in off and "jump vm-b-in" not in off


def test_an_interface_rule_matches_the_interface_and_an_icmp_code_the_code() -> None:
    nft = render_nft(compile_node(load_policy_text(policy_text(RULE_A="{direction: in, action: accept, icmp: [host-unreachable]}")), "node1"))
    assert 'iifname "eth0" tcp dport 22' in nft
    assert "icmp type destination-unreachable icmp code host-unreachable" in nft


def test_the_dashboards_vm_page_lists_a_security_groups_rules_in_place() -> None:
    from zonewall.controller.web.routes import effective_rules

    policy = load_policy_text(policy_text())
    rows = dict(effective_rules(policy, "b", [{"scope": "sg:web", "direction": "in", "rule": "web-80", "packets": 7, "bytes": 420}]))
    assert [(r["level"], r["id"], r["packets"]) for r in rows["in"]] == [("vm · group web", "web-80", 7), ("default", "default-in", "-")]
    assert [r["id"] for r in rows["out"]] == ["default-out"]  # the group has no out rule


def test_a_security_groups_counters_are_its_own() -> None:
    from zonewall.dataplane.counters import chain_scope, level_of

    assert chain_scope("inet", "sg-web-guest-in") == ("sg:web", "in")
    assert chain_scope("inet", "sg-my-web-host-out") == ("sg:my-web", "out")
    assert level_of("sg:web", "web-80") == "security_group"
    assert chain_scope("inet", "zone-web-in") == ("zone:web", "in")  # not taken for a group
