"""Issue 18's dataplane keys: what `check` refuses, each next to the variant it accepts."""

from __future__ import annotations

import pytest

from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy_text

BASE = """
version: 1
hosts: {node1: {address: 192.168.90.11}}
networks:
  red: {bridge: vmbr1, subnets: [10.90.1.0/24], RED}
  blue: {bridge: vmbr2, subnets: [10.90.1.0/24], BLUE}
vms:
  a: {host: node1, nics: [{network: red, mac: "52:54:00:90:01:0a", NIC}], filters: [clean-traffic]}
  b: {host: node1, nics: [{network: blue, mac: "52:54:00:90:01:0b", ips: [10.90.1.10]}], rules: [RULE]}
"""


def policy(red: str = "tenant: red", blue: str = "tenant: blue", nic: str = "ips: [10.90.1.10]", rule: str = "{direction: in, action: accept, tcp: 80}"):  # type: ignore[no-untyped-def]
    return load_policy_text(BASE.replace("RED", red).replace("BLUE", blue).replace("NIC", nic).replace("RULE", rule))


def problems(**kwargs: str) -> str:
    with pytest.raises(PolicyError) as err:
        policy(**kwargs)
    return str(err.value)


def test_tenants_may_overlap_but_not_without_tenants_or_when_routed() -> None:
    assert policy().doc.networks["red"].tenant == "red"  # same subnet and address, two tenants
    assert "overlaps 10.90.1.0/24 of network" in problems(red="isolated: false", blue="isolated: false")
    assert "address 10.90.1.10 is also" in problems(red="tenant: red", blue="tenant: red")
    assert "the node routes neither" in problems(blue="tenant: blue, mode: routed")


def test_learning_dhcp_needs_the_networks_dhcp_servers() -> None:
    assert "learning dhcp needs network red's `dhcp_servers`" in problems(nic="learning: dhcp")
    nic = policy(red="tenant: red, dhcp_servers: [10.90.1.2]", nic="learning: dhcp").doc.vms["a"].nics[0]
    assert (nic.learning.ipv4, nic.learning.ipv6) == ("dhcp", "none")
    assert "learning 'sometimes'" in problems(nic="learning: sometimes")


def test_packet_limit_only_on_accept_rules() -> None:
    assert "`packet_limit` is only meaningful on an accept rule" in problems(rule="{direction: in, action: drop, tcp: 80, packet_limit: {rate: 10/second}}")
    rule = policy(rule="{direction: in, action: accept, tcp: 80, packet_limit: {rate: 10/second, per: source}}").doc.vms["b"].rules[0]
    assert rule.packet_limit is not None and (rule.packet_limit.rate, rule.packet_limit.burst, rule.packet_limit.per) == ("10/second", 5, "source")
