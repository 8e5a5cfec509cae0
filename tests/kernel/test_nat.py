"""NAT with real packets: masquerade behind the node's uplink and dnat port forwarding.

A guest on a `mode: nat` network reaches the outside, which sees the node's address;
the outside reaches a guest's service through the node's forwarded port (IPv4 and
IPv6); a port that is not forwarded stays closed, and an `open: false` forward is
left to the VM's own rules (here: its default drop).
"""

from __future__ import annotations

import socket

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.compiler.node import compile_node
from zonewall.compiler.render import normalize_listing, render_table
from zonewall.lab import netns
from zonewall.lab.cluster import ensure_outside_address
from zonewall.lab.probe import Listener
from zonewall.lab.probing import Service, probe

POLICY = """
version: 1
hosts: {node1: {address: [192.168.100.11, "2001:db8:100::11"], uplink: eth0}}
networks:
  natnet: {bridge: virbr1, subnets: [10.51.0.0/24, "fd00:51::/64"], gateway: [10.51.0.1, "fd00:51::1"], mode: nat}
vms:
  web1:
    host: node1
    nics: [{network: natnet, mac: "52:54:00:51:00:10", ips: [10.51.0.10, "fd00:51::10"]}]
    rules:
      - {id: web-8000, direction: in, action: accept, tcp: 8000}
nat:
  - {type: dnat, host: node1, listen: {tcp: 8443}, to: {vm: web1, port: 443}}
  - {type: dnat, host: node1, listen: {tcp: 8080}, to: {vm: web1, port: 80}, open: false}
  - {type: dnat, host: node1, listen: {tcp: 8001}, to: {vm: web1, port: 8000}, open: false}
"""
OUTSIDE = {4: "203.0.113.10", 6: "2001:db8:ffff::10"}
NODE = {4: "192.168.100.11", 6: "2001:db8:100::11"}


def forwarded(state, vm_port: int, node_port: int, version: int) -> tuple[str, str | None]:
    """Connect from the outside to the node's port; (verdict, source the VM saw)."""
    ensure_outside_address(state, OUTSIDE[version])
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    token = f"tok-{vm_port}-{node_port}-{version}".encode()
    with Listener(state.vms["web1"], "tcp", vm_port, family=family) as listener:
        sock = netns.netns_socket(state.outside, family, socket.SOCK_STREAM)
        with sock:
            sock.bind((OUTSIDE[version], 0))
            sock.settimeout(1.0)
            try:
                sock.connect((NODE[version], node_port))
                sock.sendall(token + b"\n")
            except TimeoutError:
                return "blocked", None
            except OSError as exc:
                return f"refused ({exc.strerror})", None
            seen = listener.wait_token(token, 1.0)
    return ("delivered", seen) if seen else ("blocked", None)


@pytest.fixture(scope="module")
def nat_lab(tmp_path_factory):
    with running_lab(write_policy(tmp_path_factory.mktemp("nat"), POLICY)) as lab:
        yield lab


@pytest.mark.kernel
def test_guest_reaches_outside_behind_the_node_address(nat_lab):
    state, policy = nat_lab
    result = probe(state, policy, "vm:web1", f"outside:{OUTSIDE[4]}", Service("tcp", 80))
    assert result.delivered, result
    assert result.seen_src == NODE[4], result  # masqueraded behind the uplink
    # IPv6 is not masqueraded unless asked: the outside has no route back to fd00:51::/64
    v6 = probe(state, policy, "vm:web1", f"outside:{OUTSIDE[6]}", Service("tcp", 80), timeout=0.5)
    assert not v6.delivered or v6.seen_src == "fd00:51::10", v6


@pytest.mark.kernel
@pytest.mark.parametrize("version", [4, 6])
def test_forwarded_port_reaches_the_guest_and_a_neighbour_port_does_not(nat_lab, version):
    state, _ = nat_lab
    verdict, seen = forwarded(state, 443, 8443, version)
    assert verdict == "delivered", verdict
    assert seen == OUTSIDE[version]  # dnat keeps the client's address
    # the same service port on the node without a forward: closed (the node answers)
    verdict, _ = forwarded(state, 443, 8444, version)
    assert verdict != "delivered"
    # the guest's own address is not reachable from the outside on a nat network
    direct = probe(state, nat_lab[1], f"outside:{OUTSIDE[version]}", "vm:web1", Service("tcp", 443), timeout=0.5)
    assert not direct.delivered, direct


@pytest.mark.kernel
def test_open_false_leaves_the_forward_to_the_vm_rules(nat_lab):
    state, _ = nat_lab
    assert forwarded(state, 80, 8080, 4)[0] == "blocked"  # no VM rule: default drop
    assert forwarded(state, 8000, 8001, 4)[0] == "delivered"  # the VM's rule accepts tcp/8000


@pytest.mark.kernel
def test_nat_ruleset_lists_as_rendered(nat_lab):
    state, policy = nat_lab
    ruleset = compile_node(policy, "node1", timezone="UTC")
    listing = netns.exec_in_netns(state.nodes["node1"], ["nft", "list", "table", "inet", "zonewall"]).stdout
    assert normalize_listing(listing) == normalize_listing(render_table(ruleset.table("inet", "zonewall")))


@pytest.mark.kernel
@pytest.mark.parametrize("port, expected", [(8443, "accept"), (8080, "drop"), (8001, "accept")])
def test_trace_follows_the_forward_like_the_kernel(nat_lab, port, expected):
    from zonewall.analysis.engine import Analyzer
    from zonewall.analysis.trace import FlowSpec, trace

    state, policy = nat_lab
    result = trace(Analyzer(policy), f"outside:{OUTSIDE[4]}", "host:node1", FlowSpec("tcp", port))
    assert result.verdict == expected, result.to_json()
    assert result.dst.label == "vm:web1" and any(n.startswith("dnat nat[") for n in result.notes)
    vm_port = {8443: 443, 8080: 80, 8001: 8000}[port]
    assert (forwarded(state, vm_port, port, 4)[0] == "delivered") == (expected == "accept")
