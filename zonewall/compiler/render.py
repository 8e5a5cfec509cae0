"""The IR as nft text, printed the way `nft list table FAMILY NAME` (nftables 1.0.6) prints it.

Two uses: `zonewall compile --format nft` shows operators readable rules, and tests
compare `normalize_listing(render_table(t))` with the normalised kernel listing of the
same table loaded from `ir.to_json`. So the renderer prints what nft *lists*, which is
not always what the compiler wrote (all measured against nft 1.0.6):

* implicit dependencies are dropped: `ether type ip` / `meta nfproto ipv4` before an
  `ip`/`arp`/`icmp` payload (or `meta l4proto icmp`) of that family, `meta l4proto tcp`
  before a `tcp` payload; kept before `tcp`/`udp` payloads and when they come after;
* `meta mark & M == V` with M a prefix mask lists as `meta mark V/len` (full mask: `V`);
* `ct state` with op `in` lists as `ct state established,related` (bit order), with
  `==` and one state as `ct state == new`;
* one-element anonymous sets list as the element; anonymous sets holding ranges or
  prefixes are merged (adjacent/overlapping) and listed sorted; in interval sets
  aligned ranges list as prefixes and /32 (/128) prefixes as addresses;
* marks print as 0x%08x; protocols by their /etc/protocols name (`ipv6-icmp`), ether
  types, ICMP types and ARP operations by nft's names; `meta hour`/`meta day` values
  are quoted (hours as given: the dataplane loads and lists with TZ=UTC);
* a limit's burst of 0 or 5 is not printed; a set's `flags timeout` line is omitted
  when timeout is its only flag and it has a default timeout;
* chain and set comments are not printed: libnftables 1.0.6 drops them from JSON input,
  so the kernel never has them (rule comments are kept).

Safety: nft's syntax cannot escape a double quote inside a string, so every policy
string (comments, log prefixes, interface names) is printed with `"` replaced by `'`
and control characters dropped; the text is for display and checking. The JSON path
(`ir.to_json`) keeps the strings verbatim.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from ..policy.builtins import ICMP_V4_TYPES, ICMP_V6_TYPES, IP_PROTOCOLS
from . import stmt as s
from .ir import Chain, CtHelper, CtTimeout, Limit, NamedSet, Rule, Ruleset, Table

DType = str | tuple[str, ...] | None

__all__ = ["listed_statements", "normalize_listing", "quote", "render_nft", "render_rule", "render_table"]

# -- datatypes --------------------------------------------------------------------

PAYLOAD_TYPES = {
    ("ether", "saddr"): "ether_addr", ("ether", "daddr"): "ether_addr", ("ether", "type"): "ether_type",
    ("ip", "saddr"): "ipv4_addr", ("ip", "daddr"): "ipv4_addr", ("ip", "protocol"): "inet_proto",
    ("ip6", "saddr"): "ipv6_addr", ("ip6", "daddr"): "ipv6_addr", ("ip6", "nexthdr"): "inet_proto",
    ("arp", "saddr ip"): "ipv4_addr", ("arp", "daddr ip"): "ipv4_addr", ("arp", "operation"): "arp_op",
    ("arp", "saddr ether"): "ether_addr", ("arp", "daddr ether"): "ether_addr",
    ("icmp", "type"): "icmp_type", ("icmpv6", "type"): "icmpv6_type",
}
META_TYPES = {
    "mark": "mark", "l4proto": "inet_proto", "nfproto": "nf_proto", "protocol": "ether_type",
    "iifname": "ifname", "oifname": "ifname", "iif": "iface_index", "oif": "iface_index",
    "day": "day", "hour": "hour",
}
CT_TYPES = {"state": "ct_state", "mark": "mark"}
UNQUALIFIED_META = {"iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"}
QUOTED_TYPES = {"ifname", "iface_index", "day", "hour"}
PREFIX_BITS = {"ipv4_addr": 32, "ipv6_addr": 128, "mark": 32}  # types nft lists as prefixes
CT_STATE_BITS = {"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}
ETHER_TYPES = {0x0800: "ip", 0x0806: "arp", 0x86DD: "ip6", 0x8100: "8021q", 0x88A8: "8021ad"}
ETHER_ALIASES = {"vlan": "8021q"}
ARP_OPS = {1: "request", 2: "reply", 3: "rrequest", 4: "rreply", 8: "inrequest", 9: "inreply", 10: "nak"}
ICMP_NAMES = {"icmp_type": {v: k for k, v in ICMP_V4_TYPES.items()},
              "icmpv6_type": {v: k for k, v in ICMP_V6_TYPES.items()} | {141: "ind-neighbor-solicit", 142: "ind-neighbor-advert"}}
DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
NFPROTO = {2: "ipv4", 10: "ipv6"}
# nft wraps the elements of a named set after this many per line (else one per line)
PER_LINE = {**dict.fromkeys(("mark", "integer", "inet_service", "inet_proto", "nf_proto", "arp_op", "iface_index"), 5),
            **dict.fromkeys(("ipv4_addr", "ct_state"), 2)}
WRAP = ",\n\t\t\t     "
# Priorities nft prints by name (within +-10), per family: name -> (value, hooks or None for all).
STD_PRIOS = {
    "bridge": (("dstnat", -300, {"prerouting"}), ("filter", -200, None),
               ("out", 100, {"output"}), ("srcnat", 300, {"postrouting"})),
    "other": (("raw", -300, None), ("mangle", -150, None), ("dstnat", -100, {"prerouting", "output"}),
              ("filter", 0, None), ("security", 50, None), ("srcnat", 100, {"input", "postrouting"})),
}
SYMBOLS: dict[str, dict[str, int]] = {
    "icmp_type": {name: number for number, name in ICMP_NAMES["icmp_type"].items()},
    "icmpv6_type": {name: number for number, name in ICMP_NAMES["icmpv6_type"].items()},
    "ether_type": {name: number for number, name in ETHER_TYPES.items()} | {"vlan": 0x8100},
    "arp_op": {name: number for number, name in ARP_OPS.items()},
    "day": {name: number for number, name in enumerate(DAYS)},
}
# key types of at most 16 bits: nft stores their anonymous sets as bitmaps (value order)
BITMAP_TYPES = {"icmp_type", "icmpv6_type", "ether_type", "inet_service", "inet_proto", "arp_op", "nf_proto", "day"}
SAFE_WORD = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.:/*\-]*$")


def quote(text: str) -> str:
    """`text` as one nft string literal: `"` becomes `'`, control characters are dropped."""
    return '"' + "".join(c for c in text if unicodedata.category(c) != "Cc").replace('"', "'") + '"'


def _word(text: str) -> str:
    """Names and symbolic constants bare, anything else as a (sanitised) string."""
    return text if SAFE_WORD.match(text) else quote(text)


@functools.cache
def _protocols() -> tuple[dict[int, str], dict[str, int]]:
    """/etc/protocols as nft sees it through getprotobynumber/getprotobyname."""
    names: dict[str, int] = dict(IP_PROTOCOLS)
    numbers: dict[int, str] = {}
    try:
        with open("/etc/protocols", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 2 and fields[1].isdigit():
                    numbers.setdefault(int(fields[1]), fields[0])
                    names.update(dict.fromkeys(fields[:1] + fields[2:], int(fields[1])))
    except OSError:
        pass
    return numbers, names


def _dtype(expr: Any) -> DType:
    if not isinstance(expr, dict):
        return None
    if "payload" in expr:
        p = expr["payload"]
        if p.get("field") in ("sport", "dport"):
            return "inet_service"
        if "base" in p:
            return "raw"  # a raw payload field: nft lists its values in hex
        return PAYLOAD_TYPES.get((p.get("protocol"), p.get("field")), "integer")
    if "meta" in expr:
        return META_TYPES.get(expr["meta"]["key"], "integer")
    if "ct" in expr:
        return CT_TYPES.get(expr["ct"]["key"], "integer")
    if "concat" in expr:
        return tuple(str(_dtype(part)) for part in expr["concat"])
    for op in ("&", "|", "^", "<<", ">>"):
        if op in expr:
            return _dtype(expr[op][0])
    return None


# -- values -----------------------------------------------------------------------


def _address(text: str, dtype: str) -> str:
    family = socket.AF_INET if dtype == "ipv4_addr" else socket.AF_INET6
    return socket.inet_ntop(family, socket.inet_pton(family, text))


def _scalar(value: Any, dtype: DType) -> str:
    """One value of type `dtype` as nft lists it."""
    if isinstance(value, str) and value.startswith("@"):
        return "@" + _word(value[1:])
    if isinstance(value, dict):
        return _value(value, dtype)
    if dtype == "mark" and isinstance(value, int):
        return f"0x{value:08x}"
    if dtype in ("ipv4_addr", "ipv6_addr") and isinstance(value, str):
        return _address(value, dtype)
    if dtype == "ether_addr" and isinstance(value, str):
        return _word(value.lower())
    if dtype == "inet_proto":
        numbers, names = _protocols()
        number = value if isinstance(value, int) else names.get(str(value))
        return numbers.get(number, str(number)) if number is not None else _word(str(value))
    if dtype == "ether_type":
        if isinstance(value, int):
            return ETHER_TYPES.get(value, f"0x{value:04x}")
        return ETHER_ALIASES.get(value, _word(value))
    if dtype in ICMP_NAMES and isinstance(value, int):
        return ICMP_NAMES[dtype].get(value, str(value))
    if dtype == "arp_op" and isinstance(value, int):
        return ARP_OPS.get(value, str(value))
    if dtype == "nf_proto" and isinstance(value, int):
        return NFPROTO.get(value, str(value))
    if dtype == "day" and isinstance(value, int):
        return quote(DAYS[value % 7])
    if dtype == "hour":
        seconds = value if isinstance(value, int) else sum(int(p) * m for p, m in zip(str(value).split(":"), (3600, 60, 1)))
        hours, rest = divmod(seconds, 3600)
        text = f"{hours:02d}:{rest // 60:02d}" + (f":{rest % 60:02d}" if rest % 60 else "")
        return quote(text)
    if dtype in QUOTED_TYPES:
        return quote(str(value))
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"cannot render value {value!r}")
    if dtype == "raw" and isinstance(value, int):
        return f"0x{value:x}"
    return str(value) if isinstance(value, int) else _word(value)


def _value(value: Any, dtype: DType) -> str:
    """A right-hand side: scalar, prefix, range, concat, anonymous set, verdict."""
    if isinstance(value, list):
        return _anonymous_set(value, dtype)
    if not isinstance(value, dict):
        return _scalar(value, dtype)
    if "set" in value:
        return _anonymous_set(value["set"], dtype)
    if "prefix" in value:
        addr, length = value["prefix"]["addr"], value["prefix"]["len"]
        if isinstance(dtype, str) and PREFIX_BITS.get(dtype) == length:
            return _scalar(addr, dtype)
        return f"{_scalar(addr, dtype)}/{length}"
    if "range" in value:
        low, high = value["range"]
        return f"{_scalar(low, dtype)}-{_scalar(high, dtype)}"
    if "concat" in value:
        types = dtype if isinstance(dtype, tuple) else (None,) * len(value["concat"])
        return " . ".join(_value(part, t) for part, t in zip(value["concat"], types))
    if "jump" in value or "goto" in value:  # a verdict map's value
        ((kind, body),) = value.items()
        return f"{kind} {_word(body['target'])}"
    if any(k in value for k in ("accept", "drop", "return", "continue")):
        return next(iter(value))
    return _expr(value)


def _interval(value: Any, dtype: DType) -> tuple[int, int] | None:
    """`value` as [low, high] integers when nft does interval arithmetic on it."""
    if not isinstance(dtype, str) or (dtype not in PREFIX_BITS and dtype not in ("inet_service", "integer")):
        return None

    def number(v: Any) -> int | None:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        if dtype in ("ipv4_addr", "ipv6_addr") and isinstance(v, str) and not v.startswith("@"):
            return int(ipaddress.ip_address(v))
        return None

    if isinstance(value, dict) and "prefix" in value:
        low, bits = number(value["prefix"]["addr"]), PREFIX_BITS.get(dtype)
        if low is None or bits is None:
            return None
        return low, low + (1 << (bits - value["prefix"]["len"])) - 1
    if isinstance(value, dict) and "range" in value:
        low, high = (number(v) for v in value["range"])
        return None if low is None or high is None else (low, high)
    single = number(value)
    return None if single is None else (single, single)


def _from_interval(low: int, high: int, dtype: str) -> str:
    def text(n: int) -> str:
        if dtype in ("ipv4_addr", "ipv6_addr"):
            family, size = (socket.AF_INET, 4) if dtype == "ipv4_addr" else (socket.AF_INET6, 16)
            return socket.inet_ntop(family, n.to_bytes(size, "big"))
        return _scalar(n, dtype)

    size = high - low + 1
    if low == high:
        return text(low)
    if dtype in PREFIX_BITS and size & (size - 1) == 0 and low % size == 0:
        return f"{text(low)}/{PREFIX_BITS[dtype] - size.bit_length() + 1}"
    return f"{text(low)}-{text(high)}"


def _interval_elements(values: list[Any], dtype: DType, merge: bool) -> list[str] | None:
    """Elements of an interval set, sorted as the kernel keeps them; None if not numeric."""
    spans = [_interval(v, dtype) for v in values]
    if not isinstance(dtype, str) or any(s is None for s in spans):
        return None
    ordered = sorted(s for s in spans if s is not None)
    if merge:  # anonymous interval sets are created with auto-merge
        merged: list[list[int]] = []
        for low, high in ordered:
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        ordered = [(a, b) for a, b in merged]
    return [_from_interval(low, high, dtype) for low, high in ordered]


def _anonymous_set(values: list[Any], dtype: DType) -> str:
    if len(values) == 1:  # nft turns a one-element anonymous set into a plain match
        return _value(values[0], dtype)
    is_interval = any(isinstance(v, dict) and ("prefix" in v or "range" in v) for v in values)
    items = _interval_elements(values, dtype, merge=True) if is_interval else None
    if items is None:
        if isinstance(dtype, str) and dtype in BITMAP_TYPES and all(_symbol_number(v, dtype) is not None for v in values):
            values = sorted(values, key=lambda v: _symbol_number(v, dtype) or 0)  # bitmap sets list in value order
        items = [_value(v, dtype) for v in values]
    return "{ " + ", ".join(items) + " }"


def _symbol_number(value: Any, dtype: str) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    table = _protocols()[1] if dtype == "inet_proto" else SYMBOLS.get(dtype, {})
    return table.get(value) if isinstance(value, str) else None


# -- expressions and statements -----------------------------------------------------


def _expr(expr: Any) -> str:
    if isinstance(expr, str) and expr.startswith("@"):
        return "@" + _word(expr[1:])
    if not isinstance(expr, dict):
        raise ValueError(f"cannot render expression {expr!r}")
    if "payload" in expr:
        p = expr["payload"]
        if "protocol" in p:
            return f"{p['protocol']} {p['field']}"
        return f"@{p['base']},{p['offset']},{p['len']}"
    if "meta" in expr:
        key = expr["meta"]["key"]
        return key if key in UNQUALIFIED_META else f"meta {key}"
    if "ct" in expr:
        ct = expr["ct"]
        return " ".join(["ct", *([ct["dir"]] if ct.get("dir") else []), ct["key"]])
    if "concat" in expr:
        return " . ".join(_expr(part) for part in expr["concat"])
    for op in ("&", "|", "^", "<<", ">>"):
        if op in expr:
            left, right = expr[op]
            return f"{_expr(left)} {op} {_value(right, _dtype(left))}"
    if "map" in expr:
        key, data = expr["map"]["key"], expr["map"]["data"]
        if isinstance(data, dict) and "set" in data:  # an anonymous map: { KEY : VALUE, ... }
            pairs = ", ".join(f"{_value(k, _dtype(key))} : {_value(v, None)}" for k, v in data["set"])
            return f"{_expr(key)} map {{ {pairs} }}"
        return f"{_expr(key)} map {_value(data, None)}"
    raise ValueError(f"cannot render expression {expr!r}")


def _prefix_len(mask: int, bits: int) -> int | None:
    """n if `mask` is n leading one bits of a `bits`-wide value, else None."""
    inverted = ~mask & ((1 << bits) - 1)
    if mask <= 0 or inverted & (inverted + 1):
        return None
    return bits - inverted.bit_length()


TCP_FLAG_NAMES = ("fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr")  # bit 0 upwards


def _tcp_flags(bits: int) -> str:
    return ",".join(name for index, name in enumerate(TCP_FLAG_NAMES) if bits & (1 << index))


def _match(m: s.Match) -> str:
    left, right, op = m.left, m.right, m.op
    dtype = _dtype(left)
    if isinstance(left, dict) and "&" in left and left["&"][0] == {"payload": {"protocol": "tcp", "field": "flags"}} and isinstance(right, int):
        mask = left["&"][1]  # nft lists `tcp flags & MASK == VALUE` as `tcp flags VALUE / MASK`
        if op == "==" and right == 0:
            return f"tcp flags ! {_tcp_flags(mask)}"
        return f"tcp flags {'!= ' if op == '!=' else ''}{_tcp_flags(right)} / {_tcp_flags(mask)}"
    if isinstance(left, dict) and "&" in left and op in ("==", "!=") and isinstance(left["&"][1], int) and isinstance(right, int):
        inner = left["&"][0]
        bits = PREFIX_BITS.get(str(_dtype(inner)))
        length = _prefix_len(left["&"][1], bits) if bits else None
        if length is not None:  # nft lists a prefix mask as a prefix
            negate = "!= " if op == "!=" else ""
            suffix = "" if length == bits else f"/{length}"
            return f"{_expr(inner)} {negate}{_scalar(right, 'mark')}{suffix}"
    if dtype == "ct_state" and (op == "in" or (op == "!=" and isinstance(right, list))):
        states = right if isinstance(right, list) else [right]
        ordered = sorted(states, key=lambda s: CT_STATE_BITS.get(s, 1 << 16))
        return f"{_expr(left)} {'!= ' if op == '!=' else ''}{(',' if op == 'in' else ' | ').join(_word(s) for s in ordered)}"
    if dtype == "ct_state" and op == "==" and not isinstance(right, (dict, list)):
        return f"{_expr(left)} == {_value(right, dtype)}"
    binop = isinstance(left, dict) and any(k in left for k in ("&", "|", "^", "<<", ">>"))
    operator = "" if op == "in" or (op == "==" and not binop) else f"{op} "
    return f"{_expr(left)} {operator}{_value(right, dtype)}"


def _rate(limit: s.RateLimit) -> str:
    """Packet rates only (all the compiler makes); nft omits a burst of 0 or 5."""
    over = "over " if limit.over else ""
    return f"rate {over}{limit.rate}/{limit.per}" + (f" burst {limit.burst} packets" if limit.burst not in (0, 5) else "")


def _nat(st: s.Nat) -> str:
    if st.kind == "masquerade":
        return "masquerade"
    family = f" {st.family}" if st.family else ""
    if st.addr is None:
        return st.kind
    addr = f"[{st.addr}]" if ":" in st.addr and st.port is not None else st.addr
    return f"{st.kind}{family} to {addr}" + (f":{st.port}" if st.port is not None else "")


def _reject(st: s.Reject) -> str:
    if st.type == "tcp reset":
        return "reject with tcp reset"
    if st.type == "icmpx" and st.code in (None, "port-unreachable"):
        return "reject"
    return f"reject with {st.type} {_word(st.code or '')}"


def _set_update(st: s.SetUpdate) -> str:
    inner = " ".join([_expr(st.elem), *(_statement(sub) for sub in st.statements)])
    return f"{st.op} @{_word(st.set)} {{ {inner} }}"


STATEMENT_TEXT: dict[type, Callable[[Any], str]] = {
    s.Match: _match,
    s.Counter: lambda _st: "counter packets 0 bytes 0",
    s.Verdict: lambda st: st.kind if st.target is None else f"{st.kind} {_word(st.target)}",
    s.Mangle: lambda st: f"{_expr(st.key)} set {_value(st.value, _dtype(st.key))}",
    s.Reject: _reject,
    s.Log: lambda st: f"log prefix {quote(st.prefix)} group {int(st.group)}",
    s.RateLimit: lambda st: f"limit {_rate(st)}",
    s.LimitRef: lambda st: f"limit name {quote(st.name)}",
    s.SetUpdate: _set_update,
    s.VMap: lambda st: f"{_expr(st.key)} vmap @{_word(st.map)}",
    s.CtHelperSet: lambda st: f"ct helper set {quote(st.name)}",
    s.CtTimeoutSet: lambda st: f"ct timeout set {quote(st.name)}",
    s.Nat: _nat,
}


def _statement(st: s.Statement) -> str:
    return STATEMENT_TEXT[type(st)](st)


# Dependencies nft lists only when nothing later implies them.
NET_OF_PAYLOAD = {"ip": "ipv4", "ip6": "ipv6", "arp": "arp", "icmp": "ipv4", "icmpv6": "ipv6"}
NET_OF_ETHER = {"ip": "ipv4", "ip6": "ipv6", "arp": "arp", 0x0800: "ipv4", 0x86DD: "ipv6", 0x0806: "arp"}
NET_OF_L4 = {1: "ipv4", 58: "ipv6"}
NETWORK_PROTOCOLS = {"ether", "ip", "ip6", "arp", "vlan"}


def _payload_protocols(node: Any) -> list[str]:
    if isinstance(node, dict):
        if "payload" in node:
            return [node["payload"].get("protocol", "")]
        return [p for value in node.values() for p in _payload_protocols(value)]
    if isinstance(node, (list, tuple)):
        return [p for value in node for p in _payload_protocols(value)]
    if isinstance(node, s.STATEMENT_TYPES):  # its expressions (and nested statements)
        return [p for name in node.__slots__ for p in _payload_protocols(getattr(node, name))]
    return []


def _dependency(st: s.Statement) -> tuple[str, Any] | None:
    """("net", family) or ("l4", protocol number) if `st` is a protocol-selector match."""
    if not isinstance(st, s.Match) or st.op != "==" or isinstance(st.right, (dict, list)):
        return None
    left, right = st.left, st.right
    if left == {"payload": {"protocol": "ether", "field": "type"}} and right in NET_OF_ETHER:
        return "net", NET_OF_ETHER[right]
    if left == {"meta": {"key": "nfproto"}}:
        return "net", NFPROTO.get(right, right)
    if left in ({"meta": {"key": "l4proto"}}, {"payload": {"protocol": "ip", "field": "protocol"}},
                {"payload": {"protocol": "ip6", "field": "nexthdr"}}):
        return "l4", right if isinstance(right, int) else _protocols()[1].get(right)
    return None


def listed_statements(statements: Sequence[s.Statement]) -> list[s.Statement]:
    """The statements nft lists: implied protocol dependencies removed."""
    dropped: set[int] = set()
    net: tuple[int, str] | None = None
    l4: tuple[int, Any] | None = None
    names = _protocols()[1]
    for index, st in enumerate(statements):
        for proto in _payload_protocols(st):
            if net and NET_OF_PAYLOAD.get(proto) == net[1]:
                dropped.add(net[0])
                net = None
            if l4 and proto not in NETWORK_PROTOCOLS and names.get(proto) == l4[1]:
                dropped.add(l4[0])
                l4 = None
        dep = _dependency(st)
        if dep and dep[0] == "net":
            net = (index, dep[1])
        elif dep:
            if net and NET_OF_L4.get(dep[1]) == net[1]:  # `meta l4proto icmp` implies ipv4
                dropped.add(net[0])
                net = None
            l4 = (index, dep[1])
    return [st for index, st in enumerate(statements) if index not in dropped]


def render_rule(rule: Rule) -> str:
    text = " ".join(_statement(st) for st in listed_statements(rule.statements))
    return text + (f" comment {quote(rule.comment)}" if rule.comment else "")


# -- objects -----------------------------------------------------------------------


def _priority(family: str, hook: str, priority: int) -> str:
    for name, value, hooks in STD_PRIOS["bridge" if family == "bridge" else "other"]:
        if abs(priority - value) <= 10:
            if hooks is not None and hook not in hooks:
                break
            offset = priority - value
            return name + (f" + {offset}" if offset > 0 else f" - {-offset}" if offset < 0 else "")
    return str(priority)


def _chain(table: Table, chain: Chain) -> str:
    lines = [f"\tchain {_word(chain.name)} {{"]
    if chain.hook is not None:
        h = chain.hook
        priority = _priority(table.family, h.hook, h.priority)
        lines.append(f"\t\ttype {h.type} hook {h.hook} priority {priority}; policy {h.policy};")
    lines += [f"\t\t{render_rule(rule)}" for rule in chain.rules]
    return "\n".join(lines + ["\t}"]) + "\n"


def _duration(seconds: int) -> str:
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        out += f"{count}{unit}" if count else ""
    return out or "0s"


def _elements(named: NamedSet) -> list[str]:
    key_type: DType = named.type
    if named.map is not None:
        pairs = [tuple(e) for e in named.elements]
        return [f"{_value(k, key_type)} : {_value(v, None if named.map == 'verdict' else named.map)}" for k, v in pairs]
    if "interval" in named.flags:
        items = _interval_elements(list(named.elements), key_type, merge=False)
        if items is not None:
            return items
    return [_value(e, key_type) for e in named.elements]


def _updated_sets(table: Table) -> set[str]:
    """Sets that rules add to or update: nft makes them dynamic whatever their flags."""
    statements = (st for chain in table.chains for rule in chain.rules for st in rule.statements)
    return {st.set for st in statements if isinstance(st, s.SetUpdate)}


def _set(named: NamedSet, dynamic: bool = False) -> str:
    type_text = " . ".join(named.type) if isinstance(named.type, tuple) else named.type
    lines = [f"\t{'map' if named.map is not None else 'set'} {_word(named.name)} {{",
             f"\t\ttype {type_text}" + (f" : {named.map}" if named.map is not None else "")]
    if named.size is not None:
        lines.append(f"\t\tsize {named.size}")
    flags = [f for f in ("constant", "dynamic", "interval", "timeout") if f in named.flags or (f == "dynamic" and dynamic)]
    if flags and (named.timeout is None or flags != ["timeout"]):
        lines.append(f"\t\tflags {','.join(flags)}")
    if named.timeout is not None:
        lines.append(f"\t\ttimeout {_duration(named.timeout)}")
    if named.elements:
        per_line = PER_LINE.get(named.type, 1) if isinstance(named.type, str) else 1
        text = ""
        for index, item in enumerate(_elements(named)):
            text += ("" if index == 0 else WRAP if index % per_line == 0 else ", ") + item
        lines.append(f"\t\telements = {{ {text} }}")
    return "\n".join(lines + ["\t}"]) + "\n"


def _limit(limit: Limit) -> str:
    if limit.unit != "packets":
        raise ValueError(f"cannot render byte rate of limit {limit.name!r}")
    return f"\tlimit {_word(limit.name)} {{\n\t\t{_rate(s.RateLimit(limit.rate, limit.per, limit.burst))}\n\t}}\n"


def _helper(helper: CtHelper) -> str:
    return f"\tct helper {_word(helper.name)} {{\n\t\ttype {quote(helper.type)} protocol {helper.protocol}\n\t\tl3proto {helper.l3proto}\n\t}}\n"


def render_timeout(timeout: CtTimeout) -> str:
    """A ct timeout object as nft prints it (nft omits states equal to its own defaults)."""
    policy = ", ".join(f"{state} : {seconds}" for state, seconds in timeout.policy)
    return f"\tct timeout {_word(timeout.name)} {{\n\t\tprotocol {timeout.protocol}\n\t\tl3proto {timeout.l3proto}\n\t\tpolicy = {{ {policy} }}\n\t}}\n"


def render_table(table: Table) -> str:
    """One table, as `nft list table FAMILY NAME` prints it (fresh counters)."""
    # timeouts first: the dataplane creates them before the rest (dataplane/apply.py)
    blocks = [render_timeout(timeout) for timeout in table.timeouts]
    blocks += [_limit(limit) for limit in table.limits]
    blocks += [_helper(helper) for helper in table.helpers]
    updated = _updated_sets(table)
    blocks += [_set(named, named.name in updated) for named in table.sets]
    blocks += [_chain(table, chain) for chain in table.chains]
    return f"table {table.family} {_word(table.name)} {{\n" + "\n".join(blocks) + "}\n"


def render_nft(ruleset: Ruleset) -> str:
    """Every table of the ruleset, as `nft list ruleset` would print them."""
    return "".join(render_table(table) for table in ruleset.tables)


# -- comparing listings ---------------------------------------------------------------

_HANDLE = re.compile(r"\s*# handle \d+")
_COUNTER = re.compile(r"packets \d+ bytes \d+")
_EXPIRES = re.compile(r" expires [0-9dhms]+")


def _sort_braces(line: str) -> str:
    """Sort the comma-separated items of every `{ ... }` in `line` (outside strings)."""
    out: list[str] = []
    i = 0
    while i < len(line):
        c = line[i]
        if c == '"':
            end = line.find('"', i + 1)
            end = len(line) - 1 if end < 0 else end
            out.append(line[i : end + 1])
            i = end + 1
            continue
        if c == "{" and i + 1 < len(line):
            items: list[str] = []
            depth, j, start, in_str = 1, i + 1, i + 1, False
            while j < len(line) and depth:
                ch = line[j]
                if ch == '"':
                    in_str = not in_str
                elif not in_str and ch == "{":
                    depth += 1
                elif not in_str and ch == "}":
                    depth -= 1
                elif not in_str and ch == "," and depth == 1:
                    items.append(line[start:j])
                    start = j + 1
                j += 1
            if depth:  # unbalanced: leave the rest alone
                out.append(line[i:])
                break
            items.append(line[start : j - 1])
            out.append("{ " + ", ".join(sorted(_sort_braces(item.strip()) for item in items)) + " }")
            i = j
            continue
        out.append(c)
        i += 1
    return "".join(out)


def normalize_listing(text: str) -> str:
    """Canonical form of an `nft list` output (or of `render_table`) for comparison.

    Drops handles, counter values, element expiry times, blank lines and the elements
    of dynamic sets (filled by traffic); joins wrapped element lines; sorts the items of
    named and anonymous sets (the kernel keeps hash sets in its own order); collapses
    whitespace.
    """
    lines: list[str] = []
    for raw in _HANDLE.sub("", text).splitlines():
        line = " ".join(raw.split())
        if not line:
            continue
        if lines and lines[-1].endswith(","):
            lines[-1] += " " + line
        else:
            lines.append(line)
    out: list[str] = []
    dynamic = False
    for line in lines:
        if line.startswith(("set ", "map ")):
            dynamic = False
        elif line.startswith("flags ") and "dynamic" in line[6:].split(","):
            dynamic = True
        elif line.startswith("elements = ") and dynamic:
            continue
        line = _EXPIRES.sub("", _COUNTER.sub("packets 0 bytes 0", line))
        out.append(_sort_braces(line))
    return "\n".join(out) + "\n"
