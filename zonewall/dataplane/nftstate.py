"""What the kernel holds for our tables, read over netlink: structure and digests.

A `TableState` holds what readback verifies (each chain's rule comments in order, each
named set's kind and element count, the stateful objects, the ct timeout policies) and a
digest per chain, set and object of everything else, taken from the kernel's own
encoding (`netlink.py` says why not libnftables' listing). Two reads with equal digests
saw the same ruleset. Left out are the values the kernel changes by itself: traffic
counters (of rules and named counters), quota usage, `last` timestamps, element
expirations, use counts, and the elements of dynamic sets (timeout or `dynamic`: the
packet path adds those, e.g. learned guest addresses).

Handles are in the digests, so a rule someone deleted and re-added, even identical, is
a difference. Anonymous sets (`{ 22, 80 }` inside a rule) are not read: at 2,000
guests there are four of them to every named set, and the kernel finds each by walking
all of them. Their contents are covered anyway: the kernel refuses any change to the
elements of a bound anonymous set, so they change only with the rule that owns them,
and a replaced rule has a new handle.

`read_tables` serves `LibNftBackend.read_state`; `FakeBackend` builds the same
structures from its model.
"""

from __future__ import annotations

import errno
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .netlink import (
    ATTR,
    NFNL_SUBSYS_NFTABLES,
    NLA_F_NESTED,
    NLA_TYPE_MASK,
    NetlinkError,
    NfSocket,
    Span,
    attr_list,
    attrs,
    be32,
    string_attr,
    text,
)

TableKey = tuple[str, str]

FAMILIES = {"ip": 2, "ip6": 10, "inet": 1, "arp": 3, "bridge": 7, "netdev": 5}
_GETTABLE, _GETCHAIN, _GETRULE, _GETSET, _GETSETELEM, _GETGEN, _GETOBJ = 1, 4, 7, 10, 13, 16, 19
OBJECT_KINDS = {1: "counter", 2: "quota", 3: "ct helper", 4: "limit", 5: "connlimit", 6: "tunnel", 7: "ct timeout", 8: "secmark", 9: "ct expectation", 10: "synproxy"}
_SET_ANONYMOUS, _SET_MAP, _SET_TIMEOUT, _SET_EVAL, _SET_OBJECT = 0x1, 0x8, 0x10, 0x20, 0x40
_ELEM_INTERVAL_END = 0x1
# kernel enum ctattr_timeout_{tcp,udp} (attribute type = index + 1), by nft's state names
TIMEOUT_STATES = {
    6: ("tcp", ("syn_sent", "syn_recv", "established", "fin_wait", "close_wait", "last_ack", "time_wait", "close", "syn_sent2", "retrans", "unacknowledged")),
    17: ("udp", ("unreplied", "replied")),
}

# Attributes kept (by NFTA_* type): chain handle/hook/policy/type/flags; set flags, key
# and data types and lengths, description, timeout, gc interval, user data, object
# type, handle; element key, data, flags, timeout, user data, object ref, key end.
_CHAIN_DEFINITION = (2, 4, 5, 7, 10)
_SET_DEFINITION = (3, 4, 5, 6, 7, 9, 11, 12, 13, 15, 16)
_ELEMENT_FIELDS = (1, 2, 3, 4, 6, 9, 10)
# NFTA_EXPR_DATA of these expressions (None: all of it; else the attribute types) and of
# named objects of these kinds changes with traffic.
_VOLATILE_EXPRESSION_DATA: dict[bytes, frozenset[int] | None] = {b"counter": None, b"last": None, b"quota": frozenset({3})}
_VOLATILE_OBJECT_DATA: dict[str, frozenset[int] | None] = {"counter": None, "quota": frozenset({3})}
# The common case, a counter, as the kernel dumps it on every architecture without
# padding: NFTA_EXPR_NAME "counter", NFTA_EXPR_DATA { NFTA_COUNTER_BYTES be64,
# NFTA_COUNTER_PACKETS be64 }. Its numbers are zeroed in place with one substitution
# over all rules of a chain; any other layout takes the attribute-by-attribute way.
_COUNTERS = tuple(
    (re.compile(re.escape(prefix) + b".{8}" + re.escape(ATTR.pack(12, 2)) + b".{8}", re.S), prefix + bytes(8) + ATTR.pack(12, 2) + bytes(8))
    for prefix in (ATTR.pack(12, 1) + b"counter\0" + ATTR.pack(28, kind) + ATTR.pack(12, 1) for kind in (2 | NLA_F_NESTED, 2))
)
_OTHER_VOLATILE = (b"quota\0", b"last\0")


