"""Rule counters read over netlink, the rules' meaning worked out once per generation.

An agent reads every rule's counter every few seconds (agent/observe.py). Through
libnftables that is a JSON listing of both tables, parsed into Python and each
statement decoded: ~0.4 s of CPU every 5 s on a node with 100 guests, and a second
libnftables context whose cache of the kernel the agent kept (~40 MiB at 10,000 VMs).

Here a reading is one rule dump per table over NETLINK_NETFILTER (`netlink.py`). What
a kernel rule counts for (its rule id, scope, level and verdict: `counters.rule_key`,
`counters.verdict_of`) changes only with the ruleset, and every committed transaction
moves the ruleset generation on: so the rules' meaning is worked out from their
chains, comments and verdicts only when the generation moved since the last reading;
otherwise each rule's handle and counter numbers are all that is read. The answer is
`counters.read_counters`' (tests/kernel/test_rule_counters.py compares them).

When the generation moved, the chains an apply rewrote are compared with what they
held before (`renames.py`): a counter whose rule was only renamed (its derived id
moved by a line added above it) says which id it had (`RuleCounter.was`), until the
generation moves again.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from hashlib import blake2b

from ..compiler.stmt import Verdict, VerdictKind
from ..netns import run_in_netns
from .counters import TABLES, KernelRuleCount, Key, RuleCounter, rule_key, summed, verdict_of
from .netlink import ATTR, NLA_TYPE_MASK, DumpInterrupted, NfSocket, Span, attr_list, attrs, string_attr
from .nftstate import FAMILIES, generation, rule_comment
from .renames import renamed

_GETRULE = 10 << 8 | 7  # NFNL_SUBSYS_NFTABLES, NFT_MSG_GETRULE
_RULE_CHAIN, _RULE_HANDLE, _RULE_EXPRESSIONS, _RULE_USERDATA = 2, 3, 4, 7
_EXPR_NAME, _EXPR_DATA = 1, 2
_COUNTER_BYTES, _COUNTER_PACKETS = 1, 2
_IMMEDIATE_DREG, _IMMEDIATE_DATA, _DATA_VERDICT, _VERDICT_CODE, _VERDICT_CHAIN = 1, 2, 2, 1, 2
_VERDICTS: dict[int, VerdictKind] = {0: "drop", 1: "accept", -3: "jump", -4: "goto", -5: "return"}  # NF_DROP, NF_ACCEPT, NFT_JUMP/GOTO/RETURN
_BE64 = struct.Struct("!Q")
_BE32 = struct.Struct("!I")
_SIGNED32 = struct.Struct("!i")
_COUNTER_NAME = ATTR.pack(12, _EXPR_NAME) + b"counter\0"
_INLINE_NAMES = (b"__set", b"__map")  # inline sets' and maps' names: the kernel numbers them anew with each rule made
_NAMING_SETS = frozenset((b"lookup", b"dynset", b"objref"))  # the expressions that name a set or map
_READ_ATTEMPTS = 5


@dataclass(frozen=True)
class _Rule:
    """A kernel rule's meaning (what its counter counts for), None: it has no counter."""

    key: Key
    verdict: str


