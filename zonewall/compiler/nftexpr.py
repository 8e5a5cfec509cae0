"""Builders for libnftables JSON statements and expressions.

Every value passes through here as JSON data, never as nft source text, so names and
comments cannot inject syntax.
"""

from __future__ import annotations

from typing import Any

Json = dict[str, Any]

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


def match(left: Json, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def clear_bits(bits: int) -> Json:
    """meta mark set meta mark & ~bits."""
    return set_mark({"&": [meta("mark"), 0xFFFFFFFF ^ bits]})


def has_bits(bits: int) -> Json:
    """meta mark & bits == bits."""
    return match(masked(meta("mark"), bits), bits)


def set_ref(name: str) -> str:
    return "@" + name


def prefix(address: str, length: int) -> Json:
    return {"prefix": {"addr": address, "len": length}}


def value_range(low: Any, high: Any) -> Json:
    return {"range": [low, high]}


def concat(*parts: Json) -> Json:
    return {"concat": list(parts)}


def counter() -> Json:
    return {"counter": None}


def accept() -> Json:
    return {"accept": None}


def drop() -> Json:
    return {"drop": None}


def ret() -> Json:
    return {"return": None}


def jump(chain: str) -> Json:
    return {"jump": {"target": chain}}


def goto(chain: str) -> Json:
    return {"goto": {"target": chain}}


def vmap(key: Json, map_name: str) -> Json:
    return {"vmap": {"key": key, "data": set_ref(map_name)}}


def map_lookup(key: Json, map_name: str) -> Json:
    return {"map": {"key": key, "data": set_ref(map_name)}}


def set_mark(value: Json | int) -> Json:
    return {"mangle": {"key": meta("mark"), "value": value}}


def or_mark(bits: int) -> Json:
    """meta mark set meta mark | bits."""
    return set_mark({"|": [meta("mark"), bits]})


def reject_tcp_reset() -> Json:
    return {"reject": {"type": "tcp reset"}}


def reject_icmpx(code: str = "port-unreachable") -> Json:
    return {"reject": {"type": "icmpx", "expr": code}}


def log_group(group: int, log_prefix: str) -> Json:
    return {"log": {"group": group, "prefix": log_prefix}}


def limit_rate(rate: int, per: str, burst: int, *, over: bool = False) -> Json:
    """`limit rate R/per burst B packets`: matches within the rate (`over`: beyond it)."""
    body: Json = {"rate": rate, "per": per, "burst": burst, "unit": "packets"}
    if over:
        body["inv"] = True
    return {"limit": body}


def limit_ref(name: str) -> Json:
    return {"limit": name}


def meter_update(set_name: str, key: Json, rate: int, per: str, burst: int, *, over: bool = False) -> Json:
    """Per-key token bucket in a dynamic set: `update @set { key limit rate ... }`."""
    return {
        "set": {
            "op": "update",
            "elem": key,
            "set": set_ref(set_name),
            "stmt": [limit_rate(rate, per, burst, over=over)],
        }
    }


def set_ct_mark_bits(mask: int, value: int) -> Json:
    """ct mark set ct mark & ~mask | value: the bits of `mask` become `value` (the
    and-mask keeps `value`'s bits too, which changes nothing: nft folds it so)."""
    return {"mangle": {"key": ct("mark"), "value": {"|": [{"&": [ct("mark"), (0xFFFFFFFF ^ mask) | value]}, value]}}}
