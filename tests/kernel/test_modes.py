"""Network modes with real packets: routed, isolated, and host_services.

- routed: the outside reaches a guest directly (no NAT: it sees the client's address)
  and the guest reaches the outside with its own address, while a port its rules do
  not open stays closed;
- isolated: nothing is routed out, even when the guest has a route (the lab gives it
  one here so the drop is the firewall's, not a missing route);
- host_services: a guest reaches the node's dns and nothing else of the node.
"""

from __future__ import annotations

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.lab import netns
from zonewall.lab.probing import Service, probe

POLICY = """
version: 1
hosts: {node1: {address: 192.168.100.11, uplink: eth0}}
networks:
  routednet: {bridge: virbr2, subnets: [10.61.0.0/24], gateway: [10.61.0.1], mode: routed, host_services: [dns]}
  isonet: {bridge: virbr3, subnets: [10.71.0.0/24], gateway: [10.71.0.1], mode: isolated, host_services: [dns]}
vms:
  r1:
    host: node1
    nics: [{network: routednet, ips: [10.61.0.10]}]
    rules: [{id: r1-web, direction: in, action: accept, tcp: 80}]
  i1:
    host: node1
    nics: [{network: isonet, ips: [10.71.0.10]}]
"""
INTERNET = "203.0.113.10"


@pytest.fixture(scope="module")
def modes_lab(tmp_path_factory):
    with running_lab(write_policy(tmp_path_factory.mktemp("modes"), POLICY)) as lab:
        state, _ = lab
        # a route the isolated guest should not have: the firewall must still stop it
        netns.ip("route", "add", "default", "via", "10.71.0.1", ns=state.vms["i1"])
        yield lab


@pytest.mark.kernel
def test_routed_network_in_and_out_without_nat(modes_lab):
    state, policy = modes_lab
    inbound = probe(state, policy, f"outside:{INTERNET}", "vm:r1", Service("tcp", 80))
    assert inbound.delivered and inbound.seen_src == INTERNET, inbound
    closed = probe(state, policy, f"outside:{INTERNET}", "vm:r1", Service("tcp", 81), timeout=0.5)
    assert not closed.delivered, closed  # the VM's default drop still applies
    outbound = probe(state, policy, "vm:r1", f"outside:{INTERNET}", Service("tcp", 80))
    assert outbound.delivered and outbound.seen_src == "10.61.0.10", outbound


@pytest.mark.kernel
def test_isolated_network_routes_nothing_out(modes_lab):
    state, policy = modes_lab
    result = probe(state, policy, "vm:i1", f"outside:{INTERNET}", Service("tcp", 80), timeout=0.5)
    assert result.verdict == "blocked", result
    to_routed = probe(state, policy, "vm:i1", "vm:r1", Service("tcp", 80), timeout=0.5)
    assert to_routed.verdict == "blocked", to_routed


@pytest.mark.kernel
@pytest.mark.parametrize("vm", ["r1", "i1"])
def test_host_services_only(modes_lab, vm):
    state, policy = modes_lab
    dns = probe(state, policy, f"vm:{vm}", "host:node1", Service("udp", 53))
    assert dns.delivered and dns.reply, dns
    ssh = probe(state, policy, f"vm:{vm}", "host:node1", Service("tcp", 22), timeout=0.5)
    assert ssh.verdict == "blocked", ssh
    # the outside still reaches the node's ssh: the restriction is per guest network
    outside = probe(state, policy, f"outside:{INTERNET}", "host:node1", Service("tcp", 22))
    assert outside.delivered, outside
