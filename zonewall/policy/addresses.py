"""Address references and exact address sets (sorted, merged integer intervals).

An address reference is `any`, an address, a CIDR, a range `a-b`, `vm:NAME`,
`zone:NAME`, `group:NAME`, `network:NAME` or `host:NAME`; a leading `!` excludes.
"""

from __future__ import annotations

import ipaddress
import socket
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
MAX = {"ipv4": (1 << 32) - 1, "ipv6": (1 << 128) - 1}
REF_KINDS = ("vm", "zone", "group", "network", "host")

Interval = tuple[int, int]  # inclusive


def address_value(text: str) -> tuple[int, int]:
    """(family 4 or 6, integer) of a valid address. inet_pton costs a tenth of
    ipaddress.ip_address, which matters when a query touches ten thousand VMs."""
    if ":" in text:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text.split("%")[0]), "big")
    return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")


def _merge(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    out: list[list[int]] = []
    for low, high in sorted(intervals):
        if out and low <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], high)
        else:
            out.append([low, high])
    return tuple((a, b) for a, b in out)


def _subtract(base: tuple[Interval, ...], cut: tuple[Interval, ...]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for low, high in base:
        pieces = [(low, high)]
        for c_low, c_high in cut:
            next_pieces = []
            for p_low, p_high in pieces:
                if c_high < p_low or c_low > p_high:
                    next_pieces.append((p_low, p_high))
                    continue
                if p_low < c_low:
                    next_pieces.append((p_low, c_low - 1))
                if c_high < p_high:
                    next_pieces.append((c_high + 1, p_high))
            pieces = next_pieces
        out.extend(pieces)
    return _merge(out)


def _intersect(a: tuple[Interval, ...], b: tuple[Interval, ...]) -> tuple[Interval, ...]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        low, high = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if low <= high:
            out.append((low, high))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def _meets(a: tuple[Interval, ...], b: tuple[Interval, ...]) -> bool:
    """Whether two sorted, merged interval lists share a value: each interval of the
    shorter is looked up in the longer (a zone's or group's list runs to thousands)."""
    if len(a) > len(b):
        a, b = b, a
    for low, high in a:
        # the last interval of `b` starting at or before `high` ends the furthest of those
        index = bisect_right(b, (high, _AFTER))
        if index and b[index - 1][1] >= low:
            return True
    return False


_AFTER = 1 << 129  # greater than any address: (x, _AFTER) sorts after every (x, y)


@dataclass(frozen=True)
class AddressSet:
    """An exact set of IPv4 and IPv6 addresses."""

    v4: tuple[Interval, ...] = ()
    v6: tuple[Interval, ...] = ()

    @staticmethod
    def everything() -> AddressSet:
        return AddressSet(((0, MAX["ipv4"]),), ((0, MAX["ipv6"]),))

    @staticmethod
    def of(v4: Iterable[Interval] = (), v6: Iterable[Interval] = ()) -> AddressSet:
        return AddressSet(_merge(v4), _merge(v6))

    def family(self, family: Family) -> tuple[Interval, ...]:
        return self.v4 if family == "ipv4" else self.v6

    def only(self, family: Family) -> AddressSet:
        return AddressSet(self.v4, ()) if family == "ipv4" else AddressSet((), self.v6)

    def union(self, other: AddressSet) -> AddressSet:
        return AddressSet(_merge(self.v4 + other.v4), _merge(self.v6 + other.v6))

    def minus(self, other: AddressSet) -> AddressSet:
        return AddressSet(_subtract(self.v4, other.v4), _subtract(self.v6, other.v6))

    def intersect(self, other: AddressSet) -> AddressSet:
        return AddressSet(_intersect(self.v4, other.v4), _intersect(self.v6, other.v6))

    def meets(self, other: AddressSet) -> bool:
        """Whether the two sets share an address (`intersect` without building it)."""
        return _meets(self.v4, other.v4) or _meets(self.v6, other.v6)

    def is_empty(self) -> bool:
        return not self.v4 and not self.v6

    def is_everything(self, family: Family) -> bool:
        return self.family(family) == ((0, MAX[family]),)

    def contains(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        intervals = self.v4 if ip.version == 4 else self.v6
        value = int(ip)
        return any(low <= value <= high for low, high in intervals)

    def families(self) -> tuple[Family, ...]:
        return tuple(f for f in FAMILIES if self.family(f))

    def cidrs(self, family: Family) -> list[str]:
        """The set as a minimal list of CIDRs (for display and nft elements)."""
        cls = ipaddress.IPv4Address if family == "ipv4" else ipaddress.IPv6Address
        out: list[str] = []
        for low, high in self.family(family):
            for net in ipaddress.summarize_address_range(cls(low), cls(high)):
                out.append(str(net) if net.num_addresses > 1 else str(net.network_address))
        return out


def interval_of(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Interval:
    return int(network.network_address), int(network.broadcast_address)


class AddressSyntaxError(ValueError):
    pass


def parse_literal(text: str) -> AddressSet:
    """Parse an address, CIDR or range literal; raise AddressSyntaxError with a reason."""
    text = text.strip()
    if "-" in text and "/" not in text:
        low_text, _, high_text = text.partition("-")
        try:
            low, high = ipaddress.ip_address(low_text.strip()), ipaddress.ip_address(high_text.strip())
        except ValueError:
            raise AddressSyntaxError(f"{text!r} is not an address range (expected e.g. 10.0.1.10-10.0.1.20)") from None
        if low.version != high.version:
            raise AddressSyntaxError(f"range {text!r} mixes IPv4 and IPv6")
        if int(low) > int(high):
            raise AddressSyntaxError(f"range {text!r} is empty: its start is above its end")
        span = ((int(low), int(high)),)
        return AddressSet(span, ()) if low.version == 4 else AddressSet((), span)
    fast = _plain_cidr(text)
    if fast is not None:
        return fast
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            fixed = ipaddress.ip_network(text, strict=False)
            raise AddressSyntaxError(f"{text!r} has host bits set (did you mean {fixed}?)") from None
        raise AddressSyntaxError(f"{text!r} is not an IP address, CIDR or range") from None
    span = (interval_of(network),)
    return AddressSet(span, ()) if network.version == 4 else AddressSet((), span)


def _plain_cidr(text: str) -> AddressSet | None:
    """A well-formed address or CIDR without host bits, parsed with inet_pton (a
    policy of ten thousand VMs has tens of thousands of them; ipaddress is ~10x
    slower). Anything else returns None and gets ipaddress's full treatment,
    including the error messages."""
    address, slash, length_text = text.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    bits = 128 if family == socket.AF_INET6 else 32
    if "%" in address or (slash and not (length_text.isdigit() and length_text.isascii() and int(length_text) <= bits)):
        return None
    try:
        value = int.from_bytes(socket.inet_pton(family, address), "big")
    except OSError:
        return None
    if family == socket.AF_INET and address.count(".") != 3:
        return None  # inet_pton takes no shorthand, but be explicit: ipaddress decides
    host_bits = bits - (int(length_text) if slash else bits)
    if value & ((1 << host_bits) - 1):
        return None  # host bits set: ipaddress words the error
    span = ((value, value | ((1 << host_bits) - 1)),)
    return AddressSet(span, ()) if family == socket.AF_INET else AddressSet((), span)


@dataclass(frozen=True)
class RefItem:
    """One parsed item of an address reference list."""

    negate: bool
    kind: str  # any | literal | vm | zone | group | network | host
    name: str  # the literal text or the referenced name

    def __str__(self) -> str:
        body = self.name if self.kind in ("any", "literal") else f"{self.kind}:{self.name}"
        return ("!" if self.negate else "") + body


def parse_ref(text: object) -> RefItem:
    if not isinstance(text, str):
        raise AddressSyntaxError(f"{text!r} is not an address reference (expected a string such as 10.0.0.0/8, any, group:NAME)")
    return _parse_ref(text)


@lru_cache(maxsize=1 << 16)  # the same references recur across rules and VMs (RefItem is immutable)
def _parse_ref(text: str) -> RefItem:
    body = text.strip()
    negate = body.startswith("!")
    if negate:
        body = body[1:].strip()
    if body == "any":
        return RefItem(negate, "any", "any")
    if ":" in body:
        kind, _, name = body.partition(":")
        if kind in REF_KINDS:
            if not name:
                raise AddressSyntaxError(f"{text!r} names no {kind} (expected {kind}:NAME)")
            return RefItem(negate, kind, name)
    # an IPv6 literal also contains ':'; anything else must be a literal address
    parse_literal(body)
    return RefItem(negate, "literal", body)
