"""`zonewall lint`: rules that never match, rules that change nothing, and other smells.

Every chain the compiler writes is analysed exactly, over packet space (space.py):

* a VM's `in` chain (global -> the VM's own -> its zone's rules -> default) only sees
  packets *to* one of the VM's addresses and its `out` chain packets *from* one, so
  each rule is first restricted to that (its *effective* region there);
* an isolated network's chain only sees packets between two of its guests;
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
                rules of a network that is not isolated

docs/analysis.md (## lint) documents the kinds and the JSON schema.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..policy.addresses import AddressSet, parse_ref
from ..policy.builtins import BUILTIN_SERVICES
from ..policy.resolve import Policy, RuleRef
from ..policy.source import LDict, LList
from . import space as s
from .chains import Chain
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


@dataclass
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


def lint_table(report: LintReport, *, title: str | None = None, related_limit: int = 3) -> Any:
    """The findings as a rich Table: kind, where, rule, message (+ related rules)."""
    from rich.table import Table
    from rich.text import Text

    counts = {k: n for k, n in report.counts().items() if n}
    caption = ", ".join(f"{n} {k}" for k, n in counts.items()) if counts else "no findings"
    table = Table(title=title or "zonewall lint", caption=caption, show_lines=False, expand=False)
    table.add_column("kind", no_wrap=True)
    table.add_column("where", no_wrap=True, style="cyan")
    table.add_column("rule", no_wrap=True)
    table.add_column("message", overflow="fold")
    for finding in report.findings:
        style = "yellow" if finding.severity == "warning" else "dim"
        message = Text(finding.message)
        if finding.related:
            shown = ", ".join(r.text() for r in finding.related[:related_limit])
            more = len(finding.related) - related_limit
            if more > 0:
                shown += f" and {more} more"
            message.append(f"\n  {_related_label(finding.kind)}: {shown}", style="dim")
        table.add_row(Text(finding.kind, style=style), finding.where or "", finding.rule or finding.object or "", message)
    return table


def _related_label(kind: str) -> str:
    return {
        "shadowed": "covered by",
        "partly-shadowed": "covered by",
        "redundant": "decided instead by",
        "conflict": "earlier rule",
    }.get(kind, "related")


# -- per-chain analysis -----------------------------------------------------------------


class _Step:
    """One step of a chain as the lint sees it (restricted to what reaches the chain)."""

    __slots__ = ("key", "ref", "label", "eff", "left", "action", "limited", "logged", "mask", "dlo", "dhi", "region")

    def __init__(self, key: str, ref: RuleRef | None, label: str, region: Region, eff: Region, action: str, limited: bool, logged: bool, sig: tuple[int, int, int]):
        self.key = key  # rule id (unique), or "@label" for built-ins
        self.ref = ref
        self.label = label
        self.region = region
        self.eff = eff
        self.left: Region = ()
        self.action = action
        self.limited = limited
        self.logged = logged
        self.mask, self.dlo, self.dhi = sig


@dataclass
class _ChainState:
    name: str
    kind: str  # vm | network | host
    owner: str  # the VM, network or node
    steps: list[_Step]
    default_action: str
    default_logged: bool
    default_related: Related


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
    later: RuleRef
    earlier: _Step
    chains: list[str]
    overlap: str
    exception: bool


def _sig(region: Region) -> tuple[int, int, int]:
    """A cheap over-approximation: (proto bits per family, lowest dport, highest dport).
    Two regions with disjoint signatures cannot overlap."""
    mask = 0
    dlo, dhi = 65536, -1
    for b in region:
        pm = 0
        for low, high in b[s.PROTO]:
            pm |= (1 << (high + 1)) - (1 << low)
        for flow, fhigh in b[s.FAM]:
            if flow <= 4 <= fhigh:
                mask |= pm
            if flow <= 6 <= fhigh:
                mask |= pm << 256
        ports = b[s.DPORT]
        if ports[0][0] < dlo:
            dlo = ports[0][0]
        if ports[-1][1] > dhi:
            dhi = ports[-1][1]
    return mask, dlo, dhi


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
        self._sigs: dict[int, tuple[Region, tuple[int, int, int]]] = {}
        self._exposure_memo: dict[int, tuple[Region, list[tuple[int, int, str, int]]]] = {}
        self.log_denied = self.doc.settings.log.denied
        self.empty_sided: set[str] = set()  # rules with a from/to that resolves to nothing
        self.unused_owner: set[tuple[str, str]] = set()  # (level, owner) reported as unused

    # -- helpers ----------------------------------------------------------------------

    def sig(self, region: Region) -> tuple[int, int, int]:
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
        if step.ref is not None:
            ref = step.ref
            return Related(ref.id, ref.where, ref.level, ref.owner, step.action)
        if step.label == "anti-lockout":
            return Related("anti-lockout", self.where(("settings", "management")) or "built-in", "built-in", "", "accept")
        return Related(step.label, "built-in", "built-in", "", step.action)

    def default_related(self, chain: Chain, kind: str, owner: str, direction: str) -> Related:
        where: str | None = None
        if kind == "vm":
            vm = self.doc.vms[owner]
            key = "in" if direction == "in" else "out"
            attr = "in_" if direction == "in" else "out"
            paths: list[tuple[object, ...]] = []
            if vm.default is not None and getattr(vm.default, attr) is not None:
                paths.append(("vms", owner, "default", key))
            elif vm.zone is not None and self.doc.zones[vm.zone].default is not None and getattr(self.doc.zones[vm.zone].default, attr) is not None:
                paths.append(("zones", vm.zone, "default", key))
            else:
                paths.append(("settings", "default", key))
            where = self.where(paths[0])
        elif kind == "host":
            where = self.where(("settings", "host_default", "in" if direction == "in" else "out"))
        return Related(chain.default.label, where or "built-in", "default", owner, chain.default.action)

    # -- chains -----------------------------------------------------------------------

    def build_state(self, chain: Chain, kind: str, owner: str, direction: str, essentials: bool, restrictions: list[tuple[int, dict[int, Intervals]]]) -> _ChainState:
        steps: list[_Step] = []
        raw = list(chain.steps)
        if essentials:
            region = self.analyzer.essentials
            steps.append(self._make_step(None, "icmpv6-essentials", region, "accept", False, False, restrictions))
        for st in raw:
            if st.ref is not None:
                steps.append(self._make_step(st.ref, st.label, st.region, st.action, st.limited, st.ref.rule.log, restrictions))
            else:
                steps.append(self._make_step(None, st.label, st.region, st.action, st.limited, False, restrictions))
        default_logged = chain.default.action != "accept" and self.log_denied
        return _ChainState(chain.name, kind, owner, steps, chain.default.action, default_logged, self.default_related(chain, kind, owner, direction))

    def _make_step(self, ref: RuleRef | None, label: str, region: Region, action: str, limited: bool, logged: bool, restrictions: list[tuple[int, dict[int, Intervals]]]) -> _Step:
        eff = region
        for dim, by_family in restrictions:
            if not eff:
                break
            eff = _restrict(eff, dim, by_family)
        key = ref.id if ref is not None else "@" + label
        return _Step(key, ref, label, region, eff, action, limited, logged, self.sig(region))

    def analyse_chain(self, chain: _ChainState) -> None:
        """First match over the chain: what each step decides, and what hides it."""
        steps = chain.steps
        taken: list[_Step] = []  # unlimited steps deciding something, in order
        overlaps, subtract = s.overlaps, s.subtract
        for index, step in enumerate(steps):
            ref = step.ref
            stats = None
            if ref is not None:
                stats = self.stats.get(step.key)
                if stats is None:
                    stats = self.stats[step.key] = _RuleStats(ref)
                stats.chains += 1
                stats.placements.append((chain, index))
            eff = step.eff
            if not eff:
                if stats is not None:
                    stats.dead.append(chain.name)
                continue
            pieces = eff
            cover: list[_Step] = []
            mask, dlo, dhi = step.mask, step.dlo, step.dhi
            for other in taken:
                if other.mask & mask and other.dlo <= dhi and dlo <= other.dhi and overlaps(other.left, eff):
                    cover.append(other)
                    if pieces:
                        pieces = subtract(pieces, other.left)
            step.left = pieces
            if not step.limited and pieces:
                taken.append(step)
            if stats is None:
                continue
            if not pieces:
                stats.shadowed.append(chain.name)
                for other in cover:
                    related = self.related_of(other)
                    stats.covering.setdefault(related.rule, related)
                continue
            stats.live += 1
            for other in cover:
                if other.ref is not None and other.action != step.action:
                    self.note_conflict(chain, step, other)
            if step.action == "accept" and chain.kind in ("vm", "host") and ref.rule.direction == "in":
                self.note_exposure(chain, step, stats)

    def note_conflict(self, chain: _ChainState, later: _Step, earlier: _Step) -> None:
        key = (later.key, earlier.key)
        found = self.conflicts.get(key)
        if found is None:
            overlap = s.intersect(earlier.left, later.eff)
            exception = not s.subtract(earlier.left, later.eff)
            text = ", ".join(services_of(overlap)) or "some packets"
            found = self.conflicts[key] = _Conflict(later.ref, earlier, [], text, exception)  # type: ignore[arg-type]
        found.chains.append(chain.name)

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

    def note_exposure(self, chain: _ChainState, step: _Step, stats: _RuleStats) -> None:
        candidates = self.exposure_candidates(step.region)
        if not candidates:
            return
        for proto, port, name, family in candidates:
            for b in step.left:
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
        steps = chain.steps
        me = steps[index]
        pieces = me.left
        if not pieces:
            return True
        action = me.action
        mask, dlo, dhi = me.mask, me.dlo, me.dhi
        overlaps, subtract = s.overlaps, s.subtract
        found: list[_Step] = []
        for later in steps[index + 1 :]:
            if not later.eff or later.key in removed:
                continue
            if not (later.mask & mask and later.dlo <= dhi and dlo <= later.dhi):
                continue
            if not overlaps(pieces, later.eff):
                continue
            if later.action != action or later.logged:
                return False
            found.append(later)
            if not later.limited:
                pieces = subtract(pieces, later.eff)
                if not pieces:
                    break
        if pieces:
            if chain.default_action != action or chain.default_logged:
                return False
        for later in found:
            related = self.related_of(later)
            takers.setdefault(related.rule, related)
        if pieces:
            takers.setdefault(f"{chain.default_related.rule}@{chain.default_related.where}", chain.default_related)
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
            chains = [c.name for c, _ in self.stats[rule_id].placements]
            self.findings.append(
                Finding(
                    "redundant",
                    "info",
                    f"removing it changes nothing: the later rules {'and the default ' if any(t.level == 'default' for t in takers) else ''}"
                    f"decide its packets the same way ({ref.rule.action})" + _scope_text(ref, chains),
                    **_rule_fields(ref),
                    related=sorted(takers, key=_related_sort),
                    chains=chains,
                )
            )
        self.report_conflicts()
        self.report_exposure()
        self.findings.sort(key=Finding.sort_key)
        return LintReport(self.findings)

    def all_chains(self) -> Iterable[_ChainState]:
        policy, doc, chains = self.policy, self.doc, self.analyzer.chains
        for vm in doc.vms:
            addresses = policy.vm_addresses(vm)
            by_family = {4: addresses.v4, 6: addresses.v6}
            for direction in ("in", "out"):
                dim = s.DST if direction == "in" else s.SRC
                yield self.build_state(chains.vm(vm, direction), "vm", vm, direction, True, [(dim, by_family)])
        for name, network in doc.networks.items():
            if not policy.rules_of("network", name) or not network.isolated:
                continue
            guests = self.network_guests(name)
            if guests.is_empty():
                continue
            by_family = {4: guests.v4, 6: guests.v6}
            yield self.build_state(chains.network(name), "network", name, "net", True, [(s.SRC, by_family), (s.DST, by_family)])
        for node in doc.hosts:
            yield self.build_state(chains.host_in(node), "host", node, "in", True, [])
            out = chains.host_out(node)
            if out is not None:
                yield self.build_state(out, "host", node, "out", False, [])

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
                continue  # reported with the network (not isolated / no guests)
            reason = {
                "global": "applies to no VM: the policy has none",
                "zone": "applies to no VM",
                "host": "applies to no node" if ref.owner == "" else f"host {ref.owner}: no chain takes {ref.rule.direction} rules",
            }.get(ref.level, "applies to no chain")
            self.findings.append(Finding("dead", "warning", reason, **_rule_fields(ref)))
        return removed

    def dead_reason(self, ref: RuleRef, stats: _RuleStats) -> str:
        rule = ref.rule
        if ref.level in ("vm", "zone", "global"):
            direction = rule.direction
            side = "to" if direction == "in" else "from"
            vms = sorted({name.split(" ")[0][3:] for name in stats.dead})
            families: set[str] = set()
            for vm in vms:
                families.update(self.policy.vm_addresses(vm).families())
            region = self.analyzer.matcher.rule(rule)
            if not region:
                return "matches no packet at all"
            rule_families = {"ipv4" if 4 in _fams(b) else "ipv6" for b in region} | {"ipv6" for b in region if 6 in _fams(b)}
            if not families:
                who = f"vm {vms[0]} has" if len(vms) == 1 else "its VMs have"
                return f"can never match: {who} no address"
            if not rule_families & families:
                return f"can never match: it is {'/'.join(sorted(rule_families))} only but {'vm ' + vms[0] + ' has' if len(vms) == 1 else 'its VMs have'} only {'/'.join(sorted(families))} addresses"
            whom = f"vm {vms[0]}" if len(vms) == 1 else f"any of the {len(vms)} VMs it applies to"
            if direction == "in":
                return f"can never match: an in rule only sees packets to {whom}, and its `{side}` contains none of {'its' if len(vms) == 1 else 'their'} addresses"
            return f"can never match: an out rule only sees packets from {whom}, and its `{side}` contains none of {'its' if len(vms) == 1 else 'their'} addresses"
        if ref.level == "network":
            return f"can never match: network {ref.owner}'s rules only see packets between its guests"
        return "matches no packet at all"

    def report_conflicts(self) -> None:
        for (later_key, earlier_key), conflict in self.conflicts.items():
            later, earlier = conflict.later, conflict.earlier
            assert earlier.ref is not None
            same_scope = (later.level, later.owner) == (earlier.ref.level, earlier.ref.owner)
            severity = "warning" if same_scope and not conflict.exception else "info"
            shape = "an exception carved out of it" if conflict.exception else "a partial overlap"
            related = self.related_of(earlier)
            message = (
                f"partly decided by the earlier {earlier.action} rule {earlier.ref.id} ({earlier.ref.where}): "
                f"{conflict.overlap} {'is' if ',' not in conflict.overlap else 'are'} {earlier.action}ed there, not {later.rule.action}ed ({shape})"
            )
            message += _scope_text(later, conflict.chains)
            self.findings.append(
                Finding(
                    "conflict",
                    severity,
                    message,
                    **_rule_fields(later),
                    related=[related],
                    chains=sorted(set(conflict.chains)),
                    details={"exception": conflict.exception, "overlap": conflict.overlap},
                )
            )

    def report_exposure(self) -> None:
        for stats in self.stats.values():
            if not stats.exposure:
                continue
            ref = stats.ref
            ports = sorted(stats.exposure, key=lambda p: (p.split("/")[0], int(p.split("/")[1].split(" ")[0])))
            chains = sorted(set().union(*stats.exposure.values()))
            families = sorted({f"IPv{c[3]}" for c in self.exposure_candidates(self.analyzer.matcher.rule(ref.rule))})
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

    def empty_items(self, refs: list[str] | None) -> list[str]:
        if refs is None:
            return []
        out = []
        for text in refs:
            item = parse_ref(text)
            if item.kind in ("any", "literal"):
                continue
            if self.item_set(text).is_empty():
                out.append(str(item).lstrip("!"))
        return out

    def item_set(self, text: str) -> AddressSet:
        memo = self.__dict__.setdefault("_item_memo", {})
        found = memo.get(text)
        if found is None:
            item = parse_ref(text)
            found = memo[text] = self.policy.ref_item_set(item)
        return found

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
        pending = [parse_ref(text).name for text in roots if parse_ref(text).kind == "group"]
        while pending:
            name = pending.pop()
            if name in used or name not in doc.groups:
                continue
            used.add(name)
            pending += [parse_ref(text).name for text in doc.groups[name].members if parse_ref(text).kind == "group"]
        for name in doc.groups:
            if name in used:
                continue
            users = sorted(other for other, group in doc.groups.items() if other != name and any(parse_ref(t).kind == "group" and parse_ref(t).name == name for t in group.members))
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
            tail = f": its {len(rules)} rule{'s' if len(rules) != 1 else ''} never apply" if rules else ""
            self.findings.append(Finding("unused", "info" if not rules else "warning", f"zone {name} has no VMs{tail}", where=self.key_where(("zones", name)), object=f"zone:{name}"))
            self.unused_owner.add(("zone", name))
        # network rules: only isolated networks with guests have the chain
        for name, network in doc.networks.items():
            rules = [r for r in self.policy.rules_of("network", name) if r.rule.enabled]
            if not rules:
                continue
            if not network.isolated:
                message = f"network {name} is not isolated: its {len(rules)} rule{'s' if len(rules) != 1 else ''} never apply (network rules only check guest-to-guest traffic of isolated networks)"
            elif self.network_guests(name).is_empty():
                message = f"network {name} has no guest addresses: its {len(rules)} rule{'s' if len(rules) != 1 else ''} never apply"
            else:
                continue
            self.findings.append(Finding("unused", "warning", message, where=self.key_where(("networks", name)), object=f"network:{name}", related=[Related(r.id, r.where, r.level, r.owner, r.rule.action) for r in rules]))
            self.unused_owner.add(("network", name))


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
