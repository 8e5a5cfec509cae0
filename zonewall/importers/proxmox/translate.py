"""Proxmox VE firewall -> zonewall policy, following Proxmox's documented evaluation.

Mapping (docs/migrating.md has the side-by-side):

* datacenter rules (`cluster.fw [RULES]`) protect the nodes -> host rules; a node's
  `host.fw` rules run before them (pve-firewall: "host rules first, so that cluster
  wide rules can be overwritten") and Proxmox's built-in accepts after them, so each
  node gets its own `hosts.NODE.rules` = its host.fw rules, the datacenter rules,
  the built-ins;
* datacenter `policy_in`/`policy_out` -> `settings.host_default`; Proxmox's built-ins
  (blacklist, management ports, local network, corosync) -> the `proxmox-cluster`
  profile (profile.py) and accepts after each node's own rules;
* a guest's rules (with security groups expanded in place; rules.py) -> the VM's `rules`, its
  `policy_in`/`policy_out` -> the VM's `default`; each guest goes into the zone of its
  first NIC's bridge (or the inventory's `zone`), zones carry no rules;
* `[IPSET]`s and `[ALIASES]` -> `groups` (addresses.py; `!` nomatch entries -> exclusions);
* macros -> services (a built-in one where it is identical), or protocol rules for
  macros with source ports;
* `macfilter` / `radv` -> guard filters on the guest's NICs, `ipfilter` -> a filter of
  the NIC's own (ipfilter.py).

The import is never more open than its input: what cannot be translated exactly is
written more closed or makes the import fail (rules.py).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ...policy.dataplane_keys import SYNFLOOD_BURST, SYNFLOOD_RATE
from ...policy.model import LOG_LEVELS
from ..emit import Commented, Document, Flow
from ..names import Names, sanitize
from ..report import Report, Where
from .addresses import AddressBook
from .inventory import Nic
from .ipfilter import derived_ips, guest_sets, ipfilter_filter
from .parse import FwFile, IpSet
from .profile import PROFILE, Builtins
from .rules import RuleTranslator
from .source import Source

HEADER = "Imported from a Proxmox VE firewall configuration by `zonewall import proxmox`."
NO_RADV = "pve-no-router-advert"
PROTECTION_OPTIONS = ("tcpflags", "nosmurfs", "protection_synflood", "protection_synflood_rate", "protection_synflood_burst")


class ProxmoxImport:
    def __init__(self, source: Source, report: Report, *, map_groups: bool = True) -> None:
        self.src, self.report = source, report
        self.cluster = source.cluster or FwFile("cluster.fw", "cluster")
        self.vm_names = Names()
        self.book = AddressBook(source, self.cluster, report, self.vm_name, self.local_network())
        forward = any(self.options_bool(fw, "nftables", False) for fw in source.hosts.values())
        self.rules = RuleTranslator(self.cluster, self.book, report, forward_enforced=forward, map_groups=map_groups)
        self.filters: dict[str, Any] = {}
        self.sets: dict[tuple[int, str], IpSet] = {}  # each filtered NIC's ipfilter set
        self.ips: dict[tuple[int, str], list[str]] = {}  # NIC addresses taken from ipfilter sets

    def local_network(self) -> str | None:
        """Proxmox's local_network: the cluster.fw alias wins, else the inventory's."""
        alias = self.cluster.aliases.get("local_network")
        if alias is not None:
            try:
                return str(ipaddress.ip_interface(alias.cidr).network)
            except ValueError:
                return None  # reported when the alias becomes a group
        return self.src.inventory.local_network

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
        handled = {"enable", "policy_in", "policy_out", "ipfilter", "macfilter", "dhcp", "ndp", "radv", "log_level_in", "log_level_out", *PROTECTION_OPTIONS,
                   "log_ratelimit", "nf_conntrack_allow_invalid", "nf_conntrack_tcp_timeout_established", "nf_conntrack_tcp_timeout_syn_recv", "ebtables"}
        for name, (value, where) in sorted(fw.options.items()):
            if name in handled:
                continue
            if name in known:
                if value.strip() not in ("0", ""):
                    self.report.skipped(where, f"option {name}: {value}: {known[name]}")
            else:
                self.report.skipped(where, f"unknown option {name!r}; ignored")

    def settings(self, management: Commented | None) -> dict[str, Any]:
        cluster = self.cluster
        settings: dict[str, Any] = {
            "default": Commented(Flow({"in": "drop", "out": "accept"}), "Proxmox's guest defaults (every guest also sets its own)"),
            "host_default": Commented(Flow({"in": self.policy(cluster, "policy_in", "DROP"), "out": self.policy(cluster, "policy_out", "ACCEPT")}),
                                      f"datacenter policy_in/policy_out ({cluster.path})"),
        }
        if management is not None:
            settings["management"] = management
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
        settings["log"] = Flow({k: log[k] for k in ("rate", "burst") if k in log})
        if self.src.cluster is not None and not self.options_bool(cluster, "enable", False):
            settings["firewall"] = Commented(False, f"datacenter enable is not 1 ({cluster.path}): Proxmox filters nothing; set true to enforce this policy")
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

    def host_rules(self, builtins: Builtins) -> tuple[dict[str, list[Commented]], list[Commented]]:
        """Each node's rules: its host.fw rules (`host.fw`, then `nodes/NODE/host.fw`),
        the datacenter rules, then Proxmox's built-in accepts, as pve-firewall orders
        them; and the node's own and datacenter rules alone (for the anti-lockout check)."""
        cluster_rules = self.rules.translate_rules(self.cluster.rules, None, None, None, host_scope=True)
        built_in = builtins.node_rules()
        per_host: dict[str, list[Commented]] = {}
        own: list[Commented] = list(cluster_rules)
        for node in sorted(self.src.inventory.nodes):
            rules: list[Commented] = []
            for key in ("*", node):
                fw = self.src.hosts.get(key)
                if fw is None:
                    continue
                rules += self.rules.translate_rules(fw.rules, None, None, None, host_scope=True)
            own += rules
            per_host[node] = rules + cluster_rules + built_in
        for node in sorted(k for k in self.src.hosts if k != "*" and k not in self.src.inventory.nodes):
            self.report.skipped(Where(self.src.hosts[node].path), f"node {node} is not in the inventory")
        return per_host, own

    def node_protection(self, node: str) -> Commented:
        """host.fw's nosmurfs (on unless 0), tcpflags and protection_synflood as the
        node's `protection`, also for its guests: Proxmox runs the smurfs check in every
        guest's input chain; zonewall's guests get tcpflags and synflood too (never
        more open, reported when it is stricter)."""
        fw = self.src.hosts.get(node) or self.src.hosts.get("*")
        body: dict[str, Any] = {"tcpflags": self.options_bool(fw, "tcpflags", False), "nosmurfs": self.options_bool(fw, "nosmurfs", True)}
        if self.options_bool(fw, "protection_synflood", False):
            assert fw is not None
            synflood = {}
            for key, default in (("rate", SYNFLOOD_RATE), ("burst", SYNFLOOD_BURST)):
                value = (fw.option(f"protection_synflood_{key}") or "").strip()
                if value and not (value.isdigit() and 1 <= int(value) <= 1_000_000):
                    self.report.skipped(fw.option_where(f"protection_synflood_{key}"), f"protection_synflood_{key}: {value!r} is not a number 1-1000000; Proxmox's default {default} used")
                    value = ""
                synflood[key] = int(value) if value else default
            body["synflood"] = Flow(synflood)
        body["guests"] = True
        if fw is not None and (body["tcpflags"] or "synflood" in body):
            self.report.inexact(Where(fw.path), f"node {node}: tcpflags/protection_synflood also apply to the node's guests in zonewall (Proxmox: the host only); stricter, never more open")
        origin = fw.path if fw is not None else "no host.fw"
        return Commented(Flow(body), f"Proxmox's host options ({origin}): nosmurfs is on unless 0")

    def check_host_options(self) -> None:
        host_known = {
            "nf_conntrack_max": "zonewall does not size the conntrack table", "log_nf_conntrack": "no conntrack event logging in zonewall",
            "smurf_log_level": "no SMURFS filter in zonewall", "tcp_flags_log_level": "no TCP flag filter in zonewall",
            "ndp": "zonewall always accepts neighbour discovery", "nftables": "zonewall always uses nftables",
            "protection_limit": "no equivalent",
        }
        for fw in self.src.hosts.values():
            self.check_options(fw, host_known)
        cluster_known = {"policy_forward": "no forward policy in zonewall"}
        self.check_options(self.cluster, cluster_known)
        if self.src.cluster is not None and not self.options_bool(self.cluster, "enable", False):
            self.report.note(self.cluster.option_where("enable"), "the datacenter firewall is disabled (enable is not 1): written as settings.firewall: false, as Proxmox filters nothing")
        if self.src.cluster is None:
            self.report.note(Where("cluster.fw"), "no cluster.fw: no datacenter rules, IP sets, aliases or security groups")

    def log_levels(self, fw: FwFile) -> Flow | None:
        """log_level_in/out: the level what the default decides is logged at (nolog,
        Proxmox's default, is zonewall's too: written only when logged)."""
        out: dict[str, str] = {}
        for direction in ("in", "out"):
            level = (fw.option(f"log_level_{direction}") or "").strip()
            if not level or level == "nolog":
                continue
            if level not in LOG_LEVELS:
                self.report.skipped(fw.option_where(f"log_level_{direction}"), f"log_level_{direction}: {level!r} is not a syslog level; not logged")
                continue
            out[direction] = level
        return Flow(out) if out else None

    def guest_enabled(self, vmid: int) -> bool:
        """Whether Proxmox filters this guest: `enable: 1` and a NIC with firewall=1."""
        guest = self.src.inventory.guests[vmid]
        fw = self.src.guests.get(vmid)
        enabled = self.options_bool(fw, "enable", False)
        if fw is not None and not enabled:
            self.report.note(fw.option_where("enable") if fw.option("enable") else Where(fw.path), f"guest {vmid}: firewall not enabled (enable: 1 missing); written with firewall: false")
        if enabled and not any(n.firewall for n in guest.nics):
            enabled = False
            self.report.note(guest.where, f"guest {vmid}: no NIC has firewall=1; written with firewall: false")
        return enabled

    def guest(self, vmid: int, enabled: bool, zones: dict[str, Any], networks: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        guest = self.src.inventory.guests[vmid]
        fw = self.src.guests.get(vmid)
        name = self.vm_name(vmid)
        zone = sanitize(str(guest.zone)) if guest.zone else self.network_name(guest.nics[0].bridge)
        zones.setdefault(zone, Commented({}, "guests " + ("from the inventory's zone" if guest.zone else f"whose first NIC is on {guest.nics[0].bridge}") + "; no rules of its own (Proxmox has no zones)"))
        body: dict[str, Any] = {"host": guest.node, "zone": zone}
        if not enabled:
            body["firewall"] = False  # Proxmox filters nothing for it; its rules are kept for when it is turned on
        if fw is not None:
            body["default"] = Flow({"in": self.policy(fw, "policy_in", "DROP"), "out": self.policy(fw, "policy_out", "ACCEPT")})
        else:
            body["default"] = Flow({"in": "accept", "out": "accept"})
        body["nics"] = [self.nic(vmid, nic, fw, enabled, networks) for nic in guest.nics]
        rules: list[Commented] = []
        if fw is not None:
            if self.options_bool(fw, "dhcp", False):
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
            log = self.log_levels(fw)
            if log is not None:
                body["log"] = log
            rules += self.rules.translate_rules(fw.rules, fw, vmid, guest, host_scope=False)
            self.check_options(fw, {"ips": "no IPS (Suricata) integration in zonewall", "ips_queues": "no IPS (Suricata) integration in zonewall",
                                    "layer2_protocols": "zonewall filters cannot allow-list ethertypes per guest"})
        if rules:
            body["rules"] = rules
        origin = fw.path if fw is not None else "no firewall file"
        return name, body, f"guest {vmid} ({origin}; {guest.where})"

    def nic(self, vmid: int, nic: Nic, fw: FwFile | None, enabled: bool, networks: dict[str, Any]) -> Commented:
        """A NIC with its guard filters: macfilter, ipfilter, radv (when the guest is filtered)."""
        ips = list(nic.ips) or self.ips.get((vmid, nic.key), [])
        network = self.network_name(nic.bridge)
        self.note_network(network, nic, ips, networks)
        entry: dict[str, Any] = {"network": network, "name": nic.key}  # what `nic:` in rules names (Proxmox's -i netN)
        if not nic.firewall:
            entry["firewall"] = False  # Proxmox's firewall=0: this NIC is not filtered
        if nic.mac:
            entry["mac"] = nic.mac
        filters: list[str] = []
        if enabled and nic.firewall:
            assert fw is not None
            if self.options_bool(fw, "macfilter", True):
                if nic.mac:
                    filters += ["no-mac-spoofing", "no-arp-mac-spoofing"]
                else:
                    self.report.inexact(nic.where, f"guest {vmid} {nic.key}: macfilter is on but the inventory gives no mac; no MAC filter written")
            ipset = self.sets.get((vmid, nic.key))
            if ipset is not None:
                name = f"pve-ipfilter-{vmid}-{nic.key}"
                self.filters[name] = ipfilter_filter(vmid, nic, ipset, fw, self.book, self.options_bool(fw, "ipfilter", False), self.report)
                filters.append(name)
            if not self.options_bool(fw, "radv", False):
                filters.append(NO_RADV)
                self.filters[NO_RADV] = Commented({"rules": [Flow({"direction": "out", "action": "drop", "icmp": "nd-router-advert"})]},
                                                  "Proxmox's radv: 0 (the default): guests may not send router advertisements")
        if ips:
            entry["ips"] = ips
        entry["tap"] = f"{self.src.inventory.guests[vmid].port_prefix}{vmid}i{nic.index}"  # the name Proxmox gives the port: known before the guest starts
        if filters:
            entry["filters"] = filters
        return Commented(Flow(entry), f"{nic.key} ({nic.where})")

    def note_network(self, network: str, nic: Nic, ips: list[str], networks: dict[str, Any]) -> None:
        bridge = self.src.inventory.bridges.get(nic.bridge)
        entry = networks.setdefault(network, {"bridge": nic.bridge, "subnets": [], "gateway": [], "inferred": bridge is None})
        if bridge is not None:
            entry["subnets"], entry["gateway"] = list(bridge.subnets), list(bridge.gateway)
            return
        for ip in ips:
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
        self.book.allocate()
        self.book.build()
        self.check_host_options()
        enabled = {vmid: self.guest_enabled(vmid) for vmid in sorted(inv.guests)}
        option = {vmid: self.options_bool(fw, "ipfilter", False) for vmid, fw in self.src.guests.items()}
        self.sets = guest_sets(inv, self.src.guests, enabled, option)
        self.ips = derived_ips(inv, self.src.guests, self.sets, self.book, self.report)
        zones: dict[str, Any] = {}
        networks: dict[str, Any] = {}
        vm_docs: dict[str, Document] = {}
        for vmid in sorted(inv.guests):
            name, body, comment = self.guest(vmid, enabled[vmid], zones, networks)
            doc = Document([HEADER, f"Guest {vmid}."], {"version": 1})
            if self.book.vm_groups.get(vmid):
                doc.body["groups"] = dict(sorted(self.book.vm_groups[vmid].items()))
            doc.body["vms"] = {name: Commented(body, comment)}
            vm_docs[f"vm-{vmid}.yaml"] = doc
        for vmid in sorted(set(self.src.guests) - set(inv.guests)):
            self.report.skipped(Where(self.src.guests[vmid].path), f"guest {vmid} is not in the inventory (node and NICs unknown); its rules are not imported")
        builtins = Builtins(self.cluster, self.book, self.report, self.src.corosync, sorted(inv.nodes))
        builtins.missing_corosync()
        per_host, own = self.host_rules(builtins)
        profile = builtins.document(HEADER)
        hosts: dict[str, Any] = {}
        for node_name, node in sorted(inv.nodes.items()):
            entry: dict[str, Any] = {"address": node.address if len(node.address) > 1 else node.address[0]}
            if node.uplink:
                entry["uplink"] = node.uplink
            entry["protection"] = self.node_protection(node_name)
            own_fw = self.src.hosts.get(node_name) or self.src.hosts.get("*")
            if own_fw is not None and not self.options_bool(own_fw, "enable", True):
                self.report.note(own_fw.option_where("enable"), f"{own_fw.path}: the host firewall is off: node {node_name} written with firewall: false")
                entry["firewall"] = False
            log = self.log_levels(own_fw) if own_fw is not None else None
            if log is not None:
                entry["log"] = log
            entry["rules"] = per_host[node_name]
            hosts[node_name] = Commented(entry, f"from {node.where}; rules: host.fw, the datacenter rules of cluster.fw, then Proxmox's built-ins ({PROFILE})")
        cluster = Document([HEADER, "Datacenter (cluster.fw), nodes (host.fw) and the inventory; guests are in vm-VMID.yaml,",
                            f"Proxmox's built-in behaviour in {PROFILE}. Everything not translated exactly is listed in import-report.txt."], {"version": 1})
        cluster.body["settings"] = self.settings(builtins.management_setting(own, self.rules.services))
        cluster.body["hosts"] = hosts
        cluster.body["networks"] = {name: self.network_entry(name, net) for name, net in sorted(networks.items())}
        if self.book.groups:
            cluster.body["groups"] = dict(sorted(self.book.groups.items()))
        if self.rules.services:
            cluster.body["services"] = dict(sorted(self.rules.services.items()))
        if self.rules.groups is not None and self.rules.groups.definitions:
            cluster.body["security_groups"] = dict(sorted(self.rules.groups.definitions.items()))
        if self.filters:
            cluster.body["filters"] = dict(sorted(self.filters.items()))
        cluster.body["zones"] = dict(sorted(zones.items()))
        return {"cluster.yaml": cluster, PROFILE: profile, **vm_docs}

    def network_entry(self, name: str, net: dict[str, Any]) -> Any:
        entry: dict[str, Any] = {"bridge": net["bridge"]}
        if net["subnets"]:
            entry["subnets"] = net["subnets"]
        if net["gateway"]:
            entry["gateway"] = net["gateway"]
        return Commented(Flow(entry), "subnets assumed from the guests' addresses" if net["inferred"] else f"bridge {net['bridge']} from {self.src.inventory.bridges[net['bridge']].where}")


def translate(source: Source, report: Report, *, map_groups: bool = True) -> dict[str, Document]:
    """`map_groups=False`: every security group copied into the rule lists using it."""
    return ProxmoxImport(source, report, map_groups=map_groups).run()
