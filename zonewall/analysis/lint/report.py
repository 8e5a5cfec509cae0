"""Lint findings and their JSON (docs/analysis.md, ## lint)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

from ...policy.resolve import RuleRef

SCHEMA_VERSION = 1

KINDS: tuple[str, ...] = (
    "dead",
    "shadowed",
    "partly-shadowed",
    "redundant",
    "conflict",
    "management-exposure",
    "empty-ref",
    "unused",
)

SEVERITIES = ("warning", "info")
_KIND_ORDER = {kind: index for index, kind in enumerate(KINDS)}

CHAIN_LIST_LIMIT = 5  # chains named in a message; JSON has them all


@dataclass(frozen=True)
class Related:
    """Another rule (or a built-in step / a chain default) a finding points at."""

    rule: str  # rule id, or e.g. default-in, icmpv6-essentials, anti-lockout
    where: str  # file:line, or "built-in"
    level: str  # global | vm | zone | host | network | default | built-in
    owner: str = ""
    action: str = ""

    def to_json(self) -> dict[str, object]:
        return {"rule": self.rule, "where": self.where, "level": self.level, "owner": self.owner, "action": self.action}

    def text(self) -> str:
        return f"{self.rule} ({self.where})" if self.where != "built-in" else f"{self.rule} (built-in)"

@dataclass(slots=True)
class Finding:
    kind: str
    severity: str  # warning | info
    message: str
    rule: str | None = None  # the rule's id; None for findings on a definition
    where: str | None = None  # file:line of the rule or definition
    level: str | None = None
    owner: str | None = None
    object: str | None = None  # for definitions: group:NAME, service:NAME, zone:NAME, ...
    related: list[Related] = field(default_factory=list)
    chains: list[str] = field(default_factory=list)  # where it holds: "vm:web1 in", ...
    details: dict[str, Any] = field(default_factory=dict)

    def __reduce__(self) -> tuple[type[Finding], tuple[object, ...]]:
        # the fields as arguments: a sharded run (workers.py) sends a shard's findings
        # back pickled, and a slots dataclass's own way (__setstate__) is 1.5x slower
        return (Finding, _finding_fields(self))

    def to_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "rule": self.rule,
            "where": self.where,
            "level": self.level,
            "owner": self.owner,
            "object": self.object,
            "message": self.message,
            "related": [r.to_json() for r in self.related],
            "chains": list(self.chains),
            "details": dict(self.details),
        }

    def sort_key(self) -> tuple[object, ...]:
        file, line = _split_where(self.where)
        return (file, line, _KIND_ORDER[self.kind], self.rule or "", self.object or "", _RelatedIds(self.related))


class _RelatedIds:
    """A finding's related rule ids, the last part of its sort key: listed only when
    the rest ties (a shadowed rule may name hundreds; sorting 150,000 findings read
    them all for nothing)."""

    __slots__ = ("_ids", "related")

    def __init__(self, related: list[Related]):
        self.related = related
        self._ids: list[str] | None = None

    def ids(self) -> list[str]:
        # made once: a tie is compared again and again while sorting (32,000 of a
        # lint shard's 79,000 findings tie with another before their related rules)
        if self._ids is None:
            self._ids = [r.rule for r in self.related]
        return self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _RelatedIds) and self.ids() == other.ids()

    def __lt__(self, other: _RelatedIds) -> bool:
        return self.ids() < other.ids()

    __hash__ = None  # type: ignore[assignment]

_finding_fields = attrgetter(*(f.name for f in fields(Finding)))


def merge_sorted(first: list[Finding], second: list[Finding]) -> list[Finding]:
    """Two lists sorted by `Finding.sort_key`, merged (ties: `first`'s before). By
    galloping: each list's next run is found by probing 1, 2, 4, ... ahead and
    bisecting, so keys are made for a few findings per run, not for each (two
    shards' findings at 10,000 VMs: ~800 runs of ~200)."""
    key = Finding.sort_key
    out: list[Finding] = []
    i = j = 0
    while i < len(first) and j < len(second):
        end = _gallop(first, key(second[j]), i, strict=False)  # first's findings not after second's next
        out += first[i:end]
        i = end
        if i == len(first):
            break
        end = _gallop(second, key(first[i]), j, strict=True)  # second's findings before first's next
        out += second[j:end]
        j = end
    out += first[i:]
    out += second[j:]
    return out


def _gallop(run: list[Finding], bound: tuple[object, ...], start: int, *, strict: bool) -> int:
    """The end of the findings of `run` from `start` on that sort before `bound`
    (`strict`) or not after it."""
    key = Finding.sort_key
    before = (lambda k: k < bound) if strict else (lambda k: not bound < k)
    low, step = start, 1
    while low < len(run) and before(key(run[low])):
        low, step = low + step, step * 2  # run[:low] all before the bound
    high = min(low, len(run))
    low = low - step // 2 + 1 if low > start else start  # just past the last probe before the bound
    return (bisect_left if strict else bisect_right)(run, bound, low, high, key=key)


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(KINDS, 0)
        for finding in self.findings:
            out[finding.kind] += 1
        return out

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    def to_json(self) -> dict[str, object]:
        return {
            "version": SCHEMA_VERSION,
            "findings": [f.to_json() for f in self.findings],
            "counts": self.counts(),
        }

def _split_where(where: str | None) -> tuple[str, int]:
    if not where or where == "built-in":
        return ("~", 0)
    file, _, line = where.rpartition(":")
    return (file, int(line)) if line.isdigit() else (where, 0)


def _related_rule(ref: RuleRef) -> Related:
    return Related(ref.id, ref.where, ref.level, ref.owner, ref.rule.action)

def _rule_fields(ref: RuleRef) -> dict[str, Any]:
    return {"rule": ref.id, "where": ref.where, "level": ref.level, "owner": ref.owner}

def _related_sort(r: Related) -> tuple[object, ...]:
    file, line = _split_where(r.where)
    return (r.level == "default", file, line, r.rule)

def _names(chains: list[str]) -> str:
    names = sorted(chains)
    shown = ", ".join(names[:CHAIN_LIST_LIMIT])
    return shown + (f" and {len(names) - CHAIN_LIST_LIMIT} more" if len(names) > CHAIN_LIST_LIMIT else "")

def _scope_text(ref: RuleRef, chains: list[str]) -> str:
    """For rules shared by many chains: in which of them the finding holds."""
    if ref.level in ("global", "zone") or (ref.level == "host" and ref.owner == ""):
        unique = sorted(set(chains))
        if len(unique) > 1:
            return f" (in {len(unique)} chains: {_names(unique)})"
        if unique:
            return f" (in {unique[0]})"
    return ""

def _cover_text(covering: list[Related]) -> str:
    if not covering:
        return "earlier rules"
    shown = ", ".join(r.text() for r in covering[:3])
    more = len(covering) - 3
    return shown + (f" and {more} more" if more > 0 else "")

def _rules_never_apply(n: int) -> str:
    return "its rule never applies" if n == 1 else f"its {n} rules never apply"
