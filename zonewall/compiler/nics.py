"""The guest NICs of one node, each with its stable per-node index and port name."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..policy.model import Nic
from ..policy.resolve import Policy
from . import nftexpr as x
from .naming import tap_name


@dataclass(frozen=True)
class LocalNic:
    index: int  # 1.., the value of the source-NIC bits of the packet mark
    vm: str
    nic_index: int
    nic: Nic
    tap: str

    @property
    def src_mark(self) -> int:
        return self.index

    @property
    def dst_mark(self) -> int:
        return self.index << x.DST_NIC_SHIFT

    def ipv4(self) -> list[str]:
        return [ip for ip in self.nic.ips if ipaddress.ip_address(ip).version == 4]

    def ipv6(self) -> list[str]:
        """Configured IPv6 addresses plus the EUI-64 link-local one NDP uses."""
        out = [ip for ip in self.nic.ips if ipaddress.ip_address(ip).version == 6]
        if self.nic.mac:
            out.append(eui64_link_local(self.nic.mac))
        return out


def eui64_link_local(mac: str) -> str:
    return str(ipaddress.IPv6Address(eui64_link_local_value(mac)))


def eui64_link_local_value(mac: str) -> int:
    """The NIC's link-local address (fe80::/64 + modified EUI-64) as an integer."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return (0xFE80 << 112) | int.from_bytes(bytes(eui), "big")


def local_nics(policy: Policy, node: str) -> list[LocalNic]:
    out: list[LocalNic] = []
    for vm_name in policy.vms_on(node):
        for nic_index, nic in enumerate(policy.doc.vms[vm_name].nics):
            out.append(LocalNic(len(out) + 1, vm_name, nic_index, nic, tap_name(vm_name, nic_index, nic)))
    if len(out) > x.MAX_NICS_PER_NODE:
        raise ValueError(f"node {node} has {len(out)} guest NICs; at most {x.MAX_NICS_PER_NODE} are supported")
    return out
