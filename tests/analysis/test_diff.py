"""`zonewall diff`: what it reports, and what it must not (fast, no kernel).

* Edits without effect report nothing: reordering rules that do not overlap,
  renaming a group or a zone (and every reference to it), splitting the policy into
  files of a directory, changing ids and comments. Checked on a hand-written policy
  and, as a property, on random policies (tests/analysis/policygen.py).
* Edits with effect report the right flows: the change (opened / closed / changed
  for drop <-> reject), the peers on each side, the services and the deciding rule
  of each policy, for a port added, an accept turned into a reject, a VM moved to
  or out of a zone, a group member added, a default changed, an isolated network's
  rule added or changed or its isolation lifted; refusals in the kernel's order
  (guards, then the sender's chain, the isolated network, the receiver's chain).
* diff agrees with trace: for random pairs (a policy and a mutation of it), over
  every source x target x service x family, a flow whose trace verdict differs
  between the two policies is reported with that change, a row's flows change that
  way in at least one family, and a flow no row names keeps its verdict.
* `zonewall diff OLD NEW`: exit 0 when identical, 1 when different, 2 for a
  rejected policy, and the JSON.

Diff rows carry no family for VM and node peers, and `outside (N ranges)` peers
cannot be read back: matching a flow against rows says True / False / None (cannot
tell), and a check only relies on a certain answer.

The helpers at the top (reading diff rows back into concrete flows, and the
strategy of policy pairs) are shared with tests/kernel/test_diff_agreement.py,
which checks diff against real packets.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests.analysis.policygen import (
    FLOW_TCP,
    FLOW_UDP,
    FORWARD_PORTS,
    INTERFACES,
    NIC_NAMES,
    OUTSIDE,
    RULE_SERVICES,
    RULE_TCP,
    RULE_UDP,
    V4_LITERALS,
    V6_LITERALS,
    PolicyDesc,
    policies,
)
from zonewall.analysis.diff import DiffResult, DiffRow, diff_policies
from zonewall.analysis.endpoints import Endpoint
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.policy.builtins import ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from zonewall.policy.errors import PolicyError
from zonewall.policy.loader import load_policy, load_policy_text
from zonewall.policy.resolve import Policy

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synth

# ============================================================== reading rows back


@dataclass(frozen=True)
class Flow:
    """A concrete flow, named as diff names its peers: `vm:NAME` (`vm:NAME@NETWORK`
    for a VM with several NICs: the NIC the flow leaves or arrives on), `host:NODE`,
    `outside:ADDRESS`. `proto` icmp is an echo-request (ICMPv6 in IPv6)."""

    src: str
    dst: str
    proto: str  # tcp | udp | icmp
    port: int | None
    family: int

    def __str__(self) -> str:
        service = f"{self.proto}/{self.port}" if self.port is not None else "icmp echo-request"
        return f"{self.src} -> {self.dst} {service} ipv{self.family}"

    @property
    def lab_source(self) -> str:
        """The lab sends from the VM (its routing picks the NIC), not from a NIC."""
        return self.src.split("@")[0]


PROTO_NUMBERS = dict(IP_PROTOCOLS)
ICMP_ECHO = {4: ICMP_V4_TYPES["echo-request"], 6: ICMP_V6_TYPES["echo-request"]}


def _flow_proto(flow: Flow) -> tuple[str, int | None]:
    """(protocol name as diff writes it, port or ICMP type)."""
    if flow.proto == "icmp":
        return ("icmp" if flow.family == 4 else "icmpv6"), ICMP_ECHO[flow.family]
    return flow.proto, flow.port


def _items_cover(proto: str, items: str, value: int | None) -> bool | None:
    """Does `22,80,8000-8100` (or ICMP `echo-request,0-7`) hold `value`? None: unreadable."""
    names = ICMP_V4_TYPES if proto == "icmp" else ICMP_V6_TYPES if proto == "icmpv6" else {}
    for item in items.split(","):
        item = item.strip()
        low_text, _, high_text = item.partition("-")
        if item in names:
            low = high = names[item]
        elif low_text.isdigit() and (not high_text or high_text.isdigit()):
            low, high = int(low_text), int(high_text or low_text)
        else:
            return None
        if value is not None and low <= value <= high:
            return True
    return False


def _protocols_cover(items: str, proto: str) -> bool | None:
    """Does a protocol list (`icmp,tcp,udp`, `2-5,esp`) name `proto`?"""
    number = PROTO_NUMBERS[proto]
    for item in items.split(","):
        low_text, _, high_text = item.strip().partition("-")
        if item.strip() in PROTO_NUMBERS:
            if PROTO_NUMBERS[item.strip()] == number:
                return True
        elif low_text.isdigit() and (not high_text or high_text.isdigit()):
            if int(low_text) <= number <= int(high_text or low_text):
                return True
        else:
            return None
    return False


def service_covers(text: str, flow: Flow) -> bool | None:
    """Does one of a row's services (`tcp 22,80`, `udp`, `icmp echo-request`,
    `any`, `any except tcp 25; esp,gre`) hold the flow's? None: cannot tell."""
    proto, value = _flow_proto(flow)
    if text == "any":
        return True
    if text.startswith("any except ") and flow.proto == "icmp":
        # the row's family is not written: `any except icmp` from an IPv6 box holds
        # ICMPv6 but an IPv4 box's `any except icmp,tcp` holds protocol 58 in IPv4
        # only. Certain only when no ICMP of either family is excepted.
        return None if "icmp" in text[len("any except "):] else True
    if text.startswith("any except "):
        for exception in text[len("any except "):].split("; "):
            name, _, rest = exception.partition(" ")
            if rest:  # a protocol partly excepted: `tcp 25`, `tcp outside tcp 22 sport 1024`
                if name != proto:
                    continue
                if rest.startswith("outside") or "sport" in rest:
                    return None
                found = _items_cover(proto, rest, value)
                return None if found is None else not found
            found = _protocols_cover(exception, proto)  # whole protocols excepted
            if found is None or found:
                return None if found is None else False
        return True
    name, _, rest = text.partition(" ")
    if name != proto:
        return False if name in PROTO_NUMBERS or name.isdigit() else None
    if not rest:
        return True
    if "sport" in rest:
        return None
    return _items_cover(proto, rest, value)


def label_covers(label: str, ref: str, family: int) -> bool | None:
    """Is the endpoint `ref` (vm:, vm:@, host:, outside:ADDRESS) among a row's peers
    `label` (the same, `outside: any`, `outside: any ipv4`, `outside:CIDR`,
    `outside (9 ranges)`)? None: cannot tell."""
    if not label.startswith("outside"):
        return label == ref
    if not ref.startswith("outside:"):
        return False
    address = ipaddress.ip_address(ref[len("outside:"):])
    if label == "outside: any":
        return True
    if label.startswith("outside: any ipv"):
        return label == f"outside: any ipv{address.version}"
    if label.startswith("outside:"):
        try:
            network = ipaddress.ip_network(label[len("outside:"):].strip())
        except ValueError:
            return None
        return address.version == network.version and address in network
    return None


def _any_of(values: Iterable[bool | None]) -> bool | None:
    values = list(values)
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def row_covers(row: DiffRow, flow: Flow) -> bool | None:
    """Does the row (a product: every source x every destination x every service)
    name this flow? Rows carry no family for VM and node peers: a row may hold for
    one family only. None: cannot tell (e.g. `outside (9 ranges)`)."""
    if row.when != "always":
        return None
    src = _any_of(label_covers(label, flow.src, flow.family) for label in row.src)
    dst = _any_of(label_covers(label, flow.dst, flow.family) for label in row.dst)
    service = _any_of(service_covers(text, flow) for text in row.services)
    if src is False or dst is False or service is False:
        return False
    return True if src and dst and service else None


