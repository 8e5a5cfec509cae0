"""Regions and rules in words: services, peers, time windows, rule text."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone

from ..policy.builtins import ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from ..policy.model import Rule
from . import space as s
from .space import Intervals, Region

PROTO_NAMES = {number: name for name, number in IP_PROTOCOLS.items()}
ICMP_NAMES = {1: {v: k for k, v in ICMP_V4_TYPES.items()}, 58: {v: k for k, v in ICMP_V6_TYPES.items()}}
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def intervals_text(values: Intervals, names: dict[int, str] | None = None) -> str:
    parts = []
    for low, high in values:
        if names is not None and low == high and low in names:
            parts.append(names[low])
        else:
            parts.append(str(low) if low == high else f"{low}-{high}")
    return ",".join(parts)


def services_of(region: Region) -> list[str]:
    """`tcp 22,80`, `udp 53`, `icmp echo-request`, `esp`, `any` - one per protocol."""
    by_proto: dict[tuple[int, int], list[tuple[Intervals, Intervals]]] = {}
    for box in region:
        for low, high in box[s.PROTO]:
            by_proto.setdefault((low, high), []).append((box[s.DPORT], box[s.SPORT]))
    merged: dict[int, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
    out = []
    for (low, high), ports in sorted(by_proto.items()):
        if (low, high) == (0, 255):
            return ["any"]
        for proto in range(low, high + 1) if high - low < 300 else ():
            dports, sports = merged.setdefault(proto, ([], []))
            for dport, sport in ports:
                dports.extend(dport)
                sports.extend(sport)
    for proto, (dports, sports) in sorted(merged.items()):
        name = PROTO_NAMES.get(proto, str(proto))
        dport, sport = s.merge(dports), s.merge(sports)
        if proto in (6, 17, 132):
            text = name if dport == s.FULL[s.DPORT] else f"{name} {intervals_text(dport)}"
            if sport != s.FULL[s.SPORT]:
                text += f" sport {intervals_text(sport)}"
        elif proto in (1, 58):
            text = name if dport == s.FULL[s.DPORT] else f"{name} {intervals_text(s.iv_intersect(dport, ((0, 255),)), ICMP_NAMES[proto])}"
        else:
            text = name
        out.append(text)
    return out


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
    out: list[str] = []
    for low, high in values:
        for net in ipaddress.summarize_address_range(cls(low), cls(high)):
            out.append(str(net) if net.num_addresses > 1 else str(net.network_address))
            if len(out) > limit:
                return out[:limit] + [f"... ({len(values)} ranges)"]
    return out


def minute_of_week(moment: datetime) -> int:
    utc = moment.astimezone(timezone.utc)
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
