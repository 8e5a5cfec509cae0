"""How a rule's match keys become nft statements, per family: what users rely on."""

from __future__ import annotations

from zonewall.compiler import nftexpr as x
from zonewall.compiler.matches import SetRegistry, rule_matches
from zonewall.policy.loader import load_policy_text

BASE = """
version: 1
hosts: {{node1: {{address: 192.168.100.11}}}}
networks: {{lan: {{bridge: vmbr1, subnets: [10.1.0.0/24, "fd00:1::/64"]}}}}
groups:
  office: ["10.20.0.0/16", "fd00:20::/48"]
  v4only: ["10.30.0.0/16"]
vms:
  app1:
    host: node1
    nics: [{{network: lan, ips: [10.1.0.70, "fd00:1::70"]}}]
    rules:
      - {rule}
"""


def matches(rule: str) -> list[tuple[str | None, list[dict]]]:
    policy = load_policy_text(BASE.format(rule=rule))
    return rule_matches(policy, SetRegistry(), policy.doc.vms["app1"].rules[0])


NFPROTO = {"ipv4": x.match(x.meta("nfproto"), "ipv4"), "ipv6": x.match(x.meta("nfproto"), "ipv6")}


def test_a_port_rule_without_peers_is_one_rule_for_both_families() -> None:
    assert matches("{direction: in, action: accept, tcp: 443}") == [(None, [x.match(x.payload("tcp", "dport"), 443)])]


def test_family_key_restricts_the_rule() -> None:
    assert matches("{direction: in, action: accept, tcp: 443, family: ipv6}") == [("ipv6", [NFPROTO["ipv6"], x.match(x.payload("tcp", "dport"), 443)])]


def test_peers_of_one_family_make_a_rule_of_that_family_only() -> None:
    out = matches("{direction: in, action: accept, from: group:v4only, tcp: 22}")
    assert [family for family, _ in out] == ["ipv4"]
    assert out[0][1][0] == x.match(x.payload("ip", "saddr"), "@g-v4only-v4")


def test_excluding_an_ipv4_range_does_not_reopen_it_through_the_ipv6_half() -> None:
    # "!10.0.0.0/8" = all IPv6, plus IPv4 except 10/8: the IPv6 half says so
    out = matches('{direction: out, action: accept, to: ["!10.0.0.0/8"], tcp: 443}')
    families = dict(out)
    assert families["ipv6"][0] == NFPROTO["ipv6"]
    assert families["ipv4"][0].left == x.payload("ip", "daddr")
    assert None not in families


def test_a_group_in_both_families_uses_its_named_sets() -> None:
    out = matches("{direction: in, action: accept, from: group:office, service: ssh}")
    assert [s[0].right for _, s in out] == ["@g-office-v4", "@g-office-v6"]


def test_icmp_types_by_number_and_name_are_one_type() -> None:
    out = matches("{direction: in, action: accept, icmpv6: [nd-neighbor-solicit, 135]}")
    assert out == [("ipv6", [x.match(x.payload("icmpv6", "type"), "nd-neighbor-solicit")])]


def test_an_ipv6_only_icmp_type_makes_an_ipv6_rule() -> None:
    out = matches("{direction: in, action: accept, icmp: packet-too-big}")
    assert [family for family, _ in out] == ["ipv6"]
