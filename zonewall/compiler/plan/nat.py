"""NAT entries as the plan's translations for one node: dnat port forwards (before
filtering: the VM's rules see the translated address and port) and source
translations (snat, masquerade; after filtering: the receiver sees the new source).

* a dnat entry listens on `host` (its `listen.address`, else the host's addresses of
  each family) and forwards to the VM's address (`to.address`, else its first of the
  family) and `to.port` (default: the listen port); a family works when both sides
  have an address in it;
* `snat` (on every node unless `host`) and masquerade (an entry, or implied for IPv4
  by every `mode: nat` network hosted here) translate what leaves the node from the
  sources: through its `uplink` when it has one, else whatever leaves the source
  subnet. Bridged guest-to-guest traffic is never translated.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from ...policy.addresses import FAMILIES, Family
from ...policy.model import Dnat, Masquerade, Snat
from ...policy.resolve import Policy
from .vocabulary import Intervals


@dataclass(frozen=True)
class PortForward:
    """One dnat entry in one family on its node."""

    entry: int  # index in `nat`
    node: str
    family: Family
    protocol: Literal["tcp", "udp"]
    listen: tuple[str, ...]  # the addresses it listens on
    port: int  # the listen port
    vm: str
    address: str  # the VM address it forwards to
    to_port: int
    open: bool

    @property
    def label(self) -> str:
        return f"nat[{self.entry}] dnat to vm {self.vm}"


@dataclass(frozen=True)
class SourceNat:
    """A source translation: packets from `sources` leaving the node (through
    `uplink`, else to anything outside `sources`) get the source `to` (snat) or the
    address of the interface they leave through (masquerade)."""

    kind: Literal["snat", "masquerade"]
    family: Family
    sources: Intervals
    to: str | None  # snat's address; None for masquerade
    uplink: str | None
    label: str


def family_of(address: str) -> Family:
    return "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"


def hosted_networks(policy: Policy, node: str) -> list[str]:
    return sorted({nic.network for vm in policy.vms_on(node) for nic in policy.doc.vms[vm].nics})


def port_forwards(policy: Policy, node: str) -> list[PortForward]:
    out = []
    for index, entry in enumerate(policy.doc.nat):
        if not isinstance(entry, Dnat) or entry.host != node:
            continue
        protocol = "tcp" if entry.listen.tcp is not None else "udp"
        port = entry.listen.tcp if entry.listen.tcp is not None else entry.listen.udp
        listen = list(entry.listen.address) or list(policy.doc.hosts[node].address)
        vm = policy.doc.vms[entry.to.vm]
        for family in FAMILIES:
            here = tuple(a for a in listen if family_of(a) == family)
            if entry.to.address is not None:
                target = entry.to.address if family_of(entry.to.address) == family else None
            else:
                target = next((ip for nic in vm.nics for ip in nic.ips if family_of(ip) == family), None)
            if here and target is not None:
                out.append(PortForward(index, node, family, protocol, here, port, entry.to.vm, target, entry.to.port or port, entry.open))  # type: ignore[arg-type]
    return out


def source_nats(policy: Policy, node: str) -> list[SourceNat]:
    """The node's source translations, in the order the kernel tries them."""
    uplink = policy.doc.hosts[node].uplink
    hosted = hosted_networks(policy, node)
    out: list[SourceNat] = []
    masqueraded: list[tuple[str, Family, str]] = []  # (network, family, label)
    for index, entry in enumerate(policy.doc.nat):
        if isinstance(entry, Snat):
            if entry.host is not None and entry.host != node:
                continue
            addresses = policy.address_set(entry.from_)
            for family in FAMILIES:
                target = next((a for a in entry.to if family_of(a) == family), None)
                if addresses.family(family) and target is not None:
                    out.append(SourceNat("snat", family, addresses.family(family), target, uplink, f"nat[{index}] snat"))
        elif isinstance(entry, Masquerade) and entry.network in hosted:
            masqueraded.append((entry.network, entry.family, f"nat[{index}] masquerade"))
    for network in hosted:
        if policy.doc.networks[network].mode == "nat" and (network, "ipv4") not in {(n, f) for n, f, _ in masqueraded}:
            masqueraded.append((network, "ipv4", f"network {network}: mode nat"))
    for network, family, label in masqueraded:
        subnets = [s for s in policy.doc.networks[network].subnets if family_of(s.split("/")[0]) == family]
        if subnets:
            out.append(SourceNat("masquerade", family, policy.address_set(subnets).family(family), None, uplink, label))
    return out