@dataclass(frozen=True)
class ChainState:
    comments: tuple[str | None, ...]  # of its rules, in order
    definition: bytes  # handle, hook, type, policy, flags as the kernel encodes them
    digest: bytes  # definition and rules (handle, user data, expressions)


@dataclass(frozen=True)
class SetState:
    kind: str  # set | map
    elements: int | None  # None: dynamic (the packet path owns its elements)
    definition: bytes
    digest: bytes  # definition and elements


@dataclass(frozen=True)
class ObjectState:
    digest: bytes
    policy: tuple[str, dict[str, int]] | None = None  # ct timeout: (protocol, {state: seconds})


@dataclass(frozen=True)
class TableState:
    chains: dict[str, ChainState]
    sets: dict[str, SetState]  # named sets and maps
    objects: dict[tuple[str, str], ObjectState]  # (kind, name)

    def digest(self) -> bytes:
        h = hashlib.sha256()
        for name in sorted(self.chains):
            h.update(b"chain\0%s\0%s" % (name.encode(), self.chains[name].digest))
        for name in sorted(self.sets):
            h.update(b"set\0%s\0%s" % (name.encode(), self.sets[name].digest))
        for kind, name in sorted(self.objects):
            h.update(b"object\0%s\0%s\0%s" % (kind.encode(), name.encode(), self.objects[(kind, name)].digest))
        return h.digest()


@dataclass(frozen=True)
class Scope:
    """The chains and sets of one table whose contents a transaction touched."""

    chains: frozenset[str] = field(default_factory=frozenset)
    sets: frozenset[str] = field(default_factory=frozenset)


