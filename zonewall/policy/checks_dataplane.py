"""Cross-key checks of issue 18's dataplane constructs (policy/dataplane_keys.py).

* tenants: networks of different tenants may overlap, if the node routes neither
  (both `bridged`): each tenant's connections live in their own conntrack zone;
* `learning: dhcp` and the `allow-dhcp-server` filter trust only the network's
  `dhcp_servers` and need some;
* the numbers the kernel carries (a packet-limited rule's connection mark, a
  tenant's conntrack zone) are hashes: two that collide are refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .dataplane_keys import packet_limit_mark, tenant_zone
from .model import PolicyDocument

if TYPE_CHECKING:
    from .resolve import Checker

DHCP_TRUSTING_FILTERS = ("allow-dhcp-server",)


def tenant_of(doc: PolicyDocument, network: str) -> str:
    """The tenant of a network ("" for networks without one, and unknown networks)."""
    found = doc.networks.get(network)
    return (found.tenant or "") if found is not None else ""


def overlap_refused(doc: PolicyDocument, a: str, b: str) -> str | None:
    """Why two networks may not have overlapping subnets (None: they may)."""
    if tenant_of(doc, a) == tenant_of(doc, b):
        return ""
    routed = [n for n in (a, b) if doc.networks[n].mode != "bridged"]
    if routed:
        return f" (networks of different tenants may overlap only when the node routes neither: {routed[0]} is mode {doc.networks[routed[0]].mode})"
    return None


def check_dataplane(checker: Checker) -> None:
    doc = checker.doc
    _check_dhcp_trust(checker)
    zones: dict[int, str] = {}
    for name, network in sorted(doc.networks.items()):
        if network.tenant is None:
            continue
        zone = tenant_zone(network.tenant)
        if zones.setdefault(zone, network.tenant) != network.tenant:
            checker.problem(("networks", name, "tenant"), f"tenants {zones[zone]} and {network.tenant} would share conntrack zone {zone}; rename one")
    marks: dict[int, str] = {}
    for ref in checker.policy.rules:
        if ref.rule.packet_limit is None:
            continue
        mark = packet_limit_mark(ref.level, ref.owner, ref.id)
        if marks.setdefault(mark, ref.where) != ref.where:
            checker.problem(ref.path + ("packet_limit",), f"this rule and the one at {marks[mark]} would share connection mark {mark:#x}; give one an `id`")


def _check_dhcp_trust(checker: Checker) -> None:
    doc = checker.doc
    for name, vm in doc.vms.items():
        if checker.problems_in(("vms", name)):
            continue
        for index, nic in enumerate(vm.nics):
            network = doc.networks.get(nic.network)
            if network is None or network.dhcp_servers:
                continue
            if nic.learning.ipv4 == "dhcp":
                checker.problem(("vms", name, "nics", index, "learning"), f"learning dhcp needs network {nic.network}'s `dhcp_servers` (the servers whose leases it trusts; otherwise any guest could hand out addresses)")
            trusting = [f for f in checker.policy.nic_filters(name, index) if f in DHCP_TRUSTING_FILTERS]
            if trusting:
                checker.problem(("vms", name, "nics", index), f"filter {trusting[0]} needs network {nic.network}'s `dhcp_servers` (libvirt's DHCPSERVER: the servers whose replies it accepts)")
