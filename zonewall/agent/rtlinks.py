"""A node's links as rtnetlink tells them: dumped, and their events read.

The agent needs three facts of a link, its name, its MAC and the bridge it is on
(tap discovery by MAC, link events: agent/discovery.py, agent/links.py). pyroute2
gave them, but importing it costs an agent ~22 MiB of RSS (its package imports every
protocol family it knows), a seventh of the 150 MB an agent may use at 10,000 VMs
(docs/performance.md), for one dump and one message type. Like the readback
(dataplane/netlink.py), this reads the few attributes it uses from the kernel's bytes.

A socket belongs to the network namespace of the thread that opens it (callers use
netns.run_in_netns for another namespace).
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ..dataplane.netlink import HEADER, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkError, attrs

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
EVENTS = {RTM_NEWLINK: "RTM_NEWLINK", RTM_DELLINK: "RTM_DELLINK"}
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER = 1, 3, 10
IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg: family, type, index, flags, change
U32 = struct.Struct("=I")


@dataclass(frozen=True)
class Link:
    event: str  # RTM_NEWLINK | RTM_DELLINK
    index: int
    name: str
    mac: str | None  # lowercase, colon-separated; None: the link has no address
    master: int | None  # the bridge's ifindex


def links_in(buf: bytes) -> Iterator[Link]:
    """The link messages in a receive buffer (others, and anything truncated, skipped)."""
    offset = 0
    while offset + HEADER.size <= len(buf):
        length, kind = HEADER.unpack_from(buf, offset)[:2]
        if length < HEADER.size or offset + length > len(buf):
            return
        start, end = offset + HEADER.size, offset + length
        if kind in EVENTS and start + IFINFO.size <= end:
            index = IFINFO.unpack_from(buf, start)[2]
            found = attrs(buf, start + IFINFO.size, end)
            name = found.get(IFLA_IFNAME)
            address = found.get(IFLA_ADDRESS)
            master = found.get(IFLA_MASTER)
            yield Link(
                EVENTS[kind],
                index,
                buf[name[0] : name[1]].split(b"\0", 1)[0].decode("utf-8", "replace") if name else "",
                ":".join(f"{byte:02x}" for byte in buf[address[0] : address[1]]) if address and address[1] > address[0] else None,
                U32.unpack_from(buf, master[0])[0] if master and master[1] - master[0] >= 4 else None,
            )
        offset += (length + 3) & ~3


def dump_links() -> list[Link]:
    """Every link of this thread's namespace (NetlinkError if the kernel refuses)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0) as sock:  # NETLINK_ROUTE
        sock.bind((0, 0))
        sequence = 1
        body = IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        sock.send(HEADER.pack(HEADER.size + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0) + body)
        out: list[Link] = []
        while True:
            buf = sock.recv(1 << 20)
            offset = 0
            while offset + HEADER.size <= len(buf):
                length, kind, _flags, seq, _pid = HEADER.unpack_from(buf, offset)
                if length < HEADER.size:
                    break
                if seq == sequence and kind == NLMSG_DONE:
                    return out
                if seq == sequence and kind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", buf, offset + HEADER.size)[0]
                    raise NetlinkError(code, os.strerror(code))
                offset += (length + 3) & ~3
            out += links_in(buf)
