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

import ipaddress
from dataclasses import dataclass
from typing import Iterator

from ..compiler.nics import eui64_link_local
from ..policy.model import FilterRule, Nic
from ..policy.resolve import Policy
from . import space as s
from .matching import Matcher
from .space import Region

ETHERTYPE_FAMILY = {0x0800: 4, 0x86DD: 6}


@dataclass(frozen=True)
class GuardRule:
    region: Region
    action: str  # accept | drop | reject | return
    label: str  # "filter NAME" (+ what it checks)
    approximate: str | None = None  # why the engine cannot judge it exactly


@dataclass(frozen=True)
class GuardStage:
    name: str  # "guards vm:web1 nic 0 out"
    filters: tuple[tuple[str, tuple[GuardRule, ...]], ...]

    def approximations(self) -> list[str]:
        return [f"{name}: {rule.approximate}" for name, rules in self.filters for rule in rules if rule.approximate]


def _box(family: int, **dims: s.Intervals) -> s.Box:
    values = {"proto": s.FULL[s.PROTO], "dport": s.FULL[s.DPORT], "src": ((0, s.ADDRESS_MAX[family]),), "dst": ((0, s.ADDRESS_MAX[family]),), "sport": s.FULL[s.SPORT]}
    values.update(dims)
    return (values["proto"], values["dport"], ((family, family),), values["src"], values["dst"], values["sport"], s.FULL[s.TIME])


def _own(addresses: list[str], family: int) -> s.Intervals:
    return s.merge((int(ip), int(ip)) for ip in map(ipaddress.ip_address, addresses) if ip.version == family)


def builtin_rules(name: str, direction: str, nic: Nic) -> list[GuardRule]:
    """The IP-visible part of a built-in filter (compiler/guards.py has the frames)."""
    label = f"filter {name}"
    out_only = direction == "out"
    v6_own = list(nic.ips) + ([eui64_link_local(nic.mac)] if nic.mac else [])
    udp = ((17, 17),)
    if name == "no-ip-spoofing" and out_only:
        dhcp = _box(4, proto=udp, src=((0, 0),), sport=((68, 68),), dport=((67, 67),))
        spoofed = tuple(_box(4, src=piece) for piece in [s.iv_subtract(((0, s.ADDRESS_MAX[4]),), _own(nic.ips, 4))] if piece)
        return [GuardRule((dhcp,), "return", label), GuardRule(spoofed, "drop", f"{label} (source is not the NIC's)")]
    if name == "no-ipv6-spoofing" and out_only:
        icmp6 = ((58, 58),)
        from_unspecified = _box(6, proto=icmp6, dport=s.merge([(135, 135), (133, 133), (143, 143), (131, 131)]), src=((0, 0),))
        forged = _box(6, proto=icmp6, dport=((134, 134), (137, 137)))
        spoofed = tuple(_box(6, src=piece) for piece in [s.iv_subtract(((0, s.ADDRESS_MAX[6]),), _own(v6_own, 6))] if piece)
        return [
            GuardRule((from_unspecified,), "return", label),
            GuardRule((forged,), "drop", f"{label} (router advertisement or redirect from a guest)"),
            GuardRule(spoofed, "drop", f"{label} (source is not the NIC's)"),
        ]
    if name == "allow-dhcp":
        ports = ((68, 68), (67, 67)) if out_only else ((67, 67), (68, 68))
        return [GuardRule((_box(4, proto=udp, sport=(ports[0],), dport=(ports[1],)),), "accept", label)]
    if name == "allow-dhcpv6":
        ports = ((546, 546), (547, 547)) if out_only else ((547, 547), (546, 546))
        return [GuardRule((_box(6, proto=udp, sport=(ports[0],), dport=(ports[1],)),), "accept", label)]
    if name == "no-ip-multicast" and out_only:
        return [GuardRule((_box(4, dst=((int(ipaddress.ip_address("224.0.0.0")), int(ipaddress.ip_address("239.255.255.255"))),)),), "drop", label)]
    # no-mac-spoofing, no-arp-*, allow-arp, no-mac-broadcast, no-other-l2-traffic,
    # qemu-announce-self: an IP unicast packet from the NIC's own MAC passes them
    return []


def custom_rules(matcher: Matcher, name: str, rule: FilterRule, direction: str) -> GuardRule | None:
    label = f"filter {name}"
    if rule.arp is not None:
        return None  # ARP frames only
    region = matcher.filter_rule(rule)
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
    def __init__(self, policy: Policy, matcher: Matcher):
        self.policy, self.matcher = policy, matcher
        self._memo: dict[tuple[str, int, str], GuardStage | None] = {}

    def stage(self, vm: str, nic_index: int, direction: str) -> GuardStage | None:
        key = (vm, nic_index, direction)
        if key not in self._memo:
            self._memo[key] = self._build(vm, nic_index, direction)
        return self._memo[key]

    def _build(self, vm: str, nic_index: int, direction: str) -> GuardStage | None:
        nic = self.policy.doc.vms[vm].nics[nic_index]
        filters = []
        for name in self.policy.nic_filters(vm, nic_index):
            if name in self.policy.doc.filters:
                ordered = sorted(self.policy.doc.filters[name].rules, key=lambda r: r.priority)
                rules = [custom_rules(self.matcher, name, r, direction) for r in ordered if r.direction in (direction, "inout")]
                found = tuple(r for r in rules if r is not None)
            else:
                found = tuple(builtin_rules(name, direction, nic))
            if found:
                filters.append((name, found))
        if not filters:
            return None
        return GuardStage(f"guards vm:{vm} nic {nic_index} {direction}", tuple(filters))


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
