"""Hypothesis strategies for random but valid policies, and flows through them.

`policies()` draws `(yaml_text, PolicyDesc)`: a policy the loader accepts, and a
description of what a flow can go between. It has two nodes (node2 now and then
without IPv6); 1-3 bridged networks, dual-stack or IPv4-only, one maybe `isolated:
true` with network rules; 1-3 zones with partial or full defaults; 2-5 VMs over
both nodes (some without a zone, some single-family, at most one with a second NIC
on another network); groups with nested groups and exclusions; global, VM, zone,
host and node rules with overlapping ports and mixed actions (`from`/`to` as any,
vm:, zone:, group:, network:, host:, CIDRs, ranges and negated lists; services,
tcp/udp ports, icmp/icmpv6, `proto`, `family`, disabled and logged rules); user
services, one redefining a built-in; guard filters (clean-traffic and a custom
one with port/ICMP rules, on VMs or single NICs); management addresses; scopes
(`nic:` on the rules of a two-NIC VM, by index or NIC name; `interface:` on host
rules: the uplink, a bridge, a pattern, or an interface the node lacks).

`flows(desc)` draws `Flow`s: from a VM, a node or an outside address, to a VM (or
one NIC of a two-NIC VM), a node or (not from outside) an outside address, with a
tcp/udp port from the same pool as the rules, or ICMP echo-request, in a family
both ends have.

Network modes: now and then one network is routed by its node (libvirt's nat,
routed or isolated mode; its guests on one node, `host_services` sometimes), with
port forwards to its guests (open or left to their rules), IPv6 masquerade for a
nat network with IPv6, and snat/masquerade of a routed one behind its node. Network
rules appear on the isolated network and on any other (default accept). Guard
filters include rules that drop the replies of connections (trace judges the way
back).

Kept out on purpose, so that a flow has one verdict the lab can observe:
rate limits; schedules and source ports except ones that hold always or never
(the `always` schedule; sport ranges containing or missing every ephemeral port);
conntrack helpers (the data connection is not a flow of its own); flows the lab
cannot route whatever the rules say (`routable`); hairpin use of a forward.

Every name and address is fixed, so a failing example reads like a policy an
operator would write: networks net1..net3 are 10.N.0.0/24 (+ fd00:N::/64) with the
gateway at .1/::1, VM `vmI` has host part 10+I on each of its NICs, the nodes are
192.168.100.11/12 and fd00:100::11/12; outside sources are OUTSIDE.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import strategies as st

NODES = {"node1": ("192.168.100.11", "fd00:100::11"), "node2": ("192.168.100.12", "fd00:100::12")}

# Addresses outside every guest subnet and not owned by a node: flow sources from
# "the outside" (the lab gives them to its outside namespace). Each lies inside some
# of the literals below, so rules naming those literals match some of these flows.
OUTSIDE = (
    "203.0.113.10",  # internet
    "198.51.100.7",
    "192.168.100.50",  # management LAN, next to the nodes
    "10.200.0.5",  # inside 10.0.0.0/8 but in no guest subnet
    "2001:db8:ffff::10",
    "2001:db8:1::7",
    "fd00:100::50",
    "fd00:200::5",  # inside fd00::/8 but in no guest subnet
)

V4_LITERALS = (
    "198.51.100.0/24",
    "203.0.113.0/24",
    "203.0.113.10",
    "192.168.100.0/24",
    "192.168.100.11",
    "10.0.0.0/8",
    "10.1.0.0/24",
    "10.1.0.12/30",  # part of net1: vm2..vm5
    "10.2.0.10-10.2.0.13",  # part of net2: vm1..vm3
)
V6_LITERALS = (
    "2001:db8::/32",
    "2001:db8:ffff::/48",
    "fd00::/8",
    "fd00:100::/64",
    "fd00:100::12",
    "fd00:1::/64",
    "fd00:1::10/126",  # part of net1: vm1..vm3
    "fd00:2::12-fd00:2::20",  # part of net2: vm2..vm5
)

# Ports overlap on purpose: 8050 and 8080 are inside 8000-8100, 53 is in dns (tcp and udp).
RULE_TCP = (22, 80, 443, 5432, 8080, "8000-8100", [22, 443], [80, "8000-8100"], [5432, 8080])
RULE_UDP = (53, 123, 8080, "8000-8100", [53, 123])
RULE_SERVICES = ("ssh", "http", "https", "postgres", "ping", "dns", "http-alt", "ntp")
APP_SERVICE = {"tcp": [8080, "8050-8060"], "udp": [8050]}  # a user-defined service

FLOW_TCP = (22, 80, 443, 5432, 8080, 8050, 9000, 9440)
FLOW_UDP = (53, 123, 8050, 8080)
# port forwards: (protocol, listen port on the node, port on the guest)
FORWARD_PORTS = (("tcp", 8443, 443), ("tcp", 2222, 22), ("tcp", 8080, 8080), ("udp", 5353, 53))

ACTIONS = ("accept", "drop", "reject")

# scopes (issue 18): a two-NIC VM names its NICs so that `nic:` can use either form;
# the lab gives every node the uplink eth0 and a bridge vmbrN per network netN
NIC_NAMES = ("lan", "wan")
INTERFACES = (["eth0"], ["vmbr*"], ["vmbr1"], ["vmbr2", "eth0"], ["eth*"], ["wg0"])

@dataclass(frozen=True)
class NicDesc:
    network: str
    ips: tuple[str, ...]

    def families(self) -> frozenset[int]:
        return frozenset(ipaddress.ip_address(ip).version for ip in self.ips)


@dataclass(frozen=True)
class VMDesc:
    name: str
    host: str
    nics: tuple[NicDesc, ...]

    def families(self) -> frozenset[int]:
        return frozenset().union(*(nic.families() for nic in self.nics))


@dataclass(frozen=True)
class PolicyDesc:
    """What the generated policy holds, for drawing flows (and reading a failure)."""

    hosts: dict[str, tuple[str, ...]]  # node -> addresses
    networks: dict[str, tuple[str, ...]]  # network -> subnets
    isolated: tuple[str, ...]  # networks with `isolated: true`
    vms: dict[str, VMDesc]
    outside: tuple[str, ...] = OUTSIDE
    modes: dict[str, str] = field(default_factory=dict)  # non-bridged network -> mode
    network_rules: tuple[str, ...] = ()  # networks with rules
    forwards: tuple[tuple[str, str, int], ...] = ()  # port forwards: (node, tcp|udp, listen port)

    def routed_network(self, vm: str) -> str | None:
        """The VM's network when the node routes it (nat, routed, isolated mode)."""
        return next((nic.network for nic in self.vms[vm].nics if nic.network in self.modes), None)

    def sources(self) -> list[str]:
        return [f"vm:{vm}" for vm in self.vms] + [f"host:{h}" for h in self.hosts] + [f"outside:{a}" for a in self.outside]

    def targets(self) -> list[str]:
        out = []
        for name, vm in self.vms.items():
            out.append(f"vm:{name}")
            if len(vm.nics) > 1:
                out += [f"vm:{name}@{nic.network}" for nic in vm.nics]
        return out + [f"host:{h}" for h in self.hosts]

    def families(self, ref: str) -> frozenset[int]:
        kind, _, name = ref.partition(":")
        if kind == "outside":
            return frozenset({ipaddress.ip_address(name).version})
        if kind == "host":
            return frozenset(ipaddress.ip_address(a).version for a in self.hosts[name])
        vm, _, network = name.partition("@")
        if network:
            return next(nic.families() for nic in self.vms[vm].nics if nic.network == network)
        return self.vms[vm].families()

    @staticmethod
    def entity(ref: str) -> str:
        """`vm:a@net1` and `vm:a` are the same machine."""
        return ref.split("@")[0]


