"""Guard filters (bridge table) against real spoofed frames, end to end.

Lab (policies/guards.yaml): three guests on one bridge of node1. `guarded` runs
clean-traffic, `free` runs no guard, `target` accepts UDP 9999 from anyone (so the
inet table lets every datagram below through: only the guards can stop one).

Each attack is a hand-built frame written to the attacker's eth0 (AF_PACKET inside
its namespace) towards the target's MAC; a sniffer on the target's eth0 decides.
Every case runs for both attackers: from `free` the forged frame must arrive (the
frame is deliverable, so the guard is what stops it), from `guarded` it must not.
Every attack also has a truthful control sent from `guarded` that must arrive (the
test can pass, and the guard does not overblock).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from zonewall.compiler.nics import eui64_link_local
from zonewall.lab import raw

from .conftest import Lab

pytestmark = pytest.mark.kernel

ARRIVE_TIMEOUT = 1.5  # a delivered frame shows up in milliseconds
ABSENT_TIMEOUT = 0.7  # how long we watch for a frame that must not come
FORGED_MAC = "52:54:00:66:66:66"  # belongs to no guest
FORGED_IP4 = "10.77.1.99"  # in the subnet, belongs to no guest
FORGED_IP6 = "fd77:1::99"
ICMPV6_RA, ICMPV6_NA = 134, 136


@dataclass(frozen=True)
class Guest:
    name: str
    ns: str
    mac: str
    ip4: str
    ip6: str

    @property
    def link_local(self) -> str:
        return eui64_link_local(self.mac)


def _guest(lab: Lab, name: str) -> Guest:
    nic = lab.nic(name)
    ip4 = next(ip for ip in nic.ips if ipaddress.ip_address(ip).version == 4)
    ip6 = next(ip for ip in nic.ips if ipaddress.ip_address(ip).version == 6)
    assert nic.mac is not None
    return Guest(name, lab.vm_ns(name), nic.mac, ip4, ip6)


@dataclass(frozen=True)
class World:
    lab: Lab
    guarded: Guest
    free: Guest
    target: Guest

    def attacker(self, name: str) -> Guest:
        return self.guarded if name == "guarded" else self.free

    def bystander(self, attacker: Guest) -> Guest:
        """A guest whose identity the attacker steals (not the attacker, not the target)."""
        return self.free if attacker is self.guarded else self.guarded


@pytest.fixture(scope="module")
def world(lab_factory: Callable[[str], Lab]) -> World:
    lab = lab_factory("guards.yaml")
    return World(lab, _guest(lab, "guarded"), _guest(lab, "free"), _guest(lab, "target"))


def _token() -> bytes:
    return b"zw-guard-" + os.urandom(6).hex().encode()


def delivered(world: World, sender: Guest, frame: bytes, predicate: raw.Predicate, *, expect: bool) -> bool:
    """Send ``frame`` from ``sender``'s eth0; did the target's eth0 receive it?

    Waits long when arrival is expected (fast on success) and ``ABSENT_TIMEOUT``
    when it is not, so a passing test stays quick either way.
    """
    with raw.Sniffer(world.target.ns, "eth0") as sniffer:
        raw.send_frame(sender.ns, "eth0", frame)
        got = sniffer.wait_for(raw.incoming(predicate), timeout=ARRIVE_TIMEOUT if expect else ABSENT_TIMEOUT)
    return got is not None


def expected(attacker: str) -> bool:
    """A forged frame arrives exactly when its sender has no guard."""
    return attacker == "free"


# ------------------------------------------------------------------ frame helpers


def icmpv6_frame(*, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, icmp: bytes, hop_limit: int = 255) -> bytes:
    """Ethernet + IPv6 + an ICMPv6 message (``icmp`` with a zero checksum field)."""
    src = ipaddress.IPv6Address(src_ip).packed
    dst = ipaddress.IPv6Address(dst_ip).packed
    pseudo = src + dst + struct.pack("!I3xB", len(icmp), socket.IPPROTO_ICMPV6)
    csum = raw.checksum(pseudo + icmp)
    icmp = icmp[:2] + struct.pack("!H", csum) + icmp[4:]
    hdr = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), socket.IPPROTO_ICMPV6, hop_limit, src, dst)
    return raw.ethernet(dst_mac, src_mac, raw.ETH_P_IPV6, hdr + icmp)


def router_advert(mac: str, nonce: int) -> bytes:
    """An RA with lifetime 0 (installs no default route even where it lands), a
    source link-layer option, and ``nonce`` as reachable time to recognise it."""
    body = struct.pack("!BBHBBHII", ICMPV6_RA, 0, 0, 64, 0, 0, nonce, 0)
    return body + struct.pack("!BB6s", 1, 1, raw.mac_to_bytes(mac))


def neighbour_advert(target_ip: str, mac: str, *, override: bool = True) -> bytes:
    flags = 0x20000000 if override else 0  # O (override) flag; S (solicited) is 0x40000000
    body = struct.pack("!BBHI16s", ICMPV6_NA, 0, 0, flags, ipaddress.IPv6Address(target_ip).packed)
    return body + struct.pack("!BB6s", 2, 1, raw.mac_to_bytes(mac))  # target link-layer option


def icmpv6_is(message: bytes) -> raw.Predicate:
    return lambda f: f.ip_proto == socket.IPPROTO_ICMPV6 and f.payload[4:] == message[4:] and f.payload[:1] == message[:1]


# -------------------------------------------------------------------- IPv4 / MAC


def test_controls_truthful_frames_from_guarded_guest_arrive(world: World) -> None:
    """Without these, every 'never arrives' below could be a broken test."""
    g, t = world.guarded, world.target
    token = _token()
    frame = raw.ipv4_udp_frame(src_mac=g.mac, dst_mac=t.mac, src_ip=g.ip4, dst_ip=t.ip4, dport=9999, payload=token)
    assert delivered(world, g, frame, raw.udp_payload_contains(token), expect=True), "IPv4 with the real MAC and IP"
    token = _token()
    frame = raw.ipv6_udp_frame(src_mac=g.mac, dst_mac=t.mac, src_ip=g.ip6, dst_ip=t.ip6, dport=9999, payload=token)
    assert delivered(world, g, frame, raw.udp_payload_contains(token), expect=True), "IPv6 with the real address"
    token = _token()
    frame = raw.ipv6_udp_frame(src_mac=g.mac, dst_mac=t.mac, src_ip=g.link_local, dst_ip=t.link_local, dport=9999, payload=token)
    assert delivered(world, g, frame, raw.udp_payload_contains(token), expect=True), (
        f"IPv6 from the guest's EUI-64 link-local {g.link_local} (the compiler's nic-ip6 set must hold it)"
    )
    reply = raw.arp_frame(op="reply", src_mac=g.mac, sender_ip=g.ip4, target_ip=t.ip4, dst_mac=t.mac)
    assert delivered(world, g, reply, raw.arp_matching(op=2, sender_ip=g.ip4, sender_mac=g.mac), expect=True), "truthful ARP reply"
    request = raw.arp_frame(op="request", src_mac=g.mac, sender_ip=g.ip4, target_ip=t.ip4)
    assert delivered(world, g, request, raw.arp_matching(op=1, sender_ip=g.ip4, target_ip=t.ip4), expect=True), "ARP request"
    probe = raw.arp_frame(op="request", src_mac=g.mac, sender_ip="0.0.0.0", target_ip=g.ip4)
    assert delivered(world, g, probe, raw.arp_matching(op=1, sender_ip="0.0.0.0", target_ip=g.ip4), expect=True), "RFC 5227 ARP probe"


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_forged_source_ip_is_dropped(world: World, attacker: str) -> None:
    a, t = world.attacker(attacker), world.target
    for forged in (FORGED_IP4, world.bystander(a).ip4):  # an unused address, another guest's
        token = _token()
        frame = raw.ipv4_udp_frame(src_mac=a.mac, dst_mac=t.mac, src_ip=forged, dst_ip=t.ip4, dport=9999, payload=token)
        got = delivered(world, a, frame, raw.udp_payload_contains(token), expect=expected(attacker))
        assert got == expected(attacker), f"{attacker} sent UDP from forged {forged} (real {a.ip4}): arrived={got}"
    # control from the same sender: the real address always arrives
    token = _token()
    frame = raw.ipv4_udp_frame(src_mac=a.mac, dst_mac=t.mac, src_ip=a.ip4, dst_ip=t.ip4, dport=9999, payload=token)
    assert delivered(world, a, frame, raw.udp_payload_contains(token), expect=True)


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_forged_source_mac_is_dropped(world: World, attacker: str) -> None:
    a, t = world.attacker(attacker), world.target
    for forged in (FORGED_MAC, world.bystander(a).mac):
        token = _token()
        frame = raw.ipv4_udp_frame(src_mac=forged, dst_mac=t.mac, src_ip=a.ip4, dst_ip=t.ip4, dport=9999, payload=token)
        got = delivered(world, a, frame, raw.udp_payload_contains(token), expect=expected(attacker))
        assert got == expected(attacker), f"{attacker} sent a frame from MAC {forged} (real {a.mac}): arrived={got}"
    token = _token()
    frame = raw.ipv4_udp_frame(src_mac=a.mac, dst_mac=t.mac, src_ip=a.ip4, dst_ip=t.ip4, dport=9999, payload=token)
    assert delivered(world, a, frame, raw.udp_payload_contains(token), expect=True)


def test_dhcp_discover_from_unspecified_source_passes(world: World) -> None:
    """allow-dhcp / no-ip-spoofing's exception: 0.0.0.0:68 -> broadcast:67 is not spoofing."""
    g = world.guarded
    token = _token()
    frame = raw.ipv4_udp_frame(src_mac=g.mac, dst_mac=raw.BROADCAST, src_ip="0.0.0.0", dst_ip="255.255.255.255",
                               sport=68, dport=67, payload=token)
    assert delivered(world, g, frame, raw.udp_payload_contains(token), expect=True)


