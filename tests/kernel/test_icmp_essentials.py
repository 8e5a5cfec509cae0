"""ICMP and ICMPv6 essentials (RFC 4890) under default deny in both directions.

Two guests on two bridged networks, routed by the outside's router; both VMs drop
everything by default in and out, and only a UDP service from a to b is open. The
path to b has a smaller MTU, so the router answers a's large datagram with an ICMPv6
packet-too-big (IPv4: fragmentation-needed): it is related to a's flow and reaches
a (a's path MTU drops to 1280), and neighbour discovery works although no rule
mentions it. An ICMPv6 packet-too-big that belongs to no connection is dropped.
"""

from __future__ import annotations

import socket
import struct
import time

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.lab import netns
from zonewall.lab.probing import Service, probe

POLICY = """
version: 1
hosts: {node1: {address: 192.168.100.11}}
networks:
  neta: {bridge: vmbr1, subnets: [10.64.0.0/24, "fd00:64::/64"]}
  netb: {bridge: vmbr2, subnets: [10.65.0.0/24, "fd00:65::/64"]}
vms:
  a:
    host: node1
    default: {in: drop, out: drop}
    nics: [{network: neta, mac: "52:54:00:64:00:10", ips: [10.64.0.10, "fd00:64::10"]}]
    rules: [{id: a-to-b, direction: out, action: accept, udp: 7000, to: vm:b}]
  b:
    host: node1
    default: {in: drop, out: drop}
    nics: [{network: netb, mac: "52:54:00:65:00:10", ips: [10.65.0.10, "fd00:65::10"]}]
    rules: [{id: b-from-a, direction: in, action: accept, udp: 7000, from: vm:a}]
"""
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24


@pytest.fixture(scope="module")
def icmp_lab(tmp_path_factory):
    with running_lab(write_policy(tmp_path_factory.mktemp("icmp"), POLICY)) as lab:
        state, _ = lab
        # netb is the second network: the outside's bridge br.1 and node1's trunk port n0.t1
        netns.ip_batch(["link set dev n0.t1 mtu 1280", "link set dev br.1 mtu 1280"], ns=state.outside)
        yield lab


def path_mtu_after_big_datagram(ns: str, destination: str, version: int) -> int:
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    sock = netns.netns_socket(ns, family, socket.SOCK_DGRAM)
    with sock:
        if version == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        sock.connect((destination, 7000))
        for _ in range(3):
            try:
                sock.send(b"x" * 1400)
            except OSError:
                pass  # EMSGSIZE: the error already arrived
            time.sleep(0.3)
        if version == 6:
            return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
        return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)


@pytest.mark.kernel
@pytest.mark.parametrize("version", [4, 6])
def test_too_big_error_of_a_flow_reaches_the_guest(icmp_lab, version):
    state, policy = icmp_lab
    family = "ipv6" if version == 6 else "ipv4"
    # the small service works under default deny both ways (IPv6: neighbour discovery too)
    assert probe(state, policy, "vm:a", "vm:b", Service("udp", 7000), family=family).delivered
    assert not probe(state, policy, "vm:a", "vm:b", Service("udp", 7001), family=family, timeout=0.5).delivered
    destination = "fd00:65::10" if version == 6 else "10.65.0.10"
    assert path_mtu_after_big_datagram(state.vms["a"], destination, version) == 1280


@pytest.mark.kernel
def test_packet_too_big_without_a_connection_is_dropped(icmp_lab):
    state, _ = icmp_lab
    receiver = netns.netns_socket(state.vms["a"], socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    sender = netns.netns_socket(state.outside, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    with receiver, sender:
        receiver.settimeout(0.8)
        # an embedded IPv6/UDP header of a flow a never sent (from a to a stranger)
        inner = struct.pack("!IHBB16s16s", 6 << 28, 8, 17, 64, socket.inet_pton(socket.AF_INET6, "fd00:64::10"), socket.inet_pton(socket.AF_INET6, "fd00:99::1"))
        inner += struct.pack("!HHHH", 40000, 9, 8, 0)
        sender.sendto(struct.pack("!BBHI", 2, 0, 0, 1280) + inner, ("fd00:64::10", 0))
        seen = []
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            try:
                data = receiver.recv(2048)
            except TimeoutError:
                break
            if data[:1] == b"\x02":
                seen.append(data)
    assert not seen, "an unrelated packet-too-big reached the guest"
