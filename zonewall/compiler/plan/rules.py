"""What a policy rule means, as plan steps: the one interpretation of its keys.

`from` always matches the source address and `to` the destination, whatever the
direction (for an inbound rule `from` is the peer, for an outbound rule `to` is). A
family is matched only where the rule's peers have addresses in it; `service` expands
to its protocol keys; ICMP type names are looked up per family (a name that exists in
one family only makes the rule that family's); `schedule` becomes the minutes of the
week (UTC) the window covers; `limit`, `log`, `action` ride along.

A rule without addresses or ICMP that means the same in both families is one Match
with family None (one nft rule for both); a family-only match that implies nothing
about its family keeps its family (rendered with `meta nfproto`), so e.g.
`to: "!10.0.0.0/8"` (all IPv6, IPv4 but 10/8) never lets the IPv6 half match IPv4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from operator import attrgetter
from typing import Any

from ...policy.addresses import FAMILIES, AddressSet, Family, RefItem, parse_ref
from ...policy.builtins import ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from ...policy.icmpcodes import code_label, is_coded, type_and_code
from ...policy.model import FilterRule, LogSettings, Rule, Service, parse_rate
from ...policy.resolve import MATCHES_MEMO, Policy, RuleRef
from ..schedule import WEEK, utc_week_minutes
from .vocabulary import L4, Addresses, IcmpTypes, Intervals, Label, Match, Ports, Protocols, RateLimit, Scope, Step

NAMED_KINDS = ("group", "zone", "vm", "network", "host")
ICMP_TABLE: dict[Family, dict[str, int]] = {"ipv4": ICMP_V4_TYPES, "ipv6": ICMP_V6_TYPES}
ICMP_PROTOCOL: dict[Family, str] = {"ipv4": "icmp", "ipv6": "icmpv6"}
_UNSEEN = object()
MATCH_KEYS = ("from_", "to", "service", "tcp", "udp", "sctp", "sport", "icmp", "icmpv6", "proto", "family")
_match_values = attrgetter(*MATCH_KEYS)


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
    def of(policy: Policy, rule: Rule) -> ProtocolKeys:
        # (planned once per distinct rule: ~20,000 of a 10,000-VM policy's lint shard)
        if rule.service:
            sources: list[Rule | Service] = [policy.service(s) for s in rule.service]
            per_source = [_protocol_values(source) for source in sources]
            values = [_unique([value for keys in per_source for value in keys[index] or ()]) for index in range(len(_PROTOCOL_KEYS))]
            any_protocol = False
        else:
            values = [_unique(v) for v in _protocol_values(rule)]
            any_protocol = not any(values)
        tcp, udp, sctp, icmp, icmpv6, proto = values
        return ProtocolKeys(tcp, udp, sctp, icmp, icmpv6, proto, tuple(rule.sport or ()), any_protocol)


_PROTOCOL_KEYS = ("tcp", "udp", "sctp", "icmp", "icmpv6", "proto")
_protocol_values = attrgetter(*_PROTOCOL_KEYS)


def _unique(values: list[str] | None) -> tuple[str, ...]:
    """The values in order, each once."""
    if not values:
        return ()
    return tuple(values) if len(values) == 1 else tuple(dict.fromkeys(values))


def port_intervals(texts: Iterable[str]) -> Intervals:
    """Ports as written ("22", "8000-8100"), in order."""
    out = []
    for text in texts:
        low, _, high = text.partition("-")
        out.append((int(low), int(high or low)))
    return tuple(out)


def _icmp_label(name: str, table: dict[str, int] | None) -> tuple[int, Label]:
    """(number, label): a type name, or a number shown as its name where it has one."""
    if not name.isdigit():
        return (table[name] if table is not None else IP_PROTOCOLS[name]), name
    number = int(name)
    if table is not None:
        for known, value in table.items():
            if value == number:
                return number, known
    return number, number


def l4_alternatives(keys: ProtocolKeys, family: Family) -> list[L4 | None]:
    """One layer-4 match per protocol the keys name in `family` (None: any protocol;
    empty: the keys match nothing in this family)."""
    if keys.any_protocol:
        return [None]
    out: list[L4 | None] = []
    for protocol in ("tcp", "udp", "sctp"):
        ports = getattr(keys, protocol)
        if ports:
            out.append(_ports(protocol, ports, keys.sport))
    if keys.icmp or keys.icmpv6:
        out += _icmp_alternatives(keys, family)
    if keys.proto:
        out.append(Protocols(tuple(_icmp_label(p, None) for p in keys.proto)))
    return out


@lru_cache(maxsize=65536)
def _ports(protocol: str, ports: tuple[str, ...], sport: tuple[str, ...]) -> Ports:
    """(one object per distinct match: rules from templates repeat their ports)"""
    return Ports(protocol, port_intervals(ports), port_intervals(sport) if sport else None)  # type: ignore[arg-type]


def _icmp_alternatives(keys: ProtocolKeys, family: Family) -> list[L4]:
    out: list[L4] = []
    table = ICMP_TABLE[family]
    names = [t for t in keys.icmp if t == "any" or t.isdigit() or t in table]
    coded = [t for t in keys.icmp if is_coded(t)]
    if family == "ipv6":
        names += [t for t in keys.icmpv6 if t not in names and not is_coded(t)]
        coded += [t for t in keys.icmpv6 if is_coded(t) and t not in coded]
    if "any" in names:
        out.append(IcmpTypes(ICMP_PROTOCOL[family]))  # type: ignore[arg-type]
    else:
        types = tuple({label: (number, label) for number, label in (_icmp_label(t, table) for t in names)}.values())
        if types:
            out.append(IcmpTypes(ICMP_PROTOCOL[family], types))  # type: ignore[arg-type]
        out += icmp_code_alternatives(coded, family, {number for number, _ in types})
    return out


def icmp_code_alternatives(items: list[str], family: Family, whole_types: set[int]) -> list[L4]:
    """ICMP type-and-code items (issue 18) of `family`: one match per type, with its
    codes; a type the rule also names whole needs no codes of its own."""
    per_type: dict[int, list[int]] = {}
    for item in items:
        found = type_and_code(item, family)
        if found is None or found[0] in whole_types:
            continue
        codes = per_type.setdefault(found[0], [])
        if found[1] not in codes:
            codes.append(found[1])
    table = ICMP_TABLE[family]
    return [
        IcmpTypes(ICMP_PROTOCOL[family], (_icmp_label(str(number), table),), tuple((c, code_label(family, number, c)) for c in codes))  # type: ignore[arg-type]
        for number, codes in per_type.items()
    ]


@lru_cache(maxsize=65536)
def _parsed_refs(refs: tuple[str, ...]) -> tuple[RefItem, ...]:
    return tuple(parse_ref(r) for r in refs)


def address_match(policy: Policy, refs: list[str] | None, family: Family) -> Addresses | bool | None:
    """The addresses `refs` match in `family`: None (any), or False when nothing
    can match (the rule has no alternative in this family)."""
    if refs is None:
        return None
    addresses = policy.address_set(refs)
    values = addresses.family(family)
    if not values:
        return False
    if addresses.is_everything(family):
        return None
    items = _parsed_refs(tuple(refs))
    named = (items[0].kind, items[0].name) if len(items) == 1 and not items[0].negate and items[0].kind in NAMED_KINDS else None
    return Addresses(values, named)


AddressMemo = dict[tuple[object, Family], "Addresses | bool | None"]


def _address_match(policy: Policy, refs: list[str] | None, family: Family, memo: AddressMemo | None) -> Addresses | bool | None:
    if memo is None or refs is None:
        return address_match(policy, refs, family)
    key = (tuple(refs), family)
    found = memo.get(key, _UNSEEN)
    if found is _UNSEEN:
        found = memo[key] = address_match(policy, refs, family)
    return found  # type: ignore[return-value]


def rule_matches(policy: Policy, rule: Rule | Any, addresses: AddressMemo | None = None) -> tuple[Match, ...]:
    """Every alternative of a rule's match keys: families x protocols. `addresses`:
    a memo of what reference lists match in `policy` (rules share their `from`/`to`
    more than their other keys)."""
    keys = ProtocolKeys.of(policy, rule)
    per_family: list[tuple[Family, list[Match]]] = []
    for family in FAMILIES:
        if rule.family is not None and rule.family != family:
            continue
        src = _address_match(policy, rule.from_, family, addresses)
        dst = _address_match(policy, rule.to, family, addresses)
        if src is False or dst is False:
            continue
        alternatives = l4_alternatives(keys, family)
        if alternatives:
            per_family.append((family, [Match(family, src or None, dst or None, l4) for l4 in alternatives]))  # type: ignore[arg-type]
    # A match that does not imply its family is one match for both families when the
    # other family has the very same one, otherwise it keeps its family.
    out: list[Match] = []
    for family, matches in per_family:
        others = [Match(None, m.src, m.dst, m.l4) for f, ms in per_family if f != family for m in ms]
        for match in matches:
            if match.implies_family:
                out.append(match)
                continue
            both = Match(None, match.src, match.dst, match.l4)
            if both in others:
                if both not in out:
                    out.append(both)
            else:
                out.append(match)
    return tuple(out)


def filter_rule_as_rule(rule: FilterRule) -> Rule:
    """A guard filter rule's layer-3/4 keys, read like a policy rule's."""
    return Rule(action="accept", **{k: getattr(rule, k) for k in ("from_", "to", "tcp", "udp", "sport", "icmp", "proto")})


def time_window(policy: Policy, schedule: str | None, now: datetime | None, timezone: str | None) -> Intervals | None:
    """The minutes of the week (UTC) a schedule covers; None: always."""
    if schedule is None:
        return None
    windows = tuple(utc_week_minutes(policy.doc.schedules[schedule], now, timezone))
    return None if windows == ((0, WEEK),) else windows


class MeetsMemo(dict[str, object]):
    """Reference text -> whether it meets one peer address set (None: an exclusion,
    whose list decides); `owners`: the VMs and zones owning one of its addresses,
    when the caller told them (`RulePlanner.known_meets`)."""

    owners: tuple[set[str], set[str]] | None = None

    def owned(self, text: str, policy: Policy) -> bool | None:
        """Whether `vm:NAME` / `zone:NAME` meets the peer, from its owners (None: not known so)."""
        if self.owners is None:
            return None
        if text.startswith("vm:") and text[3:] in policy.doc.vms:
            return text[3:] in self.owners[0]
        if text.startswith("zone:") and text[5:] in policy.doc.zones:
            return text[5:] in self.owners[1]
        return None


@dataclass
class RulePlanner:
    """Policy rules -> plan steps, memoised by match keys (rules from templates
    repeat: thousands of guests carry the same rules)."""

    policy: Policy
    now: datetime | None = None  # schedules convert to UTC with the offset in force now
    timezone: str | None = None  # the node's timezone, for schedules that name none
    _matches: dict[tuple[object, ...], tuple[Match, ...]] = field(default_factory=dict)
    _times: dict[str, Intervals | None] = field(default_factory=dict)
    _meets: dict[AddressSet, MeetsMemo] = field(default_factory=dict)
    # borrow_matches: a planner whose memo holds the rules this one reads alike
    _lender: RulePlanner | None = None
    _reads_differently: Callable[[Rule], bool] | None = None
    # borrow_steps: a planner whose every rule means the same here (its steps alone lent)
    _step_lender: RulePlanner | None = None
    # remember_steps: each rule's step by its RuleRef (kept alive with it), lent too
    _by_ref: dict[int, tuple[RuleRef, Step]] | None = None
    # a rule object's matches (kept alive with it): the loader makes one Rule of every
    # line that repeats (policy/plain.py), so most rules are met again by identity,
    # without their match keys read and hashed (a cold reach asks of 40,000 rules)
    _by_rule: dict[int, tuple[Rule, tuple[Match, ...]]] = field(default_factory=dict)
    # what a `from`/`to` list matches per family in this planner's policy (rule_matches)
    _addresses: AddressMemo = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A policy that keeps its compile memos (the agent's: Policy.keep_compile_memos)
        # lends its own: every plan of it, and of a policy that differs in rules alone
        # (Policy.share_address_memos), finds the matches of unchanged rules made.
        self._matches = self.policy.__dict__.get(MATCHES_MEMO, self._matches)

    def matches(self, rule: Rule) -> tuple[Match, ...]:
        known = self._by_rule.get(id(rule))
        if known is not None and known[0] is rule:
            return known[1]
        key = tuple([tuple(v) if v.__class__ is list else v for v in _match_values(rule)])  # (one C call)
        found = self._matches.get(key)
        if found is None:
            lender = self._lender
            if lender is not None and not self._reads_differently(rule):  # type: ignore[misc]
                found = self._matches[key] = lender.matches(rule)
            else:
                found = self._matches[key] = rule_matches(self.policy, rule, self._addresses)
        self._by_rule[id(rule)] = (rule, found)
        return found

    def share_matches(self, other: RulePlanner) -> None:
        """Use `other`'s memo of rule keys -> matches: for a policy whose named sets
        and services mean what they mean in `other`'s (analysis/diff.py), equal
        keys give equal matches, and a shared tuple is one region to the analyzer."""
        self._matches = other._matches
        self._by_rule = {}  # (what it answered from its own memo is asked again)

    def borrow_matches(self, other: RulePlanner, reads_differently: Callable[[Rule], bool]) -> None:
        """Take the matches of a rule from `other` (made there once, one tuple for
        both) unless `reads_differently(rule)`: for a policy that differs from
        `other`'s in what some names mean (a group's members, analysis/diff.py), a rule
        naming none of them means the same in both. Services and schedules must mean
        the same as well."""
        self._lender, self._reads_differently = other, reads_differently
        other.remember_steps()
        self.remember_steps()

    def borrow_steps(self, other: RulePlanner) -> None:
        """Take a rule's step from `other` when its RuleRef is the very one `other`
        stepped: a rule table edited in place keeps the RuleRefs of the owners it did
        not edit, and for a policy whose every name means what it means in `other`'s
        (rule edits alone, analysis/diff.py, with `share_matches`) such a rule's step
        is the same in both."""
        self._step_lender = other
        other.remember_steps()
        self.remember_steps()

    def remember_steps(self) -> None:
        """Keep each rule's step by its RuleRef, and so lend it (`borrow_matches`, `borrow_steps`):
        a policy whose rule table is `other`'s (a group edit) then takes the very step
        of a rule that means the same. Off by default: a compile meets each rule once."""
        if self._by_ref is None:
            self._by_ref = {}

    def stop_borrowing(self) -> None:
        """Make the matches and steps of rules not yet asked for itself (the borrowed
        ones stay)."""
        self._lender = self._reads_differently = self._step_lender = None

    @property
    def matches_memo(self) -> dict[tuple[object, ...], tuple[Match, ...]]:
        return self._matches

    def times_read(self) -> dict[str, Intervals | None]:
        """The time windows made so far, by schedule (analysis/kept.py checks them)."""
        return dict(self._times)

    def time(self, schedule: str | None) -> Intervals | None:
        if schedule is None:
            return None
        if schedule not in self._times:
            self._times[schedule] = time_window(self.policy, schedule, self.now, self.timezone)
        return self._times[schedule]

    def step(self, ref: RuleRef) -> Step:
        memo = self._by_ref
        if memo is None:
            return self._step(ref)
        found = memo.get(id(ref))
        if found is None or found[0] is not ref:
            lender = self._lender if self._lender is not None else self._step_lender
            lent = lender._by_ref.get(id(ref)) if lender is not None and lender._by_ref is not None else None
            if lent is not None and lent[0] is ref and (self._lender is None or not self._reads_differently(ref.rule)):  # type: ignore[misc]
                found = memo[id(ref)] = lent  # the same rule, meaning the same: the lender's step
            else:
                found = memo[id(ref)] = (ref, self._step(ref))
        return found[1]

    def _step(self, ref: RuleRef) -> Step:
        rule = ref.rule
        limit = None
        if rule.limit is not None:
            rate, per = parse_rate(rule.limit.rate)
            limit = RateLimit(rate, per, rule.limit.burst, rule.limit.per == "source")
        packets = None
        if rule.packet_limit is not None:
            rate, per = parse_rate(rule.packet_limit.rate)
            packets = RateLimit(rate, per, rule.packet_limit.burst, rule.packet_limit.per == "source", over=True)
        log, level = rule_logging(self.policy.doc.settings.log, rule)
        return Step(self.matches(rule), rule.action, ref.id, ref, self.time(rule.schedule), limit, log, origin=(ref.level, ref.owner, ref.id),  # type: ignore[arg-type]
                    comment=rule.comment, scope=self.scope(ref), log_level=level, packet_limit=packets)

    def scope(self, ref: RuleRef) -> Scope | None:
        """`nic:` (a VM's NICs, by index) and `interface:` of a rule (issue 18)."""
        rule = ref.rule
        if rule.nic is None and rule.interface is None:
            return None
        nics = tuple(sorted({i for n in rule.nic or () if (i := self.policy.nic_index(ref.owner, n)) is not None}))
        return Scope(nics, tuple(rule.interface or ()))

    def steps(self, refs: Iterable[RuleRef], direction: str, peer: AddressSet | None = None) -> list[Step]:
        """The enabled rules of `refs` that apply in `direction` (`net` for network
        rules), in order. With `peer`, only those that can match a packet whose other
        end (`to` of an out rule, `from` of an in rule) is in `peer` (a query that
        needs only a few chains' worth of steps skips building the rest)."""
        out = []
        memo = self._memo_of(peer) if peer is not None else None
        for ref in refs:
            rule = ref.rule
            if not rule.enabled or rule.direction not in (direction, None) or rule.security_group is not None:
                continue  # references to security groups are the chain planner's (plan/groups.py)
            if memo is not None and not self._may_meet(rule.to if direction == "out" else rule.from_, peer, memo):  # type: ignore[arg-type]
                continue
            out.append(self.step(ref))
        return out

    def known_meets(self, peer: AddressSet, vms: set[str], zones: set[str]) -> None:
        """Record which VMs and zones own an address of `peer`, as the caller knows
        otherwise and exactly (reach and diff know who owns the peer's addresses:
        `vm:NAME` and `zone:NAME` meet it when one of theirs does), so that `steps`
        and `may_meet` build no address set for them; answered when first asked (a
        diff of a group edit tells it of hundreds of peers in a 10,000-VM cluster)."""
        self._memo_of(peer).owners = (vms, zones)

    def _memo_of(self, peer: AddressSet) -> MeetsMemo:
        found = self._meets.get(peer)
        if found is None:
            found = self._meets[peer] = MeetsMemo()
        return found

    def meets_test(self, peer: AddressSet) -> Callable[[list[str] | None], bool]:
        """Whether a rule's other end (`refs`: its `to` or `from`) can meet `peer`:
        the test `steps` makes with `peer`, for a caller asking it rule by rule."""
        memo = self._memo_of(peer)
        return lambda refs: refs is None or self._may_meet(refs, peer, memo)

    def known_to_meet(self, peer: AddressSet) -> dict[str, object]:
        """What `meets_test` has learned so far: reference text -> whether it meets
        `peer` (None: an exclusion, whose list decides), for a caller that looks a
        one-item list up itself before asking (reach: 200,000 rules at 10,000 VMs)."""
        return self._memo_of(peer)

    def _may_meet(self, refs: list[str] | None, peer: AddressSet, memo: MeetsMemo) -> bool:
        """Whether the addresses `refs` means share one with `peer`. A list without
        exclusions does when one of its items does: each item is tested once per
        peer (`memo`: None for an exclusion), and no rule's own union is built (reach
        asks this of every rule of the cluster, most of which name a VM of their own)."""
        if refs is None:
            return True
        hit = False
        for text in refs:
            found = memo.get(text, _UNSEEN)
            if found is _UNSEEN:
                found = memo.owned(text, self.policy)
                if found is None:
                    item = parse_ref(text)
                    found = None if item.negate else self.policy.ref_item_set(item).meets(peer)
                memo[text] = found
            if found is None:  # an exclusion: the list's exact set decides
                return self.policy.address_set(refs).meets(peer)
            if found:
                hit = True
        return hit


def rule_logging(settings: LogSettings, rule: Rule) -> tuple[bool, str | None]:
    """Whether a rule's matches are logged, and at which level (None: the settings'
    level): `log: true`, a level, `nolog`; without `log`, the rules whose action is
    in `settings.log.rules` (issue 18)."""
    if rule.log == "nolog":
        return False, None
    if rule.log is True:
        return True, None
    if rule.log is False:
        return rule.action in settings.rules, None
    return True, str(rule.log)