@dataclass(frozen=True)
class Flow:
    source: str  # vm:NAME | host:NODE | outside:ADDRESS
    target: str  # vm:NAME | vm:NAME@NETWORK | host:NODE | outside:ADDRESS (not from the outside)
    proto: str  # tcp | udp | icmp (echo-request)
    port: int | None
    family: int  # 4 | 6

    def __str__(self) -> str:
        service = f"{self.proto}/{self.port}" if self.port is not None else "icmp echo-request"
        return f"{self.source} -> {self.target} {service} ipv{self.family}"


# --------------------------------------------------------------------------- policies


class _Set:
    """An address set: per family, sorted inclusive integer intervals."""

    def __init__(self, parts: dict[int, list[tuple[int, int]]] | None = None):
        self.parts = parts or {4: [], 6: []}

    @staticmethod
    def everything() -> _Set:
        return _Set({4: [(0, 2**32 - 1)], 6: [(0, 2**128 - 1)]})

    @staticmethod
    def of(*texts: str) -> _Set:
        parts: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for text in texts:
            if "-" in text:
                low, high = (ipaddress.ip_address(t) for t in text.split("-"))
            else:
                net = ipaddress.ip_network(text)
                low, high = net.network_address, net.broadcast_address
            parts[low.version].append((int(low), int(high)))
        return _Set(parts) | _Set()

    def __or__(self, other: _Set) -> _Set:
        out: dict[int, list[tuple[int, int]]] = {}
        for f in (4, 6):
            merged: list[list[int]] = []
            for low, high in sorted(self.parts[f] + other.parts[f]):
                if merged and low <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], high)
                else:
                    merged.append([low, high])
            out[f] = [(a, b) for a, b in merged]
        return _Set(out)

    def __sub__(self, other: _Set) -> _Set:
        out: dict[int, list[tuple[int, int]]] = {}
        for f in (4, 6):
            pieces = list(self.parts[f])
            for c_low, c_high in other.parts[f]:
                pieces = [p for low, high in pieces for p in ((low, min(high, c_low - 1)), (max(low, c_high + 1), high)) if p[0] <= p[1]]
            out[f] = pieces
        return _Set(out)