# --------------------------------------------------------------------------- ARP


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_arp_reply_claiming_another_guests_ip_is_dropped(world: World, attacker: str) -> None:
    a, t = world.attacker(attacker), world.target
    victim = world.bystander(a)
    forged = raw.arp_frame(op="reply", src_mac=a.mac, sender_ip=victim.ip4, target_ip=t.ip4, dst_mac=t.mac)
    got = delivered(world, a, forged, raw.arp_matching(op=2, sender_ip=victim.ip4, sender_mac=a.mac), expect=expected(attacker))
    assert got == expected(attacker), f"{attacker} claimed {victim.ip4} ({victim.name}'s) is at {a.mac}: arrived={got}"
    # gratuitous request variant (sender = target = the stolen address), broadcast
    garp = raw.arp_frame(op="request", src_mac=a.mac, sender_ip=victim.ip4, target_ip=victim.ip4)
    got = delivered(world, a, garp, raw.arp_matching(op=1, sender_ip=victim.ip4, sender_mac=a.mac), expect=expected(attacker))
    assert got == expected(attacker), f"{attacker} sent a gratuitous ARP for {victim.ip4}: arrived={got}"
    truthful = raw.arp_frame(op="reply", src_mac=a.mac, sender_ip=a.ip4, target_ip=t.ip4, dst_mac=t.mac)
    assert delivered(world, a, truthful, raw.arp_matching(op=2, sender_ip=a.ip4, sender_mac=a.mac), expect=True)


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_arp_reply_with_forged_sender_mac_is_dropped(world: World, attacker: str) -> None:
    """Ethernet source is the real MAC; only the ARP sender hardware address lies."""
    a, t = world.attacker(attacker), world.target
    for forged_mac in (FORGED_MAC, world.bystander(a).mac):
        forged = raw.arp_frame(op="reply", src_mac=a.mac, sender_mac=forged_mac, sender_ip=a.ip4, target_ip=t.ip4, dst_mac=t.mac)
        got = delivered(world, a, forged, raw.arp_matching(op=2, sender_ip=a.ip4, sender_mac=forged_mac), expect=expected(attacker))
        assert got == expected(attacker), f"{attacker} sent an ARP reply with sender MAC {forged_mac}: arrived={got}"
    truthful = raw.arp_frame(op="reply", src_mac=a.mac, sender_ip=a.ip4, target_ip=t.ip4, dst_mac=t.mac)
    assert delivered(world, a, truthful, raw.arp_matching(op=2, sender_ip=a.ip4, sender_mac=a.mac), expect=True)


