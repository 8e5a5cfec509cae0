"""Proxmox VE firewall -> zonewall policy, following Proxmox's documented evaluation.

Mapping (docs/migrating.md has the side-by-side):

* datacenter rules (`cluster.fw [RULES]`) protect the nodes -> host rules; a node's
  `host.fw` rules run before them (pve-firewall: "host rules first, so that cluster
  wide rules can be overwritten"), so when any host.fw exists each node gets its own
  `hosts.NODE.rules` = its host.fw rules, then the datacenter rules;
* datacenter `policy_in`/`policy_out` -> `settings.host_default`; the `management`
  IP set -> `settings.management` plus the GUI/VNC/SPICE ports Proxmox opens for it;
* a guest's rules (with security groups expanded in place) -> the VM's `rules`, its
  `policy_in`/`policy_out` -> the VM's `default`; each guest goes into the zone of its
  first NIC's bridge (or the inventory's `zone`), zones carry no rules;
* `[IPSET]`s and `[ALIASES]` -> `groups` (`!` nomatch entries -> exclusions);
* macros -> services (a built-in one where it is identical), or protocol rules for
  macros with source ports;
* `macfilter` / `ipfilter` / `radv` -> guard filters on the guest's NICs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from ...policy.builtins import BUILTIN_SERVICES, ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from ..emit import Commented, Document, Flow
from ..names import Names, sanitize
from ..report import Report, Where
from .inventory import Guest, Nic
from .macros import MACROS, lookup
from .parse import FwFile, FwRule, IpSet
from .source import Source

HEADER = "Imported from a Proxmox VE firewall configuration by `zonewall import proxmox`."
NO_RADV = "pve-no-router-advert"
PROTO_NUMBERS = {str(n): name for name, n in IP_PROTOCOLS.items()}
PROTO_ALIASES = {"ipv6-icmp": "icmpv6", "icmp6": "icmpv6"}
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
MANAGEMENT_PORTS: list[Any] = [8006, "5900-5999", 3128, 22]


class Skip(Exception):
    """This rule cannot be translated; the message says why."""


@dataclass
class Origin:
    """Where a rule came from, for the comment and the report."""

    where: Where
    via: str = ""  # e.g. "group web, via 100.fw:12"

    def comment(self) -> str:
        return f"from {self.where}" + (f" ({self.via})" if self.via else "")


def _ports(text: str, where: Where) -> list[Any]:
    out: list[Any] = []
    for part in text.split(","):
        part = part.strip()
        pieces = part.split(":")
        values = []
        for piece in pieces:
            if piece.isdigit():
                values.append(int(piece))
            elif piece.lower() in PORT_NAMES:
                values.append(PORT_NAMES[piece.lower()])
            else:
                raise Skip(f"port {piece!r} is neither a number nor a service name this importer knows")
        if len(values) == 1:
            if not 1 <= values[0] <= 65535:
                raise Skip(f"port {values[0]} is out of range")
            out.append(values[0])
        elif len(values) == 2:
            low, high = values
            if not (1 <= low <= high <= 65535):
                raise Skip(f"port range {part!r} is empty or out of range")
            out.append(low if low == high else f"{low}-{high}")
        else:
            raise Skip(f"cannot read ports {part!r}")
    return out


def _net(network: Any) -> str:
    """A network as text; a single address without its /32 or /128."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def _one(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


def _proto(text: str) -> str:
    proto = text.lower()
    proto = PROTO_ALIASES.get(proto, PROTO_NUMBERS.get(proto, proto))
    if proto in IP_PROTOCOLS:
        return proto
    if proto.isdigit() and 0 <= int(proto) <= 255:
        return proto
    raise Skip(f"protocol {text!r} is not one zonewall knows by name (use its number)")


def _icmp_type(text: str, v6: bool) -> str:
    name = text.lower()
    if name.isdigit():
        return name
    if v6:
        name = ICMP6_NAMES.get(name, name)
        if name in ICMP_V6_TYPES or name == "any":
            return name
    elif name in ICMP_V4_TYPES or name == "any":
        return name
    raise Skip(f"ICMP{'v6' if v6 else ''} type {text!r} cannot be matched (zonewall matches ICMP types, not codes)")


