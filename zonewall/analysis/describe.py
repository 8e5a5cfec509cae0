"""Regions and rules in words: services, peers, time windows, rule text."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime

from ..compiler.plan.chains import ICMPV6_ESSENTIAL
from ..policy.builtins import ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from ..policy.model import Rule
from . import space as s
from .space import Intervals, Region

PROTO_NAMES = {number: name for name, number in IP_PROTOCOLS.items()}
ICMP_NAMES = {1: {v: k for k, v in ICMP_V4_TYPES.items()}, 58: {v: k for k, v in ICMP_V6_TYPES.items()}}
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ESSENTIAL_TYPES = [(ICMP_V6_TYPES[t], ICMP_V6_TYPES[t]) for t in ICMPV6_ESSENTIAL]


def intervals_text(values: Intervals, names: dict[int, str] | None = None) -> str:
    parts = []
    for low, high in values:
        if names is not None and low == high and low in names:
            parts.append(names[low])
        else:
            parts.append(str(low) if low == high else f"{low}-{high}")
    return ",".join(parts)


def services_of(region: Region) -> list[str]:
    """`tcp 22,80`, `udp 53`, `icmp echo-request`, `esp`, `any`, `any except tcp 25`.

    The ICMPv6 essentials (always allowed, left out of questions) do not make ICMPv6
    partial.
    """
    dports: dict[int, list[tuple[int, int]]] = {}
    sports: dict[int, list[tuple[int, int]]] = {}
    for box in region:
        for low, high in box[s.PROTO]:
            for proto in range(low, high + 1):
                dports.setdefault(proto, []).extend(box[s.DPORT])
                sports.setdefault(proto, []).extend(box[s.SPORT])
    parts: dict[int, tuple[Intervals, Intervals] | None] = {}  # None: the whole protocol
    for proto in sorted(dports):
        dport, sport = s.merge(dports[proto]), s.merge(sports[proto])
        if proto == 58:
            dport = s.merge(dport + tuple(ESSENTIAL_TYPES))
        if proto in (1, 58):
            dport = s.merge(dport + ((256, 65535),))  # the type dimension's unused values
        parts[proto] = None if dport == s.FULL[s.DPORT] and sport == s.FULL[s.SPORT] else (dport, sport)
    whole = [p for p, part in parts.items() if part is None]
    if len(whole) < 128:
        return [PROTO_NAMES.get(p, str(p)) if part is None else _partial(p, *part) for p, part in parts.items()]
    exceptions = [_except(p, *part) for p, part in parts.items() if part is not None]
    missing = [p for p in range(256) if p not in parts]
    if missing:
        exceptions.append(intervals_text(s.merge((p, p) for p in missing), PROTO_NAMES))
    return ["any" + (" except " + "; ".join(exceptions) if exceptions else "")]


def _except(proto: int, dport: Intervals, sport: Intervals) -> str:
    """What of a partly allowed protocol is not allowed."""
    if sport != s.FULL[s.SPORT]:
        return f"{PROTO_NAMES.get(proto, str(proto))} outside {_partial(proto, dport, sport)}"
    return _partial(proto, s.iv_subtract(s.FULL[s.DPORT], dport), s.FULL[s.SPORT])


def _partial(proto: int, dport: Intervals, sport: Intervals) -> str:
    name = PROTO_NAMES.get(proto, str(proto))
    if proto in (6, 17, 132):
        text = name if dport == s.FULL[s.DPORT] else f"{name} {intervals_text(dport)}"
        if sport != s.FULL[s.SPORT]:
            text += f" sport {intervals_text(sport)}"
        return text
    if proto in (1, 58):
        return f"{name} {intervals_text(s.iv_intersect(dport, ((0, 255),)), ICMP_NAMES[proto])}"
    return name


def minute_text(minute: int) -> str:
    day, rest = divmod(minute, 1440)
    return f"{DAY_NAMES[day]} {rest // 60:02d}:{rest % 60:02d}"


def time_text(values: Intervals) -> str:
    """Minutes of the week (UTC) as `mon 08:00-mon 17:59 UTC`, or `always`."""
    if values == s.FULL[s.TIME]:
        return "always"
    return ", ".join(f"{minute_text(low)}-{minute_text(high)}" for low, high in values) + " UTC"


def addresses_text(family: int, values: Intervals, limit: int = 6) -> list[str]:
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    bits = 32 if family == 4 else 128
    out: list[str] = []
    for low, high in values:
        for start, prefix in _cidr_blocks(low, high, bits):
            out.append(f"{cls(start)}/{prefix}" if prefix < bits else str(cls(start)))
            if len(out) > limit:
                return out[:limit] + [f"... ({len(values)} ranges)"]
    return out


def _cidr_blocks(low: int, high: int, bits: int) -> Iterator[tuple[int, int]]:
    """[low, high] as the fewest CIDR blocks, in order (ipaddress.summarize_address_range's
    answer, without its network objects: a /31 one refers to itself, a reference cycle)."""
    while low <= high:
        size = (low & -low).bit_length() - 1 if low else bits  # the largest block aligned at low ...
        size = min(size, (high - low + 1).bit_length() - 1)  # ... that fits
        yield low, bits - size
        low += 1 << size


def minute_of_week(moment: datetime) -> int:
    utc = moment.astimezone(UTC)
    return utc.weekday() * 1440 + utc.hour * 60 + utc.minute


def rule_text(rule: Rule) -> str:
    """The rule as one flow-style YAML line (keys in the spec's order)."""
    data = rule.model_dump(by_alias=True, exclude_defaults=True, exclude_none=True)
    parts = []
    for key, value in data.items():
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else "[" + ", ".join(str(v) for v in value) + "]"
        elif isinstance(value, dict):
            value = "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        parts.append(f"{key}: {value}")
    return "{" + ", ".join(parts) + "}"


def address_text(family: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value))
