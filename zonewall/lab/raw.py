"""Hand-built layer-2 frames for anti-spoofing tests (no scapy).

Anti-spoofing rules act on what a guest *puts on the wire*: a forged source
MAC or IP, a gratuitous ARP for someone else's address.  Normal sockets cannot
produce those, so we write whole Ethernet frames to an AF_PACKET socket in the
guest's namespace and watch other interfaces with a :class:`Sniffer`.

Frames carry correct IPv4 header and UDP checksums, so a frame that is *not*
dropped by the firewall is also accepted by the receiving kernel's stack.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .netns import netns_socket, run_in_netns

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
BROADCAST = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"

# sll_pkttype values as reported by recvfrom() on an AF_PACKET socket.
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)

_SOL_PACKET = 263
_PACKET_ADD_MEMBERSHIP = 1
_PACKET_MR_PROMISC = 1
_ETH_MIN = 60  # minimum frame length without FCS; real NICs pad, so do we


# ------------------------------------------------------------------- helpers


def mac_to_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {mac!r}")
    return bytes(int(p, 16) for p in parts)


def mac_to_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(dst_mac: str, src_mac: str, ethertype: int, payload: bytes, *, pad: bool = True) -> bytes:
    frame = mac_to_bytes(dst_mac) + mac_to_bytes(src_mac) + struct.pack("!H", ethertype) + payload
    if pad and len(frame) < _ETH_MIN:
        frame += b"\0" * (_ETH_MIN - len(frame))
    return frame


def _udp(pseudo: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    length = 8 + len(payload)
    csum = checksum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload)
    # 0 means "no checksum" on the wire (and is illegal for IPv6): send 0xffff.
    return struct.pack("!HHHH", sport, dport, length, csum or 0xFFFF) + payload


# ------------------------------------------------------------------- builders


def ipv4_udp_frame(*, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes,
                   sport: int = 40000, dport: int = 9, ttl: int = 64, ident: int = 0) -> bytes:
    """Ethernet + IPv4 + UDP, both checksums correct."""
    src = ipaddress.IPv4Address(src_ip).packed
    dst = ipaddress.IPv4Address(dst_ip).packed
    udp = _udp(src + dst + struct.pack("!BBH", 0, socket.IPPROTO_UDP, 8 + len(payload)), sport, dport, payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident, 0x4000, ttl,  # DF set
                      socket.IPPROTO_UDP, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return ethernet(dst_mac, src_mac, ETH_P_IP, hdr + udp)


TCP_FLAGS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20}


def ipv4_tcp_frame(*, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, sport: int, dport: int,
                   flags: str | int, seq: int = 1000, ack: int = 0, payload: bytes = b"", ttl: int = 64) -> bytes:
    """Ethernet + IPv4 + TCP with any flags (``"syn"``, ``"fin,psh,urg"``, ``""`` or a
    number), both checksums correct: what no socket sends (mid-stream segments
    without a connection, impossible flag combinations, SYN floods)."""
    bits = flags if isinstance(flags, int) else sum(TCP_FLAGS[f] for f in flags.split(",") if f)
    src = ipaddress.IPv4Address(src_ip).packed
    dst = ipaddress.IPv4Address(dst_ip).packed
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, bits, 64240, 0, 0)
    segment = header + payload
    csum = checksum(src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment)) + segment)
    segment = segment[:16] + struct.pack("!H", csum) + segment[18:]
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0x4000, ttl, socket.IPPROTO_TCP, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return ethernet(dst_mac, src_mac, ETH_P_IP, hdr + segment)


def dhcp_reply_frame(*, src_mac: str, dst_mac: str, server_ip: str, client_mac: str, yiaddr: str,
                     message_type: int = 5, dst_ip: str = "255.255.255.255") -> bytes:
    """A DHCP server's reply (BOOTREPLY, udp 67 -> 68) giving `yiaddr` to `client_mac`;
    `message_type` 5 is a DHCPACK, 2 an OFFER. The message type is the first option,
    as dnsmasq, ISC dhcpd and Kea write it."""
    bootp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, 0x5A770001, 0, 0x8000, b"\0" * 4,
                        ipaddress.IPv4Address(yiaddr).packed, ipaddress.IPv4Address(server_ip).packed, b"\0" * 4,
                        mac_to_bytes(client_mac) + b"\0" * 10, b"", b"")
    options = struct.pack("!I", 0x63825363) + bytes([53, 1, message_type, 54, 4]) + ipaddress.IPv4Address(server_ip).packed
    options += bytes([51, 4]) + struct.pack("!I", 3600) + bytes([1, 4, 255, 255, 255, 0, 255])
    return ipv4_udp_frame(src_mac=src_mac, dst_mac=dst_mac, src_ip=server_ip, dst_ip=dst_ip, payload=bootp + options, sport=67, dport=68)


def ipv6_udp_frame(*, src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, payload: bytes,
                   sport: int = 40000, dport: int = 9, hop_limit: int = 64) -> bytes:
    """Ethernet + IPv6 + UDP (the UDP checksum is mandatory over IPv6)."""
    src = ipaddress.IPv6Address(src_ip).packed
    dst = ipaddress.IPv6Address(dst_ip).packed
    length = 8 + len(payload)
    udp = _udp(src + dst + struct.pack("!I3xB", length, socket.IPPROTO_UDP), sport, dport, payload)
    hdr = struct.pack("!IHBB16s16s", 6 << 28, length, socket.IPPROTO_UDP, hop_limit, src, dst)
    return ethernet(dst_mac, src_mac, ETH_P_IPV6, hdr + udp)


def arp_frame(*, op: str | int, src_mac: str, sender_ip: str, target_ip: str,
              dst_mac: str | None = None, sender_mac: str | None = None,
              target_mac: str | None = None) -> bytes:
    """Ethernet + ARP.  ``op`` is ``"request"``/``"reply"`` (or 1/2).

    Defaults follow real hosts: a request goes to broadcast with a zero target
    MAC; a reply's target MAC is its destination.  ``sender_mac`` defaults to
    the Ethernet source but may differ (a classic spoofing trick).
    """
    opcode = {"request": 1, "reply": 2}.get(op, op) if isinstance(op, str) else op
    if opcode not in (1, 2):
        raise ValueError(f"ARP op must be request/reply/1/2, not {op!r}")
    if dst_mac is None:
        if opcode == 2 and target_mac is None:
            raise ValueError("an ARP reply needs dst_mac or target_mac")
        dst_mac = BROADCAST if opcode == 1 else target_mac
    assert dst_mac is not None
    if target_mac is None:
        target_mac = ZERO_MAC if opcode == 1 else dst_mac
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_P_IP, 6, 4, opcode,
                       mac_to_bytes(sender_mac or src_mac), ipaddress.IPv4Address(sender_ip).packed,
                       mac_to_bytes(target_mac), ipaddress.IPv4Address(target_ip).packed)
    return ethernet(dst_mac, src_mac, ETH_P_ARP, body)


# ------------------------------------------------------------------- parsing


@dataclass
class Frame:
    raw: bytes
    dst_mac: str
    src_mac: str
    ethertype: int
    pkttype: int = PACKET_HOST
    ip_src: str | None = None
    ip_dst: str | None = None
    ip_proto: int | None = None
    sport: int | None = None
    dport: int | None = None
    tcp_flags: int | None = None
    payload: bytes = b""  # L4 payload for UDP/TCP, the ICMP message for ICMP
    arp_op: int | None = None
    arp_sender_mac: str | None = None
    arp_sender_ip: str | None = None
    arp_target_mac: str | None = None
    arp_target_ip: str | None = None

    @property
    def outgoing(self) -> bool:
        """Sent *by* the sniffed interface's namespace rather than received."""
        return self.pkttype == PACKET_OUTGOING


