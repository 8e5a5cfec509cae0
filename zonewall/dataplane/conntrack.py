"""Conntrack entries of one VM: export from one node's namespace, import into another's.

Live migration (docs/migration.md) copies a guest's connection-tracking entries from
the source node to the target so that its established connections stay `established`
on the target (a mid-stream packet without an entry is `invalid` with
`nf_conntrack_tcp_loose=0`, and `new` otherwise, where the policy may refuse it).

Why a raw ctnetlink socket and not pyroute2 or conntrack(8): an import has to create
tens of thousands of entries in well under a second. Both of those create one entry
per request and wait for its acknowledgement; here a whole batch of IPCTNL_MSG_CT_NEW
messages goes to the kernel in one sendmsg (the kernel processes a netlink write
synchronously, so errors are waiting in the receive queue when it returns), and only
failures are answered (no NLM_F_ACK). Numbers: docs/performance.md.

What is carried per entry: both tuples (IPv4 and IPv6; tcp, udp, icmp, icmpv6, any
other protocol by number), the remaining timeout, the connection mark, the zone, the
TCP state with its window-scale factors and flags (without the flags' mask the kernel
would ignore the window scale, and a window-scaled stream would fall out of the
window), and NAT: the kernel does not let ctnetlink set the NAT status bits, so a
translated entry is recreated with CTA_NAT_SRC/CTA_NAT_DST taken from its reply tuple
(the kernel then recomputes the same reply tuple). The TCP sequence numbers are not
exported by the kernel: an imported entry picks the window up from the first packet
it sees (the kernel's own "middle of a connection" path, independent of
`nf_conntrack_tcp_loose`). Not carried: helpers and expectations, labels, counters.

Conntrack tables are per network namespace: the socket belongs to the namespace of
the thread that opens it (`netns=` opens it inside a named one).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..netns import run_in_netns

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_NAT_SRC, CTA_TIMEOUT, CTA_MARK, CTA_NAT_DST, CTA_ZONE = 6, 7, 8, 13, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP = 1
CTA_PROTOINFO_TCP_STATE, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, CTA_PROTOINFO_TCP_WSCALE_REPLY = 1, 2, 3
CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, CTA_PROTOINFO_TCP_FLAGS_REPLY = 4, 5
CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP, CTA_NAT_PROTO, CTA_NAT_V6_MINIP, CTA_NAT_V6_MAXIP = 1, 2, 3, 4, 5
CTA_PROTONAT_PORT_MIN, CTA_PROTONAT_PORT_MAX = 1, 2
IPS_CONFIRMED, IPS_SRC_NAT, IPS_DST_NAT = 1 << 3, 1 << 4, 1 << 5
IPPROTO_TCP, IPPROTO_UDP = 6, 17
PORT_PROTOCOLS = {6, 17, 33, 132, 136}  # tcp udp dccp sctp udplite: ports in the tuple

_HDR = struct.Struct("=IHHII")
_NFGEN = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
BATCH_BYTES = 192 * 1024  # per sendmsg (the kernel takes up to a few MiB)


class ConntrackError(OSError):
    pass


# ---------------------------------------------------------------- attribute codec


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * (-length % 4)


def _nest(kind: int, *parts: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _attrs(data: bytes | memoryview, start: int = 0, end: int | None = None) -> dict[int, memoryview]:
    view = memoryview(data)
    end = len(view) if end is None else end
    out: dict[int, memoryview] = {}
    while start + 4 <= end:
        length, kind = _NLA.unpack_from(view, start)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = view[start + 4:start + length]
        start += (length + 3) & ~3
    return out


@dataclass(frozen=True)
class Tuple:
    src: str
    dst: str
    proto: int
    sport: int = 0  # ports, or for icmp: id in sport
    dport: int = 0  # and (type << 8 | code) in dport
    raw: bytes = b""  # the kernel's own encoding, sent back as it came

    @staticmethod
    def decode(blob: memoryview) -> Tuple:
        top = _attrs(blob)
        ip = _attrs(top[CTA_TUPLE_IP])
        if CTA_IP_V4_SRC in ip:
            src, dst = socket.inet_ntop(socket.AF_INET, ip[CTA_IP_V4_SRC]), socket.inet_ntop(socket.AF_INET, ip[CTA_IP_V4_DST])
        else:
            src, dst = socket.inet_ntop(socket.AF_INET6, ip[CTA_IP_V6_SRC]), socket.inet_ntop(socket.AF_INET6, ip[CTA_IP_V6_DST])
        proto = _attrs(top[CTA_TUPLE_PROTO])
        number = proto[CTA_PROTO_NUM][0]
        sport = dport = 0
        if CTA_PROTO_SRC_PORT in proto:
            sport, dport = struct.unpack("!H", proto[CTA_PROTO_SRC_PORT])[0], struct.unpack("!H", proto[CTA_PROTO_DST_PORT])[0]
        elif 4 in proto or 7 in proto:  # icmp / icmpv6: id, type, code
            base = 4 if 4 in proto else 7
            sport = struct.unpack("!H", proto[base])[0]
            dport = proto[base + 1][0] << 8 | proto[base + 2][0]
        return Tuple(src, dst, number, sport, dport, bytes(blob))

    def encode(self) -> bytes:
        if self.raw:
            return self.raw
        v6 = ":" in self.src
        family = socket.AF_INET6 if v6 else socket.AF_INET
        ip = _nest(CTA_TUPLE_IP, _attr(CTA_IP_V6_SRC if v6 else CTA_IP_V4_SRC, socket.inet_pton(family, self.src)),
                   _attr(CTA_IP_V6_DST if v6 else CTA_IP_V4_DST, socket.inet_pton(family, self.dst)))
        parts = [_attr(CTA_PROTO_NUM, bytes([self.proto]))]
        if self.proto in PORT_PROTOCOLS:
            parts += [_attr(CTA_PROTO_SRC_PORT, struct.pack("!H", self.sport)), _attr(CTA_PROTO_DST_PORT, struct.pack("!H", self.dport))]
        elif self.proto in (1, 58):
            base = 4 if self.proto == 1 else 7
            parts += [_attr(base, struct.pack("!H", self.sport)), _attr(base + 1, bytes([self.dport >> 8])), _attr(base + 2, bytes([self.dport & 0xFF]))]
        return ip + _nest(CTA_TUPLE_PROTO, *parts)

    def addresses(self) -> tuple[str, str]:
        return self.src, self.dst


@dataclass
class Entry:
    """One conntrack entry, as needed to recreate it elsewhere."""

    family: int
    orig: Tuple
    reply: Tuple
    status: int = 0
    timeout: int = 120
    mark: int = 0
    zone: int = 0
    tcp: tuple[int, int, int, int, int] | None = None  # state, wscale orig/reply, flags orig/reply
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def snat(self) -> bool:
        return bool(self.status & IPS_SRC_NAT)

    @property
    def dnat(self) -> bool:
        return bool(self.status & IPS_DST_NAT)

    def addresses(self) -> set[str]:
        return {self.orig.src, self.orig.dst, self.reply.src, self.reply.dst}

    def to_json(self) -> dict[str, object]:
        return {
            "family": self.family, "status": self.status, "timeout": self.timeout, "mark": self.mark, "zone": self.zone,
            "orig": [self.orig.src, self.orig.dst, self.orig.proto, self.orig.sport, self.orig.dport],
            "reply": [self.reply.src, self.reply.dst, self.reply.proto, self.reply.sport, self.reply.dport],
            "tcp": list(self.tcp) if self.tcp else None,
        }

    @staticmethod
    def from_json(data: dict[str, object]) -> Entry:
        o, r, t = data["orig"], data["reply"], data.get("tcp")
        return Entry(
            int(data["family"]), Tuple(*o), Tuple(*r), int(data.get("status", 0)), int(data.get("timeout", 120)),
            int(data.get("mark", 0)), int(data.get("zone", 0)), tuple(t) if t else None,  # type: ignore[arg-type]
        )

    # -- to the kernel --------------------------------------------------------------------

    def _nat(self, kind: int, address: str, port: int) -> bytes:
        v6 = ":" in address
        packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, address)
        parts = [_attr(CTA_NAT_V6_MINIP if v6 else CTA_NAT_V4_MINIP, packed), _attr(CTA_NAT_V6_MAXIP if v6 else CTA_NAT_V4_MAXIP, packed)]
        if self.orig.proto in PORT_PROTOCOLS and port:
            parts.append(_nest(CTA_NAT_PROTO, _attr(CTA_PROTONAT_PORT_MIN, struct.pack("!H", port)), _attr(CTA_PROTONAT_PORT_MAX, struct.pack("!H", port))))
        return _nest(kind, *parts)

    def encode_create(self) -> bytes:
        reply = self.reply
        if self.dnat or self.snat:
            # the untranslated reply: nf_nat_setup_info() then computes the translated
            # one and sets the NAT status bits (given the translated reply, it would
            # see nothing to do and leave the entry without NAT)
            o = self.orig
            reply = Tuple(o.dst, o.src, o.proto, o.dport, o.sport) if o.proto in PORT_PROTOCOLS else Tuple(o.dst, o.src, o.proto, o.sport, o.dport)
        parts = [_nest(CTA_TUPLE_ORIG, self.orig.encode()), _nest(CTA_TUPLE_REPLY, reply.encode())]
        if self.dnat:  # the original destination was translated to where the reply comes from
            parts.append(self._nat(CTA_NAT_DST, self.reply.src, self.reply.sport))
        if self.snat:  # the original source was translated to where the reply goes
            parts.append(self._nat(CTA_NAT_SRC, self.reply.dst, self.reply.dport))
        parts.append(_attr(CTA_TIMEOUT, struct.pack("!I", max(1, self.timeout))))
        # status: SEEN_REPLY and ASSURED; CONFIRMED must be given (a created entry is
        # confirmed, and a status "changing" it is refused with EBUSY); the NAT bits
        # cannot be set by ctnetlink, they come from CTA_NAT_* above
        parts.append(_attr(CTA_STATUS, struct.pack("!I", (self.status & 0x6) | IPS_CONFIRMED)))
        if self.mark:
            parts.append(_attr(CTA_MARK, struct.pack("!I", self.mark)))
        if self.zone:
            parts.append(_attr(CTA_ZONE, struct.pack("!H", self.zone)))
        if self.tcp is not None:
            state, ws_o, ws_r, fl_o, fl_r = self.tcp
            parts.append(_nest(CTA_PROTOINFO, _nest(
                CTA_PROTOINFO_TCP,
                _attr(CTA_PROTOINFO_TCP_STATE, bytes([state])),
                _attr(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, bytes([ws_o])),
                _attr(CTA_PROTOINFO_TCP_WSCALE_REPLY, bytes([ws_r])),
                # flags with a mask equal to them: the kernel sets exactly these bits
                # (the dump's mask is 0, which would set nothing, window scaling included)
                _attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, bytes([fl_o, fl_o])),
                _attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, bytes([fl_r, fl_r])),
            )))
        return b"".join(parts)

    def encode_delete(self) -> bytes:
        parts = [_nest(CTA_TUPLE_ORIG, self.orig.encode())]
        if self.zone:
            parts.append(_attr(CTA_ZONE, struct.pack("!H", self.zone)))
        return b"".join(parts)


def _decode_entry(family: int, payload: memoryview) -> Entry | None:
    top = _attrs(payload)
    if CTA_TUPLE_ORIG not in top or CTA_TUPLE_REPLY not in top:
        return None
    entry = Entry(family, Tuple.decode(top[CTA_TUPLE_ORIG]), Tuple.decode(top[CTA_TUPLE_REPLY]))
    if CTA_STATUS in top:
        entry.status = struct.unpack("!I", top[CTA_STATUS])[0]
    if CTA_TIMEOUT in top:
        entry.timeout = struct.unpack("!I", top[CTA_TIMEOUT])[0]
    if CTA_MARK in top:
        entry.mark = struct.unpack("!I", top[CTA_MARK])[0]
    if CTA_ZONE in top:
        entry.zone = struct.unpack("!H", top[CTA_ZONE])[0]
    if CTA_PROTOINFO in top:
        info = _attrs(top[CTA_PROTOINFO])
        if CTA_PROTOINFO_TCP in info:
            tcp = _attrs(info[CTA_PROTOINFO_TCP])
            entry.tcp = (
                tcp[CTA_PROTOINFO_TCP_STATE][0] if CTA_PROTOINFO_TCP_STATE in tcp else 3,
                tcp[CTA_PROTOINFO_TCP_WSCALE_ORIGINAL][0] if CTA_PROTOINFO_TCP_WSCALE_ORIGINAL in tcp else 0,
                tcp[CTA_PROTOINFO_TCP_WSCALE_REPLY][0] if CTA_PROTOINFO_TCP_WSCALE_REPLY in tcp else 0,
                tcp[CTA_PROTOINFO_TCP_FLAGS_ORIGINAL][0] if CTA_PROTOINFO_TCP_FLAGS_ORIGINAL in tcp else 0,
                tcp[CTA_PROTOINFO_TCP_FLAGS_REPLY][0] if CTA_PROTOINFO_TCP_FLAGS_REPLY in tcp else 0,
            )
    return entry


# ------------------------------------------------------------- the fast export path

_EXPORT_HEADER = struct.Struct("=BxH")  # family, payload length


class Export:
    """Creation messages (payloads after the nfgenmsg) of exported entries, packed as
    `family, length, payload` records: what crosses from the source node to the target."""

    def __init__(self, data: bytes = b"") -> None:
        self._parts: list[bytes] = [data] if data else []
        self.count = sum(1 for _ in self.items()) if data else 0
        self.scanned = 0  # entries looked at on the source

    def add(self, family: int, payload: bytes) -> None:
        self._parts.append(_EXPORT_HEADER.pack(family, len(payload)) + payload)
        self.count += 1

    def pack(self) -> bytes:
        if len(self._parts) > 1:
            self._parts = [b"".join(self._parts)]
        return self._parts[0] if self._parts else b""

    def items(self) -> Iterable[tuple[int, bytes]]:
        data = self.pack()
        view = memoryview(data)
        offset = 0
        while offset + 4 <= len(view):
            family, length = _EXPORT_HEADER.unpack_from(view, offset)
            yield family, bytes(view[offset + 4:offset + 4 + length])
            offset += 4 + length

    def __len__(self) -> int:
        return self.count


def _tuple_addresses(data: bytes, offset: int) -> tuple[bytes, bytes]:
    """(source, destination), packed, of the tuple attribute at `offset` (its first
    nested attribute is CTA_TUPLE_IP, whose first two are the source and destination)."""
    ip = offset + 4
    if _NLA.unpack_from(data, ip)[1] & NLA_TYPE_MASK != CTA_TUPLE_IP:
        nested = _attrs(data, offset + 4, offset + _NLA.unpack_from(data, offset)[0])
        source, destination = _attrs(nested[CTA_TUPLE_IP]).values()
        return bytes(source), bytes(destination)
    src = ip + 4
    length = _NLA.unpack_from(data, src)[0]
    dst = src + ((length + 3) & ~3)
    return data[src + 4:src + length], data[dst + 4:dst + _NLA.unpack_from(data, dst)[0]]


def _creation_payload(data: bytes, start: int, end: int, wanted: set[bytes], cache: dict[bytes, bytes]) -> bytes | None:
    """The CT_NEW payload recreating the dumped entry data[start:end] (after the
    nfgenmsg), or None if it touches none of `wanted`. The dump's own attributes are
    sent back as they came (the kernel ignores those a creation does not use: use
    count, id, counters, timestamps), except the TCP protocol info (flags' mask)."""
    unpack = _NLA.unpack_from
    orig = reply = info = info_end = -1
    status = 0
    offset = start
    while offset + 4 <= end:
        length, kind = unpack(data, offset)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind == CTA_TUPLE_ORIG:
            orig = offset
        elif kind == CTA_TUPLE_REPLY:
            reply = offset
        elif kind == CTA_STATUS:
            status = int.from_bytes(data[offset + 4:offset + 8], "big")
        elif kind == CTA_PROTOINFO:
            info, info_end = offset, offset + ((length + 3) & ~3)
        offset += (length + 3) & ~3
    if orig < 0 or reply < 0:
        return None
    o_src, o_dst = _tuple_addresses(data, orig)
    r_src, r_dst = _tuple_addresses(data, reply)
    if o_src not in wanted and o_dst not in wanted and r_src not in wanted and r_dst not in wanted:
        return None
    if status & (IPS_SRC_NAT | IPS_DST_NAT):  # rare: the general path
        entry = _decode_entry(data[start - _NFGEN.size], memoryview(data)[start:end])
        return entry.encode_create() if entry is not None else None
    if info < 0:
        return data[start:end]
    raw = data[info:info_end]
    rewritten = cache.get(raw)
    if rewritten is None:
        rewritten = cache[raw] = _protoinfo(memoryview(raw)[4:])
    return data[start:info] + rewritten + data[info_end:end]


def _protoinfo(blob: memoryview) -> bytes:
    """CTA_PROTOINFO for a creation: TCP flags with their mask set (see the module doc)."""
    tcp_attr = _attrs(blob).get(CTA_PROTOINFO_TCP)
    if tcp_attr is None:
        return b""
    tcp = _attrs(tcp_attr)
    inner = []
    for kind in (CTA_PROTOINFO_TCP_STATE, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, CTA_PROTOINFO_TCP_WSCALE_REPLY):
        if kind in tcp:
            inner.append(_attr(kind, bytes(tcp[kind][:1])))
    for kind in (CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, CTA_PROTOINFO_TCP_FLAGS_REPLY):
        if kind in tcp:
            flags = tcp[kind][0]
            inner.append(_attr(kind, bytes([flags, flags])))
    return _nest(CTA_PROTOINFO, _nest(CTA_PROTOINFO_TCP, *inner))


# ------------------------------------------------------------------------- socket


@dataclass
class ImportResult:
    created: int = 0
    existed: int = 0  # already there (a second pass after the switch finds most)
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # strerror -> count


class ConntrackSocket:
    """A ctnetlink socket, in the caller's namespace or in the named netns `netns`."""

    def __init__(self, netns: str | None = None) -> None:
        self._sock = run_in_netns(netns, self._open)
        self._seq = 0

    @staticmethod
    def _open() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        for option, size in ((33, 32 << 20), (32, 8 << 20)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError:
                pass
        sock.bind((0, 0))
        return sock

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> ConntrackSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _message(self, kind: int, flags: int, family: int, payload: bytes) -> bytes:
        self._seq += 1
        body = _NFGEN.pack(family, 0, 0) + payload
        return _HDR.pack(_HDR.size + len(body), NFNL_SUBSYS_CTNETLINK << 8 | kind, NLM_F_REQUEST | flags, self._seq, 0) + body

    def _messages(self, data: bytes) -> Iterable[tuple[int, int, memoryview]]:
        view = memoryview(data)
        offset = 0
        while offset + _HDR.size <= len(view):
            length, kind, _flags, seq, _pid = _HDR.unpack_from(view, offset)
            if length < _HDR.size:
                break
            yield kind, seq, view[offset + _HDR.size:offset + length]
            offset += (length + 3) & ~3

    # -- reading --------------------------------------------------------------------------

    def dump(self, family: int = socket.AF_UNSPEC) -> list[Entry]:
        """Every entry of the namespace (both address families with AF_UNSPEC)."""
        self._sock.send(self._message(IPCTNL_MSG_CT_GET, NLM_F_DUMP, family, b""))
        entries: list[Entry] = []
        while True:
            data = self._sock.recv(1 << 20)
            for kind, _seq, body in self._messages(data):
                if kind == NLMSG_DONE:
                    return entries
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        raise ConntrackError(code, f"conntrack dump: {os.strerror(code)}")
                    continue
                entry = _decode_entry(body[0], body[_NFGEN.size:])
                if entry is not None:
                    entries.append(entry)

    def export(self, addresses: Iterable[str]) -> list[Entry]:
        """The entries touching any of `addresses` (either tuple, so NAT'd ones too), decoded."""
        wanted = {str(ipaddress.ip_address(a)) for a in addresses}
        return [e for e in self.dump() if not wanted.isdisjoint(e.addresses())]

    def export_raw(self, addresses: Iterable[str]) -> Export:
        """The same selection as `export`, as ready-to-send creation messages (the fast path)."""
        wanted = {ipaddress.ip_address(a).packed for a in addresses}
        self._sock.send(self._message(IPCTNL_MSG_CT_GET, NLM_F_DUMP, socket.AF_UNSPEC, b""))
        out = Export()
        cache: dict[bytes, bytes] = {}
        header = _HDR.unpack_from
        while True:
            data = self._sock.recv(1 << 20)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, kind, _flags, _seq, _pid = header(data, offset)
                if length < _HDR.size:
                    break
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, offset + _HDR.size)[0]
                    if code:
                        raise ConntrackError(code, f"conntrack dump: {os.strerror(code)}")
                else:
                    out.scanned += 1
                    body = offset + _HDR.size + _NFGEN.size
                    payload = _creation_payload(data, body, offset + length, wanted, cache)
                    if payload is not None:
                        out.add(data[offset + _HDR.size], payload)
                offset += (length + 3) & ~3

    # -- writing --------------------------------------------------------------------------

    def _batch(self, messages: list[tuple[int, bytes]]) -> ImportResult:
        """Send (seq, message) pairs in large writes; count the kernel's refusals."""
        result = ImportResult()
        failed: dict[int, int] = {}
        chunk: list[bytes] = []
        size = 0

        def flush() -> None:
            nonlocal size
            if chunk:
                self._sock.send(b"".join(chunk))
                chunk.clear()
                size = 0
            self._drain(failed)

        for _seq, message in messages:
            chunk.append(message)
            size += len(message)
            if size >= BATCH_BYTES:
                flush()
        flush()
        for code in failed.values():
            if code == errno.EEXIST:
                result.existed += 1
            else:
                result.failed += 1
                name = os.strerror(code)
                result.errors[name] = result.errors.get(name, 0) + 1
        result.created = len(messages) - result.existed - result.failed
        return result

    def _drain(self, failed: dict[int, int]) -> None:
        while True:
            try:
                data = self._sock.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            for kind, _seq, body in self._messages(data):
                if kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code:
                        seq = _HDR.unpack_from(body, 4)[3]  # the refused request's header follows
                        failed[seq] = code

    def create(self, entries: Iterable[Entry]) -> ImportResult:
        """Create entries (an existing one is left as it is and counted as `existed`)."""
        messages = []
        for entry in entries:
            message = self._message(IPCTNL_MSG_CT_NEW, NLM_F_CREATE | NLM_F_EXCL, entry.family, entry.encode_create())
            messages.append((self._seq, message))
        return self._batch(messages)

    def create_raw(self, export: Export) -> ImportResult:
        """Create the entries of an export (made by `export_raw`, here or on another node)."""
        messages = []
        header, nfgen, flags = _HDR.pack, _NFGEN.pack, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
        kind = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
        for family, payload in export.items():
            self._seq += 1
            messages.append((self._seq, header(_HDR.size + _NFGEN.size + len(payload), kind, flags, self._seq, 0) + nfgen(family, 0, 0) + payload))
        return self._batch(messages)

    def delete(self, entries: Iterable[Entry]) -> ImportResult:
        """Delete entries by original tuple (`created` counts the deleted ones)."""
        messages = []
        for entry in entries:
            messages.append((0, self._message(IPCTNL_MSG_CT_DELETE, 0, entry.family, entry.encode_delete())))
        result = self._batch(messages)
        gone = result.errors.pop(os.strerror(errno.ENOENT), 0)  # already gone: fine
        result.failed -= gone
        return result


def export_entries(addresses: Iterable[str], *, netns: str | None = None) -> Export:
    """The VM's entries, ready to be created on another node (`import_entries`)."""
    with ConntrackSocket(netns) as sock:
        return sock.export_raw(addresses)


def import_entries(entries: Export | Iterable[Entry], *, netns: str | None = None) -> ImportResult:
    with ConntrackSocket(netns) as sock:
        return sock.create_raw(entries) if isinstance(entries, Export) else sock.create(entries)


def delete_entries(addresses: Iterable[str], *, keep: Iterable[str] = (), netns: str | None = None) -> ImportResult:
    """Delete the entries touching `addresses`, except those also touching `keep`
    (a connection between the migrated guest and one staying on this node still
    crosses this node's bridge, and needs its entry here)."""
    kept = {str(ipaddress.ip_address(a)) for a in keep}
    with ConntrackSocket(netns) as sock:
        doomed = [e for e in sock.export(addresses) if kept.isdisjoint(e.addresses())]
        return sock.delete(doomed)
