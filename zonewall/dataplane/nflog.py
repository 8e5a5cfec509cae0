"""Read zonewall's NFLOG records over netlink (nfnetlink_log), in any namespace.

The compiled rulesets log with ``log group G prefix "zw|node|scope|direction|rule|verdict|level"``
(the format is compiler/logprefix.py's, which builds and parses it).  The kernel hands such packets to
whoever has bound group G *in the namespace of the packet* through nfnetlink_log; in
a non-initial namespace this is the only way to see them (``log`` to the ring buffer
is silent there, see docs / kernel-notes).

pyroute2 0.9.7 has no nfnetlink_log implementation (only nfctsocket, nftsocket and
ipset), so this module speaks the small protocol itself over a raw
``AF_NETLINK/NETLINK_NETFILTER`` socket:

* config messages ``(NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG`` with ``res_id`` = the
  group: ``NFULNL_CFG_CMD_BIND``, then the copy mode (``NFULNL_COPY_PACKET`` with a
  copy range) and a queue threshold of 1 (flush every record at once).
  ``NFULNL_CFG_CMD_PF_BIND`` is not sent: since Linux 3.17 it is a no-op (the
  loggers are always registered), and it would only matter on ancient kernels.
* packet messages ``(NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET`` carrying the prefix,
  mark, interface indexes, the hardware header and the first bytes of the packet
  (from the network header on: IPv4/IPv6/ARP, per ``hw_protocol``).

A socket belongs to the namespace it was created in, so the reader creates it in a
thread that entered the namespace (:func:`zonewall.netns.netns_socket`) and uses
it from any thread afterwards.  Only one socket per namespace can bind a given
group: the kernel refuses a second one with EPERM (measured on 6.18).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..compiler.ir import NicMeta
from ..compiler.logprefix import parse as parse_prefix
from ..compiler.nftexpr import DST_NIC_MASK, DST_NIC_SHIFT, SRC_NIC_MASK
from ..netns import netns_socket, run_in_netns

# ----------------------------------------------------------------- protocol constants

NETLINK_NETFILTER = 12
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)  # not exported by Python

NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET, NFULNL_MSG_CONFIG = 0, 1
NFNETLINK_V0 = 0

# config attributes and commands
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_NLBUFSIZ, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH, NFULA_CFG_FLAGS = 1, 2, 3, 4, 5, 6
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_NONE, NFULNL_COPY_META, NFULNL_COPY_PACKET = 0, 1, 2

# packet attributes
NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_IFINDEX_PHYSINDEV = 6
NFULA_IFINDEX_PHYSOUTDEV = 7
NFULA_HWADDR = 8
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10

ETH_P_IP, ETH_P_ARP, ETH_P_IPV6 = 0x0800, 0x0806, 0x86DD
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
_V6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options: (len + 1) * 8 bytes
_V6_FRAGMENT, _V6_AH = 44, 51
PROTO_NAMES = {IPPROTO_ICMP: "icmp", IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMPV6: "icmpv6", 132: "sctp"}

DEFAULT_COPY_RANGE = 128  # enough for IPv6 + extension headers + TCP


class NflogError(OSError):
    """Binding or configuring the NFLOG group failed (errno from the kernel)."""


# ------------------------------------------------------------------------- records


@dataclass(frozen=True)
class LogRecord:
    """One NFLOG record, decoded.

    ``node/scope/direction/rule_id/verdict`` (and ``log_level``) come from a ``zw|...`` prefix (None for
    a foreign prefix); ``src_nic``/``dst_nic`` are the NIC indexes in the packet mark
    (0 = none; see ``ruleset.meta["nics"]``). Interfaces are names as seen in the
    reader's namespace (``physindev`` is the guest port of bridged traffic). ``family``
    is ``ipv4``, ``ipv6``, ``arp`` (src/dst = sender/target IP) or None.
    """

    time: float
    prefix: str
    node: str | None
    scope: str | None
    direction: str | None
    rule_id: str | None
    verdict: str | None
    mark: int
    src_nic: int
    dst_nic: int
    indev: str | None
    outdev: str | None
    physindev: str | None
    physoutdev: str | None
    family: str | None
    src: str | None
    dst: str | None
    proto: str | None
    sport: int | None
    dport: int | None
    icmp_type: int | None
    # extras (not part of the positional contract above)
    hw_protocol: int = 0
    hook: int | None = None
    log_level: str | None = None  # from the prefix (issue 18); None: a prefix without one
    src_mac: str | None = None
    payload: bytes = field(default=b"", repr=False)

    @property
    def is_zonewall(self) -> bool:
        return self.rule_id is not None


@dataclass
class _L3:
    family: str | None = None
    src: str | None = None
    dst: str | None = None
    proto: str | None = None
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None


def _l4(out: _L3, proto: int, data: bytes, first_fragment: bool = True) -> None:
    out.proto = PROTO_NAMES.get(proto, str(proto))
    if not first_fragment:
        return
    if proto in (IPPROTO_TCP, IPPROTO_UDP, 132) and len(data) >= 4:
        out.sport, out.dport = struct.unpack("!HH", data[:4])
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and len(data) >= 1:
        out.icmp_type = data[0]


def decode_packet(hw_protocol: int, data: bytes) -> _L3:
    """Addresses and ports of a packet starting at its network header.

    ``hw_protocol`` is the ethertype the kernel reports; when it is 0 (some hooks)
    the IP version nibble decides.
    """
    out = _L3()
    if hw_protocol == ETH_P_ARP:
        # htype(2) ptype(2) hlen(1) plen(1) op(2) sha tpa ...
        if len(data) >= 8:
            _htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", data[:8])
            out.family = "arp"
            out.proto = {1: "arp-request", 2: "arp-reply"}.get(op, f"arp-{op}")
            if ptype == ETH_P_IP and plen == 4 and len(data) >= 8 + 2 * hlen + 8:
                spa = data[8 + hlen: 12 + hlen]
                tpa = data[12 + 2 * hlen: 16 + 2 * hlen]
                out.src, out.dst = str(ipaddress.IPv4Address(spa)), str(ipaddress.IPv4Address(tpa))
        return out
    version = data[0] >> 4 if data else 0
    if hw_protocol == ETH_P_IP or (hw_protocol == 0 and version == 4):
        if len(data) < 20 or version != 4:
            return out
        ihl = (data[0] & 0x0F) * 4
        frag = struct.unpack("!H", data[6:8])[0] & 0x1FFF
        out.family = "ipv4"
        out.src, out.dst = str(ipaddress.IPv4Address(data[12:16])), str(ipaddress.IPv4Address(data[16:20]))
        _l4(out, data[9], data[ihl:], first_fragment=frag == 0)
    elif hw_protocol == ETH_P_IPV6 or (hw_protocol == 0 and version == 6):
        if len(data) < 40 or version != 6:
            return out
        out.family = "ipv6"
        out.src, out.dst = str(ipaddress.IPv6Address(data[8:24])), str(ipaddress.IPv6Address(data[24:40]))
        nh, rest, first = data[6], data[40:], True
        while len(rest) >= 8:
            if nh in _V6_EXT:
                nh, rest = rest[0], rest[(rest[1] + 1) * 8:]
            elif nh == _V6_FRAGMENT:
                first = first and (struct.unpack("!H", rest[2:4])[0] & 0xFFF8) == 0
                nh, rest = rest[0], rest[8:]
            elif nh == _V6_AH:
                nh, rest = rest[0], rest[(rest[1] + 2) * 4:]
            else:
                break
        _l4(out, nh, rest, first_fragment=first)
    return out


def _attrs(buf: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", buf, offset)
        if length < 4:
            break
        found[kind & NLA_TYPE_MASK] = buf[offset + 4: offset + length]
        offset += (length + 3) & ~3
    return found


def decode_record(attrs: Mapping[int, bytes], ifname: Any = None, now: float | None = None) -> LogRecord:
    """A :class:`LogRecord` from the attributes of one NFULNL_MSG_PACKET.

    ``ifname(index) -> name`` resolves interface indexes (default: ``"if<N>"``).
    """
    resolve = ifname or (lambda index: f"if{index}")

    def dev(kind: int) -> str | None:
        raw = attrs.get(kind)
        return resolve(struct.unpack("!I", raw[:4])[0]) if raw and len(raw) >= 4 else None

    hw_protocol, hook = 0, None
    if NFULA_PACKET_HDR in attrs and len(attrs[NFULA_PACKET_HDR]) >= 3:
        hw_protocol, hook = struct.unpack("!HB", attrs[NFULA_PACKET_HDR][:3])
    mark = struct.unpack("!I", attrs[NFULA_MARK][:4])[0] if len(attrs.get(NFULA_MARK, b"")) >= 4 else 0
    stamp = now if now is not None else time.time()
    if len(attrs.get(NFULA_TIMESTAMP, b"")) >= 16:
        sec, usec = struct.unpack("!QQ", attrs[NFULA_TIMESTAMP][:16])
        stamp = sec + usec / 1e6
    prefix = attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("utf-8", "replace")
    src_mac = None
    hw = attrs.get(NFULA_HWADDR, b"")
    if len(hw) >= 4:
        hwlen = struct.unpack("!H", hw[:2])[0]
        if hwlen == 6 and len(hw) >= 10:
            src_mac = ":".join(f"{b:02x}" for b in hw[4:10])
    payload = attrs.get(NFULA_PAYLOAD, b"")
    l3 = decode_packet(hw_protocol, payload)
    node, scope, direction, rule_id, verdict, level = parse_prefix(prefix)
    return LogRecord(
        time=stamp,
        prefix=prefix,
        node=node,
        scope=scope,
        direction=direction,
        rule_id=rule_id,
        verdict=verdict,
        mark=mark,
        src_nic=mark & SRC_NIC_MASK,
        dst_nic=(mark & DST_NIC_MASK) >> DST_NIC_SHIFT,
        indev=dev(NFULA_IFINDEX_INDEV),
        outdev=dev(NFULA_IFINDEX_OUTDEV),
        physindev=dev(NFULA_IFINDEX_PHYSINDEV),
        physoutdev=dev(NFULA_IFINDEX_PHYSOUTDEV),
        family=l3.family,
        src=l3.src,
        dst=l3.dst,
        proto=l3.proto,
        sport=l3.sport,
        dport=l3.dport,
        icmp_type=l3.icmp_type,
        hw_protocol=hw_protocol,
        hook=hook,
        src_mac=src_mac,
        payload=payload,
        log_level=level,
    )


def resolve_vm(record: LogRecord, nics_meta: Mapping[int, NicMeta], side: str | None = None) -> str | None:
    """The VM a record is about, from the NIC indexes in its mark (else its ports).

    ``nics_meta`` is ``ruleset.meta["nics"]`` (NIC index -> {vm, nic, tap, network}). ``side`` is ``"src"`` or
    ``"dst"``; by default the record's direction decides: ``in`` is about the
    receiving NIC, anything else (``out``, ``net``, host rules) about the sender,
    falling back to the other side when that one is 0 or unknown.
    """
    def vm_of(index: int) -> str | None:
        if not index:
            return None
        entry = nics_meta.get(index)
        return None if entry is None else entry["vm"]

    if side == "src":
        return vm_of(record.src_nic)
    if side == "dst":
        return vm_of(record.dst_nic)
    if side is not None:
        raise ValueError(f"side must be 'src', 'dst' or None, not {side!r}")
    order = (record.dst_nic, record.src_nic) if record.direction == "in" else (record.src_nic, record.dst_nic)
    for index in order:
        vm = vm_of(index)
        if vm is not None:
            return vm
    # Guards run before the NIC indexes are written into the mark; the guest port
    # the frame came in on (or goes out of) names the NIC just as well.
    by_tap = {str(entry["tap"]): str(entry["vm"]) for entry in nics_meta.values()}
    receiving = (record.physoutdev, record.outdev)
    sending = (record.physindev, record.indev)
    for port in (receiving + sending) if record.direction == "in" else (sending + receiving):
        if port in by_tap:
            return by_tap[port]
    return None


# -------------------------------------------------------------------------- reader


def _nlmsg(msg_type: int, flags: int, seq: int, body: bytes) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, flags, seq, 0) + body


def _nla(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


class NflogReader:
    """Receives the NFLOG records of ``group`` in namespace ``netns`` (None: ours).

    ::

        with NflogReader(1, netns=state.nodes["node1"]) as log:
            ...  # send traffic
            records = log.read(timeout=2)

    :meth:`read` waits up to ``timeout`` for at least one record and returns every
    record available then; :meth:`wait_for` collects records until one satisfies a
    predicate; iterating yields records as they come (blocking).  Every record
    received is also kept in :attr:`history` (bounded by ``keep``).
    """

    def __init__(self, group: int, netns: str | None = None, *, copy_range: int = DEFAULT_COPY_RANGE,
                 rcvbuf: int = 4 << 20, keep: int = 100_000) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group must be 0-65535, not {group}")
        self.group, self.netns, self.copy_range, self.keep = group, netns, copy_range, keep
        self.history: list[LogRecord] = []
        self.lost = 0  # times the socket buffer overran (ENOBUFS): records were lost
        self._pending: list[LogRecord] = []
        self._seq = 0
        self._ifnames: dict[int, str] = {}
        self._sock: socket.socket | None = None
        self._open(rcvbuf)

    # -- setup ----------------------------------------------------------------------

    def _open(self, rcvbuf: int) -> None:
        sock = netns_socket(self.netns, socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            sock.bind((0, 0))
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except PermissionError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._sock = sock
            self._config(_nla(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND)))
            mode = struct.pack("!IBx", self.copy_range, NFULNL_COPY_PACKET)
            self._config(_nla(NFULA_CFG_MODE, mode) + _nla(NFULA_CFG_QTHRESH, struct.pack("!I", 1)))
        except BaseException:
            self._sock = None
            sock.close()
            raise

    def _config(self, attrs: bytes) -> None:
        """Send one config message and wait for its ACK (raises on a kernel error)."""
        assert self._sock is not None
        self._seq += 1
        seq = self._seq
        nfgen = struct.pack("!BBH", socket.AF_UNSPEC, NFNETLINK_V0, self.group)
        self._sock.sendto(_nlmsg((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, nfgen + attrs), (0, 0))
        deadline = time.monotonic() + 5
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NflogError(errno.ETIMEDOUT, f"no answer to NFLOG config of group {self.group}")
            ready, _, _ = select.select([self._sock], [], [], left)
            if not ready:
                continue
            buf = self._sock.recv(1 << 16)
            acked = False
            for msg_type, msg_seq, offset, end in self._messages(buf):
                if msg_type == NLMSG_ERROR and msg_seq == seq:
                    code = -struct.unpack_from("=i", buf, offset)[0]
                    if code:
                        where = f" in namespace {self.netns}" if self.netns else ""
                        hint = " (another socket has bound this group in that namespace, or CAP_NET_ADMIN is missing)" if code in (errno.EBUSY, errno.EPERM) else ""
                        raise NflogError(code, f"NFLOG group {self.group}{where}: {os.strerror(code)}{hint}")
                    acked = True
                else:
                    self._handle(msg_type, buf, offset, end)  # a record that raced the ACK
            if acked:
                return

    # -- receiving ------------------------------------------------------------------

    @staticmethod
    def _messages(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
        """(type, seq, body offset, body end) of each netlink message in ``buf``."""
        offset = 0
        while offset + 16 <= len(buf):
            length, msg_type, _flags, seq, _pid = struct.unpack_from("=IHHII", buf, offset)
            if length < 16 or offset + length > len(buf):
                break
            yield msg_type, seq, offset + 16, offset + length
            offset += (length + 3) & ~3

    def _handle(self, msg_type: int, buf: bytes, offset: int, end: int) -> None:
        if msg_type != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            return  # NLMSG_DONE closing a batch, stray ACKs
        attrs = _attrs(buf, offset + 4, end)  # skip struct nfgenmsg
        record = decode_record(attrs, self._ifname)
        self._pending.append(record)
        self.history.append(record)
        if len(self.history) > self.keep:
            del self.history[: len(self.history) - self.keep]

    def _ifname(self, index: int) -> str:
        if index not in self._ifnames:
            self._ifnames.update(self._interfaces())
        return self._ifnames.get(index, f"if{index}")

    def _interfaces(self) -> dict[int, str]:
        try:
            pairs = run_in_netns(self.netns, socket.if_nameindex)
        except OSError:
            return {}
        return dict(pairs)

    def _receive(self, timeout: float | None) -> bool:
        """Read what arrives within ``timeout`` (None: block); True if anything did."""
        if self._sock is None:
            raise ValueError("NflogReader is closed")
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            return False
        got = False
        while True:
            try:
                buf = self._sock.recv(1 << 18, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return got
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # overrun: the kernel dropped records
                    self.lost += 1
                    continue
                raise
            got = True
            for msg_type, _seq, offset, end in self._messages(buf):
                self._handle(msg_type, buf, offset, end)

    def read(self, timeout: float = 1.0) -> list[LogRecord]:
        """Records available within ``timeout`` seconds (possibly none), oldest first."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not self._receive(left):
                break
        self._receive(0)  # and whatever else is already queued
        out, self._pending = self._pending, []
        return out

    def wait_for(self, predicate: Callable[[LogRecord], bool], timeout: float = 2.0) -> LogRecord | None:
        """The first record (from now on, pending ones included) satisfying ``predicate``.

        Records read while waiting stay in :attr:`history`; non-matching ones are
        consumed.
        """
        deadline = time.monotonic() + timeout
        while True:
            while self._pending:
                record = self._pending.pop(0)
                if predicate(record):
                    return record
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._receive(left)

    def __iter__(self) -> Iterator[LogRecord]:
        while self._sock is not None:
            if not self._pending:
                self._receive(None)
            while self._pending:
                yield self._pending.pop(0)

    def fileno(self) -> int:
        if self._sock is None:
            raise ValueError("NflogReader is closed")
        return self._sock.fileno()

    # -- teardown -------------------------------------------------------------------

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:  # closing the socket unbinds too; say it explicitly while we can
            nfgen = struct.pack("!BBH", socket.AF_UNSPEC, NFNETLINK_V0, self.group)
            body = nfgen + _nla(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_UNBIND))
            sock.sendto(_nlmsg((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_REQUEST, 0, body), (0, 0))
        except OSError:
            pass
        finally:
            sock.close()

    def __enter__(self) -> NflogReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit anything may be gone already
            pass
