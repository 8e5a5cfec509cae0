"""Tap discovery on real links: libvirt's fe: MAC finds a tap of any name."""

from __future__ import annotations

import pytest

from zonewall.agent.discovery import discover_taps, local_links, taps_report
from zonewall.lab import netns
from zonewall.policy.loader import load_policy_text

pytestmark = pytest.mark.kernel

POLICY = """
version: 1
hosts: {node1: {address: 192.168.100.11}}
networks: {lan: {bridge: vmbr0, subnets: [10.0.0.0/24]}}
vms:
  web1: {host: node1, nics: [{network: lan, mac: "52:54:00:00:01:01", ips: [10.0.0.10]}]}
  app1: {host: node1, nics: [{network: lan, mac: "52:54:00:00:02:01", ips: [10.0.0.20]}]}
"""


def test_a_tap_is_found_by_its_mac_in_the_namespace(netns_name: str) -> None:
    # what libvirt does: the guest has 52:54:..., its tap on the node fe:54:...
    netns.add_veth(netns_name, "vnet3", netns_name, "guest0", mac_a="fe:54:00:00:01:01", mac_b="52:54:00:00:01:01")
    links = local_links(netns_name)
    assert links["fe:54:00:00:01:01"] == "vnet3"
    assert netns.run_in_netns(netns_name, local_links)["fe:54:00:00:01:01"] == "vnet3"  # the agent inside the node (netlink)
    found = discover_taps(load_policy_text(POLICY), "node1", links, lambda domain: None)
    assert taps_report(found) == {"app1/0": "app1i0 (default)", "web1/0": "vnet3 (mac)"}
