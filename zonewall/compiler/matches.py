"""Turn a policy rule's match keys into nftables match statements, per address family.

`from` always matches the source address and `to` the destination, whatever the
direction: for an inbound rule `from` is the peer, for an outbound rule `to` is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..policy.addresses import FAMILIES, AddressSet, Family, RefItem, parse_ref
from ..policy.builtins import ICMP_V4_TYPES, ICMP_V6_TYPES
from ..policy.model import Rule, Service
from ..policy.resolve import Policy
from . import nftexpr as x
from .ir import NamedSet
from .naming import ref_set_name

Json = dict[str, Any]
NAMED_KINDS = ("group", "zone", "vm", "network", "host")
ADDR_TYPE = {"ipv4": "ipv4_addr", "ipv6": "ipv6_addr"}
IP_PROTO = {"ipv4": "ip", "ipv6": "ip6"}


def address_elements(addresses: AddressSet, family: Family) -> list[Any]:
    """Disjoint nft elements: single address, prefix, or range (nft rejects overlaps)."""
    cls = ipaddress.IPv4Address if family == "ipv4" else ipaddress.IPv6Address
    bits = 32 if family == "ipv4" else 128
    out: list[Any] = []
    for low, high in addresses.family(family):
        size = high - low + 1
        if size == 1:
            out.append(str(cls(low)))
        elif size & (size - 1) == 0 and low % size == 0:
            out.append(x.prefix(str(cls(low)), bits - size.bit_length() + 1))
        else:
            out.append(x.value_range(str(cls(low)), str(cls(high))))
    return out


@dataclass
class SetRegistry:
    """Named sets the compiled rules refer to (one per reference and family)."""

    sets: dict[str, NamedSet] = field(default_factory=dict)

    def address_set(self, name: str, addresses: AddressSet, family: Family, comment: str) -> str:
        if name not in self.sets:
            self.sets[name] = NamedSet(
                name=name,
                type=ADDR_TYPE[family],
                elements=tuple(address_elements(addresses, family)),
                flags=("interval",),
                comment=comment,
            )
        return name


def address_match(policy: Policy, registry: SetRegistry, refs: list[str] | None, field_name: str, family: Family) -> list[Json] | None:
    """Statements matching `refs` on saddr/daddr in `family`; None if nothing can match."""
    if refs is None:
        return []
    addresses = policy.address_set(refs)
    if not addresses.family(family):
        return None
    if addresses.is_everything(family):
        return []
    left = x.payload(IP_PROTO[family], field_name)
    items = _parsed_refs(tuple(refs))
    if len(items) == 1 and not items[0].negate and items[0].kind in NAMED_KINDS:
        # A named reference stays a named set: shared by every rule using it, and
        # a membership change rewrites only the set.
        item = items[0]
        name = registry.address_set(ref_set_name(item.kind, item.name, family), addresses, family, f"{item.kind}:{item.name}")
        return [x.match(left, x.set_ref(name))]
    elements = address_elements(addresses, family)
    return [x.match(left, elements[0] if len(elements) == 1 else {"set": elements})]


@lru_cache(maxsize=65536)
def _parsed_refs(refs: tuple[str, ...]) -> tuple[RefItem, ...]:
    """parse_ref over a reference list, memoised: RefItems are immutable and the same
    lists recur in every family and in many rules."""
    return tuple(parse_ref(r) for r in refs)


def _port_value(text: str) -> Any:
    if "-" in text:
        low, high = text.split("-")
        return x.value_range(int(low), int(high))
    return int(text)


def _ports_match(protocol: str, field_name: str, ports: list[str]) -> Json:
    values = [_port_value(p) for p in ports]
    return x.match(x.payload(protocol, field_name), values[0] if len(values) == 1 else {"set": values})


def _icmp_value(name: str, table: dict[str, int] | None = None) -> Any:
    """A type name, or a number (as its name where the family has one)."""
    if not name.isdigit():
        return name
    if table is not None:
        for known, number in table.items():
            if number == int(name):
                return known
    return int(name)


@dataclass(frozen=True)
class ProtocolKeys:
    """The protocol keys of a rule, or the union of its services'."""

    tcp: tuple[str, ...] = ()
    udp: tuple[str, ...] = ()
    sctp: tuple[str, ...] = ()
    icmp: tuple[str, ...] = ()
    icmpv6: tuple[str, ...] = ()
    proto: tuple[str, ...] = ()
    sport: tuple[str, ...] = ()
    any_protocol: bool = False

    @staticmethod
    def of(policy: Policy, rule: Rule) -> "ProtocolKeys":
        sources: list[Rule | Service] = [policy.service(s) for s in rule.service] if rule.service else [rule]
        keys: dict[str, list[str]] = {k: [] for k in ("tcp", "udp", "sctp", "icmp", "icmpv6", "proto")}
        for source in sources:
            for key in keys:
                for value in getattr(source, key) or []:
                    if value not in keys[key]:
                        keys[key].append(value)
        any_protocol = not rule.service and all(not v for v in keys.values())
        return ProtocolKeys(**{k: tuple(v) for k, v in keys.items()}, sport=tuple(rule.sport or ()), any_protocol=any_protocol)


