"""The lint run: every chain of the plan analysed exactly, then the findings."""

from __future__ import annotations

import gc

from ..engine import Analyzer
from .chains import ChainViews
from .decisions import Decisions
from .definitions import Definitions
from .report import Finding, LintReport, _related_sort, _rule_fields, _scope_text
from .smells import Smells


class _Linter(ChainViews, Decisions, Smells, Definitions):
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


def lint(analyzer: Analyzer, *, shortcuts: bool = True) -> LintReport:
    """Lint the analyzer's policy: findings sorted by file and line. `shortcuts=False`
    takes the straightforward path (the same findings, slower: for tests)."""
    # The analysis makes millions of small tuples and no cycles: the cyclic GC would
    # rescan the whole policy again and again (as when compiling, it is paused).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Linter(analyzer, shortcuts=shortcuts).run()
    finally:
        if was_enabled:
            gc.enable()
