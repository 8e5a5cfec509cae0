"""Proxmox VE's built-in firewall behaviour as an explicit `proxmox-cluster` profile.

pve-firewall adds rules nobody wrote (PVE/Firewall.pm, enable_host_firewall and the
input filters); the import writes them as ordinary policy an operator can read,
change or delete:

* the datacenter IP set `blacklist` is dropped before any rule, into the nodes and
  into every guest;
* the `management` IP set always holds the cluster's `local_network`, and reaches
  every node on tcp 8006 (API/GUI), 5900-5999 (VNC), 3128 (SPICE proxy), 22 (SSH)
  and 60000-60050 (live migration), after the node's own and the datacenter rules;
* a node may reach the local network on tcp 8006, 22, 5900-5999 and 3128;
* corosync, udp 5404-5405, between the nodes' addresses on the same ring of
  corosync.conf, and to multicast addresses when the transport is `udp`.

`proxmox-cluster.yaml` holds their named parts (groups, services) and the blacklist
rules; the accepts sit in each node's rule list after its own rules, where
pve-firewall puts them, each commented "Proxmox built-in". zonewall has no level
"after every node's own rules" that the profile could hold them in (docs/migrating.md,
phase 2).
"""

from __future__ import annotations

import re
from typing import Any

from ...policy.builtins import BUILTIN_SERVICES, MANAGEMENT_TCP_PORTS
from ..emit import Commented, Document, Flow
from ..report import Report, Where
from .addresses import LOCAL_NETWORK, MANAGEMENT, AddressBook
from .corosync import Corosync
from .parse import FwFile

PROFILE = "proxmox-cluster.yaml"
MANAGEMENT_SERVICE, LOCAL_SERVICE, COROSYNC_SERVICE = "pve-management", "pve-local", "pve-corosync"
MULTICAST = ["224.0.0.0/4", "ff00::/8"]
BUILT_IN = "Proxmox built-in (" + PROFILE + ")"


