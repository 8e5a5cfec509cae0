"""Proxmox rules (`IN`/`OUT`/`GROUP` lines) -> zonewall rules, never more open.

A rule Proxmox itself refuses (an unknown macro, `-dport` without `-p`, an alias that
does not exist) is left out, as pve-firewall leaves it out. A rule zonewall cannot
express exactly is written so the result is at least as closed as Proxmox:
an ACCEPT is left out (or written disabled), a DROP/REJECT is widened where a wider
match is obvious; a DROP/REJECT that cannot be widened makes the import fail with a
`file:line` error rather than silently open what Proxmox blocks. ICMP codes
(`host-unreachable`), `-i` on host rules (`interface:`) and log levels are written
as such (issue 18).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...policy.builtins import BUILTIN_SERVICES, ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from ...policy.model import LOG_LEVELS
from ..emit import Commented, Flow
from ..names import sanitize
from ..report import ImportFailure, Report, Where
from .addresses import AddressBook, Skip
from .groups import SecurityGroups
from .inventory import Guest
from .macros import IPV6_ONLY, MACROS, Entry, lookup
from .parse import FwFile, FwRule

PROTO_NUMBERS = {str(n): name for name, n in IP_PROTOCOLS.items()}
PROTO_ALIASES = {"ipv6-icmp": "icmpv6", "icmp6": "icmpv6"}
PROTOCOLS_WITH_PORTS = {"tcp", "udp", "sctp", "udplite", "dccp", "6", "17", "132", "136", "33"}  # pve-firewall's
PORT_NAMES = {
    "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "bootps": 67, "bootpc": 68, "tftp": 69,
    "http": 80, "www": 80, "pop3": 110, "sunrpc": 111, "ntp": 123, "imap": 143, "imap2": 143, "snmp": 161,
    "ldap": 389, "https": 443, "smtps": 465, "submission": 587, "ldaps": 636, "imaps": 993, "pop3s": 995,
    "mysql": 3306, "postgresql": 5432, "rdp": 3389, "ms-wbt-server": 3389,
}
ICMP6_NAMES = {
    "router-solicitation": "nd-router-solicit", "router-advertisement": "nd-router-advert",
    "neighbour-solicitation": "nd-neighbor-solicit", "neighbor-solicitation": "nd-neighbor-solicit",
    "neighbour-advertisement": "nd-neighbor-advert", "neighbor-advertisement": "nd-neighbor-advert",
    "redirect": "nd-redirect",
}
# iptables' ICMP names that are a type *and a code* (pve-firewall accepts them): the type
ICMP_V4_CODES = {
    **dict.fromkeys(("network-unreachable", "host-unreachable", "protocol-unreachable", "port-unreachable",
                     "fragmentation-needed", "source-route-failed", "network-unknown", "host-unknown",
                     "network-prohibited", "host-prohibited", "TOS-network-unreachable", "TOS-host-unreachable",
                     "communication-prohibited", "host-precedence-violation", "precedence-cutoff"), "destination-unreachable"),
    **dict.fromkeys(("network-redirect", "host-redirect", "TOS-network-redirect", "TOS-host-redirect"), "redirect"),
    **dict.fromkeys(("ttl-zero-during-transit", "ttl-zero-during-reassembly"), "time-exceeded"),
    **dict.fromkeys(("ip-header-bad", "required-option-missing"), "parameter-problem"),
}
ICMP_V6_CODES = {
    **dict.fromkeys(("no-route", "communication-prohibited", "beyond-scope", "address-unreachable", "port-unreachable",
                     "failed-policy", "reject-route"), "destination-unreachable"),
    **dict.fromkeys(("ttl-zero-during-transit", "ttl-zero-during-reassembly"), "time-exceeded"),
    **dict.fromkeys(("bad-header", "unknown-header-type", "unknown-option"), "parameter-problem"),
}


@dataclass
class Origin:
    """Where a rule came from, for the comment and the report."""

    where: Where
    via: str = ""  # e.g. "group web, via 100.fw:12"

    def comment(self) -> str:
        return f"from {self.where}" + (f" ({self.via})" if self.via else "")


def one(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def ports(text: str) -> list[Any]:
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        values = []
        for piece in part.split(":"):
            if piece.isdigit():
                values.append(int(piece))
            elif piece.lower() in PORT_NAMES:
                values.append(PORT_NAMES[piece.lower()])
            else:  # pve-firewall looks names up in the node's /etc/services
                raise Skip(f"port {piece!r} is neither a number nor a service name this importer knows")
        if len(values) == 1:
            if not 0 <= values[0] <= 65535:
                raise Skip(f"port {values[0]} is out of range", proxmox_too=True)
            if values[0] == 0:
                raise Skip("port 0 cannot be matched", proxmox_too=False)
            out.append(values[0])
        elif len(values) == 2:
            low, high = values
            if not (low <= high <= 65535):
                raise Skip(f"port range {part!r} is empty or out of range", proxmox_too=True)
            low = max(low, 1)
            out.append(low if low == high else f"{low}-{high}")
        else:
            raise Skip(f"cannot read ports {part!r}", proxmox_too=True)
    return out


def protocol(text: str) -> str:
    proto = text.lower()
    proto = PROTO_ALIASES.get(proto, PROTO_NUMBERS.get(proto, proto))
    if proto in IP_PROTOCOLS:
        return proto
    if proto.isdigit() and 0 <= int(proto) <= 255:
        return proto
    raise Skip(f"protocol {text!r} is not one zonewall knows by name (use its number)")


def icmp_types(text: str, v6: bool) -> list[Any]:
    """ICMP types of `-icmp-type` (or `-dport` of `-p icmp`, where pve-firewall stores
    the type); a type-and-code name (`host-unreachable`) as zonewall's code item
    (policy/icmpcodes.py, iptables' names)."""
    types: list[Any] = []
    codes, known = (ICMP_V6_CODES, ICMP_V6_TYPES) if v6 else (ICMP_V4_CODES, ICMP_V4_TYPES)
    for item in (part.strip() for part in text.split(",")):
        name = ICMP6_NAMES.get(item.lower(), item.lower()) if v6 else item.lower()
        if item.isdigit():
            if int(item) > 255:
                raise Skip(f"ICMP type {item} is out of range", proxmox_too=True)
            value: Any = int(item)
        elif name == "any" or name in known:
            value = name
        elif item in codes:
            value = item.lower()  # iptables writes TOS-host-unreachable; zonewall's names are lower case
        else:
            raise Skip(f"{item!r} is not an ICMP{'v6' if v6 else ''} type Proxmox knows", proxmox_too=True)
        if value not in types:
            types.append(value)
    return types


def merge_macro(name: str, rule: FwRule) -> list[Entry]:
    """The macro's entries with the rule's own -p/-dport/-sport, as pve-firewall's
    apply_macro: a key the macro leaves open takes the rule's value, a key it sets
    to another value makes Proxmox refuse the rule."""
    out = []
    for proto, dport, sport in MACROS[name][1]:
        merged = []
        for key, mine, given in (("-p", proto, rule.proto), ("-dport", dport, rule.dport), ("-sport", sport, rule.sport)):
            if mine is not None and given is not None and mine != given:
                raise Skip(f"macro {name} already sets {key} {mine} (the rule gives {given})", proxmox_too=True)
            merged.append(mine if mine is not None else given)
        out.append((merged[0], merged[1], merged[2]))
    return out


class RuleTranslator:
    """Translates rule lists in order; a security group referenced where it means the
    same everywhere (groups.py), else expanded in place."""

    def __init__(self, cluster: FwFile, book: AddressBook, report: Report, *, forward_enforced: bool, map_groups: bool = True) -> None:
        self.cluster, self.book, self.report = cluster, book, report
        self.forward_enforced = forward_enforced  # a node runs Proxmox's nftables firewall (FORWARD rules apply)
        self.services: dict[str, Any] = {}
        self.groups = SecurityGroups(cluster, report, self.translate_plain) if map_groups else None

    def translate_plain(self, rules: list[FwRule], vm: FwFile | None, vmid: int | None, guest: Guest | None, host_scope: bool,
                        report: Report) -> list[Commented]:
        """Rules of a security group, reported to `report` (a probe's is thrown away)."""
        saved = self.report, self.book.report
        self.report = self.book.report = report
        try:
            return [item for rule in rules for item in self.one_rule(rule, vm, vmid, guest, host_scope, Origin(rule.where))]
        finally:
            self.report, self.book.report = saved

    # -- macros ------------------------------------------------------------------

    def service_for(self, macro: str) -> str | None:
        """A service name for a macro without source ports (built-in if identical)."""
        _, entries = MACROS[macro]
        if any(sport for _, _, sport in entries):
            return None
        body: dict[str, list[Any]] = {}
        for proto, dport, _ in entries:
            for key, values in self.entry_keys(proto, dport, macro=True).items():
                body.setdefault(key, [])
                body[key] += [v for v in values if v not in body[key]]
        for name, builtin in BUILTIN_SERVICES.items():
            if {k: [str(x) for x in v] for k, v in builtin.items() if k != "helper"} == {k: [str(x) for x in v] for k, v in body.items()}:
                return name
        name = "pve-" + sanitize(macro)
        self.services[name] = Commented(Flow({k: one(v) for k, v in body.items()}), f"Proxmox macro {macro}: {MACROS[macro][0]}")
        return name

    def entry_keys(self, proto: str | None, dport: str | None, *, icmp_type: str | None = None, sport: str | None = None,
                   macro: bool = False) -> dict[str, Any]:
        """Protocol keys of one (proto, dport, sport): a macro entry or a plain rule.
        A plain `-p icmp` is IPv4 only; a macro's icmp entry has Proxmox's IPv6
        variant (icmpv6, same type name), which zonewall's shared names match."""
        if proto is None:
            if dport or sport or icmp_type:
                raise Skip("-dport/-sport/-icmp-type without -p (Proxmox refuses this rule too)", proxmox_too=True)
            return {}
        name = protocol(proto)
        if icmp_type and name not in ("icmp", "icmpv6"):
            raise Skip("-icmp-type needs -p icmp or -p icmpv6", proxmox_too=True)
        if name in ("icmp", "icmpv6"):
            if icmp_type and dport:
                raise Skip("-icmp-type together with -dport (Proxmox refuses this rule too)", proxmox_too=True)
            if sport:
                raise Skip(f"-sport on protocol {name}", proxmox_too=True)
            text = icmp_type or dport
            if not text:
                return {"proto": [name]}
            types = icmp_types(text, name == "icmpv6")
            return {name: types, **({"family": "ipv4"} if name == "icmp" and not macro else {})}
        if proto.lower() not in PROTOCOLS_WITH_PORTS and name not in ("tcp", "udp", "sctp"):
            if dport or sport:
                raise Skip(f"ports on protocol {proto} (Proxmox refuses this rule too)", proxmox_too=True)
            return {"proto": [name]}
        if name not in ("tcp", "udp", "sctp"):
            if dport or sport:
                raise Skip(f"ports on protocol {proto}: zonewall matches ports of tcp, udp and sctp only")
            return {"proto": [name]}
        body: dict[str, Any] = {name: ports(dport) if dport else (["1-65535"] if sport else None)}
        if body[name] is None:
            body = {"proto": [name]}
        if sport:
            body["sport"] = ports(sport)
        return body

    # -- one rule ----------------------------------------------------------------

    def bodies(self, rule: FwRule, vm: FwFile | None, vmid: int | None) -> list[tuple[dict[str, Any], str]]:
        """The match part(s) of one rule: (keys, extra comment)."""
        base: dict[str, Any] = {}
        if rule.source:
            base["from"] = one(self.book.addresses(rule.source, vm, vmid, rule.where))
        if rule.dest:
            base["to"] = one(self.book.addresses(rule.dest, vm, vmid, rule.where))
        if rule.macro:
            macro = lookup(rule.macro)
            if macro is None:
                raise Skip(f"unknown macro {rule.macro!r} (see docs/migrating.md for the supported ones)", proxmox_too=True)
            if rule.icmp_type:
                raise Skip(f"macro {macro} with -icmp-type", proxmox_too=True)
            entries = merge_macro(macro, rule)
            if macro in IPV6_ONLY:
                base["family"] = "ipv6"
            if not (rule.proto or rule.dport or rule.sport):
                service = self.service_for(macro)
                if service is not None:
                    return [({**base, "service": service}, f"macro {macro}")]
            out = []
            for k, (proto, dport, sport) in enumerate(entries, start=1):
                keys = self.entry_keys(proto, dport, sport=sport, macro=True)
                out.append(({**base, **{key: one(value) if isinstance(value, list) else value for key, value in keys.items()}}, f"macro {macro} part {k}"))
            return out
        keys = self.entry_keys(rule.proto, rule.dport, icmp_type=rule.icmp_type, sport=rule.sport)
        return [({**base, **{key: one(value) if isinstance(value, list) else value for key, value in keys.items()}}, "")]

    def translate_rules(self, rules: list[FwRule], vm: FwFile | None, vmid: int | None, guest: Guest | None, *,
                        host_scope: bool) -> list[Commented]:
        """Rules in order, GROUP lines referenced (or expanded in place)."""
        out: list[Commented] = []
        for rule in rules:
            if rule.type == "group":
                name = rule.action.lower()
                group = self.cluster.groups.get(name)
                if group is None:
                    self.report.skipped(rule.where, f"security group {rule.action!r} is not defined in cluster.fw (Proxmox uses an empty group)")
                    continue
                reference = self.groups.reference(rule, vm, vmid, guest, host_scope) if self.groups is not None else None
                if reference is not None:
                    out.append(reference)
                    continue
                for inner in group.rules:
                    merged = FwRule(**inner.__dict__)
                    merged.enabled = inner.enabled and rule.enabled
                    if rule.iface:
                        if inner.iface and inner.iface != rule.iface:
                            merged.enabled = False
                            self.report.note(inner.where, f"group {name} rule on {inner.iface} used via {rule.where} on {rule.iface}: never matches; written disabled")
                        merged.iface = rule.iface
                    out += self.one_rule(merged, vm, vmid, guest, host_scope, Origin(inner.where, f"group {name}, via {rule.where}"))
                continue
            out += self.one_rule(rule, vm, vmid, guest, host_scope, Origin(rule.where))
        return out

    def one_rule(self, rule: FwRule, vm: FwFile | None, vmid: int | None, guest: Guest | None, host_scope: bool,
                 origin: Origin) -> list[Commented]:
        enforced = rule.enabled
        if rule.type == "forward":
            return self.forward(rule, enforced)
        try:
            bodies = self.bodies(rule, vm, vmid)
        except Skip as exc:
            self.untranslated(rule, exc, enforced)
            return []
        enabled = enforced
        narrowing: dict[str, Any] = {}
        if rule.iface:
            enabled, narrowing = self.interface(rule, guest, host_scope, enabled)
        out: list[Commented] = []
        for body, extra in bodies:
            item: dict[str, Any] = {"direction": rule.type, "action": rule.action.lower()}
            item.update(narrowing)
            item.update(body)
            if rule.log and rule.log != "nolog":
                item["log"] = rule.log if rule.log in LOG_LEVELS else True  # the record carries Proxmox's level (issue 18)
            if rule.comment:
                item["comment"] = rule.comment
            if not enabled:
                item["enabled"] = False
            comment = origin.comment() + (f", {extra}" if extra else "")
            out.append(Commented(Flow(item), comment))
        return out

    def untranslated(self, rule: FwRule, exc: Skip, enforced: bool) -> None:
        """Leave a rule out, unless that would open what Proxmox blocks."""
        if exc.proxmox_too:
            self.report.skipped(rule.where, f"rule not translated: {exc}; Proxmox ignores this rule too")
        elif rule.action == "ACCEPT" or not enforced:
            self.report.skipped(rule.where, f"rule not translated: {exc}" + ("" if not enforced else " (left out: closed)"))
        else:
            raise ImportFailure([f"{rule.where}: this {rule.action} rule cannot be translated ({exc}); without it the import "
                                 "would let through what Proxmox blocks: rewrite or remove the rule"])

    def forward(self, rule: FwRule, enforced: bool) -> list[Commented]:
        """FORWARD rules exist only in Proxmox's nftables firewall (proxmox-firewall);
        pve-firewall's iptables ruleset ignores them."""
        if not self.forward_enforced:
            self.report.note(rule.where, "FORWARD rule: Proxmox's iptables firewall ignores it (nftables: 1 is not set), and so does the import")
        elif rule.action == "ACCEPT" or not enforced:
            self.report.skipped(rule.where, "FORWARD rule (Proxmox's nftables forward chain) has no zonewall equivalent yet; an accept left out (closed)")
        else:
            raise ImportFailure([f"{rule.where}: FORWARD {rule.action} rules (Proxmox's nftables firewall) have no zonewall equivalent yet; "
                                 "without it the import would let through what Proxmox blocks"])
        return []

    def interface(self, rule: FwRule, guest: Guest | None, host_scope: bool, enabled: bool) -> tuple[bool, dict[str, Any]]:
        """(enabled, extra keys) for `-i IFACE`: a host rule takes `interface:`, a guest
        rule `nic:` (issue 18); a NIC the guest does not have never matches."""
        iface = rule.iface or ""
        if host_scope:  # pve-firewall's `+` suffix is nft's `*`
            return enabled, {"interface": [iface[:-1] + "*" if iface.endswith("+") else iface]}
        assert guest is not None
        if guest.nic(iface) is None:
            self.report.note(rule.where, f"-i {rule.iface}: the guest has no such NIC in the inventory; the rule can never match and is written disabled")
            return False, {}
        return enabled, {"nic": [iface]}
