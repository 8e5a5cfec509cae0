"""Guard learning mode (a NIC without `ips` under clean-traffic) with real frames.

Lab (policies/guard-learning.yaml): `learner` has no addresses and runs
clean-traffic; `target` accepts UDP 9999 from anyone, so only the bridge guards
decide. Frames are hand-built and written to the learner's eth0 (zonewall.lab.raw);
a sniffer on the target's eth0 decides. The steps run in order in one test (the set
is state, and xdist may split a module's tests across workers): before learning only DHCP and ARP probes pass and nothing is learned;
the first IPv4 packet from A passes and locks the port to A; B is dropped, A keeps
working; a re-apply given the learned address (what the agent does) keeps the lock,
while a re-apply without it would have unlocked the port.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from zonewall.compiler.naming import TABLE, tap_name
from zonewall.compiler.node import compile_node
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import readback_hash
from zonewall.lab import raw

from .conftest import Lab

pytestmark = pytest.mark.kernel

ARRIVE_TIMEOUT = 1.5
ABSENT_TIMEOUT = 0.7
ADDRESS_A = "10.78.1.50"  # what the learner uses first
ADDRESS_B = "10.78.1.51"  # a second address: a spoof once A is learned
OUTSIDE_SUBNET = "192.0.2.7"  # never learnable on this network (not in its subnets)


@dataclass(frozen=True)
class World:
    lab: Lab
    ns: str
    mac: str
    target_ns: str
    target_mac: str
    target_ip: str
    node_ns: str
    set_name: str


@pytest.fixture(scope="module")
def world(lab_factory: Callable[[str], Lab]) -> World:
    lab = lab_factory("guard-learning.yaml")
    nic, target = lab.nic("learner"), lab.nic("target")
    assert nic.mac and target.mac
    return World(lab, lab.vm_ns("learner"), nic.mac, lab.vm_ns("target"), target.mac, "10.78.1.12",
                 lab.node_ns("node1"), f"learned4-{tap_name('learner', 0, nic)}")


def _token() -> bytes:
    return b"zw-learn-" + os.urandom(6).hex().encode()


def _delivered(world: World, frame: bytes, predicate: raw.Predicate, *, expect: bool) -> bool:
    with raw.Sniffer(world.target_ns, "eth0") as sniffer:
        raw.send_frame(world.ns, "eth0", frame)
        got = sniffer.wait_for(raw.incoming(predicate), timeout=ARRIVE_TIMEOUT if expect else ABSENT_TIMEOUT)
    return got is not None


def udp_from(world: World, source: str, *, expect: bool) -> bool:
    token = _token()
    frame = raw.ipv4_udp_frame(src_mac=world.mac, dst_mac=world.target_mac, src_ip=source, dst_ip=world.target_ip, dport=9999, payload=token)
    return _delivered(world, frame, raw.udp_payload_contains(token), expect=expect)


def arp_reply_from(world: World, sender_ip: str, *, expect: bool) -> bool:
    frame = raw.arp_frame(op="reply", src_mac=world.mac, sender_ip=sender_ip, target_ip=world.target_ip, dst_mac=world.target_mac)
    return _delivered(world, frame, raw.arp_matching(op=2, sender_ip=sender_ip, sender_mac=world.mac), expect=expect)


def learned(world: World) -> list[str]:
    with LibNftBackend(netns=world.node_ns) as backend:
        objects = backend.list_table("bridge", TABLE) or []
    for obj in objects:
        body = obj.get("set")
        if body is not None and body.get("name") == world.set_name:
            return [e["elem"]["val"] if isinstance(e, dict) else e for e in body.get("elem", [])]
    raise AssertionError(f"no set {world.set_name} in the bridge table")


def reapply(world: World, addresses: list[str] | None) -> None:
    policy = world.lab.policy
    ruleset = compile_node(policy, "node1", learned={("learner", 0): addresses} if addresses else None)
    with LibNftBackend(netns=world.node_ns) as backend:
        apply_ruleset(backend, ruleset)  # a full replace: the set is recreated from the ruleset


def step_1_before_learning_only_dhcp_and_arp_probes_pass(world: World) -> None:
    assert learned(world) == []
    token = _token()
    discover = raw.ipv4_udp_frame(src_mac=world.mac, dst_mac=raw.BROADCAST, src_ip="0.0.0.0", dst_ip="255.255.255.255", sport=68, dport=67, payload=token)
    assert _delivered(world, discover, raw.udp_payload_contains(token), expect=True), "DHCP discover from 0.0.0.0"
    probe = raw.arp_frame(op="request", src_mac=world.mac, sender_ip="0.0.0.0", target_ip=ADDRESS_A)
    assert _delivered(world, probe, raw.arp_matching(op=1, sender_ip="0.0.0.0", target_ip=ADDRESS_A), expect=True), "RFC 5227 probe"
    # not learnable: outside the network's subnets, link-local
    for bogus in (OUTSIDE_SUBNET, "169.254.3.4"):
        assert not udp_from(world, bogus, expect=False), f"{bogus} must not pass (nor be learned)"
    assert learned(world) == [], "DHCP, probes and unlearnable sources learn nothing"


def readback(world: World) -> str:
    with LibNftBackend(netns=world.node_ns) as backend:
        return readback_hash(backend, [("bridge", TABLE), ("inet", TABLE)])


def step_2_first_packet_passes_and_is_learned(world: World) -> None:
    before = readback(world)
    assert udp_from(world, ADDRESS_A, expect=True), "the first IPv4 packet from A"
    assert learned(world) == [ADDRESS_A]
    assert readback(world) == before, "learning is the packet path's: the agent must not see it as drift"


def step_3_second_address_is_dropped_and_first_keeps_working(world: World) -> None:
    assert not udp_from(world, ADDRESS_B, expect=False), "UDP from B after A was learned"
    assert not arp_reply_from(world, ADDRESS_B, expect=False), "ARP claiming B after A was learned"
    assert learned(world) == [ADDRESS_A], "the full set refused B"
    assert udp_from(world, ADDRESS_A, expect=True), "A still passes"
    assert arp_reply_from(world, ADDRESS_A, expect=True), "ARP for A passes"
    token = _token()
    renew = raw.ipv4_udp_frame(src_mac=world.mac, dst_mac=world.target_mac, src_ip=ADDRESS_A, dst_ip=world.target_ip, sport=68, dport=67, payload=token)
    assert _delivered(world, renew, raw.udp_payload_contains(token), expect=True), "a DHCP renewal from A"


def step_4_reapply_with_the_learned_address_keeps_the_lock(world: World) -> None:
    reapply(world, [ADDRESS_A])
    assert learned(world) == [ADDRESS_A]
    assert not udp_from(world, ADDRESS_B, expect=False), "B after the re-apply"
    assert udp_from(world, ADDRESS_A, expect=True), "A after the re-apply"
    assert learned(world) == [ADDRESS_A]


def step_5_reapply_without_it_would_unlock(world: World) -> None:
    """Why the agent passes the address back: the set comes back empty otherwise."""
    reapply(world, None)
    assert learned(world) == []
    assert udp_from(world, ADDRESS_B, expect=True), "an empty set learns again"
    assert learned(world) == [ADDRESS_B]
    assert not udp_from(world, ADDRESS_A, expect=False)


def test_learning_lifecycle(world: World) -> None:
    step_1_before_learning_only_dhcp_and_arp_probes_pass(world)
    step_2_first_packet_passes_and_is_learned(world)
    step_3_second_address_is_dropped_and_first_keeps_working(world)
    step_4_reapply_with_the_learned_address_keeps_the_lock(world)
    step_5_reapply_without_it_would_unlock(world)
