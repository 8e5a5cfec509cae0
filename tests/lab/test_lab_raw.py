"""zonewall.lab.raw: frame builders (pure) and send/sniff over real veths (kernel)."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from zonewall.lab import netns, raw

# ---------------------------------------------------------------- pure tests


def test_ipv4_udp_checksums_verify() -> None:
    f = raw.ipv4_udp_frame(src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02",
                           src_ip="10.0.0.1", dst_ip="10.0.0.2", sport=1234, dport=53,
                           payload=b"hello")
    ip_hdr = f[14:34]
    assert raw.checksum(ip_hdr) == 0  # a correct header sums to zero
    udp = f[34:34 + 13]
    pseudo = socket.inet_aton("10.0.0.1") + socket.inet_aton("10.0.0.2") + struct.pack("!BBH", 0, 17, 13)
    assert raw.checksum(pseudo + udp) == 0
    p = raw.parse_frame(f)
    assert (p.ip_src, p.ip_dst, p.sport, p.dport, p.payload) == ("10.0.0.1", "10.0.0.2", 1234, 53, b"hello")
    assert len(f) == 60  # padded to the Ethernet minimum; parse ignores the padding


def test_ipv6_and_arp_roundtrip() -> None:
    f6 = raw.ipv6_udp_frame(src_mac="02:00:00:00:00:01", dst_mac="02:00:00:00:00:02",
                            src_ip="fd00::1", dst_ip="fd00::2", dport=9, payload=b"x" * 30)
    p6 = raw.parse_frame(f6)
    assert (p6.ethertype, p6.ip_src, p6.ip_dst, p6.ip_proto, p6.payload) == (
        raw.ETH_P_IPV6, "fd00::1", "fd00::2", 17, b"x" * 30)
    pseudo = socket.inet_pton(socket.AF_INET6, "fd00::1") + socket.inet_pton(socket.AF_INET6, "fd00::2")
    pseudo += struct.pack("!I3xB", 38, 17)
    assert raw.checksum(pseudo + f6[54:]) == 0
    req = raw.parse_frame(raw.arp_frame(op="request", src_mac="02:00:00:00:00:01",
                                        sender_ip="10.0.0.1", target_ip="10.0.0.2"))
    assert (req.dst_mac, req.arp_op, req.arp_sender_ip, req.arp_target_mac) == (
        raw.BROADCAST, 1, "10.0.0.1", raw.ZERO_MAC)
    rep = raw.parse_frame(raw.arp_frame(op="reply", src_mac="02:00:00:00:00:01", sender_ip="10.0.0.9",
                                        sender_mac="02:00:00:00:00:99", target_ip="10.0.0.2",
                                        dst_mac="02:00:00:00:00:02"))
    assert (rep.arp_op, rep.src_mac, rep.arp_sender_mac, rep.arp_target_mac) == (
        2, "02:00:00:00:00:01", "02:00:00:00:00:99", "02:00:00:00:00:02")
    assert raw.arp_matching(sender_ip="10.0.0.9", op=2)(rep)


# --------------------------------------------------------------- kernel tests


def _token() -> bytes:
    return b"tok-" + os.urandom(6).hex().encode()


@pytest.mark.kernel
@pytest.mark.parametrize("fam", ["v4", "v6"])
def test_raw_udp_frame_reaches_socket_and_sniffer(topo, fam: str) -> None:
    """A hand-built frame crosses the bridge and is accepted by B's UDP stack
    (which drops bad checksums, so this also proves the checksums)."""
    af, src, dst = ((socket.AF_INET, topo.a4, topo.b4) if fam == "v4"
                    else (socket.AF_INET6, topo.a6, topo.b6))
    build = raw.ipv4_udp_frame if fam == "v4" else raw.ipv6_udp_frame
    token = _token()
    rx = netns.netns_socket(topo.b, af, socket.SOCK_DGRAM)
    with rx, raw.Sniffer(topo.br, "pb") as sniff_port, raw.Sniffer(topo.a, "eth0") as sniff_src:
        rx.bind((dst, 4444))
        rx.settimeout(2)
        raw.send_frame(topo.a, "eth0", build(src_mac=topo.a_mac, dst_mac=topo.b_mac, src_ip=src,
                                             dst_ip=dst, sport=5555, dport=4444, payload=token))
        data, peer = rx.recvfrom(2048)
        assert data == token and peer[0] == src and peer[1] == 5555
        got = sniff_port.wait_for(raw.udp_payload_contains(token), timeout=1)
        assert got is not None and got.pkttype == raw.PACKET_OUTGOING  # bridge sends it out of pb
        mine = sniff_src.wait_for(raw.udp_payload_contains(token), timeout=1)
        assert mine is not None and mine.outgoing


@pytest.mark.kernel
def test_spoofed_frames_and_arp_are_sniffed_and_can_be_filtered(topo, load_nft) -> None:
    """The anti-spoofing test pattern: forge a source, see whether it crosses."""
    spoof_mac = "02:66:66:66:66:66"
    with raw.Sniffer(topo.b, "eth0") as sniff:
        tok = _token()
        raw.send_frame(topo.a, "eth0", raw.ipv4_udp_frame(
            src_mac=spoof_mac, dst_mac=topo.b_mac, src_ip="10.77.0.66", dst_ip=topo.b4, payload=tok))
        raw.send_frame(topo.a, "eth0", raw.arp_frame(
            op="request", src_mac=topo.a_mac, sender_ip="10.77.0.66", target_ip=topo.b4))
        f = sniff.wait_for(raw.incoming(raw.udp_payload_contains(tok)), timeout=1)
        assert f is not None and f.src_mac == spoof_mac and f.ip_src == "10.77.0.66"
        assert sniff.wait_for(raw.arp_matching(sender_ip="10.77.0.66", op=1), timeout=1) is not None

        # A bridge-family rule in the switch namespace drops what A forges.
        load_nft(topo.br, f"""
table bridge spoof {{
  chain fwd_in {{
    type filter hook forward priority 0; policy accept;
    iifname "pa" ether saddr != {topo.a_mac} drop
    iifname "pa" ip saddr != {topo.a4} drop
    iifname "pa" arp saddr ip != {topo.a4} drop
  }}
}}
""")
        sniff.clear()
        tok2 = _token()
        raw.send_frame(topo.a, "eth0", raw.ipv4_udp_frame(
            src_mac=topo.a_mac, dst_mac=topo.b_mac, src_ip="10.77.0.66", dst_ip=topo.b4, payload=tok2))
        raw.send_frame(topo.a, "eth0", raw.arp_frame(
            op="request", src_mac=topo.a_mac, sender_ip="10.77.0.66", target_ip=topo.b4))
        tok3 = _token()  # an honest frame still passes, and bounds the wait
        raw.send_frame(topo.a, "eth0", raw.ipv4_udp_frame(
            src_mac=topo.a_mac, dst_mac=topo.b_mac, src_ip=topo.a4, dst_ip=topo.b4, payload=tok3))
        assert sniff.wait_for(raw.udp_payload_contains(tok3), timeout=1) is not None
        assert sniff.wait_for(raw.udp_payload_contains(tok2), timeout=0.2) is None
        assert sniff.wait_for(raw.arp_matching(sender_ip="10.77.0.66"), timeout=0.1) is None
