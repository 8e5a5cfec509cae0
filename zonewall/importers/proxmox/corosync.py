"""Read the parts of `corosync.conf` (/etc/pve/corosync.conf) Proxmox's firewall uses.

pve-firewall opens udp 5404-5405 between each node's ring addresses and those of its
peers on the same ring (ring0 to ring0, ...), and to multicast addresses when the
totem transport is `udp` (multicast). The format is corosync's: `name { ... }`
sections of `key: value` lines, `#` comments.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..report import ImportFailure, Report, Where
from .parse import config_lines


@dataclass
class CorosyncNode:
    name: str
    where: Where
    rings: dict[str, str] = field(default_factory=dict)  # ring0_addr / link0_addr -> IP address


@dataclass
class Corosync:
    shown: str
    nodes: dict[str, CorosyncNode] = field(default_factory=dict)
    multicast: bool = False  # totem transport udp: Proxmox also opens corosync to multicast

    def ring_members(self) -> dict[str, list[str]]:
        """Every node's address on each ring (ring0_addr, ...; nodes in nodelist order)."""
        rings: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for ring, address in sorted(node.rings.items()):
                rings.setdefault(ring, []).append(address)
        return rings


_OPEN = re.compile(r"^([A-Za-z0-9_.-]+)\s*\{$")
_VALUE = re.compile(r"^([A-Za-z0-9_.-]+)\s*:\s*(.*?)\s*$")


def read_corosync(path: Path, shown: str, report: Report) -> Corosync:
    try:
        text = path.read_bytes().decode("utf-8")  # no newline translation: lines as Proxmox reads them
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFailure([f"{shown}: cannot read ({exc})"]) from None
    conf = Corosync(shown)
    stack: list[str] = []
    node: CorosyncNode | None = None
    for number, raw in enumerate(config_lines(text), start=1):
        line = raw.split("#", 1)[0].strip(" \t\r\f\v")
        if not line:
            continue
        where = Where(shown, number)
        opened = _OPEN.match(line)
        if opened:
            stack.append(opened.group(1))
            if stack == ["nodelist", "node"]:
                node = CorosyncNode("", where)
            continue
        if line == "}":
            if not stack:
                raise ImportFailure([f"{where}: '}}' without a section"])
            if stack == ["nodelist", "node"] and node is not None:
                if not node.name:
                    raise ImportFailure([f"{node.where}: a nodelist node without a name"])
                conf.nodes[node.name] = node
                node = None
            stack.pop()
            continue
        found = _VALUE.match(line)
        if not found:
            raise ImportFailure([f"{where}: cannot read {raw.strip()!r} (expected key: value, NAME {{ or }})"])
        key, value = found.group(1), found.group(2)
        if stack == ["totem"] and key == "transport":
            conf.multicast = value == "udp"
        elif stack == ["nodelist", "node"] and node is not None:
            if key == "name":
                node.name = value
            elif re.fullmatch(r"(ring|link)\d+_addr", key):
                try:
                    node.rings[key] = str(ipaddress.ip_address(value))
                except ValueError:
                    # pve-firewall resolves host names with the node's resolver; an
                    # import cannot, so this link gets no rule (closed)
                    report.inexact(where, f"corosync {key} {value!r} is a host name: pve-firewall resolves it and opens corosync to it; "
                                          "no rule is written for it (give the address)")
    if stack:
        raise ImportFailure([f"{shown}: section {stack[-1]!r} is not closed"])
    return conf
