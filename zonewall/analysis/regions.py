"""The plan's match primitives as regions of packet space.

The analyzer's rendering of compiler/plan/vocabulary.py (the compiler renders the
same primitives as nft statements): a Match is one box per family, a Step the union
of its matches' boxes within its time window. Nothing here knows what a policy key
means; that is the plan's (compiler/plan/rules.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..compiler.plan.vocabulary import TCP_SYN, Addresses, IcmpTypes, Intervals, Match, Ports, Protocols, Step, TcpFlags
from ..policy.builtins import ICMP_V4_TYPES, ICMP_V6_TYPES
from . import space as s
from .space import Box, Region

FAMILY_NUMBER = {"ipv4": 4, "ipv6": 6}
PROTOCOL_NUMBER = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
ICMP_PROTO = {4: 1, 6: 58}
ICMP_TABLE = {4: ICMP_V4_TYPES, 6: ICMP_V6_TYPES}


def window(time: Intervals | None) -> Intervals:
    """A plan time window ([start, end) minutes) as the TIME dimension."""
    if time is None:
        return s.FULL[s.TIME]
    return s.merge((low, high - 1) for low, high in time)


def match_boxes(match: Match, time: Intervals) -> list[Box]:
    out = []
    families = (FAMILY_NUMBER[match.family],) if match.family is not None else (4, 6)
    l4 = match.l4
    if l4 is None:
        proto, dport, sport = s.FULL[s.PROTO], s.FULL[s.DPORT], s.FULL[s.SPORT]
    elif isinstance(l4, Ports):
        number = PROTOCOL_NUMBER[l4.protocol]
        proto, dport = ((number, number),), s.merge(l4.dport)
        sport = s.merge(l4.sport) if l4.sport is not None else s.FULL[s.SPORT]
    elif isinstance(l4, TcpFlags):
        # the first packet of a new connection is a SYN: the flags hold for all of it or none
        if not l4.holds_for(TCP_SYN):
            return []
        proto, dport = ((6, 6),), s.FULL[s.DPORT]
        sport = s.merge(l4.sport) if l4.sport is not None else s.FULL[s.SPORT]
    elif isinstance(l4, IcmpTypes):
        number = PROTOCOL_NUMBER[l4.protocol]
        proto = ((number, number),)
        dport = s.merge((n, n) for n, _label in l4.types) if l4.types is not None else s.FULL[s.DPORT]
        sport = s.merge((n, n) for n, _label in l4.codes) if l4.codes is not None else s.FULL[s.SPORT]  # ICMP: the code (issue 18)
    else:
        assert isinstance(l4, Protocols)
        proto, dport, sport = s.merge((n, n) for n, _label in l4.values), s.FULL[s.DPORT], s.FULL[s.SPORT]
    for family in families:
        everything = ((0, s.ADDRESS_MAX[family]),)
        src = _addresses(match.src, everything)
        dst = _addresses(match.dst, everything)
        if not src or not dst:
            continue
        out.append((proto, dport, ((family, family),), src, dst, sport, time))
    return out


def _addresses(addresses: Addresses | None, everything: Intervals) -> Intervals:
    if addresses is None:
        return everything
    return s.iv_subtract(everything, addresses.values) if addresses.negate else addresses.values


def matches_region(matches: tuple[Match, ...] | None, time: Intervals | None) -> Region:
    """What any of `matches` (None: every packet) takes within `time`."""
    when = window(time)
    if matches is None:
        return s.universe(when)
    return s.region(*(box for match in matches for box in match_boxes(match, when)))


class Regions:
    """Step -> region, memoised by the step's match tuple and window (the plan shares
    one tuple between rules with the same match keys: templates repeat)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[int, Intervals | None], tuple[object, Region]] = {}

    def kept_for(self, matches: Iterable[tuple[Match, ...]]) -> Regions:
        """A memo holding only the regions of `matches` (analysis/kept.py: what a
        diff keeps for the next drops the tuples its policy no longer has)."""
        live = {id(m) for m in matches}
        out = Regions()
        out._memo = {key: found for key, found in self._memo.items() if key[0] in live}
        return out

    def of(self, step: Step) -> Region:
        return self.of_matches(step.matches, step.time)

    def of_matches(self, matches: tuple[Match, ...] | None, time: Intervals | None = None) -> Region:
        key = (id(matches), time)
        found = self._memo.get(key)
        if found is None:
            # the tuple is kept alive with its region, so its id is never reused
            found = self._memo[key] = (matches, matches_region(matches, time))
        return found[1]