def protocol_alternatives(keys: ProtocolKeys, family: Family) -> list[list[Json]]:
    """One statement list per protocol the rule matches in `family` (empty: none)."""
    if keys.any_protocol:
        return [[]]
    out: list[list[Json]] = []
    for protocol in ("tcp", "udp", "sctp"):
        ports = getattr(keys, protocol)
        if ports:
            statements = [_ports_match(protocol, "dport", list(ports))]
            if keys.sport:
                statements.append(_ports_match(protocol, "sport", list(keys.sport)))
            out.append(statements)
    icmp_protocol, table = ("icmp", ICMP_V4_TYPES) if family == "ipv4" else ("icmpv6", ICMP_V6_TYPES)
    types = [t for t in keys.icmp if t == "any" or t.isdigit() or t in table]
    if family == "ipv6":
        types += [t for t in keys.icmpv6 if t not in types]
    if "any" in types:
        out.append([x.match(x.meta("l4proto"), icmp_protocol)])
    elif types:
        values = list(dict.fromkeys(_icmp_value(t, table) for t in types))
        out.append([x.match(x.payload(icmp_protocol, "type"), values[0] if len(values) == 1 else {"set": values})])
    if keys.proto:
        values = [_icmp_value(p) for p in keys.proto]
        out.append([x.match(x.meta("l4proto"), values[0] if len(values) == 1 else {"set": values})])
    return out


def rule_matches(policy: Policy, registry: SetRegistry, rule: Rule) -> list[tuple[Family | None, list[Json]]]:
    """All match-statement lists of a rule: families x protocols, deduplicated.

    A rule that applies to both families without naming addresses or ICMP compiles
    once, family-agnostic (family None); a rule limited to one family says so with
    `meta nfproto` unless its matches already imply the family.
    """
    keys = ProtocolKeys.of(policy, rule)
    per_family: list[tuple[Family, list[list[Json]], bool]] = []
    for family in FAMILIES:
        if rule.family is not None and rule.family != family:
            continue
        source = address_match(policy, registry, rule.from_, "saddr", family)
        destination = address_match(policy, registry, rule.to, "daddr", family)
        alternatives = protocol_alternatives(keys, family)
        if source is None or destination is None or not alternatives:
            continue
        addresses = source + destination
        per_family.append((family, [addresses + alt for alt in alternatives], bool(addresses)))
    # A statement list that does not itself imply its family is family-agnostic as
    # written: fine when the other family has the very same list (one rule for
    # both), otherwise it must say `meta nfproto` or it would match the other family
    # too (e.g. `to: "!10.0.0.0/8"` is "all IPv6" plus "IPv4 but 10/8": the IPv6
    # half must not also match IPv4 10/8).
    by_family = {family: alternatives for family, alternatives, _ in per_family}
    out: list[tuple[Family | None, list[Json]]] = []
    for family, alternatives, has_addresses in per_family:
        other = [alts for f, alts in by_family.items() if f != family]
        for statements in alternatives:
            if has_addresses or _implies_family(statements):
                out.append((family, statements))
            elif other and statements in other[0]:
                if (None, statements) not in out:
                    out.append((None, statements))
            else:
                out.append((family, [x.match(x.meta("nfproto"), family)] + statements))
    return out


def _implies_family(statements: list[Json]) -> bool:
    for statement in statements:
        left = statement.get("match", {}).get("left", {})
        right = statement.get("match", {}).get("right")
        if "payload" in left and left["payload"]["protocol"] in ("ip", "ip6", "icmp", "icmpv6"):
            return True
        if left == x.meta("l4proto") and right in ("icmp", "icmpv6"):
            return True
    return False