class ProxmoxImport:
    def __init__(self, source: Source, report: Report) -> None:
        self.src, self.report = source, report
        self.cluster = source.cluster or FwFile("cluster.fw", "cluster")
        self.groups: dict[str, Any] = {}  # cluster-level groups (name -> Commented)
        self.vm_groups: dict[int, dict[str, Any]] = {}
        self.services: dict[str, Any] = {}
        self.group_names = Names()
        self.vm_names = Names()
        self.ipset_ref: dict[tuple[str, str], str] = {}  # (scope, name) -> group name; scope "dc" or vmid
        self.alias_ref: dict[tuple[str, str], str] = {}
        self.used_filters: set[str] = set()
        self.log_denied: list[Where] = []

    # ------------------------------------------------------------------ groups

    def allocate_groups(self) -> None:
        for name in sorted(self.cluster.ipsets):
            self.ipset_ref[("dc", name)] = self.group_names.get(("ipset", "dc", name), name)
        for name in sorted(self.cluster.aliases):
            self.alias_ref[("dc", name)] = self.group_names.get(("alias", "dc", name), name)
        for vmid in sorted(self.src.guests):
            fw = self.src.guests[vmid]
            prefix = self.vm_name(vmid) if vmid in self.src.inventory.guests else f"vm{vmid}"
            for name in sorted(fw.ipsets):
                if not re.fullmatch(r"ipfilter-net\d+", name):
                    self.ipset_ref[(str(vmid), name)] = self.group_names.get(("ipset", vmid, name), f"{prefix}-{name}")
            for name in sorted(fw.aliases):
                self.alias_ref[(str(vmid), name)] = self.group_names.get(("alias", vmid, name), f"{prefix}-{name}")

    def alias_cidr(self, name: str, vm: FwFile | None, where: Where) -> str:
        scope, _, bare = name.rpartition("/")
        bare = bare.lower()
        if scope not in ("", "dc", "guest"):
            raise Skip(f"alias {name!r}: unknown scope {scope!r} (expected dc/ or guest/)")
        if scope in ("", "guest") and vm is not None and bare in vm.aliases:
            return vm.aliases[bare].cidr
        if scope in ("", "dc") and bare in self.cluster.aliases:
            return self.cluster.aliases[bare].cidr
        raise Skip(f"no alias named {name!r}")

    def address(self, item: str, vm: FwFile | None, vmid: int | None, where: Where) -> str:
        """One element of -source/-dest (or of an IP set) as a zonewall address ref."""
        if item.startswith("+"):
            scope, _, bare = item[1:].rpartition("/")
            bare = bare.lower()
            if scope not in ("", "dc", "guest"):
                raise Skip(f"IP set {item!r}: unknown scope {scope!r}")
            if scope in ("", "guest") and vm is not None and bare in vm.ipsets:
                if (str(vmid), bare) not in self.ipset_ref:
                    raise Skip(f"{item}: the ipfilter IP sets are not usable in rules")
                return f"group:{self.ipset_ref[(str(vmid), bare)]}"
            if scope in ("", "dc") and bare in self.cluster.ipsets:
                return f"group:{self.ipset_ref[('dc', bare)]}"
            raise Skip(f"no IP set named {item[1:]!r}")
        if re.fullmatch(r"((dc|guest)/)?[A-Za-z][A-Za-z0-9_-]+", item):
            scope, _, bare = item.rpartition("/")
            bare = bare.lower()
            if scope in ("", "guest") and vm is not None and bare in vm.aliases:
                return f"group:{self.alias_ref[(str(vmid), bare)]}"
            if scope in ("", "dc") and bare in self.cluster.aliases:
                return f"group:{self.alias_ref[('dc', bare)]}"
            raise Skip(f"no alias named {item!r}")
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
            raise Skip(f"{item!r} is not an address, CIDR, range, alias or +ipset") from None

    def addresses(self, spec: str, vm: FwFile | None, vmid: int | None, where: Where) -> list[str]:
        return [self.address(part.strip(), vm, vmid, where) for part in spec.split(",") if part.strip()]

    def ipset_members(self, ipset: IpSet, vm: FwFile | None, vmid: int | None) -> tuple[list[str], str | None]:
        """Members of an IP set as zonewall refs, with ipset's longest-prefix semantics
        for `!` (nomatch) entries."""
        entries: list[tuple[Any, bool]] = []
        for entry in ipset.entries:
            try:
                text = entry.cidr
                if re.fullmatch(r"((dc|guest)/)?[A-Za-z][A-Za-z0-9_-]+", text):
                    text = self.alias_cidr(text, vm, entry.where)
                entries.append((ipaddress.ip_network(self.literal(text, entry.where)), entry.nomatch))
            except (Skip, ValueError) as exc:
                self.report.skipped(entry.where, f"IP set {ipset.name}: entry {entry.cidr!r} left out: {exc}")
        plain = [n for n, nomatch in entries if not nomatch]
        excluded = [n for n, nomatch in entries if nomatch]
        nested = any(p.version == x.version and p != x and p.subnet_of(x) for p in plain for x in excluded)  # type: ignore[arg-type]
        if not nested:
            return [_net(n) for n in plain] + [f"!{_net(n)}" for n in excluded], None
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
        collapsed = [_net(n) for v in (4, 6) for n in ipaddress.collapse_addresses([r for r in result if r.version == v])]
        return collapsed, "expanded exactly: a plain entry lies inside a nomatch entry"

    def build_groups(self) -> None:
        for (scope, name), group in sorted(self.ipset_ref.items(), key=lambda kv: kv[1]):
            vm = self.cluster if scope == "dc" else self.src.guests[int(scope)]
            ipset = vm.ipsets[name]
            members, why = self.ipset_members(ipset, None if scope == "dc" else vm, None if scope == "dc" else int(scope))
            comment = f"IP set {name} from {ipset.where}" + (f"; {why}" if why else "") + (f": {ipset.comment}" if ipset.comment else "")
            target = self.groups if scope == "dc" else self.vm_groups.setdefault(int(scope), {})
            if not members:
                self.report.note(ipset.where, f"IP set {name} is empty: written as [\"!any\"] (matches no address)")
                members = ["!any"]
            target[group] = Commented(members, comment)
        for (scope, name), group in sorted(self.alias_ref.items(), key=lambda kv: kv[1]):
            fw = self.cluster if scope == "dc" else self.src.guests[int(scope)]
            alias = fw.aliases[name]
            target = self.groups if scope == "dc" else self.vm_groups.setdefault(int(scope), {})
            try:
                target[group] = Commented([self.literal(alias.cidr, alias.where)], f"alias {name} from {alias.where}" + (f": {alias.comment}" if alias.comment else ""))
            except Skip as exc:
                self.report.skipped(alias.where, f"alias {name}: {exc}")

    # ------------------------------------------------------------------ rules

    def service_for(self, macro: str) -> str | None:
        """A service name for a macro without source ports (built-in if identical)."""
        _, entries = MACROS[macro]
        if any(sport for _, _, sport in entries):
            return None
        body: dict[str, list[Any]] = {}
        for proto, dport, _ in entries:
            key, value = self.entry_keys(proto, dport)
            for k, v in zip(key, value):
                body.setdefault(k, [])
                for item in v:
                    if item not in body[k]:
                        body[k].append(item)
        for name, builtin in BUILTIN_SERVICES.items():
            if {k: [str(x) for x in v] for k, v in builtin.items() if k != "helper"} == {k: [str(x) for x in v] for k, v in body.items()}:
                return name
        name = "pve-" + sanitize(macro)
        self.services[name] = Commented(Flow({k: _one(v) for k, v in body.items()}), f"Proxmox macro {macro}: {MACROS[macro][0]}")
        return name

    def entry_keys(self, proto: str, dport: str | None) -> tuple[list[str], list[list[Any]]]:
        """(keys, values) of a macro entry as protocol keys."""
        if proto in ("tcp", "udp"):
            return [proto], [_ports(dport, Where("macro")) if dport else ["1-65535"]]
        if proto == "icmp":
            return ["icmp"], [[dport or "any"]]
        if proto == "icmpv6":
            return ["icmpv6"], [[ICMP6_NAMES.get(dport or "any", dport or "any")]]
        return ["proto"], [[_proto(proto)]]

    def rule_bodies(self, rule: FwRule, vm: FwFile | None, vmid: int | None) -> list[tuple[dict[str, Any], str]]:
        """The match part(s) of one rule: (keys, extra comment)."""
        base: dict[str, Any] = {}
        if rule.source:
            base["from"] = _one(self.addresses(rule.source, vm, vmid, rule.where))
        if rule.dest:
            base["to"] = _one(self.addresses(rule.dest, vm, vmid, rule.where))
        if rule.macro:
            macro = lookup(rule.macro)
            if macro is None:
                raise Skip(f"unknown macro {rule.macro!r} (see docs/migrating.md for the supported ones)")
            if rule.proto or rule.dport or rule.sport or rule.icmp_type:
                self.report.inexact(rule.where, f"macro {macro} with its own -p/-dport/-sport/-icmp-type: the macro's protocol and ports are used")
            service = self.service_for(macro)
            if service is not None:
                return [({**base, "service": service}, f"macro {macro}")]
            out = []
            for k, (proto, dport, sport) in enumerate(MACROS[macro][1], start=1):
                keys, values = self.entry_keys(proto, dport)
                body = {**base, **{key: _one(value) for key, value in zip(keys, values)}}
                if sport:
                    body["sport"] = _one(_ports(sport, rule.where))
                out.append((body, f"macro {macro} part {k}"))
            return out
        body = dict(base)
        if rule.proto is None:
            if rule.dport or rule.sport or rule.icmp_type:
                raise Skip("-dport/-sport/-icmp-type without -p (Proxmox rejects this rule too)")
            return [(body, "")]
        proto = _proto(rule.proto)
        if rule.icmp_type and proto not in ("icmp", "icmpv6"):
            raise Skip("-icmp-type needs -p icmp or -p icmpv6")
        if proto in ("tcp", "udp", "sctp"):
            if rule.dport:
                body[proto] = _one(_ports(rule.dport, rule.where))
            elif rule.sport:
                body[proto] = "1-65535"
            else:
                body["proto"] = proto
            if rule.sport:
                body["sport"] = _one(_ports(rule.sport, rule.where))
        elif rule.dport or rule.sport:
            raise Skip(f"ports on protocol {proto}: zonewall matches ports of tcp, udp and sctp only")
        elif proto == "icmp":
            if rule.icmp_type:
                body["icmp"] = _icmp_type(rule.icmp_type, v6=False)
                body["family"] = "ipv4"  # -p icmp is IPv4 only; zonewall's shared type names match both
            else:
                body["proto"] = "icmp"
        elif proto == "icmpv6":
            if rule.icmp_type:
                body["icmpv6"] = _icmp_type(rule.icmp_type, v6=True)
            else:
                body["proto"] = "icmpv6"
        else:
            body["proto"] = proto
        return [(body, "")]

    def translate_rules(self, rules: list[FwRule], vm: FwFile | None, vmid: int | None, guest: Guest | None, *,
                        host_scope: bool, disabled_reason: str = "") -> list[Commented]:
        """Rules in order, GROUP lines expanded in place."""
        out: list[Commented] = []
        for rule in rules:
            if rule.type == "group":
                name = rule.action.lower()
                group = self.cluster.groups.get(name)
                if group is None:
                    self.report.skipped(rule.where, f"security group {rule.action!r} is not defined in cluster.fw")
                    continue
                for inner in group.rules:
                    merged = FwRule(**{**inner.__dict__})
                    merged.enabled = inner.enabled and rule.enabled
                    if rule.iface:
                        if inner.iface and inner.iface != rule.iface:
                            merged.enabled = False
                            self.report.note(inner.where, f"group {name} rule on {inner.iface} used via {rule.where} on {rule.iface}: never matches; written disabled")
                        merged.iface = rule.iface
                    out += self.one_rule(merged, vm, vmid, guest, host_scope, Origin(inner.where, f"group {name}, via {rule.where}"), disabled_reason)
                continue
            out += self.one_rule(rule, vm, vmid, guest, host_scope, Origin(rule.where), disabled_reason)
        return out

    def one_rule(self, rule: FwRule, vm: FwFile | None, vmid: int | None, guest: Guest | None, host_scope: bool,
                 origin: Origin, disabled_reason: str) -> list[Commented]:
        if rule.type == "forward":
            self.report.skipped(rule.where, "FORWARD rules (Proxmox 8 nftables/SDN forward chain) have no zonewall equivalent yet")
            return []
        try:
            bodies = self.rule_bodies(rule, vm, vmid)
        except Skip as exc:
            self.report.skipped(rule.where, f"rule not translated: {exc}")
            return []
        direction = rule.type
        enabled = rule.enabled and not disabled_reason
        narrowing: dict[str, Any] = {}
        if rule.iface:
            if host_scope:
                self.report.inexact(rule.where, f"-i {rule.iface}: zonewall host rules do not match the node's interface; the rule applies on every interface")
            else:
                assert guest is not None
                nic = guest.nic(rule.iface)
                firewalled = [n for n in guest.nics if n.firewall]
                if nic is None:
                    enabled = False
                    self.report.note(rule.where, f"-i {rule.iface}: the guest has no such NIC in the inventory; the rule can never match and is written disabled")
                elif firewalled != [nic]:
                    peer_key = "to" if direction == "in" else "from"
                    if not nic.ips:
                        self.report.inexact(rule.where, f"-i {rule.iface}: the NIC has no ips in the inventory, so the rule applies to all of the guest's NICs")
                    else:
                        narrowing[peer_key] = nic.ips
        out: list[Commented] = []
        for body, extra in bodies:
            item: dict[str, Any] = {"direction": direction, "action": rule.action.lower()}
            for key, value in narrowing.items():
                if key in body:
                    self.report.inexact(rule.where, f"-i {rule.iface} together with -{'dest' if key == 'to' else 'source'}: only the address is matched, not the NIC")
                else:
                    item[key] = _one(value)
            item.update(body)
            if rule.log and rule.log != "nolog":
                item["log"] = True
            if rule.comment:
                item["comment"] = rule.comment
            if not enabled:
                item["enabled"] = False
            comment = origin.comment() + (f", {extra}" if extra else "") + (f"; {disabled_reason}" if disabled_reason and rule.enabled else "")
            out.append(Commented(Flow(item), comment))
        return out

    # ------------------------------------------------------------------ the parts

    def vm_name(self, vmid: int) -> str:
        guest = self.src.inventory.guests[vmid]
        return self.vm_names.get(vmid, str(guest.name) if guest.name else f"vm{vmid}")

    def network_name(self, bridge: str) -> str:
        return sanitize(bridge)

    def options_bool(self, fw: FwFile | None, name: str, default: bool) -> bool:
        if fw is None or fw.option(name) is None:
            return default
        value = str(fw.option(name)).strip()
        if value not in ("0", "1"):
            self.report.skipped(fw.option_where(name), f"option {name}: {value!r} is not 0 or 1; Proxmox's default ({int(default)}) assumed")
            return default
        return value == "1"

    def policy(self, fw: FwFile | None, name: str, default: str) -> str:
        value = (fw.option(name) if fw is not None else None) or default
        if value.upper() not in ("ACCEPT", "DROP", "REJECT"):
            assert fw is not None
            self.report.skipped(fw.option_where(name), f"{name}: {value!r} is not ACCEPT, DROP or REJECT; {default} assumed")
            value = default
        return value.lower()

    def check_options(self, fw: FwFile, known: dict[str, str]) -> None:
        """Report options without a zonewall equivalent (known: name -> why)."""
        handled = {"enable", "policy_in", "policy_out", "ipfilter", "macfilter", "dhcp", "ndp", "radv", "log_level_in", "log_level_out",
                   "log_ratelimit", "nf_conntrack_allow_invalid", "nf_conntrack_tcp_timeout_established", "nf_conntrack_tcp_timeout_syn_recv", "ebtables"}
        for name, (value, where) in sorted(fw.options.items()):
            if name in handled:
                continue
            if name in known:
                if value.strip() not in ("0", ""):
                    self.report.skipped(where, f"option {name}: {value}: {known[name]}")
            else:
                self.report.skipped(where, f"unknown option {name!r}; ignored")

    def settings(self) -> dict[str, Any]:
        cluster = self.cluster
        settings: dict[str, Any] = {
            "default": Commented(Flow({"in": "drop", "out": "accept"}), "Proxmox's guest defaults (every guest also sets its own)"),
            "host_default": Commented(Flow({"in": self.policy(cluster, "policy_in", "DROP"), "out": self.policy(cluster, "policy_out", "ACCEPT")}),
                                      f"datacenter policy_in/policy_out ({cluster.path})"),
        }
        if "management" in cluster.ipsets:
            settings["management"] = Commented([f"group:{self.ipset_ref[('dc', 'management')]}"], f"the management IP set ({cluster.ipsets['management'].where})")
        else:
            self.report.inexact(Where(cluster.path), "no [IPSET management]: Proxmox then lets the cluster network reach the GUI and SSH of the nodes; "
                                "zonewall's settings.management (anti-lockout) is left empty, set it")
        log: dict[str, Any] = {"rate": "1/second", "burst": 5}
        ratelimit = cluster.option("log_ratelimit")
        if ratelimit:
            fields = dict(part.split("=", 1) for part in ratelimit.split(",") if "=" in part)
            if fields.get("enable", "1") == "0":
                self.report.inexact(cluster.option_where("log_ratelimit"), "log_ratelimit disabled: zonewall always caps log records (settings.log.rate); set a high rate if needed")
            rate = fields.get("rate", "1/second")
            found = re.fullmatch(r"(\d+)/(sec|second|min|minute|hour|day)", rate)
            if found:
                unit = {"sec": "second", "min": "minute"}.get(found.group(2), found.group(2))
                log["rate"] = f"{found.group(1)}/{unit}"
            else:
                self.report.skipped(cluster.option_where("log_ratelimit"), f"log_ratelimit rate {rate!r} not understood; 1/second kept")
            if fields.get("burst", "5").isdigit():
                log["burst"] = int(fields.get("burst", "5"))
        if self.log_denied:
            log["denied"] = True
        settings["log"] = Flow({k: log[k] for k in ("denied", "rate", "burst") if k in log})
        conntrack: dict[str, Any] = {}
        invalid = {name: self.options_bool(fw, "nf_conntrack_allow_invalid", False) for name, fw in sorted(self.src.hosts.items())}
        if any(invalid.values()):
            conntrack["invalid"] = "accept"
            if not all(invalid.values()) or ("*" not in invalid and len(invalid) < len(self.src.inventory.nodes)):
                for fw in self.src.hosts.values():
                    self.report.inexact(fw.option_where("nf_conntrack_allow_invalid"), "nf_conntrack_allow_invalid differs between nodes; zonewall's setting is cluster-wide: accept used everywhere")
        timeouts: dict[str, int] = {}
        for option, key in (("nf_conntrack_tcp_timeout_established", "tcp_established"), ("nf_conntrack_tcp_timeout_syn_recv", "tcp_syn_recv")):
            values = {fw.option(option) for fw in self.src.hosts.values() if fw.option(option)}
            for fw in self.src.hosts.values():
                if fw.option(option) and len(values) > 1:
                    self.report.inexact(fw.option_where(option), f"{option} differs between nodes; zonewall's timeouts are cluster-wide (the largest is used)")
                elif fw.option(option):
                    self.report.note(fw.option_where(option), f"{option} -> settings.conntrack.timeouts.{key} (enforced as a ct timeout object for guest traffic)")
            if values:
                timeouts[key] = max(int(v) for v in values if v and v.isdigit())
        if timeouts:
            conntrack["timeouts"] = Flow(timeouts)
        if conntrack:
            settings["conntrack"] = conntrack
        return settings

    def host_rules(self) -> tuple[list[Commented], dict[str, list[Commented]]]:
        cluster_rules = self.translate_rules(self.cluster.rules, None, None, None, host_scope=True)
        management: list[Commented] = []
        if "management" in self.cluster.ipsets:
            management.append(Commented(Flow({"direction": "in", "action": "accept", "from": f"group:{self.ipset_ref[('dc', 'management')]}", "tcp": MANAGEMENT_PORTS}),
                                        "Proxmox's built-in access for the management IP set: API/GUI 8006, VNC 5900-5999, SPICE 3128, SSH 22"))
        if not self.src.hosts:
            return cluster_rules + management, {}
        per_host: dict[str, list[Commented]] = {}
        for node in sorted(self.src.inventory.nodes):
            rules: list[Commented] = []
            for key in ("*", node):
                fw = self.src.hosts.get(key)
                if fw is None:
                    continue
                enabled = self.options_bool(fw, "enable", True)
                reason = "" if enabled else f"host firewall disabled ({fw.path}: enable: 0)"
                if not enabled:
                    self.report.inexact(fw.option_where("enable"), f"{fw.path}: the host firewall is off; its rules are written disabled, but the node's input default stays settings.host_default (cluster-wide)")
                rules += self.translate_rules(fw.rules, None, None, None, host_scope=True, disabled_reason=reason)
            per_host[node] = rules + cluster_rules + management
        for node in sorted(k for k in self.src.hosts if k != "*" and k not in self.src.inventory.nodes):
            self.report.skipped(Where(self.src.hosts[node].path), f"node {node} is not in the inventory")
        return [], per_host

    def check_host_options(self) -> None:
        host_known = {
            "nosmurfs": "no SMURFS filter in zonewall", "tcpflags": "no TCP flag sanity filter in zonewall",
            "protection_synflood": "no SYN flood protection in zonewall (use a rule `limit`)",
            "protection_synflood_rate": "no SYN flood protection in zonewall", "protection_synflood_burst": "no SYN flood protection in zonewall",
            "nf_conntrack_max": "zonewall does not size the conntrack table", "log_nf_conntrack": "no conntrack event logging in zonewall",
            "smurf_log_level": "no SMURFS filter in zonewall", "tcp_flags_log_level": "no TCP flag filter in zonewall",
            "ndp": "zonewall always accepts neighbour discovery", "nftables": "zonewall always uses nftables",
            "protection_limit": "no equivalent",
        }
        for fw in self.src.hosts.values():
            self.check_options(fw, host_known)
            for direction in ("in", "out"):
                level = fw.option(f"log_level_{direction}")
                if level and level != "nolog":
                    self.log_denied.append(fw.option_where(f"log_level_{direction}"))
        cluster_known = {"policy_forward": "no forward policy in zonewall"}
        self.check_options(self.cluster, cluster_known)
        if self.src.cluster is not None and not self.options_bool(self.cluster, "enable", False):
            self.report.inexact(self.cluster.option_where("enable"), "the datacenter firewall is disabled (enable is not 1): Proxmox enforces none of these rules, the imported policy does")
        if self.src.cluster is None:
            self.report.note(Where("cluster.fw"), "no cluster.fw: no datacenter rules, IP sets, aliases or security groups")

    def guest(self, vmid: int, zones: dict[str, Any], networks: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        guest = self.src.inventory.guests[vmid]
        fw = self.src.guests.get(vmid)
        name = self.vm_name(vmid)
        enabled = self.options_bool(fw, "enable", False)
        if fw is not None and not enabled:
            self.report.note(fw.option_where("enable") if fw.option("enable") else Where(fw.path), f"guest {vmid}: firewall not enabled (enable: 1 missing); written with accept defaults and its rules disabled")
        if enabled and not any(n.firewall for n in guest.nics):
            enabled = False
            self.report.note(guest.where, f"guest {vmid}: no NIC has firewall=1; written with accept defaults and its rules disabled")
        if enabled and any(not n.firewall for n in guest.nics):
            self.report.inexact(guest.where, f"guest {vmid}: some NICs have firewall=0; zonewall applies the guest's rules to all of its NICs")
        zone = sanitize(str(guest.zone)) if guest.zone else self.network_name(guest.nics[0].bridge)
        zones.setdefault(zone, Commented({}, "guests " + ("from the inventory's zone" if guest.zone else f"whose first NIC is on {guest.nics[0].bridge}") + "; no rules of its own (Proxmox has no zones)"))
        nics = []
        ipfilter = enabled and self.options_bool(fw, "ipfilter", False)
        macfilter = enabled and self.options_bool(fw, "macfilter", True)
        radv = self.options_bool(fw, "radv", False)
        for nic in guest.nics:
            network = self.network_name(nic.bridge)
            self.note_network(network, nic, networks)
            entry: dict[str, Any] = {"network": network}
            if nic.mac:
                entry["mac"] = nic.mac
            ips = list(nic.ips)
            filters: list[str] = []
            ipset = fw.ipsets.get(f"ipfilter-{nic.key}") if fw is not None and enabled else None
            if enabled and nic.firewall:
                if macfilter:
                    if nic.mac:
                        filters += ["no-mac-spoofing", "no-arp-mac-spoofing"]
                    else:
                        self.report.inexact(nic.where, f"guest {vmid} {nic.key}: macfilter is on but the inventory gives no mac; no MAC filter written")
                if ipfilter or ipset is not None:
                    ips = self.ipfilter_ips(vmid, nic, ipset, fw)
                    filters += ["no-ip-spoofing", "no-ipv6-spoofing", "no-arp-ip-spoofing"]
                if not radv:
                    filters.append(NO_RADV)
                    self.used_filters.add(NO_RADV)
            if ips:
                entry["ips"] = ips
            entry["tap"] = f"tap{vmid}i{nic.index}"
            if filters:
                entry["filters"] = filters
            nics.append(Commented(Flow(entry), f"{nic.key} ({nic.where})"))
        body: dict[str, Any] = {"host": guest.node, "zone": zone}
        if enabled:
            body["default"] = Flow({"in": self.policy(fw, "policy_in", "DROP"), "out": self.policy(fw, "policy_out", "ACCEPT")})
        else:
            body["default"] = Flow({"in": "accept", "out": "accept"})
        body["nics"] = nics
        rules: list[Commented] = []
        if fw is not None:
            if enabled and self.options_bool(fw, "dhcp", False):
                where = fw.option_where("dhcp")
                for flow in (
                    {"direction": "out", "action": "accept", "udp": 67, "sport": 68},
                    {"direction": "in", "action": "accept", "udp": 68, "sport": 67},
                    {"direction": "out", "action": "accept", "udp": 547, "sport": 546},
                    {"direction": "in", "action": "accept", "udp": 546, "sport": 547},
                ):
                    rules.append(Commented(Flow(flow), f"dhcp: 1 ({where}): Proxmox accepts DHCP before the guest's rules"))
            if enabled and not self.options_bool(fw, "ndp", True):
                self.report.inexact(fw.option_where("ndp"), "ndp: 0: zonewall always accepts IPv6 neighbour discovery (RFC 4890)")
            for direction in ("in", "out"):
                level = fw.option(f"log_level_{direction}")
                if enabled and level and level != "nolog":
                    self.log_denied.append(fw.option_where(f"log_level_{direction}"))
            reason = "" if enabled else f"guest firewall disabled in {fw.path}"
            rules += self.translate_rules(fw.rules, fw, vmid, guest, host_scope=False, disabled_reason=reason)
            self.check_options(fw, {"ips": "no IPS (Suricata) integration in zonewall", "ips_queues": "no IPS (Suricata) integration in zonewall",
                                    "layer2_protocols": "zonewall filters cannot allow-list ethertypes per guest"})
        if rules:
            body["rules"] = rules
        origin = fw.path if fw is not None else "no firewall file"
        return name, body, f"guest {vmid} ({origin}; {guest.where})"

    def ipfilter_ips(self, vmid: int, nic: Nic, ipset: IpSet | None, fw: FwFile | None) -> list[str]:
        if ipset is None:
            if nic.ips:
                self.report.inexact(nic.where, f"guest {vmid} {nic.key}: ipfilter with no ipfilter-{nic.key} IP set lets the guest send IPv4 from no address in Proxmox; zonewall allows the inventory's addresses")
            return list(nic.ips)
        addresses: list[str] = []
        for entry in ipset.entries:
            try:
                network = ipaddress.ip_network(entry.cidr, strict=False)
            except ValueError:
                self.report.skipped(entry.where, f"ipfilter entry {entry.cidr!r} is not an address")
                continue
            if entry.nomatch or network.num_addresses != 1:
                self.report.inexact(entry.where, f"ipfilter entry {entry.cidr}: zonewall's anti-spoofing allows the NIC's addresses only, not subnets or exclusions; left out")
                continue
            addresses.append(str(network.network_address))
        if nic.ips and set(nic.ips) != set(addresses):
            self.report.inexact(ipset.where, f"ipfilter-{nic.key} ({', '.join(addresses) or 'empty'}) differs from the inventory's ips ({', '.join(nic.ips)}); zonewall uses the NIC's ips for both, the union is written")
        return sorted(set(addresses) | set(nic.ips), key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))

    def note_network(self, network: str, nic: Nic, networks: dict[str, Any]) -> None:
        bridge = self.src.inventory.bridges.get(nic.bridge)
        entry = networks.setdefault(network, {"bridge": nic.bridge, "subnets": [], "gateway": [], "inferred": bridge is None})
        if bridge is not None:
            entry["subnets"], entry["gateway"] = list(bridge.subnets), list(bridge.gateway)
            return
        for ip in nic.ips:
            address = ipaddress.ip_address(ip)
            subnet = str(ipaddress.ip_network(f"{ip}/{24 if address.version == 4 else 64}", strict=False))
            if not any(address in ipaddress.ip_network(s) for s in entry["subnets"]):
                entry["subnets"].append(subnet)
                self.report.note(nic.where, f"bridge {nic.bridge} has no subnets in the inventory; {subnet} assumed from {ip}")

    # ------------------------------------------------------------------ all

    def run(self) -> dict[str, Document]:
        inv = self.src.inventory
        for vmid in sorted(inv.guests):
            self.vm_name(vmid)
        self.allocate_groups()
        self.build_groups()
        self.check_host_options()
        zones: dict[str, Any] = {}
        networks: dict[str, Any] = {}
        vm_docs: dict[str, Document] = {}
        for vmid in sorted(inv.guests):
            name, body, comment = self.guest(vmid, zones, networks)
            doc = Document([HEADER, f"Guest {vmid}."], {"version": 1})
            if self.vm_groups.get(vmid):
                doc.body["groups"] = dict(sorted(self.vm_groups[vmid].items()))
            doc.body["vms"] = {name: Commented(body, comment)}
            vm_docs[f"vm-{vmid}.yaml"] = doc
        for vmid in sorted(set(self.src.guests) - set(inv.guests)):
            self.report.skipped(Where(self.src.guests[vmid].path), f"guest {vmid} is not in the inventory (node and NICs unknown); its rules are not imported")
        shared, per_host = self.host_rules()
        hosts: dict[str, Any] = {}
        for node_name, node in sorted(inv.nodes.items()):
            entry: dict[str, Any] = {"address": node.address if len(node.address) > 1 else node.address[0]}
            if node.uplink:
                entry["uplink"] = node.uplink
            if node_name in per_host and per_host[node_name]:
                entry["rules"] = per_host[node_name]
                hosts[node_name] = Commented(entry, f"from {node.where}; rules: host.fw, then the datacenter rules of cluster.fw")
            else:
                hosts[node_name] = Commented(Flow(entry), f"from {node.where}")
        cluster = Document([HEADER, "Datacenter (cluster.fw), nodes (host.fw) and the inventory; guests are in vm-VMID.yaml.",
                            "Everything not translated exactly is listed in import-report.txt."], {"version": 1})
        cluster.body["settings"] = self.settings()
        cluster.body["hosts"] = hosts
        cluster.body["networks"] = {name: self.network_entry(name, net) for name, net in sorted(networks.items())}
        if self.groups:
            cluster.body["groups"] = dict(sorted(self.groups.items()))
        if self.services:
            cluster.body["services"] = dict(sorted(self.services.items()))
        if self.used_filters:
            cluster.body["filters"] = {NO_RADV: Commented({"rules": [Flow({"direction": "out", "action": "drop", "icmp": "nd-router-advert"})]},
                                                          "Proxmox's radv: 0 (the default): guests may not send router advertisements")}
        cluster.body["zones"] = dict(sorted(zones.items()))
        if shared:
            cluster.body["host_rules"] = Commented(shared, "datacenter rules (cluster.fw) protect the nodes")
        if self.log_denied:
            for where in self.log_denied:
                self.report.inexact(where, "log_level_in/out: zonewall logs packets dropped by defaults cluster-wide (settings.log.denied), not per guest or node")
        return {"cluster.yaml": cluster, **vm_docs}

    def network_entry(self, name: str, net: dict[str, Any]) -> Any:
        entry: dict[str, Any] = {"bridge": net["bridge"]}
        if net["subnets"]:
            entry["subnets"] = net["subnets"]
        if net["gateway"]:
            entry["gateway"] = net["gateway"]
        return Commented(Flow(entry), "subnets assumed from the guests' addresses" if net["inferred"] else f"bridge {net['bridge']} from {self.src.inventory.bridges[net['bridge']].where}")


def translate(source: Source, report: Report) -> dict[str, Document]:
    return ProxmoxImport(source, report).run()
