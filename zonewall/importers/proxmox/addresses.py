"""Proxmox IP sets and aliases -> zonewall groups; `-source`/`-dest` -> address refs.

Datacenter sets and aliases keep their names; a guest's get the guest's name as a
prefix (`web1-friends`). Two are always there in Proxmox, defined or not: the IP set
`management` (pve-firewall adds the cluster's `local_network` to it) and the alias
`local_network` itself; rules may use both. `ipfilter-netN` sets are the NICs'
anti-spoofing lists (ipfilter.py), not groups.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from ..emit import Commented
from ..names import Names
from ..report import Report, Where
from .parse import FwFile, IpSet
from .source import Source

ALIAS_OR_NAME = re.compile(r"((dc|guest)/)?[A-Za-z][A-Za-z0-9_-]+")
IPFILTER = re.compile(r"ipfilter-net\d+")
MANAGEMENT, LOCAL_NETWORK = "management", "local_network"


class Skip(Exception):
    """A rule (or a part of one) cannot be translated; the message says why.

    `proxmox_too`: pve-firewall refuses the rule as well (an unknown alias, a port
    out of range, ...), so leaving it out is exactly what Proxmox does."""

    def __init__(self, message: str, *, proxmox_too: bool = False) -> None:
        super().__init__(message)
        self.proxmox_too = proxmox_too


def net_text(network: Any) -> str:
    """A network as text; a single address without its /32 or /128."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