@dataclass
class _Ctx:
    networks: list[str]
    zones: list[str]
    vms: list[str]
    groups: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=lambda: list(RULE_SERVICES))
    schedules: list[str] = field(default_factory=list)
    hosts: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(NODES))
    subnets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    vm_descs: dict[str, VMDesc] = field(default_factory=dict)
    vm_zones: dict[str, str | None] = field(default_factory=dict)
    group_members: dict[str, list[str]] = field(default_factory=dict)

    def addresses(self, refs: str | list[str]) -> _Set:
        """The exact address set of a from/to value (as the spec defines it)."""
        items = [refs] if isinstance(refs, str) else refs
        include, exclude = _Set(), _Set()
        for item in items:
            negate = item.startswith("!")
            one = self._item(item.lstrip("!"))
            if negate:
                exclude = exclude | one
            else:
                include = include | one
        if items and all(i.startswith("!") for i in items):
            include = _Set.everything()
        return include - exclude

    def families(self, refs: str | list[str]) -> set[int]:
        found = self.addresses(refs)
        return {f for f in (4, 6) if found.parts[f]}

    def _item(self, item: str) -> _Set:
        kind, _, name = item.partition(":")
        if item == "any":
            return _Set.everything()
        if kind == "host":
            return _Set.of(*self.hosts[name])
        if kind == "network":
            return _Set.of(*self.subnets[name])
        if kind == "vm":
            return _Set.of(*(ip for nic in self.vm_descs[name].nics for ip in nic.ips))
        if kind == "zone":
            return _Set.of(*(ip for vm, zone in self.vm_zones.items() if zone == name for nic in self.vm_descs[vm].nics for ip in nic.ips))
        if kind == "group":
            return self.addresses(self.group_members[name])
        return _Set.of(item)

    def rule_id(self, owner: str) -> str:
        n = self.ids.get(owner, 0)
        self.ids[owner] = n + 1
        return f"{owner}-{n}"