class CounterReader:
    """Reads the rule counters of zonewall's tables in one network namespace."""

    def __init__(self, netns: str | None = None, tables: Iterable[tuple[str, str]] = TABLES) -> None:
        self._sock: NfSocket = run_in_netns(netns, NfSocket)  # a socket stays in the namespace it was made in
        self._tables = tuple(tables)
        self._generation: int | None = None  # of the rules' meanings below
        self._rules: dict[tuple[str, int], _Rule] = {}  # (family, handle) -> meaning
        self._seen: dict[str, dict[bytes, _Parsed]] = {}  # per family: the digest of a rule's message but for its counter's numbers -> what it says
        self._layout: dict[tuple[str, str], list[tuple[bytes, Key]]] = {}  # the chains' counted rules at the last reading (renames.py)
        self._learnt: dict[tuple[str, str], list[tuple[bytes, Key]]] = {}  # ... at this one, while it is read
        self._renamed: dict[Key, str] = {}  # since the generation last moved: counter -> the id its rules had before
        self.layouts = 0  # how often the rules' meaning was worked out (tests, bench)
        self.parsed = 0  # rules whose messages were read for it (the others were as at the reading before)

    def close(self) -> None:
        self._sock.close()

    def read(self) -> list[RuleCounter]:
        """Every counter of the tables (absent tables: none), as `read_counters` gives them."""
        for _attempt in range(_READ_ATTEMPTS):
            before = generation(self._sock)
            known = before == self._generation
            self._learnt = {}
            try:
                tables = [self._table(family, name, known) for family, name in self._tables]
            except DumpInterrupted:
                continue
            if generation(self._sock) == before:  # one ruleset throughout: meanings and numbers agree
                if not known:
                    self._generation = before
                    self.layouts += 1
                    self._renamed = renamed(self._layout, self._learnt) if self._layout else {}
                    self._layout = self._learnt
                counters = [counter for readings in tables for counter in summed(readings)]  # summed per table, as read_counters
                renames = self._renamed
                return [replace(c, was=renames[c.key]) if c.key in renames else c for c in counters] if renames else counters
            self._generation = None
        raise DumpInterrupted()

    def _table(self, family: str, name: str, known: bool) -> list[KernelRuleCount]:
        number = FAMILIES[family]
        messages = [(buf, start, end) for buf, start, end in self._dump(number, name)]
        if not known:
            self._learn(family, messages)
        out = []
        for buf, start, end in messages:
            handle = _handle(buf, start, end)
            rule = self._rules.get((family, handle))
            if rule is None:
                continue
            packets, octets = _counter(buf, start, end)
            out.append(KernelRuleCount(rule.key, rule.verdict, f"{family}:{handle}", packets, octets))
        return out

    def _dump(self, family: int, table: str) -> Iterable[tuple[bytes, int, int]]:
        try:
            yield from self._sock.request(_GETRULE, family, string_attr(1, table), dump=True)
        except OSError as exc:
            if exc.errno != 2:  # ENOENT: the table is absent, it has no counters
                raise

    def _learn(self, family: str, messages: list[tuple[bytes, int, int]]) -> None:
        """Each rule's key and verdict, as `counters.counters_of` derives them."""
        for gone in [k for k in self._rules if k[0] == family]:
            del self._rules[gone]
        parsed: list[_Parsed] = []
        last_of_chain: dict[str, list[Verdict]] = {}
        before, seen = self._seen.get(family, {}), dict[bytes, _Parsed]()
        for buf, start, end in messages:
            # An apply rewrites a few chains: the rules of the others are the same
            # messages as at the last reading (handle included) but for their numbers.
            key = _message_digest(buf, start, end)
            rule = before.get(key)
            if rule is None:
                rule = _parse(buf, start, end)
                self.parsed += 1
            seen[key] = rule
            parsed.append(rule)
            last_of_chain[rule[0]] = rule[3]
        self._seen[family] = seen
        # a `log` rule's own chain (log-TOKEN) ends with the rule's verdict
        chain_verdicts = {chain: verdict_of(verdicts, {}) for chain, verdicts in last_of_chain.items() if chain.startswith("log-")}
        for chain, comment, handle, verdicts, counted, said in parsed:
            if counted:
                counts_for = rule_key(family, chain, comment, handle)
                self._rules[(family, handle)] = _Rule(counts_for, verdict_of(verdicts, chain_verdicts))
                self._learnt.setdefault((family, chain), []).append((said, counts_for))


# chain, comment, handle, verdicts, whether it has a counter, what it says (`_expressions`)
_Parsed = tuple[str, str | None, int, list[Verdict], bool, bytes]


def _parse(buf: bytes, start: int, end: int) -> _Parsed:
    a = attrs(buf, start, end)
    chain = buf[a[_RULE_CHAIN][0]:a[_RULE_CHAIN][1]].split(b"\0", 1)[0].decode()
    verdicts, counted, said = _expressions(buf, a.get(_RULE_EXPRESSIONS))
    comment = rule_comment(buf[a[_RULE_USERDATA][0]:a[_RULE_USERDATA][1]]) if _RULE_USERDATA in a else None
    return chain, comment, int(_BE64.unpack_from(buf, a[_RULE_HANDLE][0])[0]), verdicts, counted, said