class AddressBook:
    """The groups of an import and how `-source`/`-dest` items refer to them."""

    def __init__(self, source: Source, cluster: FwFile, report: Report, vm_name: Callable[[int], str], local_network: str | None) -> None:
        self.src, self.cluster, self.report, self.vm_name = source, cluster, report, vm_name
        self.local_network = local_network  # Proxmox's cluster network (alias or inventory), if known
        self.names = Names()
        self.ipset_ref: dict[tuple[str, str], str] = {}  # (scope, name) -> group name; scope "dc" or vmid
        self.alias_ref: dict[tuple[str, str], str] = {}
        self.groups: dict[str, Any] = {}  # datacenter groups (name -> Commented)
        self.vm_groups: dict[int, dict[str, Any]] = {}

    def dc_ipsets(self) -> list[str]:
        return sorted(set(self.cluster.ipsets) | {MANAGEMENT})

    def dc_aliases(self) -> list[str]:
        return sorted(set(self.cluster.aliases) | ({LOCAL_NETWORK} if self.local_network else set()))

    def allocate(self) -> None:
        for name in self.dc_ipsets():
            self.ipset_ref[("dc", name)] = self.names.get(("ipset", "dc", name), name)
        for name in self.dc_aliases():
            self.alias_ref[("dc", name)] = self.names.get(("alias", "dc", name), name)
        for vmid in sorted(self.src.guests):
            fw = self.src.guests[vmid]
            prefix = self.vm_name(vmid) if vmid in self.src.inventory.guests else f"vm{vmid}"
            for name in sorted(fw.ipsets):
                if not IPFILTER.fullmatch(name):
                    self.ipset_ref[(str(vmid), name)] = self.names.get(("ipset", vmid, name), f"{prefix}-{name}")
            for name in sorted(fw.aliases):
                self.alias_ref[(str(vmid), name)] = self.names.get(("alias", vmid, name), f"{prefix}-{name}")

    def reserve(self, wanted: str) -> str:
        """A group name for something the importer adds (the corosync rings)."""
        return self.names.get(("builtin", wanted), wanted)

    def ref(self, scope: str, ipset: str) -> str | None:
        found = self.ipset_ref.get((scope, ipset))
        return f"group:{found}" if found else None

    def alias_cidr(self, name: str, vm: FwFile | None) -> str:
        scope, _, bare = name.rpartition("/")
        bare = bare.lower()
        if scope not in ("", "dc", "guest"):
            raise Skip(f"alias {name!r}: unknown scope {scope!r} (expected dc/ or guest/)", proxmox_too=True)
        if scope in ("", "guest") and vm is not None and bare in vm.aliases:
            return vm.aliases[bare].cidr
        if scope in ("", "dc") and bare in self.cluster.aliases:
            return self.cluster.aliases[bare].cidr
        if scope in ("", "dc") and bare == LOCAL_NETWORK and self.local_network:
            return self.local_network
        raise Skip(f"no alias named {name!r}", proxmox_too=True)

    def address(self, item: str, vm: FwFile | None, vmid: int | None, where: Where) -> str:
        """One element of -source/-dest as a zonewall address ref."""
        if item.startswith("+"):
            scope, _, bare = item[1:].rpartition("/")
            bare = bare.lower()
            if scope not in ("", "dc", "guest"):
                raise Skip(f"IP set {item!r}: unknown scope {scope!r}", proxmox_too=True)
            if scope in ("", "guest") and vm is not None and bare in vm.ipsets:
                if (str(vmid), bare) not in self.ipset_ref:
                    raise Skip(f"{item}: an ipfilter IP set in a rule (zonewall keeps them as the NIC's filter only)")
                return f"group:{self.ipset_ref[(str(vmid), bare)]}"
            if scope in ("", "dc") and ("dc", bare) in self.ipset_ref:
                return f"group:{self.ipset_ref[('dc', bare)]}"
            raise Skip(f"no IP set named {item[1:]!r}", proxmox_too=True)
        if ALIAS_OR_NAME.fullmatch(item):
            scope, _, bare = item.rpartition("/")
            bare = bare.lower()
            if scope in ("", "guest") and vm is not None and bare in vm.aliases:
                return f"group:{self.alias_ref[(str(vmid), bare)]}"
            if scope in ("", "dc") and ("dc", bare) in self.alias_ref:
                return f"group:{self.alias_ref[('dc', bare)]}"
            raise Skip(f"no alias named {item!r}", proxmox_too=True)
        return self.literal(item, where)

    def literal(self, item: str, where: Where) -> str:
        try:
            if "-" in item:
                low, high = (ipaddress.ip_address(p.strip()) for p in item.split("-", 1))
                if low.version != high.version or low > high:
                    raise ValueError
                return f"{low}-{high}"
            if "/" in item:
                interface = ipaddress.ip_interface(item)
                if interface.ip != interface.network.network_address:
                    self.report.note(where, f"{item} has host bits set; written as {interface.network}")
                return str(interface.network)
            return str(ipaddress.ip_address(item))
        except ValueError:
            raise Skip(f"{item!r} is not an address, CIDR, range, alias or +ipset", proxmox_too=True) from None

    def addresses(self, spec: str, vm: FwFile | None, vmid: int | None, where: Where) -> list[str]:
        return [self.address(part.strip(), vm, vmid, where) for part in spec.split(",") if part.strip()]

    def entries(self, ipset: IpSet, vm: FwFile | None) -> list[tuple[Any, bool]]:
        """(network, nomatch) of an IP set's readable entries (aliases resolved)."""
        out: list[tuple[Any, bool]] = []
        for entry in ipset.entries:
            try:
                text = entry.cidr
                if ALIAS_OR_NAME.fullmatch(text):
                    text = self.alias_cidr(text, vm)
                out.append((ipaddress.ip_network(self.literal(text, entry.where)), entry.nomatch))
            except (Skip, ValueError) as exc:
                self.report.skipped(entry.where, f"IP set {ipset.name}: entry {entry.cidr!r} left out: {exc}")
        return out

    def members(self, entries: list[tuple[Any, bool]]) -> tuple[list[str], str | None]:
        """Members as zonewall refs, with ipset's longest-prefix semantics for `!`
        (nomatch) entries."""
        plain = [n for n, nomatch in entries if not nomatch]
        excluded = [n for n, nomatch in entries if nomatch]
        nested = any(p.version == x.version and p != x and p.subnet_of(x) for p in plain for x in excluded)
        if not nested:
            return [net_text(n) for n in plain] + [f"!{net_text(n)}" for n in excluded], None
        # A plain entry inside a nomatch one wins there (the most specific entry decides):
        # write out the resulting set exactly.
        result: list[Any] = []
        for network, nomatch in sorted(entries, key=lambda e: (e[0].version, e[0].prefixlen)):
            if nomatch:
                kept: list[Any] = []
                for have in result:
                    if have.version == network.version and have.overlaps(network):
                        if have.subnet_of(network):
                            continue
                        kept.extend(have.address_exclude(network))
                    else:
                        kept.append(have)
                result = kept
            else:
                result.append(network)
        collapsed = [net_text(n) for v in (4, 6) for n in ipaddress.collapse_addresses([r for r in result if r.version == v])]
        return collapsed, "expanded exactly: a plain entry lies inside a nomatch entry"

    def build(self) -> None:
        for (scope, name), group in sorted(self.ipset_ref.items(), key=lambda kv: kv[1]):
            fw = self.cluster if scope == "dc" else self.src.guests[int(scope)]
            target = self.groups if scope == "dc" else self.vm_groups.setdefault(int(scope), {})
            ipset = fw.ipsets.get(name)
            entries = self.entries(ipset, None if scope == "dc" else fw) if ipset is not None else []
            members, why = self.members(entries)
            if scope == "dc" and name == MANAGEMENT:
                target[group] = self.management(ipset, members)
                continue
            assert ipset is not None
            comment = f"IP set {name} from {ipset.where}" + (f"; {why}" if why else "") + (f": {ipset.comment}" if ipset.comment else "")
            if not members:
                self.report.note(ipset.where, f"IP set {name} is empty: written as [\"!any\"] (matches no address)")
                members = ["!any"]
            target[group] = Commented(members, comment)
        for (scope, name), group in sorted(self.alias_ref.items(), key=lambda kv: kv[1]):
            target = self.groups if scope == "dc" else self.vm_groups.setdefault(int(scope), {})
            fw = self.cluster if scope == "dc" else self.src.guests[int(scope)]
            alias = fw.aliases.get(name)
            if alias is None:  # the implicit local_network
                assert self.local_network is not None
                target[group] = Commented([self.local_network], "Proxmox's local_network (the cluster network), from the inventory")
                continue
            try:
                target[group] = Commented([self.literal(alias.cidr, alias.where)], f"alias {name} from {alias.where}" + (f": {alias.comment}" if alias.comment else ""))
            except Skip as exc:
                self.report.skipped(alias.where, f"alias {name}: {exc}")

    def management(self, ipset: IpSet | None, members: list[str]) -> Commented:
        """Proxmox's management IP set always holds the cluster's local network."""
        origin = f"[IPSET management] ({ipset.where})" if ipset is not None else "no [IPSET management] in cluster.fw"
        if self.local_network:
            members = members + [f"group:{self.alias_ref[('dc', LOCAL_NETWORK)]}"]
            why = f"{origin}, plus local_network, which pve-firewall always adds"
        else:
            why = f"{origin}; pve-firewall also adds the cluster's local_network, unknown here (set local_network in the inventory)"
            self.report.inexact(ipset.where if ipset is not None else Where(self.cluster.path),
                                "the management IP set lacks the cluster's local network (pve-firewall always adds it): "
                                "give local_network in the inventory; until then the nodes' GUI/SSH stay closed to it")
        return Commented(members or ["!any"], why)
