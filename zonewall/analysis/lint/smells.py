"""Conflicts (an earlier rule with another action decides part of a later one) and
management exposure (an accept from a whole family to a management port)."""

from __future__ import annotations

from ...policy.resolve import RuleRef
from .. import space as s
from ..describe import services_of
from ..space import Region
from .base import LintBase
from .cuts import FAMILY_RANGE, MANAGEMENT_PORTS, PROTO_NAME, _contains, _service_part
from .report import Finding, Related, _rule_fields, _scope_text
from .shards import SharedConflict
from .state import _ChainState, _RuleStats, _Step

_PAST = {"accept": "accepts", "drop": "drops", "reject": "rejects"}
_PRESENT = {"accept": "would accept", "drop": "would drop", "reject": "would reject"}


class Smells(LintBase):
    def shared(self, earlier: _Step, later: _Step) -> tuple[str, bool]:
        """What two overlapping steps share (as services), and whether the earlier lies
        entirely inside the later (an exception carved out of it)."""
        key = (id(earlier.eff), id(later.eff))
        found = self._shared_memo.get(key)
        if found is None:
            overlap = tuple(_service_part(b, c) for b in earlier.eff for c in later.eff if s.box_overlaps(b, c))
            text = self.services_text(overlap)
            found = self._shared_memo[key] = (text, not s.subtract(earlier.eff, later.eff))
        return found

    def services_text(self, overlap: Region) -> str:
        """services_of, memoised by what it reads (protocol, ports): thousands of
        conflicts share a few services."""
        if not self.shortcuts:
            return ", ".join(services_of(overlap)) or "some packets"
        key = tuple((b[s.PROTO], b[s.DPORT], b[s.SPORT]) for b in overlap)
        found = self._services_memo.get(key)
        if found is None:
            found = self._services_memo[key] = ", ".join(services_of(overlap)) or "some packets"
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

    def report_conflicts(self) -> None:
        """The conflicts whose later rule is the shard's own (shared ones: `shared_conflicts`)."""
        shard = self.shard
        for conflict in self.conflicts.values():
            later = conflict.later.ref
            assert later is not None
            if shard.shared(later):
                continue
            overlap, exception = self.shared(conflict.earlier, conflict.later)
            self.report_conflict(later, conflict.later.action, self.related_of(conflict.earlier), overlap, exception, conflict.chains)

    def shared_conflicts(self) -> dict[tuple[str, str], SharedConflict]:
        """What this shard saw of the conflicts whose later rule is shared."""
        out = {}
        for key, conflict in self.conflicts.items():
            later = conflict.later.ref
            if later is not None and self.shard.shared(later):
                overlap, exception = self.shared(conflict.earlier, conflict.later)
                out[key] = SharedConflict(conflict.first, conflict.chains, conflict.later.action, self.related_of(conflict.earlier), overlap, exception)
        return out

    def report_conflict(self, later: RuleRef, later_action: str, related: Related, overlap: str, exception: bool, chains: list[str]) -> None:
        same_scope = later.level == related.level and later.owner == related.owner
        severity = "warning" if same_scope and not exception else "info"
        shape = "an exception carved out of it" if exception else "a partial overlap"
        message = (
            f"partly decided by the earlier {related.action} rule {related.rule} ({related.where}), "
            f"{shape}: on {overlap} it {_PAST[related.action]} what this rule {_PRESENT[later_action]}"
        )
        chains = chains if len(chains) == 1 else sorted(set(chains))
        if len(chains) > 1 or later.level in ("global", "zone") or (later.level == "host" and not later.owner):
            message += _scope_text(later, chains)
        own = self._fields.get(later.id)
        if own is None:
            own = self._fields[later.id] = _rule_fields(later)
        self.findings.append(Finding("conflict", severity, message, **own, related=[related], chains=chains, details={"exception": exception, "overlap": overlap}))

    def report_exposure(self) -> None:
        """The management exposure of the shard's own rules (shared ones: after the merge)."""
        for stats in self.stats.values():
            if stats.exposure and not self.shard.shared(stats.ref):
                self.report_exposure_of(stats.ref, stats.exposure)

    def report_exposure_of(self, ref: RuleRef, exposure: dict[str, set[str]]) -> None:
        ports = sorted(exposure, key=lambda p: (p.split("/")[0], int(p.split("/")[1].split(" ")[0])))
        chains = sorted(set().union(*exposure.values()))
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
