"""NAT, network modes and conntrack helpers in the IR (kernel behaviour: tests/kernel/test_nat.py,
test_modes.py, test_conntrack_helpers.py; full rulesets: tests/scenarios/nat, conntrack-helpers)."""

from __future__ import annotations

from pathlib import Path

from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.compiler.node import compile_node
from zonewall.compiler.render import render_rule
from zonewall.policy.loader import load_policy

BASE = """
version: 1
hosts: {node1: {address: [192.168.100.11, "2001:db8::11"], UPLINK}}
networks:
  natnet: {bridge: virbr1, subnets: [10.50.0.0/24, "fd00:50::/64"], gateway: [10.50.0.1], mode: MODE}
vms:
  web1:
    host: node1
    nics: [{network: natnet, ips: [10.50.0.10, "fd00:50::10"]}]
    rules: [{id: no-telnet, direction: in, action: drop, tcp: 23}]
EXTRA
"""


def compiled(tmp_path: Path, *, mode: str = "nat", uplink: str = "uplink: eth0", extra: str = ""):
    text = BASE.replace("MODE", mode).replace("UPLINK", uplink).replace("EXTRA", extra)
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml")
    return policy, compile_node(policy, "node1", timezone="UTC").table("inet", "zonewall")


def rules_of(table, chain: str) -> list[str]:
    return [render_rule(rule) for rule in table.chain(chain).rules]


def test_bridged_network_without_nat_has_no_nat_chains_or_mode_maps(tmp_path):
    _, table = compiled(tmp_path, mode="bridged")
    names = {chain.name for chain in table.chains}
    assert not names & {"nat-prerouting", "nat-postrouting", "l3in-natnet", "hostsvc-natnet"}
    assert not {s.name for s in table.sets} & {"l3-in", "l3-out", "host-services"}


def test_nat_mode_masquerades_ipv4_only_behind_the_uplink(tmp_path):
    _, table = compiled(tmp_path)
    assert rules_of(table, "nat-postrouting") == ['oifname "eth0" ip saddr 10.50.0.0/24 counter packets 0 bytes 0 masquerade comment "network natnet: mode nat"']


def test_without_uplink_masquerade_applies_to_what_leaves_the_subnet(tmp_path):
    _, table = compiled(tmp_path, uplink="comment: no uplink")
    (rule,) = rules_of(table, "nat-postrouting")
    assert rule.startswith("ip saddr 10.50.0.0/24 ip daddr != 10.50.0.0/24 ")


def test_dnat_both_families_and_open_accept_before_the_default(tmp_path):
    extra = "nat:\n  - {type: dnat, host: node1, listen: {tcp: 8443}, to: {vm: web1, port: 443}}\n"
    _, table = compiled(tmp_path, extra=extra)
    pre = rules_of(table, "nat-prerouting")
    assert any("ip daddr 192.168.100.11 tcp dport 8443" in r and "dnat ip to 10.50.0.10:443" in r for r in pre)
    assert any("ip6 daddr 2001:db8::11 tcp dport 8443" in r and "dnat ip6 to [fd00:50::10]:443" in r for r in pre)
    chain = rules_of(table, "vm-web1-in")
    assert [r.split(" comment ")[1] for r in chain] == ['"no-telnet"', '"nat[0] dnat open"', '"default-in"']
    assert chain[1].startswith("ct status dnat tcp dport 443 ct original proto-dst 8443 ")


def test_open_false_adds_no_accept(tmp_path):
    extra = "nat:\n  - {type: dnat, host: node1, listen: {udp: 5353}, to: {vm: web1, port: 53}, open: false}\n"
    _, table = compiled(tmp_path, extra=extra)
    assert not any("dnat open" in r for r in rules_of(table, "vm-web1-in"))


def test_nat_network_admits_only_forwarded_connections(tmp_path):
    _, table = compiled(tmp_path)
    chain = rules_of(table, "l3in-natnet")
    assert chain[0].startswith('iifname "virbr1" return')
    assert any(r.startswith("ct status ! dnat counter packets 0 bytes 0 drop") for r in chain)
    assert chain[-1].startswith("accept")


def test_host_services_accept_listed_services_then_drop(tmp_path):
    _, table = compiled(tmp_path, mode="isolated")
    assert rules_of(table, "hostsvc-natnet") == ['counter packets 0 bytes 0 drop comment "nothing else of the node"']


def test_helpers_are_objects_bound_by_port(tmp_path):
    extra = "settings: {conntrack: {helpers: [ftp, irc]}}\n"
    _, table = compiled(tmp_path, extra=extra)
    assert [(h.name, h.type, h.protocol, h.l3proto) for h in table.helpers] == [("helper-ftp", "ftp", "tcp", "inet"), ("helper-irc", "irc", "tcp", "ip")]
    forward = rules_of(table, "forward")
    assert 'tcp dport 21 ct helper set "helper-ftp" comment "conntrack helper ftp"' in forward
    assert 'meta nfproto ipv4 tcp dport 6667 ct helper set "helper-irc" comment "conntrack helper irc"' in forward


def test_trace_follows_dnat_and_an_explicit_drop_beats_open(tmp_path):
    extra = ("nat:\n  - {type: dnat, host: node1, listen: {tcp: 8443}, to: {vm: web1, port: 443}}\n"
             "  - {type: dnat, host: node1, listen: {tcp: 2323}, to: {vm: web1, port: 23}}\n")
    policy, _ = compiled(tmp_path, extra=extra)
    analyzer = Analyzer(policy)
    opened = trace(analyzer, "outside:203.0.113.9", "host:node1", FlowSpec("tcp", 8443))
    assert opened.verdict == "accept" and opened.dst_address == "10.50.0.10"
    assert opened.cases[0].outcome.decisions[-1].label == "nat[0] dnat open"
    telnet = trace(analyzer, "outside:203.0.113.9", "host:node1", FlowSpec("tcp", 2323))
    assert telnet.verdict == "drop" and telnet.cases[0].outcome.decisive.label == "no-telnet"
    v6 = trace(analyzer, "outside:2001:db8:ffff::9", "host:node1", FlowSpec("tcp", 8443))
    assert v6.verdict == "accept" and v6.dst_address == "fd00:50::10"
    plain = trace(analyzer, "outside:203.0.113.9", "host:node1", FlowSpec("tcp", 8444))
    assert plain.dst.kind == "host"  # not forwarded: the node's own port
