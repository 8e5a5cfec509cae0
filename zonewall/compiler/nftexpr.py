"""Builders for rule statements (typed, `stmt`) and their libnftables JSON expressions.

Every value passes through here as data, never as nft source text, so names and
comments cannot inject syntax.
"""

from __future__ import annotations

from typing import Any, Literal

from .stmt import (
    ACCEPT,
    COUNTER,
    DROP,
    RETURN,
    Counter,
    CtHelperSet,
    CtTimeoutSet,
    LimitRef,
    Log,
    Mangle,
    Match,
    Nat,
    RateLimit,
    Reject,
    SetUpdate,
    Verdict,
    VMap,
)

Json = dict[str, Any]  # a libnftables JSON expression (stmt.Expr)

# Mark layout, shared by the bridge and inet tables of a node.
SRC_NIC_MASK = 0x00003FFF  # bits 0-13: index of the guest NIC the packet came from
DST_NIC_SHIFT = 14
DST_NIC_MASK = 0x0FFFC000  # bits 14-27: index of the guest NIC the packet goes to
SPARE_BIT = 0x10000000  # unused
# A guard filter (jumped to) accepted: ends the guard stage. One bit serves both
# directions: a profile towards a guest clears it first (see guards._profile).
GUARD_ACCEPT_BIT = 0x20000000
NIC_BITS = SRC_NIC_MASK | DST_NIC_MASK
IN_ACCEPT_BIT = 0x40000000  # a shared (global/zone) chain accepted for direction in
OUT_ACCEPT_BIT = 0x80000000  # ... for direction out
MAX_NICS_PER_NODE = SRC_NIC_MASK


def payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def meta(key: str) -> Json:
    return {"meta": {"key": key}}


def ct(key: str) -> Json:
    return {"ct": {"key": key}}


def masked(left: Json, mask: int) -> Json:
    return {"&": [left, mask]}


def match(left: Json, right: Any, op: str = "==") -> Match:
    return Match(left, right, op)


def clear_bits(bits: int) -> Mangle:
    """meta mark set meta mark & ~bits."""
    return set_mark({"&": [meta("mark"), 0xFFFFFFFF ^ bits]})


def has_bits(bits: int) -> Match:
    """meta mark & bits == bits."""
    return match(masked(meta("mark"), bits), bits)


def set_ref(name: str) -> str:
    return "@" + name


def prefix(address: str, length: int) -> Json:
    return {"prefix": {"addr": address, "len": length}}


def value_range(low: Any, high: Any) -> Json:
    return {"range": [low, high]}


def concat(*parts: Any) -> Json:
    return {"concat": list(parts)}


def counter() -> Counter:
    return COUNTER


def accept() -> Verdict:
    return ACCEPT


def drop() -> Verdict:
    return DROP


def ret() -> Verdict:
    return RETURN


def jump(chain: str) -> Verdict:
    return Verdict("jump", chain)


def goto(chain: str) -> Verdict:
    return Verdict("goto", chain)


def jump_value(chain: str) -> Json:
    """A verdict as the value of a verdict map's element (an expression, not a statement)."""
    return {"jump": {"target": chain}}


def goto_value(chain: str) -> Json:
    return {"goto": {"target": chain}}


def vmap(key: Json, map_name: str) -> VMap:
    return VMap(key, map_name)


def map_lookup(key: Json, map_name: str) -> Json:
    return {"map": {"key": key, "data": set_ref(map_name)}}


def set_mark(value: Json | int) -> Mangle:
    return Mangle(meta("mark"), value)


def or_mark(bits: int) -> Mangle:
    """meta mark set meta mark | bits."""
    return set_mark({"|": [meta("mark"), bits]})


def reject_tcp_reset() -> Reject:
    return Reject("tcp reset")


def reject_icmpx(code: str = "port-unreachable") -> Reject:
    return Reject("icmpx", code)


def log_group(group: int, log_prefix: str) -> Log:
    return Log(group, log_prefix)


def limit_rate(rate: int, per: str, burst: int, *, over: bool = False) -> RateLimit:
    """`limit rate R/per burst B packets`: matches within the rate (`over`: beyond it)."""
    return RateLimit(rate, per, burst, over)


def limit_ref(name: str) -> LimitRef:
    return LimitRef(name)


def meter_update(set_name: str, key: Json, rate: int, per: str, burst: int, *, over: bool = False) -> SetUpdate:
    """Per-key token bucket in a dynamic set: `update @set { key limit rate ... }`."""
    return SetUpdate("update", set_name, key, (limit_rate(rate, per, burst, over=over),))


def set_add(set_name: str, key: Json) -> SetUpdate:
    """`add @set { key }`: learns the key (a dynamic set)."""
    return SetUpdate("add", set_name, key)


def ct_helper_set(name: str) -> CtHelperSet:
    return CtHelperSet(name)


def ct_timeout_set(name: str) -> CtTimeoutSet:
    return CtTimeoutSet(name)


def nat(kind: Literal["snat", "dnat"], family: str, address: str | None = None, port: int | None = None) -> Nat:
    return Nat(kind, family, address, port)


def masquerade() -> Nat:
    return Nat("masquerade")


def set_ct_mark_bits(mask: int, value: int) -> Mangle:
    """ct mark set ct mark & ~mask | value: the bits of `mask` become `value` (the
    and-mask keeps `value`'s bits too, which changes nothing: nft folds it so)."""
    return Mangle(ct("mark"), {"|": [{"&": [ct("mark"), (0xFFFFFFFF ^ mask) | value]}, value]})
