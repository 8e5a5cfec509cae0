"""Render the plan's match primitives (plan/vocabulary.py) as nftables statements.

What a rule's keys mean is decided by the plan (plan/rules.py); this module only
spells the resulting Matches in nft: named sets for named references, literal
elements otherwise, `meta nfproto` where a match must stay in its family.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..policy.addresses import AddressSet, Family
from ..policy.model import Rule
from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import NamedSet
from .naming import ref_set_name
from .plan.rules import rule_matches as plan_rule_matches
from .plan.vocabulary import L4, Addresses, IcmpTypes, Intervals, Match, Ports, TcpFlags
from .stmt import Statement

ADDR_TYPE = {"ipv4": "ipv4_addr", "ipv6": "ipv6_addr"}
IP_PROTO = {"ipv4": "ip", "ipv6": "ip6"}


def address_elements(addresses: AddressSet, family: Family) -> list[Any]:
    """Disjoint nft elements: single address, prefix, or range (nft rejects overlaps)."""
    return interval_elements(addresses.family(family), family)


def interval_elements(values: Intervals, family: Family) -> list[Any]:
    cls = ipaddress.IPv4Address if family == "ipv4" else ipaddress.IPv6Address
    bits = 32 if family == "ipv4" else 128
    out: list[Any] = []
    for low, high in values:
        size = high - low + 1
        if size == 1:
            out.append(str(cls(low)))
        elif size & (size - 1) == 0 and low % size == 0:
            out.append(x.prefix(str(cls(low)), bits - size.bit_length() + 1))
        else:
            out.append(x.value_range(str(cls(low)), str(cls(high))))
    return out


ElementsMemo = dict[tuple[Intervals, str], tuple[Any, ...]]


@dataclass
class SetRegistry:
    """Named sets the compiled rules refer to (one per reference and family).

    `memo`: addresses already written as nft elements, by (intervals, family). With
    a policy that keeps its compile memos (the agent's: Policy.keep_compile_memos) it
    outlives a compile and passes to a policy edited in rules alone: writing addresses
    out is most of what a compile of a node's VM rules costs (ipaddress formatting),
    and a one-rule change leaves every other rule's addresses as they were."""

    sets: dict[str, NamedSet] = field(default_factory=dict)
    memo: ElementsMemo = field(default_factory=dict)

    def elements(self, values: Intervals, family: Family) -> list[Any]:
        key = (values, family)
        found = self.memo.get(key)
        if found is None:
            found = self.memo[key] = tuple(interval_elements(values, family))
        return list(found)

    def address_set(self, name: str, addresses: AddressSet, family: Family, comment: str) -> str:
        return self.interval_set(name, addresses.family(family), family, comment)

    def interval_set(self, name: str, values: Intervals, family: Family, comment: str) -> str:
        if name not in self.sets:
            self.sets[name] = NamedSet(
                name=name,
                type=ADDR_TYPE[family],
                elements=tuple(self.elements(values, family)),
                flags=("interval",),
                comment=comment,
            )
        return name


def _one_or_set(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else {"set": values}


def address_statement(registry: SetRegistry, addresses: Addresses, field_name: str, family: Family) -> Statement:
    """saddr/daddr in `addresses`: a named reference stays a named set (shared by
    every rule using it; a membership change rewrites only the set)."""
    left = x.payload(IP_PROTO[family], field_name)
    if addresses.named is not None:
        kind, name = addresses.named
        if kind == "settings":
            set_name, comment = f"{name}-{'v4' if family == 'ipv4' else 'v6'}", f"settings.{name}"
        else:
            set_name, comment = ref_set_name(kind, name, family), f"{kind}:{name}"
        registry.interval_set(set_name, addresses.values, family, comment)
        return x.match(left, x.set_ref(set_name), "!=" if addresses.negate else "==")
    elements = registry.elements(addresses.values, family)
    if addresses.negate:
        return x.match(left, {"set": elements}, "!=")
    return x.match(left, _one_or_set(elements))


def _port_values(ports: Intervals) -> list[Any]:
    return [low if low == high else x.value_range(low, high) for low, high in ports]


def l4_statements(l4: L4 | None) -> list[Statement]:
    if l4 is None:
        return []
    out: list[Statement]
    if isinstance(l4, Ports):
        out = [x.match(x.payload(l4.protocol, "dport"), _one_or_set(_port_values(l4.dport)))]
        if l4.sport is not None:
            out.append(x.match(x.payload(l4.protocol, "sport"), _one_or_set(_port_values(l4.sport))))
        return out
    if isinstance(l4, TcpFlags):
        out = [x.match(x.masked(x.payload("tcp", "flags"), l4.mask), l4.value, "!=" if l4.negate else "==")]
        if l4.sport is not None:
            out.append(x.match(x.payload("tcp", "sport"), _one_or_set(_port_values(l4.sport))))
        return out
    if isinstance(l4, IcmpTypes):
        if l4.types is None:
            return [x.match(x.meta("l4proto"), l4.protocol)]
        out = [x.match(x.payload(l4.protocol, "type"), _one_or_set([label for _number, label in l4.types]))]
        if l4.codes is not None:  # issue 18: one type's codes
            out.append(x.match(x.payload(l4.protocol, "code"), _one_or_set([label for _number, label in l4.codes])))
        return out
    return [x.match(x.meta("l4proto"), _one_or_set([label for _number, label in l4.values]))]


def match_statements(registry: SetRegistry, match: Match) -> list[Statement]:
    """One plan Match as nft statements (a family it does not imply: `meta nfproto`)."""
    out: list[Statement] = []
    if match.family is not None and not match.implies_family:
        out.append(x.match(x.meta("nfproto"), match.family))
    if match.src is not None:
        out.append(address_statement(registry, match.src, "saddr", match.family))  # type: ignore[arg-type]
    if match.dst is not None:
        out.append(address_statement(registry, match.dst, "daddr", match.family))  # type: ignore[arg-type]
    return out + l4_statements(match.l4)


def rule_matches(policy: Policy, registry: SetRegistry, rule: Rule) -> list[tuple[Family | None, list[Statement]]]:
    """A rule's match alternatives (plan/rules.py) as (family, statements)."""
    return [(m.family, match_statements(registry, m)) for m in plan_rule_matches(policy, rule)]