def _ref_item(draw: st.DrawFn, ctx: _Ctx, *, allow_any: bool = True) -> str:
    kinds = ["vm", "zone", "network", "host", "v4", "v6", "v4", "v6"] + (["any"] if allow_any else []) + (["group", "group"] if ctx.groups else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "any":
        return "any"
    if kind == "vm":
        return "vm:" + draw(st.sampled_from(ctx.vms))
    if kind == "zone":
        return "zone:" + draw(st.sampled_from(ctx.zones))
    if kind == "network":
        return "network:" + draw(st.sampled_from(ctx.networks))
    if kind == "host":
        return "host:" + draw(st.sampled_from(sorted(NODES)))
    if kind == "group":
        return "group:" + draw(st.sampled_from(ctx.groups))
    return draw(st.sampled_from(V4_LITERALS if kind == "v4" else V6_LITERALS))


def _refs(draw: st.DrawFn, ctx: _Ctx) -> str | list[str]:
    shape = draw(st.sampled_from(["one", "one", "one", "list", "negated", "only-negated"]))
    if shape == "one":
        return _ref_item(draw, ctx)
    if shape == "list":
        return _distinct(draw, ctx, draw(st.integers(2, 3)))
    if shape == "negated":
        include, exclude = _distinct(draw, ctx, 2, allow_any=True)
        if exclude == "any":
            include, exclude = exclude, include
        return [include, "!" + exclude]
    return ["!" + _ref_item(draw, ctx, allow_any=False)]


def _distinct(draw: st.DrawFn, ctx: _Ctx, n: int, *, allow_any: bool = False) -> list[str]:
    items: list[str] = []
    while len(items) < n:
        item = _ref_item(draw, ctx, allow_any=allow_any and not items)
        if item not in items:
            items.append(item)
    return items


def _protocol(draw: st.DrawFn, ctx: _Ctx) -> dict[str, Any]:
    kind = draw(st.sampled_from(["none", "service", "service", "tcp", "tcp", "tcp", "udp", "icmp", "other"]))
    if kind == "none":
        return {}
    if kind == "service":
        services = draw(st.lists(st.sampled_from(ctx.services), min_size=1, max_size=2, unique=True))
        return {"service": services[0] if len(services) == 1 else services}
    if kind in ("tcp", "udp"):
        keys: dict[str, Any] = {kind: draw(st.sampled_from(RULE_TCP if kind == "tcp" else RULE_UDP))}
        if draw(st.integers(0, 7)) == 0:
            # source ports that hold for every ephemeral port or for none, so the
            # verdict never depends on the port the kernel picks
            keys["sport"] = draw(st.sampled_from(["1024-65535", "32768-60999", "1-1023"]))
        return keys
    if kind == "icmp":
        return {"icmp": draw(st.sampled_from(["echo-request", "echo-request", "any"]))}
    # protocol numbers/names: `proto: icmp` is IPv4's ICMP only, `icmpv6` IPv6's
    return draw(st.sampled_from([{"proto": "tcp"}, {"proto": "udp"}, {"proto": "icmp"}, {"proto": ["icmpv6", "udp"]}, {"icmpv6": "echo-request"}, {"icmpv6": "any"}]))


def _rule(draw: st.DrawFn, ctx: _Ctx, owner: str, *, network: bool = False, direction: str | None = None, nics: int = 1, host: bool = False) -> dict[str, Any]:
    rule: dict[str, Any] = {"id": ctx.rule_id(owner)}
    if not network:
        direction = direction or draw(st.sampled_from(["in", "out"]))
        rule["direction"] = direction
    rule["action"] = draw(st.sampled_from(ACTIONS))
    if network:
        for key in ("from", "to"):
            if draw(st.integers(0, 9)) < 6:
                rule[key] = _refs(draw, ctx)
    else:
        peer, own = ("from", "to") if direction == "in" else ("to", "from")
        if draw(st.integers(0, 9)) < 7:
            rule[peer] = _refs(draw, ctx)
        if draw(st.integers(0, 9)) == 0:  # narrows which of the own addresses it applies to
            rule[own] = _refs(draw, ctx)
    rule.update(_protocol(draw, ctx))
    extra = draw(st.integers(0, 19))
    if extra == 0:
        rule["enabled"] = False
    elif extra == 1:
        rule["log"] = True
    elif extra == 2 and ctx.schedules:
        rule["schedule"] = draw(st.sampled_from(ctx.schedules))
    if draw(st.integers(0, 9)) == 0:
        # the loader refuses `family: ipv4` on a rule whose from/to has only IPv6
        # addresses (and the other way round); an empty from/to is fine
        peers = [ctx.families(rule[k]) for k in ("from", "to") if k in rule]
        allowed = [f for f in (4, 6) if all(not families or f in families for families in peers)]
        if "icmpv6" in rule or "icmpv6" in rule.get("proto", []):
            allowed = [f for f in allowed if f == 6]
        if allowed:
            rule["family"] = f"ipv{draw(st.sampled_from(allowed))}"
    rule.update(_scope(draw, nics=nics, host=host))
    return rule


def _scope(draw: st.DrawFn, *, nics: int, host: bool) -> dict[str, Any]:
    """`nic:` on a rule of a VM with two NICs (by index or by the NIC's name, see
    NIC_NAMES), `interface:` on a host rule: the node's uplink, a bridge of a
    network, a pattern, or an interface the node does not have."""
    if nics > 1 and draw(st.booleans()):
        return {"nic": draw(st.sampled_from([[0], [1], [NIC_NAMES[0]], [NIC_NAMES[1]], [0, 1]]))}
    if host and draw(st.integers(0, 3)) == 0:
        return {"interface": draw(st.sampled_from(INTERFACES))}
    return {}


def _rules(draw: st.DrawFn, ctx: _Ctx, owner: str, most: int, **kw: Any) -> list[dict[str, Any]]:  # kw: _rule's
    return [_rule(draw, ctx, owner, **kw) for _ in range(draw(st.integers(0, most)))]


def _default(draw: st.DrawFn, *, partial: bool) -> dict[str, str]:
    keys = draw(st.sampled_from([("in", "out"), ("in",), ("out",)] if partial else [("in", "out")]))
    # accept a little more often, or most flows die at the first default drop
    return {key: draw(st.sampled_from(("accept",) + ACTIONS)) for key in keys}


def _filter_rule(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "direction": draw(st.sampled_from(["in", "out", "inout"])),
        "action": draw(st.sampled_from(["drop", "drop", "reject", "accept", "return"])),
    }
    if draw(st.integers(0, 5)) == 0:
        # a rule that meets the *replies* of connections (to the client's ephemeral
        # port, or ICMP echo replies): guards are stateless, so trace must judge the
        # way back as well
        rule["action"] = "drop"
        rule.update(draw(st.sampled_from([{"tcp": "32768-60999"}, {"udp": "32768-60999"}, {"icmp": "echo-reply"}])))
        return rule
    kind = draw(st.sampled_from(["tcp", "tcp", "udp", "icmp"]))
    if kind == "icmp":
        rule["icmp"] = "echo-request"  # not `any`: that would also hit echo replies
    else:
        rule[kind] = draw(st.sampled_from(FLOW_TCP if kind == "tcp" else FLOW_UDP))
    if draw(st.integers(0, 3)) == 0:
        # with a port or an echo-request type this never matches the replies of the
        # guest's own connections (those come from the port, to an ephemeral one)
        rule[draw(st.sampled_from(["from", "to"]))] = draw(st.sampled_from(V4_LITERALS + V6_LITERALS))
    if draw(st.booleans()):
        rule["priority"] = draw(st.sampled_from([-100, 100, 500]))
    return rule


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors for shared lists
        return True


@st.composite
def policies(draw: st.DrawFn) -> tuple[str, PolicyDesc]:
    """(policy YAML text, its description)."""
    n_networks = draw(st.integers(1, 3))
    networks = [f"net{n}" for n in range(1, n_networks + 1)]
    zones = ["web", "app", "db"][: draw(st.integers(1, 3))]
    vms = [f"vm{i}" for i in range(1, draw(st.integers(2, 5)) + 1)]
    ctx = _Ctx(networks, zones, vms)
    if draw(st.integers(0, 7)) == 0:  # a node without IPv6
        ctx.hosts["node2"] = NODES["node2"][:1]
    v4_only = {net for net in networks if draw(st.integers(0, 7)) == 0}  # networks without IPv6
    for net in networks:
        n = int(net[3:])
        ctx.subnets[net] = (f"10.{n}.0.0/24",) if net in v4_only else (f"10.{n}.0.0/24", f"fd00:{n}::/64")

    # -- what exists: nodes, networks, VMs and their addresses
    isolated = draw(st.sampled_from(networks)) if draw(st.integers(0, 2)) == 0 else None
    # a network the node routes (libvirt's nat, routed or isolated mode): its guests
    # live on one node (its bridge is that node's own)
    modes: dict[str, str] = {}
    candidates = [n for n in networks if n != isolated]
    if candidates and draw(st.sampled_from([True, True, False])):
        routed_net = draw(st.sampled_from(candidates))
        modes[routed_net] = draw(st.sampled_from(["nat", "routed", "isolated"]))
    routed_node = draw(st.sampled_from(sorted(NODES)))
    if modes and modes.get(next(iter(modes))) == "routed" and len(ctx.hosts[routed_node]) < 2:
        v4_only.add(next(iter(modes)))  # the outside routes a routed subnet to the node's address of the family
        ctx.subnets[next(iter(modes))] = ctx.subnets[next(iter(modes))][:1]
    multi = draw(st.sampled_from([None, *vms, *vms])) if n_networks > 1 else None  # a VM with a second NIC, mostly
    custom_filter = draw(st.integers(0, 2)) == 0
    vm_docs: dict[str, Any] = {}
    descs: dict[str, VMDesc] = {}
    for i, vm in enumerate(vms, start=1):
        body: dict[str, Any] = {"host": draw(st.sampled_from(sorted(NODES)))}
        if draw(st.integers(0, 6)) > 0:
            body["zone"] = draw(st.sampled_from(zones))
        nic_networks = [draw(st.sampled_from(networks))]
        others = [n for n in networks if n != nic_networks[0] and n not in modes]
        if vm == multi and not modes.keys() & set(nic_networks) and others:
            nic_networks.append(draw(st.sampled_from(others)))
        if modes.keys() & set(nic_networks):
            body["host"] = routed_node
        filters = draw(st.sampled_from([[], [], ["clean-traffic"]] + ([["guard1"]] if custom_filter else [])))
        nics, nic_descs = [], []
        for k, network in enumerate(nic_networks):
            n = int(network[3:])
            ips_kind = "v4" if network in v4_only else draw(st.sampled_from(["dual"] * 6 + ["v4", "v6"]))
            ips = ([f"10.{n}.0.{10 + i}"] if ips_kind != "v6" else []) + ([f"fd00:{n}::{10 + i}"] if ips_kind != "v4" else [])
            nic: dict[str, Any] = {"network": network}
            if len(nic_networks) > 1:
                nic["name"] = NIC_NAMES[k]
            nic_filter = custom_filter and "guard1" not in filters and draw(st.integers(0, 3)) == 0
            if filters or nic_filter or draw(st.booleans()):
                nic["mac"] = f"52:54:00:{n:02x}:{k:02x}:{10 + i:02x}"
            nic["ips"] = ips
            if nic_filter:
                nic["filters"] = ["guard1"]
            nics.append(nic)
            nic_descs.append(NicDesc(network, tuple(ips)))
        body["nics"] = nics
        if filters:
            body["filters"] = filters
        if draw(st.integers(0, 4)) == 0:
            body["default"] = _default(draw, partial=True)
        vm_docs[vm] = body
        descs[vm] = VMDesc(vm, body["host"], tuple(nic_descs))
    ctx.vm_descs = descs
    ctx.vm_zones = {vm: body.get("zone") for vm, body in vm_docs.items()}

    # -- groups (g2 may contain g1)
    groups: dict[str, Any] = {}
    for g in range(1, draw(st.integers(0, 2)) + 1):
        members = _distinct(draw, ctx, draw(st.integers(1, 3)))
        if g == 2 and draw(st.booleans()):
            members.append("group:g1")
        if draw(st.integers(0, 5)) == 0:
            members.append("!" + draw(st.sampled_from(V4_LITERALS + V6_LITERALS)))
        groups[f"g{g}"] = members
        ctx.groups.append(f"g{g}")
    ctx.group_members = groups

    # -- the document, in the order an operator writes it
    doc: dict[str, Any] = {"version": 1}
    settings: dict[str, Any] = {"default": _default(draw, partial=False)}
    host_default = {"in": draw(st.sampled_from(ACTIONS))}
    if draw(st.integers(0, 3)) == 0:
        host_default["out"] = draw(st.sampled_from(ACTIONS))
    settings["host_default"] = host_default
    management = draw(st.sampled_from(["none", "literal", "group"] if groups else ["none", "literal"]))
    if management == "literal":
        settings["management"] = ["192.168.100.0/24", "fd00:100::/64"]
    elif management == "group":
        settings["management"] = ["group:" + draw(st.sampled_from(ctx.groups))]
    doc["settings"] = settings
    doc["hosts"] = {node: {"address": list(addresses), "uplink": "eth0"} for node, addresses in ctx.hosts.items()}
    if groups:
        doc["groups"] = groups
    services: dict[str, Any] = {}
    if draw(st.integers(0, 3)) == 0:
        services["app"] = APP_SERVICE
        ctx.services.append("app")
    if draw(st.integers(0, 5)) == 0:  # a built-in's name, redefined: the policy's wins
        services.update(draw(st.sampled_from([{"http": {"tcp": [8050]}}, {"ssh": {"tcp": [9000]}}, {"dns": {"udp": [53, 123]}}])))
    if services:
        doc["services"] = services
    if draw(st.integers(0, 4)) == 0:
        # windows that hold all week: schedules are compiled and traced without making
        # the verdict depend on the time the test runs
        doc["schedules"] = {"always": {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "time": "00:00-24:00"}}
        ctx.schedules.append("always")
    if custom_filter:
        body = {"rules": [_filter_rule(draw) for _ in range(draw(st.integers(1, 2)))]}
        if draw(st.booleans()):
            body = {"include": ["clean-traffic"], **body}
        doc["filters"] = {"guard1": body}

    nets: dict[str, Any] = {}
    for name in networks:
        n = int(name[3:])
        body = {"bridge": f"vmbr{n}", "subnets": list(ctx.subnets[name])}
        if draw(st.integers(0, 3)) > 0 or name in modes:  # else the lab picks .1/::1 itself
            body["gateway"] = [f"10.{n}.0.1", f"fd00:{n}::1"][: len(ctx.subnets[name])]
        if name in modes:
            body["mode"] = modes[name]
            if draw(st.booleans()):
                body["host_services"] = draw(st.sampled_from([["dns"], ["dhcp", "dns"], ["ntp"]]))
        if name == isolated:
            body["isolated"] = True
        # network rules: on an isolated network (default drop) and, as a Proxmox VNet
        # firewall, on any other (default accept)
        if name == isolated or draw(st.integers(0, 3)) == 0:
            rules = _rules(draw, ctx, name, 2, network=True)
            if rules:
                body["rules"] = rules
        nets[name] = body
    doc["networks"] = nets

    zone_docs: dict[str, Any] = {}
    for zone in zones:
        body = {}
        if draw(st.integers(0, 3)) > 0:
            body["default"] = _default(draw, partial=True)
        rules = _rules(draw, ctx, f"z-{zone}", 4)
        if rules:
            body["rules"] = rules
        zone_docs[zone] = body
    doc["zones"] = zone_docs

    rules = _rules(draw, ctx, "global", 2)
    if rules:
        doc["global_rules"] = rules
    rules = _rules(draw, ctx, "hosts", 2, host=True)
    if draw(st.integers(0, 4)) == 0:
        node = draw(st.sampled_from(sorted(NODES)))
        doc["hosts"][node]["rules"] = [_rule(draw, ctx, node, host=True)]
    if rules:
        doc["host_rules"] = rules

    for vm, body in vm_docs.items():
        rules = _rules(draw, ctx, vm, 3, nics=len(body["nics"]))
        if rules:
            body["rules"] = rules
    doc["vms"] = vm_docs

    # -- NAT: forwards to guests the node routes (open or left to their rules), snat
    # or masquerade of a routed network behind its node's own address
    nat: list[dict[str, Any]] = []
    forwards: list[tuple[str, str, int]] = []
    for network, mode in modes.items():
        guests = [vm for vm, d in descs.items() if any(nic.network == network for nic in d.nics)]
        if mode == "nat" and len(ctx.subnets[network]) > 1:
            # IPv6 is not masqueraded unless asked: without it the outside has no route back
            nat.append({"type": "masquerade", "network": network, "family": "ipv6"})
        if mode == "routed" and draw(st.integers(0, 3)) == 0:
            nat.append(draw(st.sampled_from([
                {"type": "masquerade", "network": network},
                {"type": "snat", "from": ctx.subnets[network][0], "to": ctx.hosts[routed_node][0], "host": routed_node},
            ])))
        if mode in ("nat", "routed") and guests:
            for listen in draw(st.lists(st.sampled_from(FORWARD_PORTS), min_size=0, max_size=2, unique_by=lambda p: p[1])):
                proto, port, to_port = listen
                entry: dict[str, Any] = {"type": "dnat", "host": routed_node, "listen": {proto: port}, "to": {"vm": draw(st.sampled_from(guests)), "port": to_port}}
                if draw(st.booleans()):
                    entry["open"] = False
                nat.append(entry)
                forwards.append((routed_node, proto, port))
    if nat:
        doc["nat"] = nat

    text = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=140)
    desc = PolicyDesc(
        hosts=dict(ctx.hosts),
        networks={name: tuple(nets[name]["subnets"]) for name in networks},
        isolated=(isolated,) if isolated else (),
        vms=descs,
        modes=modes,
        forwards=tuple(forwards),
        network_rules=tuple(name for name, body in nets.items() if body.get("rules")),
    )
    return text, desc