_V6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options: skip them


def _parse_l4(f: Frame, proto: int, data: bytes) -> None:
    f.ip_proto = proto
    if proto == socket.IPPROTO_UDP and len(data) >= 8:
        f.sport, f.dport, length = struct.unpack("!HHH", data[:6])
        f.payload = data[8:max(length, 8)]
    elif proto == socket.IPPROTO_TCP and len(data) >= 20:
        f.sport, f.dport = struct.unpack("!HH", data[:4])
        f.tcp_flags = data[13]
        f.payload = data[(data[12] >> 4) * 4:]
    else:
        f.payload = data


def parse_frame(raw: bytes, pkttype: int = PACKET_HOST) -> Frame:
    """Decode Ethernet and, where present, ARP / IPv4 / IPv6 + UDP/TCP headers."""
    if len(raw) < 14:
        return Frame(raw, "", "", 0, pkttype)
    ethertype = struct.unpack("!H", raw[12:14])[0]
    f = Frame(raw, mac_to_str(raw[0:6]), mac_to_str(raw[6:12]), ethertype, pkttype)
    body = raw[14:]
    if ethertype == ETH_P_ARP and len(body) >= 28:
        op, smac, sip, tmac, tip = struct.unpack("!6xH6s4s6s4s", body[:28])
        f.arp_op, f.arp_sender_mac, f.arp_target_mac = op, mac_to_str(smac), mac_to_str(tmac)
        f.arp_sender_ip, f.arp_target_ip = str(ipaddress.IPv4Address(sip)), str(ipaddress.IPv4Address(tip))
    elif ethertype == ETH_P_IP and len(body) >= 20:
        ihl = (body[0] & 0x0F) * 4
        total = struct.unpack("!H", body[2:4])[0]
        f.ip_src, f.ip_dst = str(ipaddress.IPv4Address(body[12:16])), str(ipaddress.IPv4Address(body[16:20]))
        _parse_l4(f, body[9], body[ihl:total])  # total length trims Ethernet padding
    elif ethertype == ETH_P_IPV6 and len(body) >= 40:
        plen, nh = struct.unpack("!HB", body[4:7])
        f.ip_src, f.ip_dst = str(ipaddress.IPv6Address(body[8:24])), str(ipaddress.IPv6Address(body[24:40]))
        data = body[40:40 + plen]
        while nh in _V6_EXT and len(data) >= 8:
            nh, data = data[0], data[(data[1] + 1) * 8:]
        _parse_l4(f, nh, data)
    return f


