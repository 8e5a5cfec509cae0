"""What each rule decides in each chain, first match: dead, shadowed and
partly-shadowed rules, and redundancy (removing a rule changes no verdict)."""

from __future__ import annotations

from collections.abc import Generator, Sequence

from ...policy.resolve import RuleRef
from .. import space as s
from ..space import Region
from .base import LintBase
from .cuts import _fams, _first_match_cut, _same_without
from .report import Finding, Related, _cover_text, _names, _related_sort, _rule_fields, _scope_text
from .state import _ChainState, _Conflict, _RuleStats, _Step

# The redundancy walk (Decisions.redundancy): yields a shared rule's judgement in
# this shard's chains, is sent whether it goes, returns the shard's own rules that go.
Judging = Generator[tuple[bool, dict[str, Related]], bool, dict[str, list[Related]]]


def judging_order(ref: RuleRef, first: tuple[int, ...]) -> tuple[int, ...]:
    """Redundancy judges the latest rules first: zone rules, then VM (and node)
    rules, then global ones (and host_rules, networks', security groups'), each
    level from its last rule; ties (rules of one index in lists of several owners)
    in the order the rules were first met."""
    if ref.level == "zone":
        level = 2
    elif ref.level == "vm":
        level = 1
    elif ref.level == "host":
        level = 1 if ref.owner else 0
    else:
        level = 0
    return (-level, -ref.index, *first)


class Decisions(LintBase):
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
                    stats = self.stats[step.key] = _RuleStats(ref, first=(*chain.order, index))
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
            found = self.conflicts[key] = _Conflict(later, earlier, [], chain.order)
        found.chains.append(chain.name)

    def redundancy(self, removed: set[str], shared: Sequence[tuple[tuple[int, ...], str]] = ()) -> Judging:
        """Rules whose removal changes nothing, judged latest first across every chain
        they are in, each against the later rules still kept (so they can all go).

        A generator: the shard's own rules are judged here; at each `shared` rule
        ((judging order, id), from the merge of every shard's) it yields what its
        own chains say, (can go, takers), and is sent whether the rule goes in
        every shard's (workers.py). Returns the shard's own rules that can go."""
        out: dict[str, list[Related]] = {}
        shard = self.shard
        mine = [(judging_order(st.ref, st.first), key, st) for key, st in self.stats.items() if key not in removed and st.live and not st.ref.rule.log and st.ref.rule.limit is None and not shard.shared(st.ref)]
        queue: list[tuple[tuple[int, ...], str, _RuleStats | None]] = mine + [(order, key, None) for order, key in shared]
        queue.sort(key=lambda entry: entry[0])  # the orders differ: no two rules were first met at one place
        # The rules a removed rule's packets fall to stay: judged latest first, they were
        # judged already; but a security group's rules sit where they are called (a VM's
        # list, a zone's), not where judging_order puts them, and would otherwise go too.
        relied: set[str] = set()
        for _, key, stats in queue:
            if stats is None:  # a shared rule: this shard's chains say, the merge decides
                here = self.stats.get(key)
                answer = self.judge_all(here.placements if here is not None else [], removed) if key not in relied else (False, {})
                goes = yield answer
                if goes:
                    removed.add(key)
                    relied.update(answer[1])
                continue
            if key in relied:
                continue
            ok, takers = self.judge_all(stats.placements, removed)
            if ok:
                removed.add(key)
                relied.update(takers)
                out[key] = list(takers.values())
        return out

    def judge_all(self, placements: list[tuple[_ChainState, int]], removed: set[str]) -> tuple[bool, dict[str, Related]]:
        """Whether every placement would decide the same without the rule, and which
        later rules (or defaults) would decide it then."""
        takers: dict[str, Related] = {}
        for chain, index in placements:
            if not self.judge(chain, index, removed, takers):
                return False, takers
        return True, takers

    def judge(self, chain: _ChainState, index: int, removed: set[str], takers: dict[str, Related]) -> bool:
        """Would the chain decide the same without step `index` (and without `removed`)?"""
        steps = chain.steps
        me = steps[index]
        pieces = chain.lefts[index]
        if not pieces:
            return True
        mask = me.mask
        action = me.action
        later = [st for st in steps[index + 1 :] if st.mask & mask and st.eff and st.key not in removed]
        if chain.default_action != action or chain.default_logged:
            # the later rules alone would have to take all of it (_same_without): one of
            # them with the same action, unlogged, must at least share a protocol and port
            for st in later:
                if st.action == action and not st.logged:
                    break
            else:
                return False
        key = (id(pieces), me.action, chain.default_action, chain.default_logged, *[st.tag for st in later])
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

    def report_chains(self) -> set[str]:
        """dead / shadowed / partly-shadowed findings of the shard's own rules; the ids
        of those that never decide anything (they count as removed when judging
        redundancy). Shared rules are reported after the merge (`report_rule`)."""
        removed: set[str] = set()
        shard = self.shard
        for key, stats in self.stats.items():
            if not shard.shared(stats.ref) and self.report_rule(stats):
                removed.add(key)
        for ref in self.policy.rules:
            if ref.id not in self.stats and shard.owns(ref):
                self.report_unplaced(ref)
        return removed

    def report_rule(self, stats: _RuleStats) -> bool:
        """A rule's dead, shadowed or partly-shadowed finding; whether it never decides."""
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
            return False
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
        elif ref.id not in self.empty_sided:
            self.findings.append(Finding("dead", "warning", self.dead_reason(ref, stats), **_rule_fields(ref), chains=sorted(stats.dead)))
        return True

    def report_unplaced(self, ref: RuleRef) -> None:
        """A rule in no chain at all (no VM / no node takes it), unless reported as unused."""
        if not ref.rule.enabled or ref.id in self.empty_sided or (ref.level, ref.owner) in self.unused_owner:
            return
        if ref.rule.security_group is not None:
            return  # a call: the group's own rules are placed (and judged) in its stead
        if ref.level == "network":
            return  # reported with the network (no guests)
        reason = {"global": "applies to no VM: the policy has none", "host": "applies to no node: the policy has none"}.get(ref.level, "applies to no chain")
        self.findings.append(Finding("dead", "warning", reason, **_rule_fields(ref)))

    def report_redundant(self, ref: RuleRef, chains: list[str], takers: list[Related]) -> None:
        default = any(t.level == "default" for t in takers)
        rules = any(t.level != "default" for t in takers)
        who = "the later rules and the default decide" if default and rules else "the default decides" if default else "the later rules decide"
        message = f"removing it changes nothing: {who} its packets the same way ({ref.rule.action})" + _scope_text(ref, chains)
        self.findings.append(Finding("redundant", "info", message, **_rule_fields(ref), related=sorted(takers, key=_related_sort), chains=chains))

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