def rows_naming(result: DiffResult, flow: Flow) -> tuple[list[DiffRow], bool]:
    """(rows that certainly name the flow, whether some other row might)."""
    certain, unsure = [], False
    for row in result.rows:
        found = row_covers(row, flow)
        if found is True:
            certain.append(row)
        elif found is None:
            unsure = True
    return certain, unsure


# ------------------------------------------------------------ rows -> concrete flows

INTERNET = {4: "203.0.113.10", 6: "2001:db8:ffff::10"}
_NOT_A_SOURCE = [ipaddress.ip_network(n) for n in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/3", "::/8", "fe80::/10", "ff00::/8")]


class Endpoints:
    """The endpoints of a policy, as diff and the lab name them."""

    def __init__(self, policy: Policy, gateways: Iterable[str] = ()):
        self.policy = policy
        self.directory = Analyzer(policy).directory
        self.taken = {ipaddress.ip_address(a) for vm in policy.doc.vms.values() for nic in vm.nics for a in nic.ips}
        self.taken |= {ipaddress.ip_address(a) for host in policy.doc.hosts.values() for a in host.address}
        self.taken |= {ipaddress.ip_interface(g).ip for g in gateways}
        for network in policy.doc.networks.values():
            self.taken |= {ipaddress.ip_address(g) for g in network.gateway}
        self.subnets = [ipaddress.ip_network(n) for net in policy.doc.networks.values() for n in net.subnets]

    def families(self, label: str) -> set[int]:
        kind, _, name = label.partition(":")
        if kind == "outside":
            return {ipaddress.ip_address(name).version}
        if kind == "host":
            return {ipaddress.ip_address(a).version for a in self.policy.doc.hosts[name].address}
        vm, _, network = name.partition("@")
        return {ipaddress.ip_address(a).version for nic in self.policy.doc.vms[vm].nics if not network or nic.network == network for a in nic.ips}

    def complete(self, flows: list[Flow]) -> bool:
        """Do the flows (one source, destination and service) cover every family
        both ends have?"""
        first = flows[0]
        return {f.family for f in flows} >= self.families(first.src) & self.families(first.dst)

    def address(self, label: str, family: int) -> str | None:
        """The address a flow to `label` goes to (a VM with several NICs: the NIC named)."""
        kind, _, name = label.partition(":")
        if kind == "outside":
            return name
        vm, _, network = name.partition("@")
        try:
            endpoint = Endpoint("host", name) if kind == "host" else Endpoint("vm", vm, network=network or None)
            return self.directory.target_address(endpoint, family)[0]
        except Exception:
            return None

    def label(self, ref: str, family: int, peer_address: str | None = None) -> str | None:
        """The label diff gives `ref` (vm:NAME gets its NIC's network when it has
        several: the NIC towards `peer_address` for a source)."""
        kind, _, name = ref.partition(":")
        if kind != "vm" or "@" in name or len(self.policy.doc.vms[name].nics) == 1:
            return ref
        if peer_address is None:
            return None
        try:
            _address, nic = self.directory.source_address(Endpoint("vm", name), family, peer_address)
        except Exception:
            return None
        return f"vm:{name}@{self.policy.doc.vms[name].nics[nic].network}"  # type: ignore[index]

    def outside_address(self, label: str, family: int) -> str | None:
        """An address for an outside peer label: out of every guest subnet, not a
        node's (None when the label holds no such address we try)."""
        if label == "outside: any" or label == f"outside: any ipv{family}":
            return INTERNET[family]
        if not label.startswith("outside:"):
            return None
        try:
            network = ipaddress.ip_network(label[len("outside:"):].strip())
        except ValueError:
            return None
        if network.version != family:
            return None
        candidates = [ipaddress.ip_address(a) for a in OUTSIDE + tuple(INTERNET.values())]
        size = network.num_addresses
        candidates += [network.network_address + k for k in (10, 5, 1, size // 2, size - 10, 0) if 0 <= k < size]
        fits = [a for a in candidates if a.version == family and a in network and a not in self.taken and not any(a in n for n in _NOT_A_SOURCE)]
        # not inside a guest subnet: the lab's outside holds such an address on its
        # loopback, and guests on that subnet look for it on the link (no NDP answer)
        fits = [a for a in fits if not any(a in n for n in self.subnets)]
        return str(fits[0]) if fits else None

    def concrete(self, src_label: str, dst_label: str, family: int) -> tuple[str, str] | None:
        """(source, destination) endpoint names for one family, or None when a label
        cannot be met in that family (a NIC the kernel would not send from, ...)."""
        src = self.outside_address(src_label, family) if src_label.startswith("outside") else src_label
        dst = self.outside_address(dst_label, family) if dst_label.startswith("outside") else dst_label
        if src is None or dst is None:
            return None
        src = f"outside:{src}" if src_label.startswith("outside") else src
        dst = f"outside:{dst}" if dst_label.startswith("outside") else dst
        if src.split("@")[0] == dst.split("@")[0] or (src.startswith("outside") and dst.startswith("outside")):
            return None
        if family not in self.families(src) or family not in self.families(dst):
            return None
        dst_address = self.address(dst, family)
        if dst_address is None:
            return None
        if src.startswith("vm:") and "@" in src and self.label(src.split("@")[0], family, dst_address) != src:
            return None
        return src, dst


def service_choices(text: str) -> list[tuple[str, int | None, int | None]]:
    """Concrete services for one of a row's services: (proto, port, family or None).
    The first port of the first range (never 0); ICMP only when it holds echo-request."""
    name, _, rest = text.partition(" ")
    if "sport" in rest:  # probes send from an ephemeral port of their own
        return []
    if name in ("tcp", "udp"):
        if not rest:
            return [(name, 8050, None)]
        first = rest.split(",")[0]
        low_text, _, _high = first.partition("-")
        if not low_text.isdigit():
            return []
        low, high = int(low_text), int(_high or low_text)
        port = max(low, 1)
        return [(name, port, None)] if port <= high else []
    if name in ("icmp", "icmpv6"):
        family = 4 if name == "icmp" else 6
        probe = Flow("outside:0.0.0.0" if family == 4 else "outside:::", "x", "icmp", None, family)
        return [("icmp", None, family)] if service_covers(text, probe) else []
    if name == "any":
        out: list[tuple[str, int | None, int | None]] = []
        for proto, port in (("tcp", 8050), ("udp", 8050), ("icmp", None)):
            for family in (4, 6):
                probe = Flow("outside:0.0.0.0" if family == 4 else "outside:::", "x", proto, port, family)
                if service_covers(text, probe) is True:
                    out.append((proto, port, family if proto == "icmp" else None))
        return list(dict.fromkeys(out))
    return []


def flows_of_row(row: DiffRow, where: Endpoints, rng: random.Random, most: int = 3) -> list[list[Flow]]:
    """Up to `most` concrete (source, destination, service) picks of a row; each is
    a list of flows, one per family both ends have (the row holds in at least one).
    A pick that cannot be met in one of those families (the kernel sends IPv4 from
    another NIC, ...) is left out: the row may hold in that family only."""
    services = [c for text in row.services for c in service_choices(text)]
    combos = [(s, d, c) for s in sorted(row.src) for d in sorted(row.dst) for c in services]
    rng.shuffle(combos)
    picks: list[list[Flow]] = []
    for src_label, dst_label, (proto, port, only) in combos:
        flows = []
        for family in (4, 6) if only is None else (only,):
            ends = where.concrete(src_label, dst_label, family)
            if ends is None:
                continue
            flow = Flow(ends[0], ends[1], proto, port, family)
            if row_covers(row, flow) is True:
                flows.append(flow)
        if flows and where.complete(flows):
            picks.append(flows)
        if len(picks) >= most:
            break
    return picks


# ============================================================== pairs of policies


ACTIONS = ("accept", "drop", "reject")


def _mutate_around_chains(draw: st.DrawFn, doc: dict[str, Any], kind: str, serial: int) -> str:
    """What the node does around the rule chains: a network's mode (only to one the
    lab built for the old one can carry: routed -> nat or isolated, nat -> isolated),
    its host_services, port forwards (added, removed, open toggled), masquerade or
    snat of a routed network, a rule on a network that is not isolated, a guard
    rule that drops the replies of connections."""
    if kind == "network rule":
        name = draw(st.sampled_from(sorted(doc["networks"])))
        target = doc["networks"][name].setdefault("rules", [])
        rule = _new_rule(draw, doc, f"network:{name}", serial)
        target.insert(draw(st.integers(0, len(target))), rule)
        return f"added {rule} to network:{name}"
    if kind == "reply guard":
        rule = draw(st.sampled_from([{"tcp": "32768-60999"}, {"udp": "32768-60999"}, {"icmp": "echo-reply"}]))
        doc["filters"]["guard1"]["rules"].append({"direction": draw(st.sampled_from(["in", "out", "inout"])), "action": "drop", **rule})
        return f"guard1 drops replies: {rule}"
    name = draw(st.sampled_from(sorted(n for n, body in doc["networks"].items() if body.get("mode"))))
    body = doc["networks"][name]
    guests = sorted(vm for vm, v in doc["vms"].items() if any(nic["network"] == name for nic in v["nics"]))
    node = doc["vms"][guests[0]]["host"] if guests else sorted(doc["hosts"])[0]
    nat = doc.setdefault("nat", [])
    if kind == "mode":
        choices = {"routed": ["nat", "isolated"], "nat": ["isolated"], "isolated": []}[body["mode"]]
        if not choices:
            kind = "services"
        else:
            body["mode"] = draw(st.sampled_from(choices))
            return f"network {name} mode -> {body['mode']}"
    if kind == "services":
        before = body.get("host_services")
        body["host_services"] = draw(st.sampled_from([s for s in (["dns"], ["dhcp", "dns"], ["ntp"], []) if s != before]))
        return f"network {name} host_services -> {body['host_services']}"
    if kind == "forward":
        forwards = [e for e in nat if e.get("type") == "dnat"]
        action = draw(st.sampled_from(["add", "remove", "toggle"] if forwards else ["add"]))
        if action == "add" and guests and body["mode"] in ("nat", "routed"):
            used = {(e.get("host"), next(iter(e["listen"].items()))) for e in forwards}
            free = [f for f in FORWARD_PORTS if (node, (f[0], f[1])) not in used]
            assume(free)
            proto, port, to_port = draw(st.sampled_from(free))
            entry = {"type": "dnat", "host": node, "listen": {proto: port}, "to": {"vm": draw(st.sampled_from(guests)), "port": to_port}}
            nat.append(entry)
            return f"added {entry}"
        assume(forwards)
        entry = draw(st.sampled_from(forwards))
        if action == "toggle":
            entry["open"] = not entry.get("open", True)
            return f"{entry} open -> {entry['open']}"
        nat.remove(entry)
        return f"removed {entry}"
    # translate: masquerade / snat of a routed network behind its node
    own = [e for e in nat if e.get("type") in ("masquerade", "snat") and (e.get("network") == name or e.get("from") == body["subnets"][0])]
    if own and body["mode"] == "routed":
        nat.remove(own[0])
        return f"removed {own[0]}"
    assume(body["mode"] == "routed")
    entry = draw(st.sampled_from([{"type": "masquerade", "network": name}, {"type": "snat", "from": body["subnets"][0], "to": doc["hosts"][node]["address"][0], "host": node}]))
    nat.append(entry)
    return f"added {entry}"


def _rule_lists(doc: dict[str, Any], *, create: bool) -> list[tuple[str, list[dict[str, Any]]]]:
    """Every rule list of the document (created empty where rules could go)."""
    out: list[tuple[str, list[dict[str, Any]]]] = []

    def take(where: str, body: dict[str, Any], key: str) -> None:
        if key not in body and create:
            body[key] = []
        if body.get(key) is not None:
            out.append((where, body[key]))

    take("global", doc, "global_rules")
    take("hosts", doc, "host_rules")
    for name, host in doc.get("hosts", {}).items():
        take(f"host:{name}", host, "rules")
    for name, zone in (doc.get("zones") or {}).items():
        take(f"zone:{name}", zone, "rules")
    for name, vm in doc.get("vms", {}).items():
        take(f"vm:{name}", vm, "rules")
    for name, network in doc.get("networks", {}).items():
        if network.get("isolated") or not create:  # network rules apply on every network
            take(f"network:{name}", network, "rules")
    return out


def _peer(draw: st.DrawFn, doc: dict[str, Any]) -> str:
    refs = ["any"] + [f"vm:{v}" for v in doc["vms"]] + [f"zone:{z}" for z in doc.get("zones") or {}]
    refs += [f"group:{g}" for g in doc.get("groups") or {}] + [f"network:{n}" for n in doc["networks"]] + [f"host:{h}" for h in doc["hosts"]]
    refs += list(V4_LITERALS) + list(V6_LITERALS)
    return draw(st.sampled_from(refs))


def _new_rule(draw: st.DrawFn, doc: dict[str, Any], where: str, serial: int) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": f"mut-{serial}"}
    network = where.startswith("network:")
    if not network:
        rule["direction"] = draw(st.sampled_from(["in", "out"]))
    rule["action"] = draw(st.sampled_from(ACTIONS))
    keys = ["from", "to"] if network else ["from" if rule["direction"] == "in" else "to"]
    for key in keys:
        if draw(st.integers(0, 3)) > 0:
            rule[key] = _peer(draw, doc)
            if network and draw(st.booleans()):  # mostly its own guests: what the rules decide
                name = where[len("network:"):]
                guests = [f"vm:{v}" for v, body in doc["vms"].items() if any(nic["network"] == name for nic in body["nics"])]
                rule[key] = draw(st.sampled_from(guests + [where]))
    kind = draw(st.sampled_from(["tcp", "tcp", "udp", "icmp", "service", "none"]))
    if kind == "tcp":
        rule["tcp"] = draw(st.sampled_from(RULE_TCP + tuple(FLOW_TCP)))
    elif kind == "udp":
        rule["udp"] = draw(st.sampled_from(RULE_UDP + tuple(FLOW_UDP)))
    elif kind == "icmp":
        rule["icmp"] = "echo-request"
    elif kind == "service":
        rule["service"] = draw(st.sampled_from(RULE_SERVICES))
    return rule


def _all_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for _where, rules in _rule_lists(doc, create=False) for rule in rules]


def _scopable(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Rules whose scope a mutation can change: a two-NIC VM's (`nic:`) and host rules (`interface:`)."""
    out = [("nic", rule) for vm in doc["vms"].values() if len(vm["nics"]) > 1 for rule in vm.get("rules") or []]
    host_lists = [doc.get("host_rules") or []] + [host.get("rules") or [] for host in doc["hosts"].values()]
    return out + [("interface", rule) for rules in host_lists for rule in rules if "security_group" not in rule]


def _mutate_scope(draw: st.DrawFn, doc: dict[str, Any]) -> str:
    """A rule moved to another NIC or interface, scoped, or its scope dropped (issue 18)."""
    key, rule = draw(st.sampled_from(_scopable(doc)))
    before = rule.get(key)
    choices: list[Any] = [[0], [1], [NIC_NAMES[1]], [0, 1], None] if key == "nic" else [*INTERFACES, None]
    after = draw(st.sampled_from([c for c in choices if c != before]))
    if after is None:
        rule.pop(key, None)
    else:
        rule[key] = after
    return f"{key} of {rule['id']}: {before} -> {after}"


def _mutate(draw: st.DrawFn, doc: dict[str, Any], serial: int) -> str:
    """Change `doc` in place (never its VMs, NICs, addresses or nodes); returns what was done."""
    rules = _all_rules(doc)
    ported = [r for r in rules if "tcp" in r or "udp" in r or "service" in r]
    kinds = ["action", "add", "add", "default", "zone"] + (["port", "port"] if ported else []) + (["remove", "reorder"] if rules else [])
    kinds += ["group", "group"] if doc.get("groups") else []
    isolated = [n for n, body in doc["networks"].items() if body.get("isolated")]
    kinds += ["isolated", "isolated", "isolate"] if isolated else ["isolate"]
    routed = [n for n, body in doc["networks"].items() if body.get("mode")]
    kinds += ["mode", "services", "forward", "forward", "translate"] if routed else []
    kinds += ["network rule"] + (["reply guard"] if (doc.get("filters") or {}).get("guard1") else [])
    kinds += ["scope"] if _scopable(doc) else []
    kind = draw(st.sampled_from(kinds))
    if kind == "scope":
        return _mutate_scope(draw, doc)
    if kind in ("mode", "services", "forward", "translate", "network rule", "reply guard"):
        return _mutate_around_chains(draw, doc, kind, serial)
    if kind == "action":
        if not rules:
            kind = "add"
        else:
            rule = draw(st.sampled_from(rules))
            rule["action"] = draw(st.sampled_from([a for a in ACTIONS if a != rule["action"]]))
            return f"action of {rule['id']} -> {rule['action']}"
    if kind == "add" or kind == "isolated":
        lists = _rule_lists(doc, create=True)
        if kind == "isolated":
            lists = [(w, r) for w, r in lists if w.startswith("network:")]
        where, target = draw(st.sampled_from(lists))
        rule = _new_rule(draw, doc, where, serial)
        target.insert(draw(st.integers(0, len(target))), rule)
        return f"added {rule} to {where}"
    if kind == "isolate":
        name = draw(st.sampled_from(sorted(doc["networks"])))
        body = doc["networks"][name]
        if body.pop("isolated", False):
            body.pop("rules", None)
            return f"network {name} no longer isolated"
        body["isolated"] = True
        return f"network {name} isolated"
    if kind == "port":
        rule = draw(st.sampled_from(ported))
        for key in ("tcp", "udp", "service"):
            rule.pop(key, None)
        if draw(st.booleans()):
            rule["tcp"] = draw(st.sampled_from(RULE_TCP + tuple(FLOW_TCP)))
        else:
            rule["udp"] = draw(st.sampled_from(RULE_UDP + tuple(FLOW_UDP)))
        return f"ports of {rule['id']} -> {rule.get('tcp', rule.get('udp'))}"
    if kind == "remove":
        where, target = draw(st.sampled_from([(w, r) for w, r in _rule_lists(doc, create=False) if r]))
        rule = target.pop(draw(st.integers(0, len(target) - 1)))
        return f"removed {rule['id']} from {where}"
    if kind == "reorder":
        where, target = draw(st.sampled_from([(w, r) for w, r in _rule_lists(doc, create=False) if r]))
        if len(target) < 2:
            target.append(_new_rule(draw, doc, where, serial))
            return f"appended a rule to {where}"
        i = draw(st.integers(0, len(target) - 2))
        target[i], target[i + 1] = target[i + 1], target[i]
        return f"swapped {target[i + 1]['id']} and {target[i]['id']}"
    if kind == "default":
        owners: list[tuple[str, dict[str, Any], str]] = [("settings.default", doc["settings"], "default"), ("settings.host_default", doc["settings"], "host_default")]
        owners += [(f"zone {z}", body, "default") for z, body in (doc.get("zones") or {}).items()]
        owners += [(f"vm {v}", body, "default") for v, body in doc["vms"].items()]
        what, body, key = draw(st.sampled_from(owners))
        current = body.setdefault(key, {})
        direction = draw(st.sampled_from(["in", "out"]))
        current[direction] = draw(st.sampled_from([a for a in ACTIONS if a != current.get(direction)]))
        return f"{what}.{direction} -> {current[direction]}"
    if kind == "zone":
        vm = draw(st.sampled_from(sorted(doc["vms"])))
        zones = sorted(doc.get("zones") or {})
        choices = [z for z in zones + [None] if z != doc["vms"][vm].get("zone")]
        zone = draw(st.sampled_from(choices))
        if zone is None:
            doc["vms"][vm].pop("zone", None)
        else:
            doc["vms"][vm]["zone"] = zone
        return f"vm {vm} moved to zone {zone}"
    # group: a member added, removed, or moved to another group
    groups = doc["groups"]
    name = draw(st.sampled_from(sorted(groups)))
    body = groups[name]
    members = body["members"] if isinstance(body, dict) else body
    action = draw(st.sampled_from(["add", "remove"] if len(members) > 1 else ["add"]))
    if action == "remove":
        gone = members.pop(draw(st.integers(0, len(members) - 1)))
        return f"{gone} removed from group {name}"
    member = _peer(draw, doc)
    if member == f"group:{name}" or member == "any" or member in members:
        member = f"vm:{draw(st.sampled_from(sorted(doc['vms'])))}"
    if member in members or member.startswith("group:"):
        assume(False)
    members.append(member)
    return f"{member} added to group {name}"


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=140)


@dataclass(frozen=True)
class Pair:
    old: str
    new: str
    desc: PolicyDesc
    changes: tuple[str, ...]


@st.composite
def pairs(draw: st.DrawFn, most: int = 2, differing: bool = False) -> Pair:
    """A random policy and a mutation of it: rules, defaults, group members, zone
    membership, a network's rules or isolation, network modes, host services, port
    forwards, masquerade/snat, reply-dropping guard rules; the VMs, NICs and
    addresses stay. `differing`: mostly (4 in 5) pairs that diff finds different."""
    text, desc = draw(policies())
    doc = yaml.safe_load(text)
    changes = tuple(_mutate(draw, doc, serial) for serial in range(draw(st.integers(1, most))))
    if doc.get("nat") == []:
        doc.pop("nat")
    new = dump(doc)
    try:
        new_policy = load_policy_text(new)
    except PolicyError:
        assume(False)
    if differing and draw(st.integers(0, 4)) > 0:
        assume(not diff_policies(load_policy_text(text), new_policy).identical)
    return Pair(text, new, desc, changes)


# ================================================================ hand-written cases

BASE = """\
version: 1
settings:
  default: {in: drop, out: accept}
  host_default: {in: accept}
hosts:
  node1: {address: [192.168.100.11, "fd00:100::11"], uplink: eth0}
  node2: {address: [192.168.100.12, "fd00:100::12"], uplink: eth0}
networks:
  front: {bridge: vmbr1, subnets: [10.0.1.0/24, "fd00:1::/64"]}
  back: {bridge: vmbr2, subnets: [10.0.2.0/24, "fd00:2::/64"]}
  nas:
    bridge: vmbr3
    subnets: [10.0.3.0/24, "fd00:3::/64"]
    isolated: true
    rules:
      - {id: nas-nfs, action: accept, to: vm:nfs1, service: nfs}
groups:
  admins: [192.168.100.0/24, "fd00:100::/64"]
  monitors: [vm:mon1]
zones:
  web:
    rules:
      - {id: web-https, direction: in, action: accept, service: https}
      - {id: web-to-app, direction: out, action: accept, to: zone:app, tcp: 8080}
  app:
    default: {out: drop}
    rules:
      - {id: app-from-web, direction: in, action: accept, from: zone:web, tcp: 8080}
      - {id: app-to-db, direction: out, action: accept, to: zone:db, service: postgres}
      - {id: app-dns, direction: out, action: accept, udp: 53, comment: resolvers}
  db:
    default: {in: drop, out: drop}
    rules:
      - {id: db-from-app, direction: in, action: accept, from: zone:app, service: postgres}
global_rules:
  - {id: ssh-admins, direction: in, action: accept, from: group:admins, service: ssh}
  - {id: metrics, direction: in, action: accept, from: group:monitors, tcp: 9100}
  - {direction: out, action: accept, to: group:monitors, icmp: echo-request}
vms:
  web1:
    host: node1
    zone: web
    nics: [{network: front, ips: [10.0.1.10, "fd00:1::10"]}]
  app1:
    host: node1
    zone: app
    nics: [{network: back, ips: [10.0.2.20, "fd00:2::20"]}]
  db1:
    host: node2
    zone: db
    nics: [{network: back, ips: [10.0.2.30, "fd00:2::30"]}]
  mon1:
    host: node2
    nics: [{network: back, ips: [10.0.2.40, "fd00:2::40"]}]
  t1:
    host: node1
    default: {in: accept}
    nics: [{network: nas, ips: [10.0.3.11, "fd00:3::11"]}]
  t2:
    host: node2
    default: {in: accept}
    nics: [{network: nas, ips: [10.0.3.12, "fd00:3::12"]}]
  nfs1:
    host: node2
    rules:
      - {id: nfs-in, direction: in, action: accept, from: network:nas, service: nfs}
    nics: [{network: nas, ips: [10.0.3.2, "fd00:3::2"]}]
"""


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} is not in the policy exactly once"
    return text.replace(old, new)


def diff_texts(old: str, new: str) -> DiffResult:
    return diff_policies(load_policy_text(old), load_policy_text(new))


def _row(result: DiffResult, change: str, dst: str, service: str) -> DiffRow:
    found = [r for r in result.rows if r.change == change and dst in r.dst and service in r.services]
    assert len(found) == 1, f"expected one {change} row to {dst} for {service}: {json.dumps(result.to_json(), indent=1, default=str)}"
    return found[0]


def _decided(outcome: Any) -> tuple[str, str, str]:
    decision = outcome.decisive
    return decision.stage, decision.label, decision.action


# -- no difference -----------------------------------------------------------------------


def test_the_same_policy_is_identical() -> None:
    result = diff_texts(BASE, BASE)
    assert result.identical and result.rows == [] and result.endpoints == []
    assert result.to_json() == {"identical": True, "flows": [], "endpoints": [], "notes": []}


@pytest.mark.parametrize(
    "old, new",
    [
        pytest.param(  # an inbound and an outbound rule never overlap
            "      - {id: web-https, direction: in, action: accept, service: https}\n      - {id: web-to-app, direction: out, action: accept, to: zone:app, tcp: 8080}\n",
            "      - {id: web-to-app, direction: out, action: accept, to: zone:app, tcp: 8080}\n      - {id: web-https, direction: in, action: accept, service: https}\n",
            id="zone-rules",
        ),
        pytest.param(  # ssh and 9100 from different peers, in the first position
            "  - {id: ssh-admins, direction: in, action: accept, from: group:admins, service: ssh}\n  - {id: metrics, direction: in, action: accept, from: group:monitors, tcp: 9100}\n",
            "  - {id: metrics, direction: in, action: accept, from: group:monitors, tcp: 9100}\n  - {id: ssh-admins, direction: in, action: accept, from: group:admins, service: ssh}\n",
            id="global-rules",
        ),
        pytest.param(  # app-to-db and app-dns: tcp 5432 and udp 53
            "      - {id: app-to-db, direction: out, action: accept, to: zone:db, service: postgres}\n      - {id: app-dns, direction: out, action: accept, udp: 53, comment: resolvers}\n",
            "      - {id: app-dns, direction: out, action: accept, udp: 53, comment: resolvers}\n      - {id: app-to-db, direction: out, action: accept, to: zone:db, service: postgres}\n",
            id="accepts",
        ),
    ],
)
def test_reordering_rules_that_do_not_overlap_reports_nothing(old: str, new: str) -> None:
    assert diff_texts(BASE, edit(BASE, old, new)).identical


def test_reordering_rules_that_overlap_is_reported() -> None:
    """The contrast: a reject moved before the accept it overlaps changes behaviour."""
    no_ssh = "  - {id: no-ssh, direction: in, action: reject, tcp: 22}\n"
    after = edit(BASE, "  - {direction: out, action: accept, to: group:monitors, icmp: echo-request}\n",
                 "  - {direction: out, action: accept, to: group:monitors, icmp: echo-request}\n" + no_ssh)
    before = edit(BASE, "  - {id: ssh-admins,", no_ssh + "  - {id: ssh-admins,")
    result = diff_texts(after, before)
    assert {r.change for r in result.rows} == {"closed"}
    row = _row(result, "closed", "vm:web1", "tcp 22")
    # the admins: the nodes and the rest of 192.168.100.0/24 and fd00:100::/64
    assert {"host:node1", "host:node2"} <= row.src and any(label.startswith("outside") for label in row.src)
    assert _decided(row.old)[1:] == ("ssh-admins", "accept") and _decided(row.new)[1:] == ("no-ssh", "reject")


def test_renaming_a_group_and_its_references_reports_nothing() -> None:
    renamed = BASE.replace("monitors", "observers").replace("admins", "operators")
    assert "group:observers" in renamed and "operators:" in renamed
    assert diff_texts(BASE, renamed).identical


def test_renaming_a_zone_and_its_references_reports_nothing() -> None:
    renamed = edit(BASE, "  app:\n    default", "  backend:\n    default")
    renamed = renamed.replace("zone: app", "zone: backend").replace("zone:app", "zone:backend")
    assert diff_texts(BASE, renamed).identical


def test_changing_ids_and_comments_reports_nothing() -> None:
    changed = edit(BASE, "comment: resolvers", "comment: the resolvers of the app tier")
    changed = edit(changed, "id: web-https,", "id: https-in,")
    changed = edit(changed, "  - {direction: out, action: accept, to: group:monitors", "  - {id: ping-monitors, direction: out, action: accept, to: group:monitors")
    assert diff_texts(BASE, changed).identical


def _split(text: str, directory: Path) -> Path:
    """The policy as two files of a directory: the VMs apart from everything else
    (the rule without an id gets another default id, `base:<line>`)."""
    head, _, vms = text.partition("vms:\n")
    directory.mkdir()
    (directory / "base.yaml").write_text(head)
    (directory / "vms.yaml").write_text("version: 1\nvms:\n" + vms)
    return directory


def test_splitting_a_file_into_a_directory_reports_nothing(tmp_path: Path) -> None:
    whole = tmp_path / "policy.yaml"
    whole.write_text(BASE)
    split = _split(BASE, tmp_path / "policy.d")
    assert len(list(split.iterdir())) == 2
    assert diff_policies(load_policy(whole), load_policy(split)).identical


# -- differences ---------------------------------------------------------------------------


def test_a_port_added_to_a_zone_rule_opens_it_from_every_peer_the_rule_admits() -> None:
    result = diff_texts(BASE, edit(BASE, "action: accept, service: https}", "action: accept, tcp: [443, 8443]}"))
    assert [r.change for r in result.rows] == ["opened"] and not result.endpoints
    row = result.rows[0]
    assert row.dst == {"vm:web1"} and row.services == ("tcp 8443",) and row.when == "always"
    # every peer whose own side lets it send: not app1/db1 (outbound drop by default)
    assert row.src == {"outside: any", "host:node1", "host:node2", "vm:mon1", "vm:nfs1", "vm:t1", "vm:t2"}
    assert (row.old.verdict, row.new.verdict) == ("drop", "accept")
    assert _decided(row.old) == ("vm:web1 in", "default-in", "drop")
    assert _decided(row.new) == ("vm:web1 in", "web-https", "accept")
    assert row.new.decisive.where.endswith("policy.yaml:23")  # type: ignore[union-attr]


def test_an_accept_turned_into_a_reject_closes_it() -> None:
    result = diff_texts(BASE, edit(BASE, "id: web-https, direction: in, action: accept", "id: web-https, direction: in, action: reject"))
    assert [r.change for r in result.rows] == ["closed"]
    row = result.rows[0]
    assert row.dst == {"vm:web1"} and row.services == ("tcp 443",)
    assert row.src == {"outside: any", "host:node1", "host:node2", "vm:mon1", "vm:nfs1", "vm:t1", "vm:t2"}
    assert _decided(row.old) == ("vm:web1 in", "web-https", "accept")
    assert _decided(row.new) == ("vm:web1 in", "web-https", "reject")


def test_a_vm_moved_to_another_zone_gets_that_zones_rules() -> None:
    result = diff_texts(BASE, edit(BASE, "  mon1:\n    host: node2\n", "  mon1:\n    host: node2\n    zone: web\n"))
    assert {r.change for r in result.rows} == {"opened"}
    https = _row(result, "opened", "vm:mon1", "tcp 443")
    assert https.dst == {"vm:mon1"} and "outside: any" in https.src and "vm:web1" in https.src
    assert _decided(https.old) == ("vm:mon1 in", "default-in", "drop")
    assert _decided(https.new) == ("vm:mon1 in", "web-https", "accept")
    # app-from-web admits zone:web, which now holds mon1
    app = _row(result, "opened", "vm:app1", "tcp 8080")
    assert app.src == {"vm:mon1"} and app.dst == {"vm:app1"}
    assert _decided(app.new) == ("vm:app1 in", "app-from-web", "accept")
    assert all("vm:mon1" in r.src | r.dst for r in result.rows)


def test_a_vm_leaving_a_zone_loses_what_the_zone_opened() -> None:
    result = diff_texts(BASE, edit(BASE, "  app1:\n    host: node1\n    zone: app\n", "  app1:\n    host: node1\n"))
    db = _row(result, "closed", "vm:db1", "tcp 5432")
    assert db.src == {"vm:app1"}
    assert _decided(db.old) == ("vm:db1 in", "db-from-app", "accept") and _decided(db.new) == ("vm:db1 in", "default-in", "drop")
    # and its outbound default is settings' accept now, not the zone's drop
    out = [r for r in result.rows if r.change == "opened" and r.src == {"vm:app1"} and "outside: any" in r.dst]
    assert out and all(r.old.verdict == "drop" and _decided(r.old)[:2] == ("vm:app1 out", "default-out") for r in out)


def test_a_group_member_added_opens_what_the_group_is_allowed() -> None:
    result = diff_texts(BASE, edit(BASE, "monitors: [vm:mon1]", "monitors: [vm:mon1, vm:web1]"))
    assert result.rows and {r.change for r in result.rows} == {"opened"}
    assert {r.services for r in result.rows} == {("tcp 9100",)}
    assert all(r.src == {"vm:web1"} for r in result.rows)
    # t1 and t2 accepted everything already; web1 does not reach itself
    assert set().union(*(r.dst for r in result.rows)) == {"vm:app1", "vm:db1", "vm:mon1", "vm:nfs1"}
    assert all(_decided(r.new)[1:] == ("metrics", "accept") for r in result.rows)


def test_a_default_changed_from_drop_to_reject_is_a_change_not_an_opening() -> None:
    result = diff_texts(BASE, edit(BASE, "db:\n    default: {in: drop, out: drop}", "db:\n    default: {in: reject, out: drop}"))
    assert result.rows and {r.change for r in result.rows} == {"changed"}
    assert all(r.dst == {"vm:db1"} for r in result.rows)
    assert all(_decided(r.old) == ("vm:db1 in", "default-in", "drop") and _decided(r.new) == ("vm:db1 in", "default-in", "reject") for r in result.rows)
    # what db1 accepts stays accepted: postgres from app1, ssh from the admins, 9100 from mon1
    for flow in (Flow("vm:app1", "vm:db1", "tcp", 5432, 4), Flow("host:node1", "vm:db1", "tcp", 22, 4), Flow("vm:mon1", "vm:db1", "tcp", 9100, 6)):
        assert rows_naming(result, flow) == ([], False), flow
    # what it dropped it now rejects, from anyone who can send it
    for flow in (Flow("vm:app1", "vm:db1", "udp", 53, 4), Flow("outside:203.0.113.10", "vm:db1", "tcp", 80, 4), Flow("vm:web1", "vm:db1", "icmp", None, 6)):
        certain, _unsure = rows_naming(result, flow)
        assert certain and {r.change for r in certain} == {"changed"}, flow  # rows name no family: v4 and v6 rows may both hold it


def test_a_settings_default_changed_affects_the_vms_that_inherit_it() -> None:
    result = diff_texts(BASE, edit(BASE, "default: {in: drop, out: accept}", "default: {in: drop, out: drop}"))
    senders = set().union(*(r.src for r in result.rows))
    # web1 (zone web has no default), mon1 and nfs1 (no zone, no default) inherit it;
    # app1 and db1 have their zone's; t1/t2 set only `in`, so inherit `out`
    assert {s for s in senders if s.startswith("vm:")} == {"vm:web1", "vm:mon1", "vm:nfs1", "vm:t1", "vm:t2"}
    assert {r.change for r in result.rows} == {"closed"}
    assert all(_decided(r.new)[1:] == ("default-out", "drop") for r in result.rows)


def test_a_rule_added_to_an_isolated_network_opens_it_between_its_guests() -> None:
    new = edit(BASE, "      - {id: nas-nfs", "      - {id: nas-ssh, action: accept, from: vm:t1, to: vm:t2, tcp: 22}\n      - {id: nas-nfs")
    result = diff_texts(BASE, new)
    assert [r.change for r in result.rows] == ["opened"]
    row = result.rows[0]
    assert (row.src, row.dst, row.services) == ({"vm:t1"}, {"vm:t2"}, ("tcp 22",))
    assert _decided(row.old)[:1] == ("network:nas",) and row.old.verdict == "drop"
    assert row.new.verdict == "accept" and any(d.label == "nas-ssh" for d in row.new.decisions)


def test_an_isolated_network_rule_turned_into_a_drop_closes_nfs() -> None:
    result = diff_texts(BASE, edit(BASE, "{id: nas-nfs, action: accept", "{id: nas-nfs, action: drop"))
    row = _row(result, "closed", "vm:nfs1", "tcp 111,2049")
    assert row.src == {"vm:t1", "vm:t2"}


def test_a_network_no_longer_isolated_opens_its_guests_to_each_other() -> None:
    result = diff_texts(BASE, edit(BASE, "    isolated: true\n    rules:\n      - {id: nas-nfs, action: accept, to: vm:nfs1, service: nfs}\n", ""))
    assert {r.change for r in result.rows} == {"opened"}
    assert Flow("vm:t1", "vm:t2", "tcp", 22, 4) in {f for r in result.rows for f in [Flow("vm:t1", "vm:t2", "tcp", 22, 4)] if row_covers(r, f)}


def test_isolated_network_guests_reached_through_a_changed_vm_chain() -> None:
    """What diff does see on an isolated network: a guest's own rules changed, with
    the network's rules deciding on the peers' side."""
    new = edit(BASE, "  t2:\n    host: node2\n    default: {in: accept}\n", "  t2:\n    host: node2\n    default: {in: reject}\n")
    result = diff_texts(BASE, new)
    # t1 -> t2 was dropped by the network (only nfs is open on it, and only to nfs1): unchanged
    assert rows_naming(result, Flow("vm:t1", "vm:t2", "tcp", 22, 4)) == ([], False)
    # from outside it was accepted by t2's default, now rejected
    certain, _ = rows_naming(result, Flow("outside:203.0.113.10", "vm:t2", "tcp", 80, 4))
    assert [r.change for r in certain] == ["closed"]
    assert all(_decided(r.new) == ("vm:t2 in", "default-in", "reject") for r in result.rows)


GUARDED = """\
version: 1
hosts:
  node1: {address: [192.168.100.11]}
networks:
  net1: {bridge: vmbr1, subnets: [10.1.0.0/24]}
filters:
  no-ssh-in:
    rules:
      - {direction: in, action: drop, tcp: 22}
vms:
  a:
    host: node1
    nics: [{network: net1, ips: [10.1.0.10]}]
  b:
    host: node1
    default: {in: accept}
    nics: [{network: net1, ips: [10.1.0.11], filters: [no-ssh-in]}]
"""


def test_a_reject_behind_a_guard_drop_changes_nothing() -> None:
    """b's guard drops tcp/22 before any chain: a's new outbound reject of tcp/22
    changes nothing towards b (trace: drop before and after), only towards the rest."""
    new = edit(GUARDED, "  a:\n    host: node1\n", "  a:\n    host: node1\n    rules:\n      - {id: no-ssh-out, direction: out, action: reject, tcp: 22}\n")
    old_policy, new_policy = load_policy_text(GUARDED), load_policy_text(new)
    spec = FlowSpec(proto="tcp", port=22, family=4)
    assert trace(Analyzer(old_policy), "vm:a", "vm:b", spec).verdict == trace(Analyzer(new_policy), "vm:a", "vm:b", spec).verdict == "drop"
    result = diff_policies(old_policy, new_policy)
    assert result.rows and all(r.change == "closed" for r in result.rows)
    assert rows_naming(result, Flow("vm:a", "vm:b", "tcp", 22, 4)) == ([], False)


NETWORK_FIRST = """\
version: 1
hosts:
  node1: {address: [192.168.100.11]}
networks:
  nas: {bridge: vmbr1, subnets: [10.1.0.0/24], isolated: true}
vms:
  a:
    host: node1
    nics: [{network: nas, ips: [10.1.0.10]}]
  b:
    host: node1
    default: {in: reject}
    nics: [{network: nas, ips: [10.1.0.11]}]
"""


def test_an_isolated_network_drop_comes_before_the_receivers_reject() -> None:
    """a -> b is dropped by the isolated network (before b's `in: reject`) in both
    policies: a's outbound default turned to drop changes nothing towards b."""
    new = edit(NETWORK_FIRST, "  a:\n    host: node1\n", "  a:\n    host: node1\n    default: {out: drop}\n")
    old_policy, new_policy = load_policy_text(NETWORK_FIRST), load_policy_text(new)
    spec = FlowSpec(proto="tcp", port=22, family=4)
    assert trace(Analyzer(old_policy), "vm:a", "vm:b", spec).verdict == trace(Analyzer(new_policy), "vm:a", "vm:b", spec).verdict == "drop"
    result = diff_policies(old_policy, new_policy)
    assert {r.change for r in result.rows} == {"closed"}  # towards the node and the outside
    assert rows_naming(result, Flow("vm:a", "vm:b", "tcp", 22, 4)) == ([], False)


def test_endpoints_added_removed_or_readdressed_are_listed_not_compared() -> None:
    new = edit(BASE, "  mon1:\n    host: node2\n    nics: [{network: back, ips: [10.0.2.40,", "  mon1:\n    host: node2\n    nics: [{network: back, ips: [10.0.2.41,")
    new += "  extra1:\n    host: node1\n    nics: [{network: front, ips: [10.0.1.50]}]\n"
    result = diff_texts(BASE, new)
    assert not result.identical
    assert {(e["endpoint"], e["change"]) for e in result.endpoints} == {("vm:mon1 nic 0", "readdressed"), ("vm:extra1 nic 0", "added")}
    assert result.notes and "not compared" in result.notes[0]


# -- the CLI ---------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str]:
    from zonewall.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout


def test_cli_exit_status_and_json(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(BASE)
    same = _split(BASE.replace("monitors", "observers"), tmp_path / "same.d")
    new = tmp_path / "new.yaml"
    new.write_text(edit(BASE, "id: web-https, direction: in, action: accept", "id: web-https, direction: in, action: reject"))

    code, out = _cli("diff", str(old), str(same), "--json")
    assert code == 0, out
    assert json.loads(out) == {"identical": True, "flows": [], "endpoints": [], "notes": []}
    code, out = _cli("diff", str(old), str(same))
    assert code == 0 and "no difference" in out

    code, out = _cli("diff", str(old), str(new), "--json")
    assert code == 1, out
    document = json.loads(out)
    assert document["identical"] is False and document["endpoints"] == [] and len(document["flows"]) == 1
    flow = document["flows"][0]
    assert set(flow) == {"change", "from", "to", "services", "when", "old", "new"}
    assert flow["change"] == "closed" and flow["to"] == ["vm:web1"] and flow["services"] == ["tcp 443"] and flow["when"] == "always"
    assert flow["from"] == sorted(flow["from"]) and "outside: any" in flow["from"]
    assert flow["old"]["verdict"] == "accept" and flow["new"]["verdict"] == "reject"
    for side, action, where in (("old", "accept", "old.yaml:23"), ("new", "reject", "new.yaml:23")):
        decided = flow[side]["decided_by"]
        assert (decided["stage"], decided["rule"], decided["action"], decided["level"]) == ("vm:web1 in", "web-https", action, "zone")
        assert decided["where"].endswith(where)

    code, out = _cli("diff", str(old), str(new))
    assert code == 1 and "web-https" in out and "closed" in out


def test_cli_bad_policy_exits_2(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(BASE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("zone: web\n", "zone: nowhere\n"))
    code, _out = _cli("diff", str(old), str(bad), "--json")
    assert code == 2


# -- properties over random policies -------------------------------------------------------

PROPERTY_SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=False,
)


def _rename_refs(doc: dict[str, Any], kind: str, names: dict[str, str]) -> None:
    """Rename `kind:NAME` references (also negated) everywhere they can appear."""

    def one(ref: str) -> str:
        bang = "!" if ref.startswith("!") else ""
        k, _, name = ref.lstrip("!").partition(":")
        return f"{bang}{k}:{names[name]}" if k == kind and name in names else ref

    def many(value: Any) -> Any:
        return [one(v) for v in value] if isinstance(value, list) else one(value) if isinstance(value, str) else value

    for _where, rules in _rule_lists(doc, create=False):
        for rule in rules:
            for key in ("from", "to"):
                if key in rule:
                    rule[key] = many(rule[key])
    for name, body in (doc.get("groups") or {}).items():
        if isinstance(body, dict):
            body["members"] = many(body["members"])
        else:
            doc["groups"][name] = many(body)
    if "management" in doc.get("settings", {}):
        doc["settings"]["management"] = many(doc["settings"]["management"])


def _no_op_edits(doc: dict[str, Any]) -> dict[str, Any]:
    """Rename every group and zone (and their references), change every rule id and
    comment, list the VMs and zones in reverse, and swap neighbouring rules of
    opposite directions (an inbound and an outbound rule never meet a packet together)."""
    doc = copy.deepcopy(doc)
    groups = {g: f"team-{g}" for g in doc.get("groups") or {}}
    _rename_refs(doc, "group", groups)
    if "groups" in doc:
        doc["groups"] = {groups[g]: body for g, body in doc["groups"].items()}
    zones = {z: f"tier-{z}" for z in doc.get("zones") or {}}
    _rename_refs(doc, "zone", zones)
    doc["zones"] = {zones[z]: body for z, body in reversed(list((doc.get("zones") or {}).items()))}
    for vm in doc["vms"].values():
        if "zone" in vm:
            vm["zone"] = zones[vm["zone"]]
    doc["vms"] = dict(reversed(list(doc["vms"].items())))
    for _where, rules in _rule_lists(doc, create=False):
        for rule in rules:
            rule["id"] = "renamed-" + rule["id"]
            rule["comment"] = "edited"
        for i in range(len(rules) - 1):
            a, b = rules[i], rules[i + 1]
            if {a.get("direction"), b.get("direction")} == {"in", "out"}:
                rules[i], rules[i + 1] = b, a
    return doc


def _write_split(doc: dict[str, Any], directory: Path) -> Path:
    """The document as two files: definitions, then zones, rules and VMs."""
    directory.mkdir(parents=True)
    second = ("zones", "global_rules", "host_rules", "vms")
    (directory / "a-base.yaml").write_text(dump({k: v for k, v in doc.items() if k not in second}))
    (directory / "b-rules.yaml").write_text(dump({"version": 1, **{k: v for k, v in doc.items() if k in second}}))
    return directory


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(policies())
def test_edits_without_effect_report_nothing_on_random_policies(generated: tuple[str, PolicyDesc]) -> None:
    import tempfile

    text, _desc = generated
    edited = _no_op_edits(yaml.safe_load(text))
    with tempfile.TemporaryDirectory() as tmp:
        split = load_policy(_write_split(edited, Path(tmp) / "policy"))
    result = diff_policies(load_policy_text(text), split)
    assert result.identical, f"edits without effect reported as differences\n--- policy\n{text}\n--- edited and split\n{dump(edited)}\n--- diff\n{json.dumps(result.to_json(), indent=1, default=str)}"


# diff still evaluates an isolated network's chain after the receiver's in chain
# (test_an_isolated_network_drop_comes_before_the_receivers_reject, xfail): until it
# does not, random pairs compare accepted-or-not only, and `changed` rows as refused
# both times. Set to True when that test passes.
DIFF_ORDERS_NETWORK_REFUSALS = True

TRACE_SERVICES = [("tcp", port) for port in FLOW_TCP] + [("udp", port) for port in FLOW_UDP] + [("icmp", None)]


def every_flow(desc: PolicyDesc) -> list[Any]:
    """Every source x target x service x family of a generated policy (policygen's
    flows, plus VMs and nodes towards the internet)."""
    from tests.analysis.policygen import Flow as GenFlow

    targets = desc.targets() + [f"outside:{INTERNET[4]}", f"outside:{INTERNET[6]}"]
    out = []
    for src in desc.sources():
        for dst in targets:
            if desc.entity(src) == desc.entity(dst) or (src.startswith("outside:") and dst.startswith("outside:")):
                continue
            for family in sorted(desc.families(src) & desc.families(dst)):
                out += [GenFlow(src, dst, proto, port, family) for proto, port in TRACE_SERVICES]
    return out


def _expected_change(old: str, new: str) -> str:
    return "opened" if new == "accept" else "closed" if old == "accept" else "changed"


@settings(PROPERTY_SETTINGS, max_examples=60, phases=(Phase.explicit, Phase.generate))  # shrinking ~2600 traces an example takes minutes
@given(pairs())
def test_diff_agrees_with_trace_on_random_pairs(pair: Pair) -> None:
    """Over every flow of random pairs: a flow whose trace verdict differs between
    the two policies is reported with that change; a flow a row names changes that
    way in at least one family (rows name no family); the rest keep their verdict."""
    old, new = load_policy_text(pair.old), load_policy_text(pair.new)
    result = diff_policies(old, new)
    assert not result.endpoints
    a_old, a_new = Analyzer(old), Analyzer(new)

    def same(a: str, b: str) -> bool:
        return a == b if DIFF_ORDERS_NETWORK_REFUSALS else (a == "accept") == (b == "accept")

    seen: dict[tuple[object, ...], dict[int, tuple[str, str, Flow]]] = {}
    problems = []
    for generated in every_flow(pair.desc):
        spec = FlowSpec(proto=generated.proto, port=generated.port, family=generated.family)
        before = trace(a_old, generated.source, generated.target, spec)
        after = trace(a_new, generated.source, generated.target, spec)
        flow = Flow(before.src.label, before.dst.label, generated.proto, generated.port, generated.family)
        seen.setdefault((flow.src, flow.dst, flow.proto, flow.port), {})[flow.family] = (before.verdict, after.verdict, flow)
        if not same(before.verdict, after.verdict):
            certain, unsure = rows_naming(result, flow)
            change = _expected_change(before.verdict, after.verdict)
            if not unsure and change not in {r.change for r in certain}:
                problems.append(f"{flow}: trace {before.verdict} -> {after.verdict} ({change}), diff reports {[r.change for r in certain] or 'nothing'}")
    where = Endpoints(old)
    for observed in seen.values():
        if not where.complete([flow for _b, _a, flow in observed.values()]):
            continue  # a family is sent from another NIC: the row may hold in that one
        for row in result.rows:
            if not any(row_covers(row, flow) for _b, _a, flow in observed.values()):
                continue
            if row.change == "changed" and not DIFF_ORDERS_NETWORK_REFUSALS:
                holds = any(b != "accept" and a != "accept" for b, a, _flow in observed.values())
            else:
                holds = any(b != a and _expected_change(b, a) == row.change for b, a, _flow in observed.values())
            if not holds:
                flow = next(iter(observed.values()))[2]
                verdicts = ", ".join(f"ipv{f}: {b} -> {a}" for f, (b, a, _x) in sorted(observed.items()))
                problems.append(f"{flow} (any family): diff reports {row.change} {json.dumps(row.to_json(), default=str)}, trace says {verdicts}")
    assert not problems, "\n".join(
        ["diff disagrees with trace", *problems[:20], "--- old", pair.old, "--- new", pair.new, f"--- changes: {pair.changes}", "--- diff", json.dumps(result.to_json(), indent=1, default=str)]
    )


@pytest.mark.parametrize(("old", "new"), [
    ("- {direction: in, action: accept, service: https}", "- {direction: in, action: accept, tcp: 8443}"),  # a zone rule open to everyone
    ("from: group:g34, tcp: [1000, 2000]}", "from: group:g34, tcp: [1000, 2001]}"),  # a zone rule naming a group
])
def test_a_diff_leaves_no_cycle_for_the_collector(old: str, new: str) -> None:
    """The controller diffs every revision with the collector paused and freezes what
    it keeps: a diff's state left in reference cycles would stay until a full
    collection (as the lint's did, tests/analysis/test_lint_shards.py)."""
    import gc

    text = synth.policy_text(60, nodes=2, zones=3, seed=1)
    assert text.count(old) >= 1
    before, after = load_policy_text(text), load_policy_text(text.replace(old, new, 1))
    gc.collect()
    result = diff_policies(before, after)
    assert result.rows
    assert gc.collect() == 0