# ------------------------------------------------------------------------------ flows


@st.composite
def flows(draw: st.DrawFn, desc: PolicyDesc) -> Flow:
    """A flow between the policy's endpoints: from a VM, a node or the outside, to a
    VM (or one NIC of a two-NIC VM), a node or (from a VM or node) the outside, in
    a family both ends have; now and then to a node's forwarded port."""
    def usable_from(source: str) -> list[str]:
        everything = desc.targets() + ([] if source.startswith("outside:") else [f"outside:{a}" for a in desc.outside])
        return [t for t in everything if desc.entity(t) != source and desc.families(t) & desc.families(source) and routable(desc, source, t)]

    kind = draw(st.sampled_from(["vm", "vm", "vm", "host", "outside", "outside"]))
    sources = [s for s in desc.sources() if s.startswith(kind + ":") and usable_from(s)] or [s for s in desc.sources() if usable_from(s)]
    source = draw(st.sampled_from(sources))
    usable = usable_from(source)
    kinds = sorted({t.split(":")[0] for t in usable})
    target_kind = draw(st.sampled_from([k for k in ["vm", "vm", "host", "outside"] if k in kinds]))
    target = draw(st.sampled_from([t for t in usable if t.startswith(target_kind + ":")]))
    family = draw(st.sampled_from(sorted(desc.families(source) & desc.families(target))))
    forwards = [(proto, port) for node, proto, port in desc.forwards if target == f"host:{node}" and _may_use_forward(desc, source, node)]
    if forwards and draw(st.booleans()):
        proto, port = draw(st.sampled_from(forwards))
        return Flow(source, target, proto, port, family)
    proto = draw(st.sampled_from(["tcp", "tcp", "tcp", "udp", "icmp"]))
    port = None if proto == "icmp" else draw(st.sampled_from(FLOW_TCP if proto == "tcp" else FLOW_UDP))
    if target == f"host:{next((n for n, _p, _q in desc.forwards), '')}" and (proto, port) in {(p, q) for _n, p, q in desc.forwards} and not _may_use_forward(desc, source, target[5:]):
        port = 9000 if proto == "tcp" else 123  # a forwarded port a guest of the node would use as hairpin
    return Flow(source, target, proto, port, family)