# ----------------------------------------------------------------- predicates

Predicate = Callable[[Frame], bool]


def udp_payload_contains(token: bytes) -> Predicate:
    return lambda f: f.ip_proto == socket.IPPROTO_UDP and token in f.payload


def tcp_matching(*, sport: int | None = None, dport: int | None = None, src: str | None = None) -> Predicate:
    return lambda f: f.ip_proto == socket.IPPROTO_TCP and (sport is None or f.sport == sport) and (dport is None or f.dport == dport) and (src is None or f.ip_src == src)


def arp_matching(*, sender_ip: str | None = None, target_ip: str | None = None,
                 op: int | None = None, sender_mac: str | None = None) -> Predicate:
    def pred(f: Frame) -> bool:
        return (f.ethertype == ETH_P_ARP
                and (sender_ip is None or f.arp_sender_ip == sender_ip)
                and (target_ip is None or f.arp_target_ip == target_ip)
                and (op is None or f.arp_op == op)
                and (sender_mac is None or f.arp_sender_mac == sender_mac.lower()))
    return pred


def incoming(pred: Predicate) -> Predicate:
    """Only frames the interface received (not ones its namespace sent)."""
    return lambda f: not f.outgoing and pred(f)


# ------------------------------------------------------------- send / sniff


def send_frames(ns: str, ifname: str, frames: Iterable[bytes]) -> int:
    """Write whole Ethernet frames to ``ifname`` in ``ns``; returns how many."""
    sock = netns_socket(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
    n = 0
    with sock:
        for frame in frames:
            ethertype = struct.unpack("!H", frame[12:14])[0]
            # (ifname, proto): the proto sets skb->protocol for local taps; the
            # wire bytes are exactly `frame`.
            sock.sendto(frame, (ifname, ethertype))
            n += 1
    return n


def send_frame(ns: str, ifname: str, frame: bytes) -> None:
    send_frames(ns, ifname, [frame])


_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


class Sniffer:
    """Captures every frame on ``ifname`` in ``ns`` (both directions) in a thread.

    The socket is bound before ``__init__`` returns, so any frame sent after
    constructing the sniffer is captured.  Use as a context manager.
    """

    def __init__(self, ns: str, ifname: str, *, promisc: bool = False, max_frames: int = 10000) -> None:
        self.ns, self.ifname, self.max_frames = ns, ifname, max_frames
        # Protocol 0 at socket() time receives nothing until bind() names the
        # interface, so no frame from another interface sneaks in.
        self._sock = netns_socket(ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            # a flood of hundreds of frames (and the replies) must not overflow the
            # default ~200 KB buffer before the thread reads it: force 8 MB (root)
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 8 << 20)
            self._sock.bind((ifname, ETH_P_ALL))
            if promisc:  # veth and bridge ports already see every frame; real NICs do not
                index = run_in_netns(ns, socket.if_nametoindex, ifname)
                mreq = struct.pack("iHH8s", index, _PACKET_MR_PROMISC, 0, b"")
                self._sock.setsockopt(_SOL_PACKET, _PACKET_ADD_MEMBERSHIP, mreq)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise
        self._frames: list[Frame] = []
        self.dropped = 0
        self._cond = threading.Condition()
        self._stopped = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._loop, name=f"sniff:{ns}:{ifname}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while True:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        return
                    self._read_all()
        finally:
            sel.close()

    def _read_all(self) -> None:
        while True:
            try:
                data, addr = self._sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            frame = parse_frame(data, addr[2])
            with self._cond:
                if len(self._frames) < self.max_frames:
                    self._frames.append(frame)
                else:
                    self.dropped += 1
                self._cond.notify_all()

    def frames(self) -> list[Frame]:
        with self._cond:
            return list(self._frames)

    def clear(self) -> None:
        with self._cond:
            self._frames.clear()

    def wait_for(self, predicate: Predicate, timeout: float = 1.0) -> Frame | None:
        """First captured frame (already or within ``timeout``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        i = 0
        with self._cond:
            while True:
                while i < len(self._frames):
                    i += 1
                    if predicate(self._frames[i - 1]):
                        return self._frames[i - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for s in (self._sock, self._wake_r, self._wake_w):
            s.close()

    def __enter__(self) -> Sniffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
