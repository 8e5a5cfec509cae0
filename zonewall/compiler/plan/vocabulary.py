"""The evaluation plan's closed vocabulary: match primitives, verdicts and steps.

Everything a policy key means is decided by the plan builder (`plan/rules.py`,
`plan/chains.py`, `plan/node.py`) and expressed with these few types. The two
renderings interpret only them: `compiler/` turns them into nftables statements,
`analysis/regions.py` into regions of packet space. A new match key is a new field
or primitive here plus one clause in each rendering.

Intervals are inclusive (low, high) integer pairs: addresses, ports, ICMP types,
protocol numbers. Time windows are half-open [start, end) minutes of the week in
UTC (Monday 00:00 = 0), as the kernel's `meta day`/`meta hour` see them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

from ...policy.addresses import Family

Interval = tuple[int, int]
Intervals = tuple[Interval, ...]
Action = Literal["accept", "drop", "reject"]
Label = Union[str, int]  # what nft shows for a value: a name where it has one, else the number


@dataclass(frozen=True, slots=True)
class Addresses:
    """Source or destination addresses of one family.

    `named`: the (kind, name) of a single named reference (`group:admins`): rendered
    as a named set shared by every rule that uses it, so a membership change
    rewrites one set. `values` are always the exact addresses.
    """

    values: Intervals
    named: tuple[str, str] | None = None
    negate: bool = False  # every address of the family but these


@dataclass(frozen=True, slots=True)
class Ports:
    """tcp / udp / sctp with destination ports (as written, in order) and optional
    source ports."""

    protocol: Literal["tcp", "udp", "sctp"]
    dport: Intervals
    sport: Intervals | None = None


@dataclass(frozen=True, slots=True)
class IcmpTypes:
    """ICMP (IPv4) or ICMPv6 types; `types` None: every type of the protocol.
    `codes` (issue 18): only these codes of the one type in `types`."""

    protocol: Literal["icmp", "icmpv6"]
    types: tuple[tuple[int, Label], ...] | None = None  # (number, label)
    codes: tuple[tuple[int, Label], ...] | None = None  # (number, label); None: every code


@dataclass(frozen=True, slots=True)
class Protocols:
    """Other IP protocols by number (label: the name as written, else the number)."""

    values: tuple[tuple[int, Label], ...]


@dataclass(frozen=True, slots=True)
class TcpFlags:
    """TCP whose flags, masked with `mask`, equal `value` (`negate`: differ), and
    optionally source ports. Bits as in the header: fin 0x01, syn 0x02, rst 0x04,
    psh 0x08, ack 0x10, urg 0x20. The analyzer judges the first packet of a new
    connection, a SYN: for it a flags match is all of TCP or nothing."""

    mask: int
    value: int
    negate: bool = False
    sport: Intervals | None = None

    def holds_for(self, flags: int) -> bool:
        return ((flags & self.mask) == self.value) != self.negate


TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK, TCP_URG = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

L4 = Union[Ports, IcmpTypes, Protocols, TcpFlags]


@dataclass(frozen=True, slots=True)
class Match:
    """One conjunction: family, source, destination, layer 4 (None: any).

    `family` None matches both families; then `src`, `dst` are None and `l4` is not
    ICMP. A Match with a family but nothing that implies it (no address, no ICMP)
    still matches only that family."""

    family: Family | None
    src: Addresses | None = None
    dst: Addresses | None = None
    l4: L4 | None = None

    @property
    def implies_family(self) -> bool:
        return self.src is not None or self.dst is not None or isinstance(self.l4, IcmpTypes)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`limit:` on an accept: new connections over the rate do not match."""

    rate: int
    per: str  # second | minute | hour | day
    burst: int
    per_source: bool
    # over: the step matches only packets *over* the rate (a drop of what exceeds
    # it, e.g. protection.synflood); otherwise only those within it (`limit:`)
    over: bool = False


@dataclass(frozen=True, slots=True)
class DnatOrigin:
    """The connection was translated by a dnat entry from this original destination
    port (`ct status dnat`, `ct original proto-dst`); `port` is the translated one.
    A condition on the connection, not on the packet: the analyzer knows it from the
    flow's path."""

    protocol: Literal["tcp", "udp"]
    original_port: int
    port: int
    entry: int  # index in `nat`


