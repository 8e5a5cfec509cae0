"""A rule's protocol keys as the plan reads them, and the plan's Step built field by
field (its __init__ is written out for speed: it must stay the dataclass's)."""

from __future__ import annotations

import dataclasses
import inspect

from zonewall.compiler.plan.rules import ProtocolKeys, l4_alternatives
from zonewall.compiler.plan.vocabulary import IcmpTypes, Ports, Protocols, Step
from zonewall.policy.loader import load_policy_text

POLICY = """
version: 1
hosts: {node1: {address: 192.168.100.11}}
networks: {lan: {bridge: vmbr1, subnets: [10.1.0.0/24]}}
services:
  web: {tcp: ["80", "443"]}
  tls: {tcp: ["443", "8443"], udp: ["443"]}
  tunnel: {proto: [gre]}
vms:
  app1:
    host: node1
    nics: [{network: lan, ips: [10.1.0.70]}]
    rules:
      - {direction: in, action: accept, service: [web, tls]}
      - {direction: in, action: accept, tcp: ["22", "22", "2222"], sport: ["1024-65535"]}
      - {direction: in, action: accept, from: 10.9.0.0/16}
      - {direction: in, action: accept, service: tunnel}
      - {direction: in, action: accept, icmp: [echo-request], udp: ["53"]}
"""


def keys_of_rules() -> list[ProtocolKeys]:
    policy = load_policy_text(POLICY)
    return [ProtocolKeys.of(policy, rule) for rule in policy.doc.vms["app1"].rules]


def test_services_keys_are_united_each_value_once_in_order() -> None:
    services = keys_of_rules()[0]
    assert services.tcp == ("80", "443", "8443")
    assert services.udp == ("443",)
    assert not services.any_protocol


def test_a_rule_s_own_keys_once_each_with_its_source_ports() -> None:
    own = keys_of_rules()[1]
    assert own.tcp == ("22", "2222")
    assert own.sport == ("1024-65535",)
    assert l4_alternatives(own, "ipv4") == [Ports("tcp", ((22, 22), (2222, 2222)), ((1024, 65535),))]


def test_only_a_rule_without_any_protocol_key_or_service_is_any_protocol() -> None:
    peers_only, tunnel = keys_of_rules()[2:4]
    assert peers_only.any_protocol and l4_alternatives(peers_only, "ipv6") == [None]
    assert not tunnel.any_protocol  # a service of other protocols is not "any protocol"
    assert l4_alternatives(tunnel, "ipv4") == [Protocols(((47, "gre"),))]


def test_icmp_beside_ports_is_an_alternative_of_its_own_family() -> None:
    mixed = keys_of_rules()[4]
    assert l4_alternatives(mixed, "ipv4") == [Ports("udp", ((53, 53),)), IcmpTypes("icmp", ((8, "echo-request"),))]
    assert l4_alternatives(mixed, "ipv6") == [Ports("udp", ((53, 53),)), IcmpTypes("icmpv6", ((128, "echo-request"),))]


def test_step_init_takes_every_field_in_order_with_its_default() -> None:
    parameters = list(inspect.signature(Step.__init__).parameters.values())[1:]
    fields = dataclasses.fields(Step)
    assert [p.name for p in parameters] == [f.name for f in fields]
    assert [p.default for p in parameters] == [inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default for f in fields]


def test_a_step_is_frozen_and_compares_by_what_it_means() -> None:
    step = Step(None, "accept", "r1", ref=object(), origin=("vm", "app1", "r1"))
    same = Step(None, "accept", "r1", ref=object(), origin=("vm", "app1", "r1"))
    assert step == same and hash(step) == hash(same)  # the rule object is not compared
    assert step != dataclasses.replace(step, action="drop")
    try:
        step.action = "drop"  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a step could be changed")
