"""A minimal nfnetlink client: request/dump over one NETLINK_NETFILTER socket.

Why not pyroute2 (or libnftables' listing): reading back a node's tables must cost a
small fraction of loading them. libnftables lists a table by fetching the elements of
every set, anonymous ones included, one dump per set, and the kernel finds each set by
walking the table's list of sets: quadratic in the number of sets (about 15,000 at
2,000 guests, where a listing took 14-30 s). pyroute2 decodes every attribute of every
expression into Python objects. The readers here (`nftstate.py`) ask only for what they
use and keep expressions as the kernel's bytes (docs/performance.md has the numbers).

The socket belongs to the network namespace of the thread that opens it
(`backend._NftWorker` opens it on its own thread, inside the backend's namespace).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLM_F_DUMP_INTR = 0x10  # the ruleset changed while the dump ran: it may be inconsistent
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
NFGEN = struct.Struct("=BBH")  # struct nfgenmsg (family, version, res_id big-endian)
ATTR = struct.Struct("=HH")  # struct nlattr
BE16 = struct.Struct("!H")
BE32 = struct.Struct("!I")
BE32_SIGNED = struct.Struct("!i")
BE64 = struct.Struct("!Q")

Span = tuple[int, int]  # [start, end) of an attribute's payload in a receive buffer


class NetlinkError(OSError):
    pass


class DumpInterrupted(NetlinkError):
    """The kernel flagged a dump as interrupted by a concurrent change: read again."""

    def __init__(self) -> None:
        super().__init__(errno.EAGAIN, "nf_tables changed during a dump")


def attr(kind: int, payload: bytes) -> bytes:
    length = ATTR.size + len(payload)
    return ATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def string_attr(kind: int, text: str) -> bytes:
    return attr(kind, text.encode() + b"\0")


def attrs(buf: bytes, start: int, end: int) -> dict[int, Span]:
    """Attribute type -> payload span, for the attributes in buf[start:end] (last wins)."""
    out: dict[int, Span] = {}
    while start + 4 <= end:
        length, kind = ATTR.unpack_from(buf, start)
        if length < 4:
            break
        out[kind & NLA_TYPE_MASK] = (start + 4, start + length)
        start += (length + 3) & ~3
    return out


def attr_list(buf: bytes, start: int, end: int) -> Iterator[Span]:
    """The payload spans of a nested list (NFTA_LIST_ELEM ...), in order."""
    while start + 4 <= end:
        length, _kind = ATTR.unpack_from(buf, start)
        if length < 4:
            break
        yield start + 4, start + length
        start += (length + 3) & ~3


def text(buf: bytes, span: Span) -> str:
    return buf[span[0]:span[1]].split(b"\0", 1)[0].decode("utf-8", "replace")


def be32(buf: bytes, span: Span) -> int:
    return BE32.unpack_from(buf, span[0])[0]


class NfSocket:
    """One NETLINK_NETFILTER socket; requests are answered in order (no concurrency)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            # large dumps arrive faster with a large buffer; not fatal if refused
            self._sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        except OSError:
            pass
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _send(self, subsys_msg: int, flags: int, family: int, payload: bytes) -> int:
        self._seq += 1
        body = NFGEN.pack(family, 0, 0) + payload
        self._sock.send(HEADER.pack(HEADER.size + len(body), subsys_msg, NLM_F_REQUEST | flags, self._seq, 0) + body)
        return self._seq

    def request(self, subsys_msg: int, family: int, payload: bytes, *, dump: bool) -> Iterator[tuple[bytes, int, int]]:
        """Yield (buffer, start, end) of each answer's attributes (after struct nfgenmsg).

        A dump ends at NLMSG_DONE; a plain request at its answer (or an error). Raises
        NetlinkError for a kernel error, DumpInterrupted if the dump was interrupted.
        """
        seq = self._send(subsys_msg, NLM_F_DUMP if dump else NLM_F_ACK, family, payload)
        interrupted = False
        while True:
            buf = self._sock.recv(1 << 20)
            offset = 0
            while offset + HEADER.size <= len(buf):
                length, kind, flags, msg_seq, _pid = HEADER.unpack_from(buf, offset)
                if length < HEADER.size:
                    break
                end = offset + length
                if msg_seq == seq:
                    if kind == NLMSG_DONE:
                        if interrupted:
                            raise DumpInterrupted()
                        return
                    if kind == NLMSG_ERROR:
                        code = -struct.unpack_from("=i", buf, offset + HEADER.size)[0]
                        if code:
                            raise NetlinkError(code, os.strerror(code))
                        return  # the ACK that ends a plain request
                    interrupted = interrupted or bool(flags & NLM_F_DUMP_INTR)
                    yield buf, offset + HEADER.size + NFGEN.size, end
                offset = (end + 3) & ~3
