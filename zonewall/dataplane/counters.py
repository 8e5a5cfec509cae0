"""Per-rule packet/byte counters read from the kernel (zonewall's tables only).

Every deciding rule of a compiled ruleset carries an anonymous `counter` and a
comment starting with its rule id (`compiler.naming.rule_comment`). The chain names
tell the scope (`compiler.naming.chain_scope` parses what `level_chain`, `vm_chain` and
`network_chain` build): `vm-VM-DIR` (a VM's own
rules and its default), `zone-Z-DIR`, `global-DIR`, `net-N` (isolated network),
`host*`/`input`/`output` (the node itself); the bridge table holds the guards. A
rule compiled into several kernel rules (one per family, per schedule window) is
summed into one counter, keyed like the NFLOG prefix: (scope, direction, rule id),
so logs and counters of one rule meet.

Kernel counters start at 0 whenever a rule is (re)created, e.g. when an apply
refills a changed chain. Each counter therefore also lists its kernel rules
(`instances`: family:handle, packets, bytes): whoever accumulates readings (the
controller) counts a rule it has not seen before from 0 and a known one from its
last reading, so totals never go backwards across policy changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..compiler.encode import decode_statement
from ..compiler.naming import chain_scope, level_of
from ..compiler.stmt import Counter, Statement, Verdict
from .backend import Backend

TABLES = (("inet", "zonewall"), ("bridge", "zonewall"))
REJECT_CHAIN = "rejected"


@dataclass(frozen=True)
class RuleCounter:
    level: str  # global | vm | zone | default | guard | host | network | base
    scope: str  # the VM, zone:NAME, global, host, net:NAME, sg:NAME, guard:NAME, or the chain for base rules
    direction: str  # in | out | net | "" (base rules)
    rule: str  # the rule id
    verdict: str  # accept | drop | reject | "" (jumps, marks)
    packets: int
    bytes: int
    instances: tuple[tuple[str, int, int], ...] = ()  # (family:handle, packets, bytes) per kernel rule
    was: str | None = None  # the rule id its kernel rules had before the last apply only renamed them (renames.py)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.level, self.scope, self.direction, self.rule)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["instances"] = [list(i) for i in self.instances]
        if self.was is None:
            del out["was"]  # (most counters: no bytes for it in every report)
        return out


def verdict_of(statements: Iterable[Statement | None], chain_verdicts: Mapping[str, str]) -> str:
    """What a rule decides, from its statements in order (only verdicts are looked at):
    accept | drop | reject | "" (jumps, marks). `chain_verdicts`: what a jump to one of
    the table's `log-` chains decides."""
    for statement in statements:
        if not isinstance(statement, Verdict):
            continue
        if statement.kind in ("drop", "accept"):
            return statement.kind
        if statement.kind == "return":
            return "accept"  # in a VM or level chain a return after a match is its accept
        if statement.target == REJECT_CHAIN:
            return "reject"
        if statement.target is not None and statement.target in chain_verdicts:
            return chain_verdicts[statement.target]
    return ""


def _decoded(rule: dict[str, Any]) -> list[Statement | None]:
    return [decode_statement(s) for s in rule.get("expr", [])]


Key = tuple[str, str, str, str]  # level, scope, direction, rule id


def rule_key(family: str, chain: str, comment: str | None, handle: Any) -> Key:
    """The counter a kernel rule adds to: its rule id is its comment's first part."""
    rule_id = comment.split(": ", 1)[0] if comment else f"handle-{handle}"
    where = chain_scope(family, chain)
    if where is None:
        scope, direction = (f"guard:{rule_id.removeprefix('filter ')}", "") if family == "bridge" else (chain, "")
        level = "guard" if family == "bridge" else "base"
    else:
        scope, direction = where
        level = level_of(scope, rule_id) or "base"
    return (level, scope, direction, rule_id)


@dataclass
class KernelRuleCount:
    """One kernel rule's counter reading, with what it counts for."""

    key: Key
    verdict: str
    instance: str  # family:handle
    packets: int
    bytes: int


def summed(readings: Iterable[KernelRuleCount]) -> list[RuleCounter]:
    """Kernel rules' readings summed per rule (the order of instances is the readings')."""
    sums: dict[Key, list[Any]] = {}
    for r in readings:
        entry = sums.setdefault(r.key, [0, 0, r.verdict, []])
        entry[0] += r.packets
        entry[1] += r.bytes
        entry[3].append((r.instance, r.packets, r.bytes))
    return [RuleCounter(level, scope, direction, rule_id, verdict, packets, octets, tuple(instances))
            for (level, scope, direction, rule_id), (packets, octets, verdict, instances) in sorted(sums.items())]


def counters_of(objects: Iterable[dict[str, Any]], family: str) -> list[RuleCounter]:
    """Counters of one table's listing (libnftables JSON objects), summed per rule."""
    rules = [o["rule"] for o in objects if "rule" in o]
    by_chain: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        by_chain.setdefault(rule["chain"], []).append(rule)
    # a `log` rule's own chain (log-TOKEN) ends with the rule's verdict
    chain_verdicts = {name: verdict_of(_decoded(chain[-1]), {}) for name, chain in by_chain.items() if name.startswith("log-") and chain}
    readings = []
    for rule in rules:
        statements = _decoded(rule)
        counter = next((s for s in statements if isinstance(s, Counter) and s.packets is not None), None)
        if counter is None:
            continue
        key = rule_key(family, rule["chain"], str(rule.get("comment") or "") or None, rule.get("handle"))
        readings.append(KernelRuleCount(key, verdict_of(statements, chain_verdicts), f"{family}:{rule.get('handle')}", counter.packets or 0, counter.bytes or 0))
    return summed(readings)


def read_counters(backend: Backend, tables: Iterable[tuple[str, str]] = TABLES) -> list[RuleCounter]:
    """Every counter of zonewall's tables (absent tables: none)."""
    out: list[RuleCounter] = []
    for family, name in tables:
        objects = backend.list_table(family, name)
        if objects:
            out += counters_of(objects, family)
    return out