def _node_of(desc: PolicyDesc, ref: str) -> str | None:
    kind, _, name = ref.partition(":")
    if kind == "host":
        return name
    if kind == "vm":
        return desc.vms[name.split("@")[0]].host
    return None


def routable(desc: PolicyDesc, source: str, target: str) -> bool:
    """Whether the lab can carry the flow at all (the analyzer judges the firewall,
    not the outside's routing): a guest of an isolated-mode network has no route
    off its segment; the outside has no route into a nat or isolated network; the
    node talks to an isolated guest from its bridge address, not the one trace
    uses. Flows between such ends are blocked by routing whatever the rules say."""
    src_vm = source[3:].split("@")[0] if source.startswith("vm:") else None
    dst_vm = target[3:].split("@")[0] if target.startswith("vm:") else None
    src_net = desc.routed_network(src_vm) if src_vm else None
    dst_net = desc.routed_network(dst_vm) if dst_vm else None
    if src_net and desc.modes[src_net] == "isolated" and dst_net != src_net:
        return False
    if dst_net and desc.modes[dst_net] in ("nat", "isolated") and source.startswith("outside:"):
        return False
    if dst_net and desc.modes[dst_net] == "isolated" and source.startswith("host:") and source[5:] == desc.vms[dst_vm].host:  # type: ignore[index]
        return False
    return True


def _may_use_forward(desc: PolicyDesc, source: str, node: str) -> bool:
    """Forwarded ports are for the outside and other nodes' guests (no hairpin: a
    guest of the node using its own node's forward is not translated back)."""
    return source.startswith("outside:") or _node_of(desc, source) != node