class Builtins:
    def __init__(self, cluster: FwFile, book: AddressBook, report: Report, corosync: Corosync | None, nodes: list[str]) -> None:
        self.cluster, self.book, self.report, self.corosync = cluster, book, report, corosync
        self.blacklist = book.ref("dc", "blacklist") if "blacklist" in cluster.ipsets else None
        self.management = book.ref("dc", MANAGEMENT)
        self.local = f"group:{book.alias_ref[('dc', LOCAL_NETWORK)]}" if ("dc", LOCAL_NETWORK) in book.alias_ref else None
        self.rings: dict[str, str] = {}  # ring0_addr -> group name
        if corosync is not None:
            for ring in sorted(corosync.ring_members()):
                self.rings[ring] = book.reserve("pve-corosync-" + ring.replace("_addr", ""))
            for node in nodes:
                if node not in corosync.nodes:
                    report.inexact(Where(corosync.shown), f"node {node} is not in the nodelist: corosync is not opened for its addresses (closed)")

    # -- the profile document ----------------------------------------------------

    def document(self, header: str) -> Document:
        doc = Document([header, "Proxmox VE's built-in firewall behaviour, made explicit: pve-firewall adds all of this without showing it.",
                        "Change or delete what you do not want; the accepts are in each node's rules in cluster.yaml (\"Proxmox built-in\")."],
                       {"version": 1})
        groups: dict[str, Any] = {}
        for name in (MANAGEMENT, LOCAL_NETWORK):
            group = self.book.groups.pop(name, None)
            if group is not None:
                groups[name] = group
        if self.corosync is not None:
            members = self.corosync.ring_members()
            for ring, name in self.rings.items():
                groups[name] = Commented(members[ring], f"corosync {ring} of every node ({self.corosync.shown})")
        doc.body["groups"] = groups
        doc.body["services"] = {
            MANAGEMENT_SERVICE: Commented(Flow({"tcp": [8006, "5900-5999", 3128, 22, "60000-60050"]}),
                                          "what the management IP set reaches on every node: API/GUI, VNC, SPICE proxy, SSH, live migration"),
            LOCAL_SERVICE: Commented(Flow({"tcp": [8006, 22, "5900-5999", 3128]}), "what a node may reach in the local network: API/GUI, SSH, VNC, SPICE proxy"),
            COROSYNC_SERVICE: Commented(Flow({"udp": "5404-5405"}), "corosync (cluster communication)"),
        }
        if self.blacklist:
            drop = Flow({"direction": "in", "action": "drop", "from": self.blacklist})
            where = self.cluster.ipsets["blacklist"].where
            doc.body["global_rules"] = [Commented(drop, f"the datacenter IP set blacklist ({where}) is dropped before any guest rule")]
            doc.body["host_rules"] = [Commented(drop, f"the datacenter IP set blacklist ({where}) is dropped before any node rule")]
        return doc

    # -- the accepts after each node's own rules ---------------------------------

    def node_rules(self) -> list[Commented]:
        out = [Commented(Flow({"direction": "in", "action": "accept", "from": self.management, "service": MANAGEMENT_SERVICE}),
                         f"{BUILT_IN}: the management IP set reaches the node's API/GUI, consoles, SSH and migration ports")]
        out += self.corosync_rules("in")
        if self.local:
            out.append(Commented(Flow({"direction": "out", "action": "accept", "to": self.local, "service": LOCAL_SERVICE}),
                                 f"{BUILT_IN}: the node reaches the local network's API/GUI, SSH and consoles"))
        else:
            self.report.inexact(Where(self.cluster.path), "local_network unknown (no cluster.fw alias, none in the inventory): the nodes' built-in "
                                                          "output to it (tcp 8006, 22, 5900-5999, 3128) is not written (closed)")
        out += self.corosync_rules("out")
        return out

    def corosync_rules(self, direction: str) -> list[Commented]:
        if self.corosync is None:
            return []
        out = []
        for ring, name in self.rings.items():
            out.append(Commented(Flow({"direction": direction, "action": "accept", "from": f"group:{name}", "to": f"group:{name}", "service": COROSYNC_SERVICE}),
                                 f"{BUILT_IN}: corosync between the nodes' {ring} addresses"))
        if self.corosync.multicast:
            out.append(Commented(Flow({"direction": direction, "action": "accept", "to": MULTICAST, "service": COROSYNC_SERVICE}),
                                 f"{BUILT_IN}: corosync to multicast addresses (totem transport udp)"))
        return out

    def missing_corosync(self) -> None:
        if self.corosync is None:
            self.report.inexact(Where("corosync.conf"), "no corosync.conf (--corosync): corosync between the nodes (udp 5404-5405), which "
                                                        "pve-firewall always opens, is not written (closed)")

    # -- settings.management -----------------------------------------------------

    def management_setting(self, node_rules: list[Commented], services: dict[str, Any]) -> Commented | None:
        """settings.management (zonewall's anti-lockout: tcp 22, 9440, 9441 accepted
        before any rule) for the management set minus the blacklist; None when one of
        the node's own rules might refuse some of that first, as Proxmox would."""
        for rule in node_rules:
            if _may_refuse(rule.value, MANAGEMENT_TCP_PORTS, services):
                found = re.search(r"from (\S+:\d+)", rule.comment or "")
                self.report.inexact(Where(*_split(found.group(1))) if found else Where(self.cluster.path),
                                    "this rule may refuse tcp 22 (or zonewall's 9440/9441) to a node before Proxmox's management accept; "
                                    "settings.management (zonewall's anti-lockout, accepted before any rule) is left unset so the rule keeps its effect")
                return None
        refs = [self.management] + ([f"!{self.blacklist}"] if self.blacklist else [])
        return Commented(refs, "the management IP set" + (" except the blacklist, which Proxmox drops first" if self.blacklist else "")
                         + f": zonewall's anti-lockout (tcp 22, 9440, 9441 before any rule; {PROFILE} has the set)")


def _split(where: str) -> tuple[str, int]:
    file, _, line = where.rpartition(":")
    return file, int(line)


def _ports_of(values: Any) -> list[tuple[int, int]]:
    out = []
    for value in values if isinstance(values, list) else [values]:
        low, _, high = str(value).partition("-")
        out.append((int(low), int(high or low)))
    return out


def _may_refuse(rule: dict[str, Any], tcp_ports: tuple[int, ...], services: dict[str, Any]) -> bool:
    """Whether an (imported) node rule may drop or reject tcp to one of `tcp_ports`;
    addresses are not looked at (a yes is the safe answer)."""
    if rule.get("enabled") is False or rule.get("direction") != "in" or rule.get("action") not in ("drop", "reject"):
        return False
    keys: list[dict[str, Any]] = []
    names = rule.get("service", [])
    for name in names if isinstance(names, list) else [names]:
        found = services.get(name)
        keys.append(dict(found.value if isinstance(found, Commented) else found) if found is not None else BUILTIN_SERVICES.get(name, {}))
    if not keys:
        keys = [{k: rule[k] for k in ("tcp", "udp", "sctp", "icmp", "icmpv6", "proto") if k in rule}]
    for body in keys:
        if not body:
            return True
        protos = body.get("proto", [])
        if any(p in ("tcp", "6") for p in (protos if isinstance(protos, list) else [protos])):
            return True
        if "tcp" in body and any(low <= port <= high for low, high in _ports_of(body["tcp"]) for port in tcp_ports):
            return True
    return False