def digest_of(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(len(part).to_bytes(4, "little"))
        h.update(part)
    return h.digest()


# ---------------------------------------------------------------- reading the kernel


def generation(sock: NfSocket) -> int:
    """The ruleset generation of the namespace: every committed nf_tables transaction
    that changes something (any table, anyone's) moves it on by one."""
    for buf, start, end in sock.request(_nft(_GETGEN), 0, b"", dump=False):
        return be32(buf, attrs(buf, start, end)[1])  # NFTA_GEN_ID
    raise RuntimeError("no answer to NFT_MSG_GETGEN")


def read_tables(
    sock: NfSocket,
    keys: Iterable[TableKey],
    *,
    base: Mapping[TableKey, TableState | None] | None = None,
    scope: Mapping[TableKey, Scope] | None = None,
) -> dict[TableKey, TableState | None]:
    """Our tables as the kernel holds them (None: absent).

    With `base` (an earlier read) and a `scope` for a table, only the scope's chains
    and sets are read (by name; gone ones are dropped), the rest is taken from `base`.
    The caller vouches that nothing outside the scope changed since `base` was read
    (apply.py checks the ruleset generation).
    """
    keys = list(dict.fromkeys(keys))
    out: dict[TableKey, TableState | None] = {}
    for family in dict.fromkeys(f for f, _ in keys):
        number = FAMILIES[family]
        present = _tables(sock, number)
        updates = {n: (base[(f, n)], scope[(f, n)]) for f, n in keys if f == family and n in present and base and scope and base.get((f, n)) and (f, n) in scope}
        chains = _chains(sock, number, [n for f, n in keys if f == family and n in present and n not in updates])
        for f, name in keys:
            if f != family:
                continue
            if name not in present:
                out[(f, name)] = None
            elif name in updates:
                out[(f, name)] = _updated(sock, number, name, *updates[name])
            else:
                out[(f, name)] = _table(sock, number, name, chains.get(name, {}))
    return out


_TABLE_FLAGS, _TABLE_OWNER, _TABLE_F_OWNER = 2, 7, 0x2  # NFTA_TABLE_FLAGS, NFTA_TABLE_OWNER, NFT_TABLE_F_OWNER
_FAMILY_NAMES = {number: name for name, number in FAMILIES.items()}


def tables(sock: NfSocket) -> dict[TableKey, int | None]:
    """Every table of the namespace, of every family: the netlink port of the program
    that holds it (`flags owner`: the kernel lets no one else change it), else None.

    Read here rather than listed by libnftables: nftables 1.0.6 prints such a table's
    flags in JSON from past the end of its names array (garbage, or a crash of the
    process that asked)."""
    out: dict[TableKey, int | None] = {}
    for buf, start, end in sock.request(_nft(_GETTABLE), 0, b"", dump=True):  # family 0: all of them
        family = _FAMILY_NAMES.get(buf[start - 4])  # struct nfgenmsg's first byte
        if family is None:
            continue
        a = attrs(buf, start, end)
        flags = be32(buf, a[_TABLE_FLAGS]) if _TABLE_FLAGS in a else 0
        out[(family, text(buf, a[1]))] = (be32(buf, a[_TABLE_OWNER]) if _TABLE_OWNER in a else 0) if flags & _TABLE_F_OWNER else None
    return out


def _nft(message: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | message


def _raw(buf: bytes, found: Mapping[int, Span], kinds: Iterable[int]) -> bytes:
    """The attributes of these types, headers included (self-delimiting), in type order."""
    return b"".join(buf[span[0] - 4:span[1]] for kind in kinds if (span := found.get(kind)) is not None)


def _tables(sock: NfSocket, family: int) -> set[str]:
    return {text(buf, attrs(buf, start, end)[1]) for buf, start, end in sock.request(_nft(_GETTABLE), family, b"", dump=True)}


def _chains(sock: NfSocket, family: int, names: list[str]) -> dict[str, dict[str, bytes]]:
    """table -> chain -> definition, for the wanted tables (one dump for all)."""
    wanted = set(names)
    out: dict[str, dict[str, bytes]] = {}
    if not wanted:
        return out
    for buf, start, end in sock.request(_nft(_GETCHAIN), family, b"", dump=True):
        a = attrs(buf, start, end)
        table = text(buf, a[1])
        if table in wanted:
            out.setdefault(table, {})[text(buf, a[3])] = _raw(buf, a, _CHAIN_DEFINITION)
    return out


def _table(sock: NfSocket, family: int, name: str, definitions: dict[str, bytes]) -> TableState:
    table = string_attr(1, name)
    rules = _rules(sock, family, table, set(definitions), everything=True)
    chains = {chain: _chain_state(definition, *rules[chain]) for chain, definition in definitions.items()}
    return TableState(chains, _sets(sock, family, table), _objects(sock, family, table))


def _updated(sock: NfSocket, family: int, name: str, base: TableState, scope: Scope) -> TableState:
    """`base` with the scope's chains and sets read again, each by name: what a small
    transaction costs to verify does not grow with the table."""
    table = string_attr(1, name)
    chains = dict(base.chains)
    for chain in scope.chains:
        found = _one(sock, _GETCHAIN, family, table + string_attr(3, chain))
        if found is None:
            chains.pop(chain, None)
        else:
            comments, stable = _rules(sock, family, table, {chain}, everything=False)[chain]
            chains[chain] = _chain_state(_raw(*found, _CHAIN_DEFINITION), comments, stable)
    sets = dict(base.sets)
    for named in scope.sets:
        found = _one(sock, _GETSET, family, table + string_attr(2, named))
        if found is None:
            sets.pop(named, None)
        else:
            buf, a = found
            sets[named] = _set_state(sock, family, table, named, be32(buf, a[3]) if 3 in a else 0, _raw(buf, a, _SET_DEFINITION))
    return TableState(chains, sets, _objects(sock, family, table))


def _one(sock: NfSocket, message: int, family: int, request: bytes) -> tuple[bytes, dict[int, Span]] | None:
    """(buffer, attributes) of the one chain or set the request names; None if it is gone."""
    found = None
    try:
        for buf, start, end in sock.request(_nft(message), family, request, dump=False):  # read through the ACK
            found = buf, attrs(buf, start, end)
    except NetlinkError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return found


def _chain_state(definition: bytes, comments: list[str | None], stable: bytes) -> ChainState:
    return ChainState(tuple(comments), definition, digest_of(definition, stable))


def _rules(sock: NfSocket, family: int, table: bytes, chains: set[str], everything: bool) -> dict[str, tuple[list[str | None], bytes]]:
    """chain -> (comments of its rules, their stable encoding).

    A whole table comes in one dump while it is small. The kernel resumes a dump by
    walking the table again from its first rule for every 32 KiB it sends, which
    grows with the square of the table (1.0 s for 92,000 rules), so larger tables,
    and parts of tables, come one chain per dump (0.27 s for the same rules).
    """
    out: dict[str, tuple[list[str | None], list[bytes]]] = {chain: ([], []) for chain in chains}
    if everything and len(chains) <= WHOLE_TABLE_DUMP_CHAINS:
        requests = [table]
    else:
        requests = [table + string_attr(2, chain) for chain in chains]
    for request in requests:
        for buf, start, end in sock.request(_nft(_GETRULE), family, request, dump=True):
            chain, comment = _rule_chain_and_comment(buf, start, end)
            comments, bodies = out[chain]
            comments.append(comment)
            bodies.append(buf[start:end])
    return {chain: (comments, _stable_rules(b"".join(bodies))) for chain, (comments, bodies) in out.items()}


WHOLE_TABLE_DUMP_CHAINS = 1000


def _rule_chain_and_comment(buf: bytes, start: int, end: int) -> tuple[str, str | None]:
    chain, comment = "", None
    while start + 4 <= end:
        length, kind = ATTR.unpack_from(buf, start)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind == 2:  # NFTA_RULE_CHAIN
            chain = buf[start + 4:start + length].split(b"\0", 1)[0].decode()
        elif kind == 7:  # NFTA_RULE_USERDATA
            comment = rule_comment(buf[start + 4:start + length])
        start += (length + 3) & ~3
    return chain, comment


def _stable_rules(data: bytes) -> bytes:
    """Rule messages (table, chain, handle, position, expressions, user data) without
    the values traffic changes: the counters' numbers are zeroed in place."""
    if any(marker in data for marker in _OTHER_VOLATILE):
        return b"".join(_stable_rule(body) for body in _message_bodies(data))
    if b"counter\0" not in data:
        return data
    expected = data.count(b"counter\0")
    for pattern, zeroed in _COUNTERS:  # the replacement is literal: no Python per match
        stable, found = pattern.subn(zeroed, data)
        if found == expected:
            return stable
    return b"".join(_stable_rule(body) for body in _message_bodies(data))  # some other layout


def _message_bodies(data: bytes) -> list[bytes]:
    """Split concatenated rule attribute blocks again (each starts with NFTA_RULE_TABLE)."""
    bodies, position = [], 0
    while position < len(data):
        start = position
        while position + 4 <= len(data):
            length, kind = ATTR.unpack_from(data, position)
            if length < 4 or (kind & NLA_TYPE_MASK == 1 and position > start):
                break
            position += (length + 3) & ~3
        bodies.append(data[start:position])
        if position == start:
            break
    return bodies


def _stable_rule(body: bytes) -> bytes:
    a = attrs(body, 0, len(body))
    kept = _raw(body, a, sorted(k for k in a if k != 4))
    if 4 not in a:
        return kept
    return kept + b"".join(_stable_expression(body, start, end) for start, end in attr_list(body, *a[4]))


def _stable_expression(buf: bytes, start: int, end: int) -> bytes:
    a = attrs(buf, start, end)
    name = buf[a[1][0]:a[1][1]].rstrip(b"\0") if 1 in a else b""
    if name not in _VOLATILE_EXPRESSION_DATA or 2 not in a:
        return buf[start:end]
    return name + _without(buf, a[2], _VOLATILE_EXPRESSION_DATA[name])


def _without(buf: bytes, span: Span, volatile: frozenset[int] | None) -> bytes:
    if volatile is None:
        return b""
    inner = attrs(buf, *span)
    return _raw(buf, inner, sorted(k for k in inner if k not in volatile))


def rule_comment(userdata: bytes) -> str | None:
    """NFTNL_UDATA_RULE_COMMENT of the rule's user data (type, length, value records)."""
    position = 0
    while position + 2 <= len(userdata):
        kind, length = userdata[position], userdata[position + 1]
        if kind == 0:
            return userdata[position + 2:position + 2 + length].split(b"\0", 1)[0].decode("utf-8", "replace") or None
        position += 2 + length
    return None


def _sets(sock: NfSocket, family: int, table: bytes) -> dict[str, SetState]:
    listed: list[tuple[str, int, bytes]] = []
    for buf, start, end in sock.request(_nft(_GETSET), family, table, dump=True):
        a = attrs(buf, start, end)
        flags = be32(buf, a[3]) if 3 in a else 0
        if not flags & _SET_ANONYMOUS:
            listed.append((text(buf, a[2]), flags, _raw(buf, a, _SET_DEFINITION)))
    return {name: _set_state(sock, family, table, name, flags, definition) for name, flags, definition in listed}


def _set_state(sock: NfSocket, family: int, table: bytes, name: str, flags: int, definition: bytes) -> SetState:
    kind = "map" if flags & (_SET_MAP | _SET_OBJECT) else "set"
    if flags & (_SET_TIMEOUT | _SET_EVAL):
        return SetState(kind, None, definition, digest_of(definition))
    count, elements = _elements(sock, family, table, name)
    return SetState(kind, count, definition, digest_of(definition, *sorted(elements)))


# A hash set's table is resized by a kernel worker some time after elements were added.
# A dump that meets a resize starts the walk again and sends elements twice, and a dump
# in several parts (each resumed by position) may then also skip as many as it repeats
# (measured: a 200-element set read right after its transaction committed, 210 elements).
# So a dump with a repeated element is made again.
ELEMENT_READS = 5


def _elements(sock: NfSocket, family: int, table: bytes, name: str) -> tuple[int, list[bytes]]:
    """(count, bytes of each) of a named set's elements. A range in an interval set is a
    start element and an `interval end` element in the kernel; ends are not counted, so
    the count is the one libnftables lists and the compiler wrote."""
    for _attempt in range(ELEMENT_READS):
        elements = _element_dump(sock, family, table, name)
        if len(elements) == len({encoded for encoded, _end in elements}):
            break
    distinct = dict(elements)  # repeating after every attempt: each counted once
    return sum(not end for end in distinct.values()), list(distinct)


def _element_dump(sock: NfSocket, family: int, table: bytes, name: str) -> list[tuple[bytes, bool]]:
    """Each element as the kernel sent it (its attributes), and whether it ends a range."""
    elements = []
    for buf, start, end in sock.request(_nft(_GETSETELEM), family, table + string_attr(2, name), dump=True):
        a = attrs(buf, start, end)
        if 3 not in a:
            continue
        for s, e in attr_list(buf, *a[3]):
            element = attrs(buf, s, e)
            elements.append((_raw(buf, element, _ELEMENT_FIELDS), bool((be32(buf, element[3]) if 3 in element else 0) & _ELEM_INTERVAL_END)))
    return elements


def _objects(sock: NfSocket, family: int, table: bytes) -> dict[tuple[str, str], ObjectState]:
    out: dict[tuple[str, str], ObjectState] = {}
    for buf, start, end in sock.request(_nft(_GETOBJ), family, table, dump=True):
        a = attrs(buf, start, end)
        number = be32(buf, a[3])
        kind = OBJECT_KINDS.get(number, f"object {number}")
        data = a.get(4)
        if data is None:
            stable = b""
        elif kind in _VOLATILE_OBJECT_DATA:
            stable = _without(buf, data, _VOLATILE_OBJECT_DATA[kind])
        else:
            stable = buf[data[0]:data[1]]
        policy = _timeout_policy(buf, data) if kind == "ct timeout" and data is not None else None
        out[(kind, text(buf, a[2]))] = ObjectState(digest_of(_raw(buf, a, (6,)), stable), policy)  # handle, data
    return out


def _timeout_policy(buf: bytes, span: Span) -> tuple[str, dict[str, int]] | None:
    a = attrs(buf, *span)
    if 2 not in a:
        return None
    number = buf[a[2][0]]  # NFTA_CT_TIMEOUT_L4PROTO
    protocol, states = TIMEOUT_STATES.get(number, (str(number), ()))
    values: dict[str, int] = {}
    if 3 in a:  # NFTA_CT_TIMEOUT_DATA: seconds per state
        for kind, value in attrs(buf, *a[3]).items():
            if 1 <= kind <= len(states):
                values[states[kind - 1]] = be32(buf, value)
    return protocol, values
