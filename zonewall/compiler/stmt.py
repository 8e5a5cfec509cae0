"""The statement vocabulary of a rule: typed, immutable, small.

A rule is a sequence of these statements. The compiler builds them (through the
builders of `nftexpr`), the renderer prints them, and `encode` turns them into
libnftables JSON statement objects: nothing reads a statement back by sniffing
dictionary keys. Expressions (the operands: payload/meta/ct fields, concatenations,
anonymous sets, prefixes, ranges, literals) are libnftables JSON values (`Expr`),
built only by `nftexpr` and passed through unchanged.

Every class is a frozen dataclass with __slots__: a 10,000-VM ruleset holds hundreds
of thousands of statements, and slots keep them smaller than the dicts they replace.
Equality is by class and fields (the diff compares rules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Expr = Any  # a libnftables JSON expression value (see the module docstring)
VerdictKind = Literal["accept", "drop", "return", "jump", "goto"]


@dataclass(frozen=True, slots=True)
class Match:
    """`left op right`: the rule goes on only if it holds."""

    left: Expr
    right: Expr
    op: str = "=="


@dataclass(frozen=True, slots=True)
class Counter:
    """An anonymous packet/byte counter. The compiler's have no values; a kernel
    listing's (decoded by `encode.decode_statement`) carry what they counted."""

    packets: int | None = None
    bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """accept, drop, return, or jump/goto `target` (a chain of the same table)."""

    kind: VerdictKind
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Mangle:
    """`key set value`: writes a meta or ct field (marks)."""

    key: Expr
    value: Expr


@dataclass(frozen=True, slots=True)
class Reject:
    """`reject with tcp reset` (type "tcp reset") or `reject with icmpx CODE`."""

    type: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Log:
    """Sends the packet to NFLOG `group` with `prefix` (compiler.logprefix builds it)."""

    group: int
    prefix: str


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`limit rate [over] RATE/PER burst BURST packets`."""

    rate: int
    per: str
    burst: int
    over: bool = False


@dataclass(frozen=True, slots=True)
class LimitRef:
    """`limit name NAME`: a shared token bucket (ir.Limit)."""

    name: str


@dataclass(frozen=True, slots=True)
class SetUpdate:
    """`add|update @set { elem [statements] }`: learns a key into a dynamic set."""

    op: Literal["add", "update"]
    set: str  # the set's name, without '@'
    elem: Expr
    statements: tuple[Statement, ...] = ()


@dataclass(frozen=True, slots=True)
class VMap:
    """`key vmap @map`: a verdict looked up in a named map."""

    key: Expr
    map: str  # the map's name, without '@'


@dataclass(frozen=True, slots=True)
class CtHelperSet:
    """`ct helper set NAME` (an ir.CtHelper of the same table)."""

    name: str


@dataclass(frozen=True, slots=True)
class CtTimeoutSet:
    """`ct timeout set NAME` (an ir.CtTimeout of the same table)."""

    name: str


@dataclass(frozen=True, slots=True)
class Nat:
    """snat/dnat `[family] to addr[:port]`, or masquerade (no family, address or port)."""

    kind: Literal["snat", "dnat", "masquerade"]
    family: str | None = None  # ip | ip6
    addr: str | None = None
    port: int | None = None


Statement = Match | Counter | Verdict | Mangle | Reject | Log | RateLimit | LimitRef | SetUpdate | VMap | CtHelperSet | CtTimeoutSet | Nat

STATEMENT_TYPES = (Match, Counter, Verdict, Mangle, Reject, Log, RateLimit, LimitRef, SetUpdate, VMap, CtHelperSet, CtTimeoutSet, Nat)

COUNTER = Counter()
ACCEPT = Verdict("accept")
DROP = Verdict("drop")
RETURN = Verdict("return")