@dataclass(frozen=True, slots=True)
class NotForwarded:
    """The connection was not translated by any dnat entry (`ct status != dnat`)."""


@dataclass(frozen=True, slots=True)
class NewConnection:
    """The packet starts a connection (`ct state new`), not one conntrack calls
    invalid. The analyzer judges new connections only: it always holds there."""


Condition = Union[DnatOrigin, NotForwarded, NewConnection]


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a step applies besides what the packet holds (issue 18): through some of
    the NICs of the VM whose chain it is in (`nics`: indexes in its `nics`), or on
    some interfaces of the node (`interfaces`: the one a packet arrives on for input,
    leaves through for output; a trailing * matches any suffix). A property of the
    path, like a Condition: the compiler tests the packet mark or the interface
    name, the analyzer keeps the step only in the chains of the NICs / interfaces it
    names."""

    nics: tuple[int, ...] = ()
    interfaces: tuple[str, ...] = ()

    def holds_for_nic(self, nic: int) -> bool:
        return not self.nics or nic in self.nics

    def holds_for_interface(self, name: str | None) -> bool:
        """Whether the step applies on interface `name` (None: unknown, never)."""
        if not self.interfaces:
            return True
        if name is None:
            return False
        return any(name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in self.interfaces)


@dataclass(frozen=True, init=False)
class Step:
    """One step of a chain: any of `matches` (none: every packet) within `time`,
    under `condition`, decides `action`.

    `ref` is the policy rule (None for built-in steps: defaults, anti-lockout, ...);
    `label` its id or the built-in's name. A rate-limited accept (`limit`) over its
    rate does not match. `log`: matches are logged (NFLOG). Steps compare and hash by
    what they mean and where they come from (`origin`, `comment`), not by the policy's
    objects, so equal pieces of two policies are equal."""

    matches: tuple[Match, ...] | None  # None: every packet
    action: Action
    label: str
    ref: object = field(default=None, compare=False)  # policy.resolve.RuleRef | None (untyped: no import cycle)
    time: Intervals | None = None
    limit: RateLimit | None = None
    log: bool = False
    condition: Condition | None = None
    origin: tuple[str, str, str] | None = None  # (level, owner, id) of the policy rule
    comment: str | None = None  # the rule's comment
    # `packet_limit:` on an accept: every packet of the connections it accepts (the
    # direction that opened them) counts; over the rate they are dropped
    packet_limit: RateLimit | None = None
    scope: Scope | None = None  # issue 18: only through some NICs / on some interfaces
    log_level: str | None = None  # issue 18: the level logged records carry (None: settings.log.level)

    def __init__(
        self,
        matches: tuple[Match, ...] | None,
        action: Action,
        label: str,
        ref: object = None,
        time: Intervals | None = None,
        limit: RateLimit | None = None,
        log: bool = False,
        condition: Condition | None = None,
        origin: tuple[str, str, str] | None = None,
        comment: str | None = None,
        packet_limit: RateLimit | None = None,
        scope: Scope | None = None,
        log_level: str | None = None,
    ) -> None:
        # The fields set straight in the instance's dict: a frozen dataclass's own
        # __init__ sets each through object.__setattr__, twice as slow, and a lint of
        # 10,000 VMs makes 200,000 steps (the defaults are the fields' above).
        fields = self.__dict__
        fields["matches"], fields["action"], fields["label"], fields["ref"], fields["time"] = matches, action, label, ref, time
        fields["limit"], fields["log"], fields["condition"], fields["origin"], fields["comment"] = limit, log, condition, origin, comment
        fields["packet_limit"], fields["scope"], fields["log_level"] = packet_limit, scope, log_level

    @property
    def limited(self) -> bool:
        return self.limit is not None

    @property
    def where(self) -> str:
        return self.ref.where if self.ref is not None else "built-in"  # type: ignore[attr-defined]


def final(step: Step) -> bool:
    """Whether the step decides every packet that reaches it (nothing gets past)."""
    return step.matches is None and step.condition is None and step.time is None and step.limit is None and step.scope is None and step.action != "accept"