def _message_digest(buf: bytes, start: int, end: int) -> bytes:
    """A digest of the rule's message with its first counter's data left out.

    A digest, not the message: the reader keeps one per kernel rule between readings
    (~2.5 MB of messages at 10,000 VMs, ~0.25 MB of digests)."""
    at = buf.find(_COUNTER_NAME, start, end)
    if at < 0:
        return blake2b(buf[start:end], digest_size=16).digest()
    data_at = at + len(_COUNTER_NAME)
    length, _kind = ATTR.unpack_from(buf, data_at)
    digest = blake2b(buf[start:data_at], digest_size=16)
    digest.update(buf[data_at + ((length + 3) & ~3):end])
    return digest.digest()


def _expressions(buf: bytes, span: Span | None) -> tuple[list[Verdict], bool, bytes]:
    """The rule's verdicts in order, whether it has a counter of its own, and a digest
    of what it says: its expressions but for its counter's numbers and the names the
    kernel gives inline sets and maps (numbered anew with each rule made), so that a
    rule made again as it was digests as before (renames.py)."""
    verdicts: list[Verdict] = []
    counted = False
    said = blake2b(digest_size=16)
    if span is None:
        return verdicts, counted, said.digest()
    for start, end in attr_list(buf, *span):
        e = attrs(buf, start, end)
        name = buf[e[_EXPR_NAME][0]:e[_EXPR_NAME][1]].rstrip(b"\0")
        said.update(name + b"\0")
        if name == b"counter":
            counted = True
            continue
        if _EXPR_DATA not in e:
            continue
        low, high = e[_EXPR_DATA]
        if name in _NAMING_SETS:
            _said_naming_sets(said, buf, low, high)
        else:
            said.update(buf[low:high])
        if name == b"immediate":
            data = attrs(buf, low, high)
            if _IMMEDIATE_DREG in data and _BE32.unpack_from(buf, data[_IMMEDIATE_DREG][0])[0] == 0 and _IMMEDIATE_DATA in data:  # NFT_REG_VERDICT
                verdict = attrs(buf, *data[_IMMEDIATE_DATA]).get(_DATA_VERDICT)
                if verdict is not None:
                    v = attrs(buf, *verdict)
                    kind = _VERDICTS.get(_SIGNED32.unpack_from(buf, v[_VERDICT_CODE][0])[0])
                    if kind is not None:
                        target = buf[v[_VERDICT_CHAIN][0]:v[_VERDICT_CHAIN][1]].split(b"\0", 1)[0].decode() if _VERDICT_CHAIN in v else None
                        verdicts.append(Verdict(kind, target))
    return verdicts, counted, said.digest()


def _said_naming_sets(said: blake2b, buf: bytes, at: int, end: int) -> None:
    """An expression that names a set or map, each attribute with its header, an
    inline one's name as "inline" (the kernel's `__set3`, `__map0`)."""
    while at + 4 <= end:
        length, _kind = ATTR.unpack_from(buf, at)
        if length < 4:
            break
        if buf.startswith(_INLINE_NAMES, at + 4, at + length):
            said.update(buf[at + 2:at + 4] + b"inline")  # its type, and "an inline set"
        else:
            said.update(buf[at:at + length])
        at += (length + 3) & ~3


def _handle(buf: bytes, start: int, end: int) -> int:
    while start + 4 <= end:
        length, kind = ATTR.unpack_from(buf, start)
        if length < 4:
            break
        if kind & NLA_TYPE_MASK == _RULE_HANDLE:
            return int(_BE64.unpack_from(buf, start + 4)[0])
        start += (length + 3) & ~3
    return -1


def _counter(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(packets, bytes) of the rule's first counter expression."""
    at = buf.find(_COUNTER_NAME, start, end)
    if at < 0:
        return 0, 0
    data_at = at + len(_COUNTER_NAME)
    length, _kind = ATTR.unpack_from(buf, data_at)
    numbers = attrs(buf, data_at + 4, data_at + length)
    packets = _BE64.unpack_from(buf, numbers[_COUNTER_PACKETS][0])[0] if _COUNTER_PACKETS in numbers else 0
    octets = _BE64.unpack_from(buf, numbers[_COUNTER_BYTES][0])[0] if _COUNTER_BYTES in numbers else 0
    return int(packets), int(octets)
