"""DHCP-snooping learning (`learning: dhcp`), `learning: none` and IPv6 learning
(`learning: {ipv6: any}`) with real frames: each address that must pass next to the
forged one that must not.

Lab (policies/dhcp-learning.yaml): `dhcp` is the network's trusted DHCP server
(`dhcp_servers`), `rogue` another guest that plays one; `learner` (learning dhcp),
`locked` (learning none) and `v6learner` (IPv6 learning) run clean-traffic without
addresses of the family; the network's own filter (no-mac-spoofing) guards every NIC; `target` accepts UDP 9999 from anyone, so only the guards
decide. Frames are hand-built (zonewall.lab.raw); a sniffer on the target's eth0
decides. The steps run in order in one test each (the learned sets are state).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from zonewall.compiler.naming import TABLE, tap_name
from zonewall.dataplane.backend import LibNftBackend
from zonewall.lab import raw

from .conftest import Lab

pytestmark = pytest.mark.kernel

ARRIVE, ABSENT = 1.5, 0.7
SERVER, ROGUE, TARGET = "10.82.1.2", "10.82.1.3", "10.82.1.12"
ACKED, FORGED, OFFERED = "10.82.1.50", "10.82.1.51", "10.82.1.52"
TARGET6 = "fd82:1::12"


@dataclass(frozen=True)
class World:
    lab: Lab

    def ns(self, vm: str) -> str:
        return self.lab.vm_ns(vm)

    def mac(self, vm: str) -> str:
        return self.lab.nic(vm).mac  # type: ignore[return-value]

    def learned(self, vm: str, family: int) -> list[str]:
        name = f"learned{family}-{tap_name(vm, 0, self.lab.nic(vm))}"
        with LibNftBackend(netns=self.lab.node_ns("node1")) as backend:
            objects = backend.list_table("bridge", TABLE) or []
        for obj in objects:
            body = obj.get("set")
            if body is not None and body.get("name") == name:
                return [e["elem"]["val"] if isinstance(e, dict) else e for e in body.get("elem", [])]
        raise AssertionError(f"no set {name} in the bridge table")


@pytest.fixture(scope="module")
def world(lab_factory: Callable[[str], Lab]) -> World:
    return World(lab_factory("dhcp-learning.yaml"))


def udp_from(world: World, vm: str, source: str, *, expect: bool) -> bool:
    token = b"zw-dhcp-" + os.urandom(6).hex().encode()
    if ":" in source:
        frame = raw.ipv6_udp_frame(src_mac=world.mac(vm), dst_mac=world.mac("target"), src_ip=source, dst_ip=TARGET6, dport=9999, payload=token)
    else:
        frame = raw.ipv4_udp_frame(src_mac=world.mac(vm), dst_mac=world.mac("target"), src_ip=source, dst_ip=TARGET, dport=9999, payload=token)
    with raw.Sniffer(world.ns("target"), "eth0") as sniffer:
        raw.send_frame(world.ns(vm), "eth0", frame)
        return sniffer.wait_for(raw.incoming(raw.udp_payload_contains(token)), timeout=ARRIVE if expect else ABSENT) is not None


def dhcp_reply(world: World, server: str, client: str, yiaddr: str, *, message_type: int = 5) -> bool:
    """`server` (a VM) answers `client` with `yiaddr`; whether the reply reached it."""
    server_ip = world.lab.nic(server).ips[0]
    frame = raw.dhcp_reply_frame(src_mac=world.mac(server), dst_mac=world.mac(client), server_ip=server_ip, client_mac=world.mac(client), yiaddr=yiaddr, message_type=message_type)
    with raw.Sniffer(world.ns(client), "eth0") as sniffer:
        raw.send_frame(world.ns(server), "eth0", frame)
        return sniffer.wait_for(raw.incoming(lambda f: f.sport == 67 and f.dport == 68), timeout=ARRIVE) is not None


def test_dhcp_learning_allows_the_acked_address_and_drops_forged_ones(world: World) -> None:
    # before any lease: the guest's own packets teach nothing (learning any would learn this one)
    assert not udp_from(world, "learner", FORGED, expect=False), "an address the guest invented"
    assert world.learned("learner", 4) == []
    # an OFFER from the trusted server, and an ACK from a guest playing server, teach nothing
    assert dhcp_reply(world, "dhcp", "learner", OFFERED, message_type=2), "the offer reaches the guest"
    assert dhcp_reply(world, "rogue", "learner", FORGED), "the rogue's ack reaches the guest"
    assert world.learned("learner", 4) == []
    assert not udp_from(world, "learner", FORGED, expect=False), "the rogue server's address"
    assert not udp_from(world, "learner", OFFERED, expect=False), "an offered, never acked address"
    # an ACK of the trusted server for the learner's MAC: that address, and only it
    assert dhcp_reply(world, "dhcp", "learner", ACKED)
    assert world.learned("learner", 4) == [ACKED]
    assert udp_from(world, "learner", ACKED, expect=True), "the DHCP-acked address"
    assert not udp_from(world, "learner", FORGED, expect=False), "a forged address after the lease"
    # the trusted server's ACK for another MAC does not move the lock
    assert dhcp_reply(world, "dhcp", "locked", FORGED)
    assert world.learned("learner", 4) == [ACKED]


def test_learning_none_never_learns(world: World) -> None:
    assert dhcp_reply(world, "dhcp", "locked", "10.82.1.60")
    for source in ("10.82.1.60", "10.82.1.61"):
        assert not udp_from(world, "locked", source, expect=False), f"learning none passed {source}"
    # the control: the same frame from a guest with that address as its own passes
    assert udp_from(world, "rogue", ROGUE, expect=True)


def test_ipv6_learning_locks_on_the_first_source(world: World) -> None:
    first, second = "fd82:1::50", "fd82:1::51"
    assert world.learned("v6learner", 6) == []
    assert not udp_from(world, "v6learner", "2001:db8::7", expect=False), "outside the network's IPv6 subnets: not learnable"
    assert udp_from(world, "v6learner", first, expect=True), "the first IPv6 source"
    assert world.learned("v6learner", 6) == [first]
    assert not udp_from(world, "v6learner", second, expect=False), "a second IPv6 source"
    assert udp_from(world, "v6learner", first, expect=True), "the learned one still passes"
    assert udp_from(world, "v6learner", "10.82.1.13", expect=True), "its own IPv4 address is untouched"


def test_the_networks_filters_guard_a_nic_without_filters_of_its_own(world: World) -> None:
    """`networks.lan.filters: [no-mac-spoofing]` (libvirt's filter attached to a
    network): rogue has no filters, so only the network's can drop its forged MAC."""
    forged_mac = "52:54:00:82:01:99"
    token = b"zw-netfilter-" + os.urandom(6).hex().encode()
    frame = raw.ipv4_udp_frame(src_mac=forged_mac, dst_mac=world.mac("target"), src_ip=ROGUE, dst_ip=TARGET, dport=9999, payload=token)
    with raw.Sniffer(world.ns("target"), "eth0") as sniffer:
        raw.send_frame(world.ns("rogue"), "eth0", frame)
        assert sniffer.wait_for(raw.incoming(raw.udp_payload_contains(token)), timeout=ABSENT) is None, "a forged source MAC passed the network's filter"
    assert udp_from(world, "rogue", ROGUE, expect=True), "the same frame with its own MAC"
