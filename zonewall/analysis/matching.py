"""What a rule matches, as a region of packet space.

This mirrors `compiler/matches.py` key by key (the kernel-agreement tests hold the
two together): `from` is the source and `to` the destination whatever the
direction, a family is only matched where the rule's peers have addresses in it,
services expand to their protocol keys, ICMP type names are looked up per family,
and a schedule becomes the minutes of the week (UTC) the compiler would match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..compiler.matches import ProtocolKeys
from ..compiler.schedule import utc_week_minutes
from ..policy.addresses import FAMILIES, AddressSet, Family
from ..policy.builtins import ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from ..policy.model import FilterRule, Rule
from ..policy.resolve import Policy
from . import space as s
from .space import Intervals, Region

FAM_NUMBER = {"ipv4": 4, "ipv6": 6}
PROTO_NUMBER = {"tcp": 6, "udp": 17, "sctp": 132}
ICMP_PROTO = {4: 1, 6: 58}
ICMP_TABLE = {4: ICMP_V4_TYPES, 6: ICMP_V6_TYPES}
ALL_PORTS: Intervals = ((0, 65535),)


def ports(texts: tuple[str, ...] | list[str]) -> Intervals:
    out = []
    for text in texts:
        low, _, high = text.partition("-")
        out.append((int(low), int(high or low)))
    return s.merge(out)


def protocol_number(text: str) -> int:
    return int(text) if text.isdigit() else IP_PROTOCOLS[text]


def icmp_types(keys: ProtocolKeys, family: int) -> Intervals | None:
    """The ICMP types (as the DPORT dimension) a rule matches in `family`; None: none."""
    table = ICMP_TABLE[family]
    names = [t for t in keys.icmp if t == "any" or t.isdigit() or t in table]
    if family == 6:
        names += [t for t in keys.icmpv6 if t not in names]
    if not names:
        return None
    if "any" in names:
        return ALL_PORTS
    return s.merge((int(t), int(t)) if t.isdigit() else (table[t], table[t]) for t in names)


@dataclass(frozen=True)
class Alternative:
    """One protocol alternative: PROTO x DPORT x SPORT."""

    proto: Intervals
    dport: Intervals = ALL_PORTS
    sport: Intervals = ALL_PORTS


def protocol_alternatives(keys: ProtocolKeys, family: int) -> list[Alternative]:
    if keys.any_protocol:
        return [Alternative(((0, 255),))]
    out: list[Alternative] = []
    sport = ports(keys.sport) if keys.sport else ALL_PORTS
    for name, number in PROTO_NUMBER.items():
        values = getattr(keys, name)
        if values:
            out.append(Alternative(((number, number),), ports(values), sport))
    types = icmp_types(keys, family)
    if types is not None:
        proto = ICMP_PROTO[family]
        out.append(Alternative(((proto, proto),), types))
    if keys.proto:
        out.append(Alternative(s.merge((protocol_number(p), protocol_number(p)) for p in keys.proto)))
    return out


def address_intervals(addresses: AddressSet, family: int) -> Intervals:
    return addresses.v4 if family == 4 else addresses.v6


@dataclass
class Matcher:
    """Rule -> region, memoised by the rule's match keys (rules from templates repeat)."""

    policy: Policy
    now: datetime | None = None
    timezone: str | None = None
    _memo: dict[tuple[object, ...], Region] = field(default_factory=dict)

    def time(self, schedule: str | None) -> Intervals:
        if schedule is None:
            return s.FULL[s.TIME]
        windows = utc_week_minutes(self.policy.doc.schedules[schedule], self.now, self.timezone)
        return s.merge((low, high - 1) for low, high in windows)

    def rule(self, rule: Rule) -> Region:
        key = (
            tuple(rule.from_ or ()) if rule.from_ is not None else None,
            tuple(rule.to or ()) if rule.to is not None else None,
            tuple(rule.service or ()) if rule.service is not None else None,
            *(tuple(getattr(rule, k) or ()) for k in ("tcp", "udp", "sctp", "sport", "icmp", "icmpv6", "proto")),
            rule.family,
            rule.schedule,
        )
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._region(rule, ProtocolKeys.of(self.policy, rule), self.time(rule.schedule))
        return found

    def filter_rule(self, rule: FilterRule) -> Region:
        """A guard filter rule's L3/L4 part (its L2 keys are judged by the caller)."""
        as_rule = Rule(action="accept", **{k: getattr(rule, k) for k in ("from_", "to", "tcp", "udp", "sport", "icmp", "proto")})
        return self.rule(as_rule)

    def _region(self, rule: Rule, keys: ProtocolKeys, time: Intervals) -> Region:
        source = self.policy.address_set(rule.from_)
        destination = self.policy.address_set(rule.to)
        boxes = []
        for family_name in FAMILIES:
            if rule.family is not None and rule.family != family_name:
                continue
            family = FAM_NUMBER[family_name]
            src, dst = address_intervals(source, family), address_intervals(destination, family)
            if not src or not dst:
                continue
            for alt in protocol_alternatives(keys, family):
                boxes.append((alt.proto, alt.dport, ((family, family),), src, dst, alt.sport, time))
        return tuple(boxes)


def addresses_region(addresses: AddressSet, dim: int) -> Region:
    """Every packet whose `dim` (SRC or DST) is one of `addresses`."""
    out = []
    for family in (4, 6):
        values = address_intervals(addresses, family)
        if values:
            other = s.SRC if dim == s.DST else s.DST
            dims = list(s.FULL)
            dims[s.FAM] = ((family, family),)
            dims[dim] = values
            dims[other] = ((0, s.ADDRESS_MAX[family]),)
            out.append(tuple(dims))
    return tuple(out)


def family_of(name: Family) -> int:
    return FAM_NUMBER[name]
