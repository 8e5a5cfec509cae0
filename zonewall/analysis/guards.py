"""Guard filters (the bridge stage) over packet space, for the IP packets of a flow.

A NIC's filters run in order; inside a filter its rules run by priority. `drop` and
`reject` are final, `accept` ends the guard stage (the policy still decides),
`return` leaves the current filter. Layer-2 keys are judged for the frames an IP
flow uses: the guest sends with its own MAC to a unicast MAC, so `mac: {src: $MAC}`
matches outbound and `mac: {dst: $MAC}` inbound; ARP rules never match IP packets;
`ethertype` picks the family. A literal MAC in a custom filter cannot be judged from
the flow (it depends on the neighbour) and is reported as an approximation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from ..compiler.nics import eui64_link_local_value
from ..compiler.plan import Plan
from ..compiler.plan.rules import filter_rule_as_rule
from ..compiler.plan.switches import guard_filters
from ..policy.addresses import address_value
from ..policy.model import FilterRule, Nic
from . import space as s
from .regions import Regions
from .space import Region

ETHERTYPE_FAMILY = {0x0800: 4, 0x86DD: 6}


@dataclass(frozen=True)
class GuardRule:
    region: Region
    action: str  # accept | drop | reject | return
    label: str  # "filter NAME" (+ what it checks)
    approximate: str | None = None  # why the engine cannot judge it exactly
    # Matches only packets whose source is not one of the NIC's own addresses (the
    # anti-spoofing drops): never the NIC's own traffic, which reach relies on.
    foreign_source: bool = False


@dataclass(frozen=True)
class GuardStage:
    name: str  # "guards vm:web1 nic 0 out"
    filters: tuple[tuple[str, tuple[GuardRule, ...]], ...]

    def approximations(self) -> list[str]:
        return [f"{name}: {rule.approximate}" for name, rules in self.filters for rule in rules if rule.approximate]

    @cached_property
    def drops_replies(self) -> bool:
        """Whether a rule of it can drop a reply (TCP, UDP, SCTP, an ICMP echo reply)
        coming back to the NIC's own connections. The anti-spoofing drops never do:
        a reply's source is the answering NIC's own address."""
        return any(
            rule.action in ("drop", "reject") and not rule.foreign_source and rule.region and s.overlaps(rule.region, REPLIES)
            for _name, rules in self.filters
            for rule in rules
        )


def _replies() -> Region:
    """What replies to the connections trace models look like: tcp, udp, sctp, and
    ICMP / ICMPv6 echo replies, from and to anywhere."""
    out = []
    for family, echo_reply in ((4, 0), (6, 129)):
        for proto in (6, 17, 132):
            out.append(_box(family, proto=((proto, proto),)))
        icmp = 1 if family == 4 else 58
        out.append(_box(family, proto=((icmp, icmp),), dport=((echo_reply, echo_reply),)))
    return tuple(out)


def _box(family: int, **dims: s.Intervals) -> s.Box:
    values = {"proto": s.FULL[s.PROTO], "dport": s.FULL[s.DPORT], "src": ((0, s.ADDRESS_MAX[family]),), "dst": ((0, s.ADDRESS_MAX[family]),), "sport": s.FULL[s.SPORT]}
    values.update(dims)
    return (values["proto"], values["dport"], ((family, family),), values["src"], values["dst"], values["sport"], s.FULL[s.TIME])


def _own(nic: Nic, family: int) -> s.Intervals:
    """The NIC's own addresses of a family; for IPv6 with the EUI-64 link-local one
    NDP uses (the compiler's LocalNic.ipv6)."""
    values = [(v, v) for f, v in map(address_value, nic.ips) if f == family]
    if family == 6 and nic.mac:
        link_local = eui64_link_local_value(nic.mac)
        values.append((link_local, link_local))
    return s.merge(values)


REPLIES = _replies()
_ANY_NIC = Nic(network="any", ips=[])  # for the rules of NIC-dependent filters that depend on no NIC
# The address-independent parts of the built-in filters, built once.
_UDP = ((17, 17),)
_ICMP6 = ((58, 58),)
_DHCP_DISCOVER = (_box(4, proto=_UDP, src=((0, 0),), sport=((68, 68),), dport=((67, 67),)),)
_NDP_FROM_UNSPECIFIED = (_box(6, proto=_ICMP6, dport=s.merge([(135, 135), (133, 133), (143, 143), (131, 131)]), src=((0, 0),)),)
_RA_OR_REDIRECT = (_box(6, proto=_ICMP6, dport=((134, 134), (137, 137))),)
_DHCP = {"out": (_box(4, proto=_UDP, sport=((68, 68),), dport=((67, 67),)),), "in": (_box(4, proto=_UDP, sport=((67, 67),), dport=((68, 68),)),)}
_DHCPV6 = {"out": (_box(6, proto=_UDP, sport=((546, 546),), dport=((547, 547),)),), "in": (_box(6, proto=_UDP, sport=((547, 547),), dport=((546, 546),)),)}
_IPV4_MULTICAST = (_box(4, dst=((0xE0000000, 0xEFFFFFFF),)),)  # 224.0.0.0/4


def _not_own(nic: Nic, family: int) -> Region:
    return tuple(_box(family, src=piece) for piece in [s.iv_subtract(((0, s.ADDRESS_MAX[family]),), _own(nic, family))] if piece)


# The built-in filters whose IP-visible part depends on the NIC's addresses.
NIC_DEPENDENT = frozenset({"no-ip-spoofing", "no-ipv6-spoofing"})
_IPV4 = (_box(4),)
LEARNED_AT_RUN_TIME = "address learned at run time (learning mode); treated as not yet learned"


def dhcp_server_rules(direction: str, servers: list[str]) -> list[GuardRule]:
    """allow-dhcp-server: DHCP requests out; replies in from the network's dhcp_servers only."""
    label = "filter allow-dhcp-server"
    if direction == "out":
        return [GuardRule((_box(4, proto=_UDP, src=((0, 0),), dst=((0xFFFFFFFF, 0xFFFFFFFF),), sport=((68, 68),), dport=((67, 67),)),), "accept", label)]
    values = s.merge((v, v) for f, v in map(address_value, servers) if f == 4)
    return [GuardRule((_box(4, proto=_UDP, src=values, sport=((67, 67),), dport=((68, 68),)),), "accept", label)] if values else []


def builtin_rules(name: str, direction: str, nic: Nic | None) -> list[GuardRule]:
    """The IP-visible part of a built-in filter (compiler/guards.py has the frames).
    `nic` is needed for the NIC_DEPENDENT filters only."""
    label = f"filter {name}"
    out_only = direction == "out"
    if name == "no-ip-spoofing" and out_only:
        assert nic is not None, name
        # learning mode (no ips): the address is learned at run time (compiler/learning.py)
        learning = None if nic.ips or nic.learning.ipv4 == "none" else f"{LEARNED_AT_RUN_TIME}: only DHCP from 0.0.0.0 passes"
        return [GuardRule(_DHCP_DISCOVER, "return", label), GuardRule(_not_own(nic, 4), "drop", f"{label} (source is not the NIC's)", learning, foreign_source=True)]
    if name == "no-ipv6-spoofing" and out_only:
        assert nic is not None, name
        learning = f"{LEARNED_AT_RUN_TIME}: only its link-local address passes" if nic.learning.ipv6 == "any" and not any(":" in ip for ip in nic.ips) else None
        return [
            GuardRule(_NDP_FROM_UNSPECIFIED, "return", label),
            GuardRule(_RA_OR_REDIRECT, "drop", f"{label} (router advertisement or redirect from a guest)"),
            GuardRule(_not_own(nic, 6), "drop", f"{label} (source is not the NIC's)", learning, foreign_source=True),
        ]
    if name == "allow-ipv4" or (name == "allow-incoming-ipv4" and not out_only):
        return [GuardRule(_IPV4, "accept", label)]
    if name == "allow-dhcp":
        return [GuardRule(_DHCP[direction], "accept", label)]
    if name == "allow-dhcpv6":
        return [GuardRule(_DHCPV6[direction], "accept", label)]
    if name == "no-ip-multicast" and out_only:
        return [GuardRule(_IPV4_MULTICAST, "drop", label)]
    # no-mac-spoofing, no-arp-*, allow-arp, no-mac-broadcast, no-other-l2-traffic,
    # qemu-announce-self(-rarp), no-other-rarp-traffic: an IP unicast packet from the
    # NIC's own MAC passes them
    return []


def filter_rule_region(plan: Plan, regions: Regions, rule: FilterRule) -> Region:
    """A guard filter rule's layer-3/4 part (its layer-2 keys are judged by the caller)."""
    return regions.of_matches(plan.rules.matches(filter_rule_as_rule(rule)))


def custom_rules(plan: Plan, regions: Regions, name: str, rule: FilterRule, direction: str) -> GuardRule | None:
    label = f"filter {name}"
    if rule.arp is not None:
        return None  # ARP frames only
    region = filter_rule_region(plan, regions, rule)
    approximate = None
    if rule.ethertype is not None:
        family = ETHERTYPE_FAMILY.get(rule.ethertype)
        region = s.restrict(region, s.FAM, ((family, family),)) if family else ()
    if rule.mac is not None:
        own_side = "src" if direction == "out" else "dst"
        for side in ("src", "dst"):
            value = getattr(rule.mac, side)
            if value is None:
                continue
            if value == "$MAC":
                if side != own_side:
                    region = ()  # the peer's MAC is never this port's
            else:
                approximate = f"mac {side} {value} depends on the neighbour; treated as not matching"
                region = ()
    return GuardRule(region, rule.action, label, approximate)


class GuardBuilder:
    def __init__(self, plan: Plan, regions: Regions):
        self.plan, self.regions = plan, regions
        self.policy = plan.policy
        self._memo: dict[tuple[str, int, str], GuardStage | None] = {}
        self._shared: dict[tuple[str, str, str], tuple[GuardRule, ...]] = {}  # filters that do not depend on the NIC
        self._drops: dict[int, tuple[tuple[GuardRule, ...], bool]] = {}  # a filter's rules -> whether one drops replies
        self._drops_of_nic: dict[tuple[str, int, str], bool] = {}
        self._drops_of_shape: dict[tuple[object, ...], bool] = {}

    def stage(self, vm: str, nic_index: int, direction: str) -> GuardStage | None:
        key = (vm, nic_index, direction)
        if key not in self._memo:
            self._memo[key] = self._build(vm, nic_index, direction)
        return self._memo[key]

    def _build(self, vm: str, nic_index: int, direction: str) -> GuardStage | None:
        nic = self.policy.doc.vms[vm].nics[nic_index]
        filters = []
        for name in guard_filters(self.policy, vm, nic_index):  # none when the NIC is not filtered (issue 18)
            if name in self.policy.doc.filters:
                found = self.custom(name, direction)
            elif name in NIC_DEPENDENT:
                found = tuple(builtin_rules(name, direction, nic))
            elif name == "allow-dhcp-server":
                found = tuple(dhcp_server_rules(direction, self.policy.doc.networks[nic.network].dhcp_servers))
            else:
                found = self.builtin_shared(name, direction)
            if found:
                filters.append((name, found))
        if not filters:
            return None
        return GuardStage(f"guards vm:{vm} nic {nic_index} {direction}", tuple(filters))

    def drops_replies(self, vm: str, nic_index: int, direction: str) -> bool:
        """`stage(...).drops_replies` (False without a stage), without building the
        NIC's stage: it depends only on rules that are the same for every NIC (the
        NIC-dependent rules are the anti-spoofing drops, `foreign_source`, which never
        drop a reply). Reach and diff ask it of every peer."""
        key = (vm, nic_index, direction)
        known = self._drops_of_nic.get(key)
        if known is None:
            known = self._drops_of_nic[key] = self._drops_replies(vm, nic_index, direction)
        return known

    def _drops_replies(self, vm: str, nic_index: int, direction: str) -> bool:
        key = (vm, nic_index, direction)
        if key in self._memo:  # built already
            stage = self._memo[key]
            return stage is not None and stage.drops_replies
        # NICs with the same filters (and network, for allow-dhcp-server) answer alike
        names = tuple(guard_filters(self.policy, vm, nic_index))
        network = self.policy.doc.vms[vm].nics[nic_index].network
        shape = (names, network if "allow-dhcp-server" in names else None, direction)
        found = self._drops_of_shape.get(shape)
        if found is None:
            found = self._drops_of_shape[shape] = self._filters_drop_replies(names, network, direction)
        return found

    def _filters_drop_replies(self, names: tuple[str, ...], network: str, direction: str) -> bool:
        for name in names:
            if name in self.policy.doc.filters:
                rules = self.custom(name, direction)
            elif name in NIC_DEPENDENT:
                rules = self.nic_independent(name, direction)
            elif name == "allow-dhcp-server":
                rules = self.dhcp_server(network, direction)
            else:
                rules = self.builtin_shared(name, direction)
            if rules and self._filter_drops_replies(name, rules):
                return True
        return False

    def _filter_drops_replies(self, name: str, rules: tuple[GuardRule, ...]) -> bool:
        found = self._drops.get(id(rules))
        if found is None or found[0] is not rules:  # the rules are kept with the answer: their id stays theirs
            found = self._drops[id(rules)] = (rules, GuardStage(name, ((name, rules),)).drops_replies)
        return found[1]

    def nic_independent(self, name: str, direction: str) -> tuple[GuardRule, ...]:
        """A NIC-dependent built-in filter's rules but the anti-spoofing drops
        (`foreign_source`): the same for every NIC."""
        key = ("independent", name, direction)
        found = self._shared.get(key)
        if found is None:
            found = self._shared[key] = tuple(rule for rule in builtin_rules(name, direction, _ANY_NIC) if not rule.foreign_source)
        return found

    def dhcp_server(self, network: str, direction: str) -> tuple[GuardRule, ...]:
        key = ("dhcp-server", network, direction)
        found = self._shared.get(key)
        if found is None:
            found = self._shared[key] = tuple(dhcp_server_rules(direction, self.policy.doc.networks[network].dhcp_servers))
        return found

    def custom(self, name: str, direction: str) -> tuple[GuardRule, ...]:
        """A custom filter's rules: the same for every NIC ($MAC is judged per side)."""
        key = ("custom", name, direction)
        found = self._shared.get(key)
        if found is None:
            ordered = sorted(self.policy.doc.filters[name].rules, key=lambda r: r.priority)
            rules = [custom_rules(self.plan, self.regions, name, r, direction) for r in ordered if r.direction in (direction, "inout")]
            found = self._shared[key] = tuple(r for r in rules if r is not None)
        return found

    def builtin_shared(self, name: str, direction: str) -> tuple[GuardRule, ...]:
        key = ("builtin", name, direction)
        found = self._shared.get(key)
        if found is None:
            found = self._shared[key] = tuple(builtin_rules(name, direction, None))
        return found


def run_guards(stage: GuardStage, space: Region) -> Iterator[tuple[Region, str, str]]:
    """(part, outcome, label): outcome `pass` (guard stage over) or `drop`."""
    remaining = space
    for _name, rules in stage.filters:
        inside = remaining  # packets still in this filter
        returned: Region = ()
        for rule in rules:
            if not inside:
                break
            hit = s.intersect(inside, rule.region) if rule.region else ()
            if not hit:
                continue
            inside = s.subtract(inside, rule.region)
            if rule.action in ("drop", "reject"):
                yield hit, "drop", rule.label
            elif rule.action == "accept":
                yield hit, "pass", rule.label
            else:  # return: on to the next filter
                returned = s.union(returned, hit)
        remaining = s.union(inside, returned)
        if not remaining:
            return
    if remaining:
        yield remaining, "pass", "no guard filter objected"
