"""`zonewall lint`: rules that never match, rules that change nothing, and other smells.

Every chain the compiler writes is analysed exactly, over packet space (space.py):

* a VM's `in` chain (global -> the VM's own -> its zone's rules -> default) only sees
  packets *to* one of the VM's addresses and its `out` chain packets *from* one, so
  each rule is first restricted to that (its *effective* region there);
* a network's chain only sees packets between two of its guests;
* a node's input/output chains (anti-lockout, host_rules, the node's own rules).

The ICMPv6 essentials accepted before any rule (inet forward/input) come first in
the VM, network and node-input chains, as in the engine.

Per rule and chain, `left` is what the rule decides: its effective region minus what
the earlier rules decided (a rate-limited accept decides nothing for good: over the
rate packets fall through, so it never hides a later rule). From these:

dead            the effective region is empty in every chain the rule is in
shadowed        nothing is left (earlier rules decide all of it) in every chain
partly-shadowed a rule shared by several chains (global/zone/host_rules) shadowed
                in some of them only
redundant       removing it changes no verdict (nor what is logged): the later rules
                and the default decide what it decides the same way. Judged
                jointly: shadowed rules and later redundant rules count as removed,
                so every rule reported can be removed at once
conflict        an earlier rule with another action decides part (not all) of it
management-exposure  an accept from everywhere (a whole family) to a management port
empty-ref       a reference (zone:, group:, vm:, network:) that resolves to nothing
unused          groups, services, filters, schedules nothing uses; zones without VMs;
                rules of a network without guests

docs/analysis.md (## lint) documents the kinds and the JSON schema.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..policy.addresses import AddressSet, RefItem, parse_ref
from ..policy.builtins import BUILTIN_SERVICES
from ..policy.resolve import Policy, RuleRef
from ..policy.source import LDict, LList
from . import space as s
from .chains import Chain, Step
from .describe import services_of
from .engine import Analyzer
from .space import Box, Intervals, Region

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

# (protocol, port, name): what an accept from everywhere should not open
MANAGEMENT_PORTS: tuple[tuple[int, int, str], ...] = (
    (6, 22, "ssh"),
    (6, 23, "telnet"),
    (6, 3389, "rdp"),
    (6, 5900, "vnc"),
    (6, 5985, "winrm"),
    (6, 5986, "winrm-https"),
    (6, 9440, "zonewall controller"),
    (6, 9441, "zonewall agent"),
    (17, 161, "snmp"),
)
PROTO_NAME = {6: "tcp", 17: "udp"}
FAMILY_RANGE: dict[int, Intervals] = {f: ((0, s.ADDRESS_MAX[f]),) for f in (4, 6)}
CHAIN_LIST_LIMIT = 5  # chains named in a message; JSON has them all


# -- the report -----------------------------------------------------------------------


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
        return (file, line, KINDS.index(self.kind), self.rule or "", self.object or "", [r.rule for r in self.related])


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {kind: 0 for kind in KINDS}
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


# -- rich output ------------------------------------------------------------------------


def lint_table(report: LintReport, *, title: str | None = None, related_limit: int = 3, limit: int | None = None) -> Any:
    """The findings as a rich Table: kind, where (file:line), rule id (or the object),
    message (+ the related rules). `limit`: show the first findings only (the caption
    says how many are left out)."""
    from rich.table import Table
    from rich.text import Text

    counts = {k: n for k, n in report.counts().items() if n}
    caption = ", ".join(f"{n} {k}" for k, n in counts.items()) if counts else "no findings"
    shown_findings = report.findings if limit is None else report.findings[:limit]
    if len(shown_findings) < len(report.findings):
        caption += f" ({len(report.findings) - len(shown_findings)} not shown)"
    table = Table(title=title or "zonewall lint", caption=caption, show_lines=False, expand=False)
    table.add_column("kind", no_wrap=True)
    table.add_column("where", no_wrap=True, style="cyan")
    table.add_column("rule", no_wrap=True)
    table.add_column("message", overflow="fold")
    for finding in shown_findings:
        style = "yellow" if finding.severity == "warning" else "dim"
        message = Text(finding.message)
        if finding.related and finding.kind not in _RELATED_IN_MESSAGE:
            shown = ", ".join(r.text() for r in finding.related[:related_limit])
            more = len(finding.related) - related_limit
            if more > 0:
                shown += f" and {more} more"
            message.append(f"\n  {_related_label(finding.kind)}: {shown}", style="dim")
        table.add_row(Text(finding.kind, style=style), finding.where or "", finding.rule or finding.object or "", message)
    return table


_RELATED_IN_MESSAGE = ("shadowed", "conflict")  # their message names the rules already


def _related_label(kind: str) -> str:
    return {
        "shadowed": "covered by",
        "partly-shadowed": "covered by",
        "redundant": "decided instead by",
        "conflict": "earlier rule",
    }.get(kind, "related")


# -- per-chain analysis -----------------------------------------------------------------


class _Step:
    """One step of a chain as the lint sees it (restricted to what reaches the chain).
    Shared by the chains where it is the same (what it decides there is in
    _ChainState.lefts)."""

    __slots__ = ("key", "ref", "label", "eff", "eid", "action", "limited", "logged", "mask", "region", "stats", "exposes", "meets")

    def __init__(self, key: str, ref: RuleRef | None, label: str, region: Region, eff: Region, action: str, limited: bool, logged: bool, sig: int):
        self.key = key  # rule id (unique), or "@label" for built-ins
        self.ref = ref
        self.label = label
        self.region = region
        self.eff = eff
        self.action = action
        self.limited = limited
        self.logged = logged
        self.mask = sig
        self.stats: _RuleStats | None = None  # the rule's, set on first use
        self.exposes = False  # an in accept from a whole family to a management port
        self.eid = id(eff)  # memo keys: every eff is kept alive by the linter
        self.meets: dict[int, bool] = {}  # id(a later step's eff) -> do they overlap


@dataclass
class _Restriction:
    """What reaches a chain. VM chains: one address dimension (DST in, SRC out) holds
    the VM's addresses; per family `spec` is the single address (an int: the
    dimension is then replaced by a constant, so that chains of different VMs share
    their regions) or the intervals (several addresses). Network chains: `dims`."""

    dim: int = s.DST
    spec: dict[int, int | Intervals] = field(default_factory=dict)
    by_family: dict[int, Intervals] = field(default_factory=dict)
    dims: tuple[tuple[int, dict[int, Intervals]], ...] | None = None
    token: tuple[object, ...] = ()  # which families have one address, several, none

    @staticmethod
    def of_vm(dim: int, addresses: AddressSet) -> "_Restriction":
        spec: dict[int, int | Intervals] = {}
        for family, values in ((4, addresses.v4), (6, addresses.v6)):
            if len(values) == 1 and values[0][0] == values[0][1]:
                spec[family] = values[0][0]
            elif values:
                spec[family] = values
        token = tuple((family, "one" if type(value) is int else value) for family, value in sorted(spec.items()))
        return _Restriction(dim, spec, {4: addresses.v4, 6: addresses.v6}, token=token)


_PAST = {"accept": "accepts", "drop": "drops", "reject": "rejects"}
_PRESENT = {"accept": "would accept", "drop": "would drop", "reject": "would reject"}
_MARK: Intervals = ((0, 0),)
_FAMILY: dict[int, Intervals] = {4: ((4, 4),), 6: ((6, 6),)}


def _first_match_cut(eff: Region, earlier: list[Region], memo: dict[tuple[int, int], tuple[Region, Region, Region, bool]]) -> tuple[Region, tuple[int, ...]]:
    """eff minus the earlier regions in order, and which of them took part of it.

    Cutting by the earlier regions leaves the same as cutting by what they decide
    (their union is the same), with fewer boxes; what an earlier region removes from
    the rest is exactly the part of eff it decides. Once nothing is left, no later
    region decides any of it. Each cut is memoised by the identity of its operands:
    chains sharing rules share the leading cuts."""
    pieces = eff
    met: list[int] = []
    for index, region in enumerate(earlier):
        key = (id(pieces), id(region))
        found = memo.get(key)
        if found is None or found[0] is not pieces or found[1] is not region:
            rest, hit = s.cut(pieces, region)
            found = memo[key] = (pieces, region, rest, hit)
        if found[3]:
            pieces = found[2]
            met.append(index)
            if not pieces:
                break
    return pieces, tuple(met)


def _same_without(pieces: Region, action: str, later: list[tuple[Region, str, bool, bool]], default_action: str, default_logged: bool) -> tuple[bool, tuple[int, ...], bool]:
    """Do the later steps (region, action, logged, limited) and the default decide
    `pieces` as `action`, unlogged? And which of them take part (and the default?)."""
    used: list[int] = []
    for index, (region, other, logged, limited) in enumerate(later):
        if not s.overlaps(pieces, region):
            continue
        if other != action or logged:
            return False, (), False
        used.append(index)
        if not limited:  # over the rate a limited accept lets packets fall through
            pieces = s.subtract(pieces, region)
            if not pieces:
                return True, tuple(used), False
    if default_action != action or default_logged:
        return False, (), False
    return True, tuple(used), True


@dataclass
class _ChainState:
    name: str
    kind: str  # vm | network | host
    owner: str  # the VM, network or node
    steps: list[_Step]
    default_action: str
    default_logged: bool
    default_related: Related
    lefts: list[Region] = field(default_factory=list)  # what each step decides here
    _later: dict[str, list[int]] = field(default_factory=dict)

    def later_masks(self, action: str) -> list[int]:
        """[i]: the signatures of the steps from i on with `action`, OR-ed."""
        found = self._later.get(action)
        if found is None:
            found = [0] * (len(self.steps) + 1)
            for i in range(len(self.steps) - 1, -1, -1):
                st = self.steps[i]
                found[i] = found[i + 1] | (st.mask if st.action == action and not st.logged else 0)
            self._later[action] = found
        return found


@dataclass
class _RuleStats:
    ref: RuleRef
    chains: int = 0
    dead: list[str] = field(default_factory=list)
    shadowed: list[str] = field(default_factory=list)
    live: int = 0
    covering: dict[str, Related] = field(default_factory=dict)
    exposure: dict[str, set[str]] = field(default_factory=dict)  # port label -> chains
    placements: list[tuple[_ChainState, int]] = field(default_factory=list)


@dataclass
class _Conflict:
    later: _Step  # as met in the first chain
    earlier: _Step
    chains: list[str]


# The signature of a region: one bit per (family, protocol, port bucket) it touches.
# Two regions whose signatures share no bit cannot overlap; most rule pairs of a chain
# differ in protocol or port and are told apart by one AND.
_BUCKET_SHIFT = 8  # ports 0-65535 in 256 buckets of 256
_BUCKETS = 65536 >> _BUCKET_SHIFT
_PORT_CLASSES = {6: 0, 17: 1, 132: 2}  # the protocols whose DPORT is a port
_OTHER_BASE = len(_PORT_CLASSES) * _BUCKETS  # then one bit per other protocol
_FAMILY_BITS = _OTHER_BASE + 256
_PORT_PROTO_BITS = sum(1 << (_OTHER_BASE + proto) for proto in _PORT_CLASSES)


def _bits(low: int, high: int) -> int:
    return (1 << (high + 1)) - (1 << low)


def _sig(region: Region) -> int:
    mask = 0
    for b in region:
        part = 0
        dport = b[s.DPORT]
        buckets = 0
        for low, high in dport:
            buckets |= _bits(low >> _BUCKET_SHIFT, min(high, 65535) >> _BUCKET_SHIFT)
        for low, high in b[s.PROTO]:
            for proto, index in _PORT_CLASSES.items():
                if low <= proto <= high:
                    part |= buckets << (index * _BUCKETS)
            part |= _bits(_OTHER_BASE + low, _OTHER_BASE + high) & ~_PORT_PROTO_BITS
        for low, high in b[s.FAM]:
            if low <= 4 <= high:
                mask |= part
            if low <= 6 <= high:
                mask |= part << _FAMILY_BITS
    return mask


def _restrict(region: Region, dim: int, by_family: dict[int, Intervals]) -> Region:
    """The region's packets whose `dim` is in the family's intervals."""
    out: list[Box] = []
    for b in region:
        fam = b[s.FAM]
        if len(fam) == 1 and fam[0][0] == fam[0][1]:
            values = by_family.get(fam[0][0], ())
            if not values:
                continue
            current = b[dim]
            z = s.iv_intersect(current, values)
            if z:
                out.append(b if z is current else b[:dim] + (z,) + b[dim + 1 :])
        else:  # a box over both families: split it
            for f in (4, 6):
                values = by_family.get(f, ())
                part = s.box_restrict(b, s.FAM, ((f, f),))
                if part is not None and values:
                    part = s.box_restrict(part, dim, values)
                    if part is not None:
                        out.append(part)
    return tuple(out)


class _Linter:
    def __init__(self, analyzer: Analyzer):
        self.analyzer = analyzer
        self.policy: Policy = analyzer.policy
        self.doc = self.policy.doc
        self.findings: list[Finding] = []
        self.stats: dict[str, _RuleStats] = {}
        self.conflicts: dict[tuple[str, str], _Conflict] = {}
        self._sigs: dict[int, tuple[Region, int]] = {}
        self._exposure_memo: dict[int, tuple[Region, list[tuple[int, int, str, int]]]] = {}
        self.log_denied = self.doc.settings.log.denied
        self.empty_sided: set[str] = set()  # rules with a from/to that resolves to nothing
        self.unused_owner: set[tuple[str, str]] = set()  # (level, owner) reported as unused
        self._parsed: dict[str, RefItem] = {}
        self._effective: dict[tuple[object, ...], tuple[Region, Region]] = {}
        self._cut_memo: dict[tuple[int, ...], tuple[Region, tuple[int, ...]]] = {}
        self._pair_memo: dict[tuple[int, int], tuple[Region, Region, Region, bool]] = {}
        self._judge_memo: dict[tuple[object, ...], tuple[bool, tuple[int, ...], bool]] = {}
        self._shared_memo: dict[tuple[int, int], tuple[str, bool]] = {}
        self._alive: list[Region] = []
        self._independent: dict[tuple[int, int], tuple[Region, bool]] = {}
        self._part_memo: dict[tuple[object, ...], tuple[list[_Step], bool]] = {}
        self._default_memo: dict[tuple[object, ...], Related] = {}
        self._related_memo: dict[str, Related] = {}
        self._parts: dict[tuple[str, str, str], list[Step]] = {}
        self._defaults: dict[str, Step] = {}
        self._step_memo: dict[tuple[str, int], _Step] = {}
        self._essentials_step = Step(analyzer.essentials, "accept", "icmpv6-essentials")  # regions whose id() keys a memo
        self._empty_item: dict[str, str] = {}  # reference text -> its name when empty, else ""

    # -- helpers ----------------------------------------------------------------------

    def sig(self, region: Region) -> int:
        found = self._sigs.get(id(region))
        if found is None or found[0] is not region:
            found = self._sigs[id(region)] = (region, _sig(region))
        return found[1]

    def where(self, path: tuple[object, ...]) -> str | None:
        """file:line of the value at `path` when the document has it."""
        node: Any = self.policy.source
        loc = None
        for part in path:
            if isinstance(node, LDict) and part in node:
                loc = node.value_locs.get(part)
                node = node[part]
            elif isinstance(node, LList) and isinstance(part, int) and 0 <= part < len(node):
                loc = node.value_locs[part]
                node = node[part]
            else:
                return None
        return f"{loc.file}:{loc.line}" if loc is not None else None

    def key_where(self, path: tuple[object, ...]) -> str | None:
        """file:line of the key at the end of `path` (a definition's name)."""
        node: Any = self.policy.source
        for part in path[:-1]:
            if isinstance(node, LDict) and part in node:
                node = node[part]
            else:
                return None
        if isinstance(node, LDict) and path[-1] in node:
            loc = node.key_locs.get(path[-1])
            return f"{loc.file}:{loc.line}" if loc is not None else None
        return None

    def related_of(self, step: _Step) -> Related:
        found = self._related_memo.get(step.key)
        if found is None:
            if step.ref is not None:
                ref = step.ref
                found = Related(ref.id, ref.where, ref.level, ref.owner, step.action)
            elif step.label == "anti-lockout":
                found = Related("anti-lockout", self.where(("settings", "management")) or "built-in", "built-in", "", "accept")
            else:
                found = Related(step.label, "built-in", "built-in", "", step.action)
            self._related_memo[step.key] = found
        return found

    def default_related(self, default: Step, kind: str, owner: str, direction: str) -> Related:
        """The chain's default as a related entry, pointing at where it is set."""
        key = "in" if direction == "in" else "out"
        attr = "in_" if direction == "in" else "out"
        path: tuple[object, ...] | None = None
        defined_by = ""
        if kind == "vm":
            vm = self.doc.vms[owner]
            zone = self.doc.zones.get(vm.zone) if vm.zone is not None else None
            if vm.default is not None and getattr(vm.default, attr) is not None:
                path, defined_by = ("vms", owner, "default", key), owner
            elif zone is not None and zone.default is not None and getattr(zone.default, attr) is not None:
                path, defined_by = ("zones", vm.zone, "default", key), str(vm.zone)
            else:
                path = ("settings", "default", key)
        elif kind == "host":
            path = ("settings", "host_default", key)
        memo_key = (default.label, default.action, path, defined_by)
        found = self._default_memo.get(memo_key)
        if found is None:
            where = self.where(path) if path is not None else None
            found = self._default_memo[memo_key] = Related(default.label, where or "built-in", "default", defined_by, default.action)
        return found

    # -- chains -----------------------------------------------------------------------

    def build_state(self, chain: Chain, kind: str, owner: str, direction: str, essentials: bool, restrict: _Restriction | None) -> _ChainState:
        steps = [self._essentials_step] if essentials else []
        return self.make_state(chain.name, kind, owner, direction, [(None, steps + list(chain.steps))], chain.default, restrict)

    def make_state(self, name: str, kind: str, owner: str, direction: str, parts: list[tuple[object, list[Step]]], default: Step, restrict: _Restriction | None) -> _ChainState:
        """The chain's steps as the lint sees them. `parts` are (cache key or None, steps):
        a shared part (the global rules, a zone's) whose regions hold every address is
        the same for every VM with the same kind of addresses, so it is made once."""
        steps: list[_Step] = []
        for cache_key, part in parts:
            if cache_key is not None and restrict is not None and restrict.dims is None:
                key = (cache_key, restrict.dim, restrict.token)
                found = self._part_memo.get(key)
                if found is None:
                    made = [self.step(st, restrict) for st in part]
                    independent = all(self.independent(st.region, restrict.dim) for st in part)
                    found = self._part_memo[key] = (made, independent)
                    steps += made
                elif found[1]:
                    steps += found[0]
                else:
                    steps += [self.step(st, restrict) for st in part]
            else:
                steps += [self.step(st, restrict) for st in part]
        default_logged = default.action != "accept" and self.log_denied
        return _ChainState(name, kind, owner, steps, default.action, default_logged, self.default_related(default, kind, owner, direction))

    def independent(self, region: Region, dim: int) -> bool:
        """Does every box of the region hold every address of its family in `dim`?"""
        key = (id(region), dim)
        found = self._independent.get(key)
        if found is None or found[0] is not region:
            flag = all(len(b[s.FAM]) == 1 and b[s.FAM][0][0] == b[s.FAM][0][1] and b[dim] == FAMILY_RANGE[b[s.FAM][0][0]] for b in region)
            found = self._independent[key] = (region, flag)
        return found[1]

    def step(self, st: Step, restrict: _Restriction | None) -> _Step:
        region = st.region
        eff = self.effective(region, restrict)
        ref = st.ref
        key = ref.id if ref is not None else "@" + st.label
        memo_key = (key, id(eff))
        found = self._step_memo.get(memo_key)
        if found is None or found.eff is not eff or found.region is not region:
            logged = ref.rule.log if ref is not None else False
            found = self._step_memo[memo_key] = _Step(key, ref, st.label, region, eff, st.action, st.limited, logged, self.sig(region))
            if ref is not None and st.action == "accept" and ref.rule.direction == "in":
                found.exposes = bool(self.exposure_candidates(region))
        return found

    def effective(self, region: Region, restrict: _Restriction | None) -> Region:
        """What of the region reaches the chain, memoised: equal inputs give the same
        object, so the analysis of chains sharing rules (a zone's VMs) is memoised by
        region identity."""
        if restrict is None or not region:
            return region
        if restrict.dims is not None:  # network chains: plain restriction, kept alive
            eff = region
            for dim, by_family in restrict.dims:
                eff = _restrict(eff, dim, by_family)
            self._alive.append(eff)
            return eff
        dim = restrict.dim
        if self.independent(region, dim):
            # every box holds every address of its family: marked wherever the chain
            # has one address of the family, cut to the chain's several otherwise
            key: tuple[object, ...] = (id(region), dim, restrict.token)
            found = self._effective.get(key)
            if found is not None and found[0] is region:
                return found[1]
            marks: list[object] = []
            for b in region:
                spec = restrict.spec.get(b[s.FAM][0][0])
                marks.append(0 if spec is None else 1 if type(spec) is int else spec)
            return self._effective_of(region, dim, marks, key)
        marks = []
        for b in region:
            fam = b[s.FAM]
            if len(fam) != 1 or fam[0][0] != fam[0][1]:
                eff = _restrict(region, dim, restrict.by_family)
                self._alive.append(eff)
                return eff
            spec = restrict.spec.get(fam[0][0])
            if spec is None:
                marks.append(0)
            elif type(spec) is int:
                marks.append(1 if _contains(b[dim], spec) else 0)
            else:
                marks.append(s.iv_intersect(b[dim], spec) or 0)
        key = (id(region), dim, tuple(marks))
        found = self._effective.get(key)
        if found is not None and found[0] is region:
            return found[1]
        return self._effective_of(region, dim, marks, key)

    def _effective_of(self, region: Region, dim: int, marks: list[object], key: tuple[object, ...]) -> Region:
        out: list[Box] = []
        for b, mark in zip(region, marks):
            if mark == 0:
                continue
            f = b[s.FAM][0][0]
            if mark == 1:  # the chain's one address of the family: any constant will do
                values: Intervals = _MARK
            else:
                values = mark  # type: ignore[assignment]
            out.append(b[: s.FAM] + (_FAMILY[f],) + b[s.FAM + 1 : dim] + (values,) + b[dim + 1 :])  # dim is SRC or DST
        eff = tuple(out)
        self._effective[key] = (region, eff)
        return eff

    def analyse_chain(self, chain: _ChainState) -> None:
        """First match over the chain: what each step decides, and what hides it."""
        steps = chain.steps
        taken: list[_Step] = []  # unlimited steps deciding something, in order
        cut_memo = self._cut_memo
        lefts = chain.lefts = [()] * len(steps)
        taken_mask = 0
        for index, step in enumerate(steps):
            ref = step.ref
            stats = step.stats
            if stats is None and ref is not None:
                stats = self.stats.get(step.key)
                if stats is None:
                    stats = self.stats[step.key] = _RuleStats(ref)
                step.stats = stats
            if stats is not None:
                stats.chains += 1
                stats.placements.append((chain, index))
            eff = step.eff
            if not eff:
                if stats is not None:
                    stats.dead.append(chain.name)
                continue
            mask = step.mask
            candidates = []
            if taken_mask & mask:
                eid = step.eid
                for other in taken:
                    if other.mask & mask:
                        hit = other.meets.get(eid)
                        if hit is None:
                            hit = other.meets[eid] = s.overlaps(other.eff, eff)
                        if hit:
                            candidates.append(other)
            if not candidates:
                pieces: Region = eff
                cover: list[_Step] = []
            else:
                key = (step.eid, *[other.eid for other in candidates])
                found = cut_memo.get(key)
                if found is None:
                    found = cut_memo[key] = _first_match_cut(eff, [other.eff for other in candidates], self._pair_memo)
                pieces = found[0]
                cover = [candidates[i] for i in found[1]]
            lefts[index] = pieces
            if not step.limited and pieces:
                taken.append(step)
                taken_mask |= mask
            if stats is None:
                continue
            if not pieces:
                stats.shadowed.append(chain.name)
                for other in cover:
                    if other.key not in stats.covering:
                        stats.covering[other.key] = self.related_of(other)
                continue
            stats.live += 1
            for other in cover:
                if other.ref is not None and other.action != step.action:
                    self.note_conflict(chain, step, other)
            if step.exposes and chain.kind != "network":
                self.note_exposure(chain, step, pieces, stats)

    def note_conflict(self, chain: _ChainState, later: _Step, earlier: _Step) -> None:
        key = (later.key, earlier.key)
        found = self.conflicts.get(key)
        if found is None:
            found = self.conflicts[key] = _Conflict(later, earlier, [])
        found.chains.append(chain.name)

    def shared(self, earlier: _Step, later: _Step) -> tuple[str, bool]:
        """What two overlapping steps share (as services), and whether the earlier lies
        entirely inside the later (an exception carved out of it)."""
        key = (id(earlier.eff), id(later.eff))
        found = self._shared_memo.get(key)
        if found is None:
            overlap = tuple(_service_part(b, c) for b in earlier.eff for c in later.eff if s.box_overlaps(b, c))
            text = ", ".join(services_of(overlap)) or "some packets"
            found = self._shared_memo[key] = (text, not s.subtract(earlier.eff, later.eff))
        return found

    def exposure_candidates(self, region: Region) -> list[tuple[int, int, str, int]]:
        """(proto, port, name, family) the region accepts from a whole family."""
        found = self._exposure_memo.get(id(region))
        if found is not None and found[0] is region:
            return found[1]
        out: list[tuple[int, int, str, int]] = []
        for b in region:
            fam = b[s.FAM]
            if len(fam) != 1 or fam[0][0] != fam[0][1]:
                continue
            family = fam[0][0]
            if b[s.SRC] != FAMILY_RANGE[family]:
                continue
            for proto, port, name in MANAGEMENT_PORTS:
                if _contains(b[s.PROTO], proto) and _contains(b[s.DPORT], port):
                    item = (proto, port, name, family)
                    if item not in out:
                        out.append(item)
        self._exposure_memo[id(region)] = (region, out)
        return out

    def note_exposure(self, chain: _ChainState, step: _Step, left: Region, stats: _RuleStats) -> None:
        candidates = self.exposure_candidates(step.region)
        if not candidates:
            return
        for proto, port, name, family in candidates:
            for b in left:
                if _contains(b[s.FAM], family) and _contains(b[s.PROTO], proto) and _contains(b[s.DPORT], port):
                    label = f"{PROTO_NAME[proto]}/{port} ({name})"
                    stats.exposure.setdefault(label, set()).add(chain.name)
                    break

    # -- redundancy --------------------------------------------------------------------

    def redundancy(self, removed: set[str]) -> dict[str, list[Related]]:
        """Rules whose removal changes nothing, judged latest first across every chain
        they are in, each against the later rules still kept (so they can all go)."""
        out: dict[str, list[Related]] = {}

        def rank(stats: _RuleStats) -> tuple[int, int]:
            ref = stats.ref
            if ref.level == "zone":
                level = 2
            elif ref.level == "vm":
                level = 1
            elif ref.level == "host":
                level = 1 if ref.owner else 0
            else:
                level = 0
            return (level, ref.index)

        candidates = [st for key, st in self.stats.items() if key not in removed and st.live and not st.ref.rule.log and st.ref.rule.limit is None]
        candidates.sort(key=rank, reverse=True)
        for stats in candidates:
            takers: dict[str, Related] = {}
            ok = True
            for chain, index in stats.placements:
                if not self.judge(chain, index, removed, takers):
                    ok = False
                    break
            if ok:
                removed.add(stats.ref.id)
                out[stats.ref.id] = list(takers.values())
        return out

    def judge(self, chain: _ChainState, index: int, removed: set[str], takers: dict[str, Related]) -> bool:
        """Would the chain decide the same without step `index` (and without `removed`)?"""
        steps = chain.steps
        me = steps[index]
        pieces = chain.lefts[index]
        if not pieces:
            return True
        mask = me.mask
        action = me.action
        if chain.default_action != action or chain.default_logged:
            # the later rules alone would have to take all of it: one with the same
            # action must at least share a protocol and port
            if not chain.later_masks(action)[index + 1] & mask:
                return False
        later = [st for st in steps[index + 1 :] if st.mask & mask and st.eff and st.key not in removed]
        key = (id(pieces), me.action, chain.default_action, chain.default_logged, *[(id(st.eff), st.action, st.logged, st.limited) for st in later])
        found = self._judge_memo.get(key)
        if found is None:
            found = self._judge_memo[key] = _same_without(pieces, me.action, [(st.eff, st.action, st.logged, st.limited) for st in later], chain.default_action, chain.default_logged)
        ok, used, default_used = found
        if not ok:
            return False
        for i in used:
            st = later[i]
            if st.key not in takers:
                takers[st.key] = self.related_of(st)
        if default_used:
            default = chain.default_related
            takers.setdefault(f"{default.rule}@{default.where}", default)
        return True

    # -- the run -------------------------------------------------------------------------

    def run(self) -> LintReport:
        self.check_empty_refs()
        self.check_unused()
        for chain in self.all_chains():
            self.analyse_chain(chain)
        removed = self.report_chains()
        redundant = self.redundancy(removed)
        for rule_id, takers in redundant.items():
            ref = self.stats[rule_id].ref
            chains = sorted(c.name for c, _ in self.stats[rule_id].placements)
            default = any(t.level == "default" for t in takers)
            rules = any(t.level != "default" for t in takers)
            who = "the later rules and the default decide" if default and rules else "the default decides" if default else "the later rules decide"
            message = f"removing it changes nothing: {who} its packets the same way ({ref.rule.action})" + _scope_text(ref, chains)
            self.findings.append(Finding("redundant", "info", message, **_rule_fields(ref), related=sorted(takers, key=_related_sort), chains=chains))
        self.report_conflicts()
        self.report_exposure()
        self.findings.sort(key=Finding.sort_key)
        return LintReport(self.findings)

    def all_chains(self) -> Iterable[_ChainState]:
        policy, doc, chains = self.policy, self.doc, self.analyzer.chains
        for vm in doc.vms:
            addresses = policy.vm_addresses(vm)
            for direction in ("in", "out"):
                dim = s.DST if direction == "in" else s.SRC
                restrict = _Restriction.of_vm(dim, addresses)
                name, parts, default = self.vm_chain(vm, direction)
                yield self.make_state(name, "vm", vm, direction, parts, default, restrict)
        for name, network in doc.networks.items():
            if not policy.rules_of("network", name) or chains.network(name) is None:
                continue
            guests = self.network_guests(name)
            if guests.is_empty():
                continue
            by_family = {4: guests.v4, 6: guests.v6}
            restrict = _Restriction(dims=((s.SRC, by_family), (s.DST, by_family)))
            yield self.build_state(chains.network(name), "network", name, "net", True, restrict)  # type: ignore[arg-type]
        for node in doc.hosts:
            yield self.build_state(chains.host_in(node), "host", node, "in", True, None)
            out = chains.host_out(node)
            if out is not None:
                yield self.build_state(out, "host", node, "out", False, None)

    def vm_chain(self, vm: str, direction: str) -> tuple[str, list[tuple[object, list[Step]]], Step]:
        """The plan's VM chain in parts (its levels, after the ICMPv6 essentials); the
        shared parts (global, zone) are built once for all VMs. Open port forwards
        match only forwarded connections and are left out (they decide no rule)."""
        plan, builder = self.analyzer.plan.chains.vm(vm, direction), self.analyzer.chains
        parts: list[tuple[object, list[Step]]] = []
        for level in plan.levels:
            if not level.shared:
                parts.append((None, [builder.step(step) for step in level.steps]))
                continue
            key = (level.kind, level.owner, direction)
            part = self._parts.get(key)
            if part is None:
                part = [self._essentials_step] if level.kind == "global" else []
                part = self._parts[key] = part + [builder.step(step) for step in level.steps]
            parts.append((key, part))
        default = self._defaults.get(plan.default.action + direction)
        if default is None:
            default = self._defaults[plan.default.action + direction] = builder.step(plan.default)
        return plan.name, parts, default

    def network_guests(self, network: str) -> AddressSet:
        ips = [ip for vm in self.doc.vms.values() for nic in vm.nics if nic.network == network for ip in nic.ips]
        return self.policy.address_set(ips) if ips else AddressSet()

    def report_chains(self) -> set[str]:
        """dead / shadowed / partly-shadowed findings; the ids of rules that never decide
        anything (they count as removed when judging redundancy)."""
        removed: set[str] = set()
        for key, stats in self.stats.items():
            ref = stats.ref
            if stats.live:
                if stats.shadowed:
                    self.findings.append(
                        Finding(
                            "partly-shadowed",
                            "info",
                            f"shadowed in {len(stats.shadowed)} of {stats.chains} chains ({_names(stats.shadowed)}): earlier rules decide all of it there",
                            **_rule_fields(ref),
                            related=sorted(stats.covering.values(), key=_related_sort),
                            chains=sorted(stats.shadowed),
                        )
                    )
                continue
            removed.add(key)
            if stats.shadowed:
                covering = sorted(stats.covering.values(), key=_related_sort)
                self.findings.append(
                    Finding(
                        "shadowed",
                        "warning",
                        f"never matches: {_cover_text(covering)} decide{'s' if len(covering) == 1 else ''} all of it first" + _scope_text(ref, stats.shadowed),
                        **_rule_fields(ref),
                        related=covering,
                        chains=sorted(stats.shadowed),
                    )
                )
            elif key not in self.empty_sided:
                self.findings.append(Finding("dead", "warning", self.dead_reason(ref, stats), **_rule_fields(ref), chains=sorted(stats.dead)))
        # rules in no chain at all (no VM / no node takes them), not reported as unused
        for ref in self.policy.rules:
            if ref.id in self.stats or not ref.rule.enabled or ref.id in self.empty_sided:
                continue
            if (ref.level, ref.owner) in self.unused_owner:
                continue
            if ref.level == "network":
                continue  # reported with the network (no guests)
            reason = {"global": "applies to no VM: the policy has none", "host": "applies to no node: the policy has none"}.get(ref.level, "applies to no chain")
            self.findings.append(Finding("dead", "warning", reason, **_rule_fields(ref)))
        return removed

    def dead_reason(self, ref: RuleRef, stats: _RuleStats) -> str:
        rule = ref.rule
        region = self.analyzer.regions.of(self.analyzer.plan.rules.step(ref))
        if not region:
            source, destination = self.policy.address_set(rule.from_), self.policy.address_set(rule.to)
            if not set(source.families()) & set(destination.families()):
                return "matches no packet at all: its `from` and `to` have no address family in common"
            return "matches no packet at all"
        if ref.level == "network":
            return f"can never match: network {ref.owner}'s rules only see packets between its guests, and it names none of them"
        if ref.level not in ("vm", "zone", "global"):
            return "can never match in any chain it is in"
        vms = sorted({name.split(" ")[0][len("vm:") :] for name in stats.dead})
        one = len(vms) == 1
        families: set[str] = set()
        for vm in vms:
            families.update(self.policy.vm_addresses(vm).families())
        rule_families = {f"ipv{f}" for b in region for f in _fams(b)}
        whom = f"vm {vms[0]}" if one else f"any of the {len(vms)} VMs it applies to"
        if not families:
            return f"can never match: {'vm ' + vms[0] + ' has' if one else 'none of its VMs has'} an address"
        if not rule_families & families:
            have = f"vm {vms[0]} has" if one else "its VMs have"
            return f"can never match: it is {'/'.join(sorted(rule_families))} only, but {have} only {'/'.join(sorted(families))} addresses"
        if rule.direction == "in":
            return f"can never match: an in rule only sees packets to {whom}, and its `to` contains none of {'its' if one else 'their'} addresses"
        return f"can never match: an out rule only sees packets from {whom}, and its `from` contains none of {'its' if one else 'their'} addresses"

    def report_conflicts(self) -> None:
        fields: dict[str, dict[str, Any]] = {}
        for conflict in self.conflicts.values():
            earlier = conflict.earlier
            later = conflict.later.ref
            assert earlier.ref is not None and later is not None
            overlap, exception = self.shared(earlier, conflict.later)
            related = self.related_of(earlier)
            same_scope = later.level == related.level and later.owner == related.owner
            severity = "warning" if same_scope and not exception else "info"
            shape = "an exception carved out of it" if exception else "a partial overlap"
            message = (
                f"partly decided by the earlier {earlier.action} rule {related.rule} ({related.where}), "
                f"{shape}: on {overlap} it {_PAST[earlier.action]} what this rule {_PRESENT[conflict.later.action]}"
            )
            chains = conflict.chains if len(conflict.chains) == 1 else sorted(set(conflict.chains))
            if len(chains) > 1 or later.level in ("global", "zone") or (later.level == "host" and not later.owner):
                message += _scope_text(later, chains)
            own = fields.get(later.id)
            if own is None:
                own = fields[later.id] = _rule_fields(later)
            self.findings.append(Finding("conflict", severity, message, **own, related=[related], chains=chains, details={"exception": exception, "overlap": overlap}))

    def report_exposure(self) -> None:
        for stats in self.stats.values():
            if not stats.exposure:
                continue
            ref = stats.ref
            ports = sorted(stats.exposure, key=lambda p: (p.split("/")[0], int(p.split("/")[1].split(" ")[0])))
            chains = sorted(set().union(*stats.exposure.values()))
            families = sorted({f"IPv{c[3]}" for c in self.exposure_candidates(self.analyzer.regions.of(self.analyzer.plan.rules.step(ref)))})
            self.findings.append(
                Finding(
                    "management-exposure",
                    "warning",
                    f"accepts {', '.join(ports)} from every {'/'.join(families)} address" + _scope_text(ref, chains),
                    **_rule_fields(ref),
                    chains=chains,
                    details={"ports": ports},
                )
            )

    # -- references ----------------------------------------------------------------------

    def parse(self, text: str) -> RefItem:
        found = self._parsed.get(text)
        if found is None:
            found = self._parsed[text] = parse_ref(text)
        return found

    def empty_items(self, refs: list[str] | None) -> list[str]:
        """The named references (zone:, group:, ...) of the list that have no address."""
        if refs is None:
            return []
        out = []
        for text in refs:
            found = self._empty_item.get(text)
            if found is None:
                item = self.parse(text)
                empty = item.kind not in ("any", "literal") and self.policy.ref_item_set(item).is_empty()
                found = self._empty_item[text] = str(item).lstrip("!") if empty else ""
            if found:
                out.append(found)
        return out

    def check_empty_refs(self) -> None:
        policy = self.policy
        for ref in policy.rules:
            rule = ref.rule
            problems: list[str] = []
            empty_side: list[str] = []
            names: list[str] = []
            for key, refs in (("from", rule.from_), ("to", rule.to)):
                if refs is None:
                    continue
                items = self.empty_items(refs)
                names += items
                if policy.address_set(refs).is_empty():
                    empty_side.append(key)
                    problems.append(f"`{key}` resolves to no address" + (f" ({', '.join(items)} {'is' if len(items) == 1 else 'are'} empty)" if items else ""))
                elif items:
                    problems.append(f"`{key}` refers to {', '.join(items)}, which {'has' if len(items) == 1 else 'have'} no address")
            if not problems:
                continue
            if empty_side and rule.enabled:
                self.empty_sided.add(ref.id)
            severity = "warning" if empty_side else "info"
            message = "; ".join(problems) + (": the rule can never match" if empty_side else "")
            self.findings.append(Finding("empty-ref", severity, message, **_rule_fields(ref), details={"refs": names, "empty": empty_side}))
        for name, group in self.doc.groups.items():
            items = self.empty_items(group.members)
            whole = policy.group_set(name).is_empty()
            if not whole and not items:
                continue
            if whole:
                message = f"group {name} resolves to no address" + (f" ({', '.join(items)} {'is' if len(items) == 1 else 'are'} empty)" if items else "")
            else:
                message = f"group {name} refers to {', '.join(items)}, which {'has' if len(items) == 1 else 'have'} no address"
            self.findings.append(
                Finding("empty-ref", "warning" if whole else "info", message, where=self.key_where(("groups", name)), object=f"group:{name}", details={"refs": items, "empty": ["members"] if whole else []})
            )
        management = self.doc.settings.management
        if management:
            items = self.empty_items(management)
            if policy.address_set(management).is_empty():
                self.findings.append(
                    Finding("empty-ref", "warning", "settings.management resolves to no address: the anti-lockout protects nobody", where=self.where(("settings", "management")), object="settings.management", details={"refs": items, "empty": ["management"]})
                )
            elif items:
                self.findings.append(
                    Finding("empty-ref", "info", f"settings.management refers to {', '.join(items)}, which {'has' if len(items) == 1 else 'have'} no address", where=self.where(("settings", "management")), object="settings.management", details={"refs": items, "empty": []})
                )

    # -- unused definitions ----------------------------------------------------------------

    def check_unused(self) -> None:
        doc = self.doc
        # groups: reachable from rules, filter rules, nat and settings.management
        roots: list[str] = []
        for ref in self.policy.rules:
            roots += ref.rule.from_ or []
            roots += ref.rule.to or []
        for flt in doc.filters.values():
            for frule in flt.rules:
                roots += frule.from_ or []
                roots += frule.to or []
        for entry in doc.nat:
            roots += getattr(entry, "from_", None) or []
        roots += doc.settings.management
        used: set[str] = set()
        pending = [self.parse(text).name for text in roots if self.parse(text).kind == "group"]
        while pending:
            name = pending.pop()
            if name in used or name not in doc.groups:
                continue
            used.add(name)
            pending += [self.parse(text).name for text in doc.groups[name].members if self.parse(text).kind == "group"]
        used_by: dict[str, set[str]] = {}
        for other, group in doc.groups.items():
            for text in group.members:
                item = self.parse(text)
                if item.kind == "group" and item.name != other:
                    used_by.setdefault(item.name, set()).add(other)
        for name in doc.groups:
            if name in used:
                continue
            users = sorted(used_by.get(name, ()))
            message = f"group {name} is not used by any rule, nat entry or settings.management"
            if users:
                message = f"group {name} is only used by unused group{'s' if len(users) > 1 else ''} {', '.join(users)}"
            self.findings.append(Finding("unused", "info", message, where=self.key_where(("groups", name)), object=f"group:{name}"))
        # services (user-defined)
        used_services: set[str] = set()
        for ref in self.policy.rules:
            used_services.update(ref.rule.service or [])
        for network in doc.networks.values():
            used_services.update(network.host_services)
        for name in doc.services:
            if name not in used_services:
                note = f" (it replaces the built-in {name})" if name in BUILTIN_SERVICES else ""
                self.findings.append(Finding("unused", "info", f"service {name} is not used by any rule or host_services{note}", where=self.key_where(("services", name)), object=f"service:{name}"))
        # filters (user-defined): used by a VM or NIC, or included by a used filter
        used_filters: set[str] = set()
        pending = [f for vm in doc.vms.values() for f in list(vm.filters) + [f for nic in vm.nics for f in nic.filters]]
        while pending:
            name = pending.pop()
            if name in used_filters:
                continue
            used_filters.add(name)
            if name in doc.filters:
                pending += doc.filters[name].include
        for name in doc.filters:
            if name not in used_filters:
                self.findings.append(Finding("unused", "info", f"filter {name} is not used by any VM or NIC, nor included by a used filter", where=self.key_where(("filters", name)), object=f"filter:{name}"))
        # schedules
        used_schedules = {ref.rule.schedule for ref in self.policy.rules if ref.rule.schedule is not None}
        for name in doc.schedules:
            if name not in used_schedules:
                self.findings.append(Finding("unused", "info", f"schedule {name} is not used by any rule", where=self.key_where(("schedules", name)), object=f"schedule:{name}"))
        # zones without VMs
        populated = {vm.zone for vm in doc.vms.values() if vm.zone is not None}
        for name, zone in doc.zones.items():
            if name in populated:
                continue
            rules = [r for r in self.policy.rules_of("zone", name) if r.rule.enabled]
            tail = f": {_rules_never_apply(len(rules))}" if rules else ""
            self.findings.append(
                Finding("unused", "info", f"zone {name} has no VMs{tail}", where=self.key_where(("zones", name)), object=f"zone:{name}", related=[_related_rule(r) for r in rules])
            )
            self.unused_owner.add(("zone", name))
        # network rules: only networks with guests have the chain
        for name, network in doc.networks.items():
            rules = [r for r in self.policy.rules_of("network", name) if r.rule.enabled]
            if not rules:
                continue
            if self.network_guests(name).is_empty():
                message = f"network {name} has no guest addresses: {_rules_never_apply(len(rules))}"
            else:
                continue
            self.findings.append(Finding("unused", "warning", message, where=self.key_where(("networks", name)), object=f"network:{name}", related=[_related_rule(r) for r in rules]))
            self.unused_owner.add(("network", name))


def _service_part(a: Box, b: Box) -> Box:
    """The protocol and ports two overlapping boxes share (what services_of reads)."""
    out = list(a)
    for d in (s.PROTO, s.DPORT, s.SPORT):
        out[d] = s.iv_intersect(a[d], b[d])
    return tuple(out)


# -- small helpers ------------------------------------------------------------------------


def _contains(values: Intervals, value: int) -> bool:
    for low, high in values:
        if low <= value <= high:
            return True
        if low > value:
            return False
    return False


def _fams(b: Box) -> set[int]:
    return {f for f in (4, 6) if _contains(b[s.FAM], f)}


def _rules_never_apply(n: int) -> str:
    return "its rule never applies" if n == 1 else f"its {n} rules never apply"


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


# -- entry point ---------------------------------------------------------------------------


def lint(analyzer: Analyzer) -> LintReport:
    """Lint the analyzer's policy: findings sorted by file and line."""
    # The analysis makes millions of small tuples and no cycles: the cyclic GC would
    # rescan the whole policy again and again (as when compiling, it is paused).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Linter(analyzer).run()
    finally:
        if was_enabled:
            gc.enable()
