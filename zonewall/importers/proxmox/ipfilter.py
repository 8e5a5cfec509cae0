"""Proxmox's `ipfilter` -> one guard filter per NIC that lets exactly its sources out.

pve-firewall drops what a guest's NIC sends from a source outside its
`ipfilter-netN` IP set (`ipfilter: 1` without the set means an empty one). The set
always also holds the NIC's EUI-64 link-local address and, for a container with
`ipfilter: 1`, its configured `ip`/`ip6`; an empty set drops every IPv4 source.
ebtables then allows ARP only from the set's IPv4 addresses, when there are any.

This is written as a filter of its own (`pve-ipfilter-VMID-netN`) rather than as the
NIC's `ips` under `no-ip-spoofing`: a NIC without `ips` would be in learning mode
(it would learn its first source, where Proxmox drops every one), and one address in
the sets of two NICs could not be the `ips` of both.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ...compiler.nics import eui64_link_local
from ..emit import Commented, Flow, Raw
from ..report import Report
from .addresses import AddressBook, net_text
from .inventory import Inventory, Nic
from .parse import FwFile, IpSet

ETHERTYPE = {"ipv4": Raw("0x0800"), "ipv6": Raw("0x86dd"), "arp": Raw("0x0806")}


def ipfilter_set(fw: FwFile | None, nic: Nic, option: bool) -> IpSet | None:
    """The NIC's ipfilter set: its `ipfilter-netN`, or an empty one with `ipfilter: 1`."""
    if fw is None:
        return None
    found = fw.ipsets.get(f"ipfilter-{nic.key}")
    if found is None and option:
        return IpSet(f"ipfilter-{nic.key}", fw.option_where("ipfilter"))
    return found


def _family(member: str) -> int:
    return ipaddress.ip_network(member.lstrip("!")).version


def ipfilter_filter(vmid: int, nic: Nic, ipset: IpSet, fw: FwFile, book: AddressBook, option: bool, report: Report) -> Commented:
    """The guard filter for one NIC's ipfilter set."""
    entries = book.entries(ipset, fw)
    if option:  # pve-firewall adds a container's configured addresses with ipfilter: 1
        entries += [(ipaddress.ip_network(ip), False) for ip in nic.configured]
    link_local = eui64_link_local(nic.mac) if nic.mac else None
    if link_local:
        entries.append((ipaddress.ip_network(link_local), False))
    else:
        report.inexact(nic.where, f"guest {vmid} {nic.key}: no mac in the inventory, so the ipfilter cannot allow the NIC's link-local address; its IPv6 is dropped (closed)")
    members, _ = book.members(entries)
    rules: list[Any] = []
    for family, name in ((4, "ipv4"), (6, "ipv6")):
        allowed = [m for m in members if _family(m) == family]
        if [m for m in allowed if not m.startswith("!")]:
            rules.append(Flow({"direction": "out", "action": "return", "from": allowed if len(allowed) > 1 else allowed[0]}))
        rules.append(Flow({"direction": "out", "action": "drop", "ethertype": ETHERTYPE[name]}))
    arp = _arp_sources(ipset, nic, option, fw, book, report, vmid)
    if arp:
        rules += [Flow({"direction": "out", "action": "return", "arp": Flow({"ip_src": address})}) for address in arp]
        rules.append(Flow({"direction": "out", "action": "drop", "ethertype": ETHERTYPE["arp"]}))
    v4 = [m for m in members if _family(m) == 4 and not m.startswith("!")]
    if not v4:
        report.note(ipset.where, f"guest {vmid} {nic.key}: the ipfilter set allows no IPv4 source: Proxmox drops everything the NIC sends over IPv4, and so does the import")
    origin = f"{ipset.name} ({ipset.where})" if ipset.name in fw.ipsets else f"ipfilter: 1 without an {ipset.name} set ({ipset.where}): an empty set"
    return Commented({"rules": rules}, f"Proxmox's ipfilter of guest {vmid} {nic.key}: {origin}; plus the NIC's link-local address"
                                       + (" and the container's configured addresses" if option and nic.configured else ""))


def _arp_sources(ipset: IpSet, nic: Nic, option: bool, fw: FwFile, book: AddressBook, report: Report, vmid: int) -> list[str]:
    """ebtables' ARP allow list: the set's IPv4 entries as written (and a container's
    ip with ipfilter: 1). zonewall's ARP match takes single addresses: a subnet entry
    is left out of it, which drops more ARP (closed)."""
    out: list[str] = []
    for network, _nomatch in book.entries(ipset, fw):  # pve-firewall reads nomatch entries here too
        if network.version != 4:
            continue
        if network.num_addresses != 1:
            report.inexact(ipset.where, f"guest {vmid} {nic.key}: ipfilter entry {network}: ARP is allowed from single addresses only; ARP from the rest of it is dropped (closed)")
            continue
        out.append(net_text(network))
    if option:
        out += [ip for ip in nic.configured if ipaddress.ip_address(ip).version == 4]
    return sorted(set(out), key=lambda a: ipaddress.ip_address(a))


def derived_ips(inventory: Inventory, guests: dict[int, FwFile], sets: dict[tuple[int, str], IpSet], book: AddressBook,
                report: Report) -> dict[tuple[int, str], list[str]]:
    """Addresses for NICs the inventory gives none: the single addresses of their
    ipfilter set (the guest's address, usually), where no other NIC claims them and
    the bridge's subnets (when the inventory gives them) hold them."""
    claimed: dict[str, list[tuple[int, str]]] = {}
    for vmid, guest in inventory.guests.items():
        for nic in guest.nics:
            for ip in nic.ips:
                claimed.setdefault(ip, []).append((vmid, nic.key))
    wanted: dict[tuple[int, str], list[str]] = {}
    for (vmid, key), ipset in sorted(sets.items()):
        guest = inventory.guests[vmid]
        nic = guest.nic(key)
        if nic is None or nic.ips:
            continue
        bridge = inventory.bridges.get(nic.bridge)
        subnets = [ipaddress.ip_network(s) for s in bridge.subnets] if bridge is not None else []
        for network, nomatch in book.entries(ipset, guests.get(vmid)):
            if nomatch or network.num_addresses != 1:
                continue
            address = network.network_address
            if subnets and not any(address in s for s in subnets):
                continue
            wanted.setdefault((vmid, key), []).append(str(address))
            claimed.setdefault(str(address), []).append((vmid, key))
    out: dict[tuple[int, str], list[str]] = {}
    for (vmid, key), addresses in wanted.items():
        keep = [a for a in addresses if len(claimed[a]) == 1]
        for address in sorted(set(addresses) - set(keep)):
            report.note(sets[(vmid, key)].where, f"guest {vmid} {key}: {address} is in the ipfilter set but other NICs use or list it too; not made this NIC's address")
        if keep:
            out[(vmid, key)] = keep
            report.note(sets[(vmid, key)].where, f"guest {vmid} {key}: no ips in the inventory; the NIC's addresses are taken from its ipfilter set ({', '.join(keep)})")
    return out


def guest_sets(inventory: Inventory, guests: dict[int, FwFile], enabled: dict[int, bool], option: dict[int, bool]) -> dict[tuple[int, str], IpSet]:
    """Every firewalled NIC's ipfilter set (of guests whose firewall is enabled)."""
    out = {}
    for vmid, guest in inventory.guests.items():
        if not enabled.get(vmid):
            continue
        for nic in guest.nics:
            if nic.firewall:
                found = ipfilter_set(guests.get(vmid), nic, option.get(vmid, False))
                if found is not None:
                    out[(vmid, nic.key)] = found
    return out