# -------------------------------------------------------------------------- IPv6


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_forged_ipv6_source_is_dropped(world: World, attacker: str) -> None:
    a, t = world.attacker(attacker), world.target
    for forged in (FORGED_IP6, world.bystander(a).ip6, world.bystander(a).link_local):
        token = _token()
        frame = raw.ipv6_udp_frame(src_mac=a.mac, dst_mac=t.mac, src_ip=forged, dst_ip=t.ip6, dport=9999, payload=token)
        got = delivered(world, a, frame, raw.udp_payload_contains(token), expect=expected(attacker))
        assert got == expected(attacker), f"{attacker} sent UDP from forged {forged} (real {a.ip6}): arrived={got}"
    token = _token()
    frame = raw.ipv6_udp_frame(src_mac=a.mac, dst_mac=t.mac, src_ip=a.ip6, dst_ip=t.ip6, dport=9999, payload=token)
    assert delivered(world, a, frame, raw.udp_payload_contains(token), expect=True)


@pytest.mark.parametrize("attacker", ["guarded", "free"])
def test_router_advertisement_from_guest_is_dropped(world: World, attacker: str) -> None:
    """Guests are not routers: an RA from the guest's own (valid) link-local address
    is dropped by the guard; the same RA from the unguarded guest arrives."""
    a, t = world.attacker(attacker), world.target
    for dst_ip, dst_mac in (("ff02::1", "33:33:00:00:00:01"), (t.link_local, t.mac)):
        message = router_advert(a.mac, nonce=int.from_bytes(os.urandom(4), "big"))
        frame = icmpv6_frame(src_mac=a.mac, dst_mac=dst_mac, src_ip=a.link_local, dst_ip=dst_ip, icmp=message)
        got = delivered(world, a, frame, icmpv6_is(message), expect=expected(attacker))
        assert got == expected(attacker), f"{attacker} sent a router advertisement to {dst_ip}: arrived={got}"


def test_neighbour_advert_claiming_another_guests_address_is_dropped(world: World) -> None:
    a, t = world.guarded, world.target
    truthful = neighbour_advert(a.ip6, a.mac)
    frame = icmpv6_frame(src_mac=a.mac, dst_mac=t.mac, src_ip=a.link_local, dst_ip=t.link_local, icmp=truthful)
    assert delivered(world, a, frame, icmpv6_is(truthful), expect=True), "control: an NA for the guest's own address"
    victim = world.bystander(a)
    message = neighbour_advert(victim.ip6, a.mac)
    frame = icmpv6_frame(src_mac=a.mac, dst_mac=t.mac, src_ip=a.link_local, dst_ip=t.link_local, icmp=message)
    assert not delivered(world, a, frame, icmpv6_is(message), expect=False)
