"""The lint run: every chain of the plan analysed exactly, then the findings.

A run is split into shards (shards.py), each a process (workers.py) but the first,
which is this one: each analyses its chains and reports its own rules; the rules
several shards saw are merged and reported here. A run of one shard is the whole
policy in this process.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ...gcpause import collector_paused
from ..engine import Analyzer
from .chains import ChainViews
from .decisions import Decisions, Judging
from .definitions import Definitions
from .report import Finding, LintReport, Related
from .shards import MIN_VMS_PER_SHARD, SharedConflict, SharedStats, plan_shards
from .smells import Smells

MAX_JOBS = 8


class _Linter(ChainViews, Decisions, Smells, Definitions):
    """One shard's share of a run (all of it for a run of one shard)."""

    def survey(self) -> tuple[dict[str, SharedStats], dict[tuple[str, str], SharedConflict]]:
        """The definitions (shard 0), every chain of the shard, and every finding of its
        own rules but redundancy's; what it saw of shared rules and their conflicts."""
        self.check_empty_refs()
        if self.shard.takes_nodes:
            self.check_unused()
        self.surveyed = chains = list(self.all_chains())  # all built, then all analysed: faster than in turn (7.2-7.4 s against 7.6-8.8 s at 10,000 VMs, one process)
        for chain in chains:
            self.analyse_chain(chain)
        self.removed = self.report_chains()
        self.report_conflicts()
        self.report_exposure()
        shard = self.shard
        return {key: SharedStats.of(stats) for key, stats in self.stats.items() if shard.shared(stats.ref)}, self.shared_conflicts()

    def judging(self, removed_shared: set[str], order: list[tuple[tuple[int, ...], str]]) -> Judging:
        """The redundancy walk (Decisions.redundancy), knowing which shared rules never decide."""
        self.removed |= removed_shared
        return self.redundancy(self.removed, order)

    def conclude(self, redundant: dict[str, list[Related]]) -> None:
        """The redundant findings of the shard's own rules."""
        for rule_id, takers in redundant.items():
            stats = self.stats[rule_id]
            self.report_redundant(stats.ref, sorted(stats.chain_names()), takers)

    def run(self) -> LintReport:
        """The whole run in this process (a shard of one)."""
        assert self.shard.count == 1
        self.survey()
        self.conclude(drive(self.judging(set(), []), lambda answer: True))
        self.release()
        self.findings.sort(key=Finding.sort_key)
        return LintReport(self.findings)

    def release(self) -> None:
        """Let the analysis go with the linter. A chain's steps name their rules'
        stats, whose placements name the chain: a cycle through every chain, which
        only a full collection would free (the lint pauses the collector, and what it
        leaves is moved to the oldest generation: ~400 MB kept at 10,000 VMs). The
        chains are read no more after this."""
        for chain in self.surveyed:
            chain.steps.clear()


def drive(walk: Judging, decide: Callable[[tuple[bool, dict[str, Related]]], bool]) -> dict[str, list[Related]]:
    """Run a redundancy walk to its end, `decide` answering each shared rule."""
    try:
        answer = next(walk)
        while True:
            answer = walk.send(decide(answer))
    except StopIteration as stop:
        return stop.value


def default_jobs() -> int:
    """The CPUs this process may use (at most MAX_JOBS); 1 where processes cannot fork."""
    if not hasattr(os, "fork"):
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, MAX_JOBS))


def lint(analyzer: Analyzer, *, shortcuts: bool = True, jobs: int | None = None, per_shard: int = MIN_VMS_PER_SHARD) -> LintReport:
    """Lint the analyzer's policy: findings sorted by file and line. `shortcuts=False`
    takes the straightforward path (the same findings, slower: for tests). `jobs`:
    processes at most (None: one per CPU), one per `per_shard` VMs at most; the
    findings are the same whatever the number."""
    # The analysis makes millions of small tuples, and its only cycles are broken as
    # it ends (_Linter.release): the cyclic GC would rescan the whole policy again and
    # again for nothing (as when compiling, it is paused). What it leaves (the
    # findings, the analyzer's memos) is kept: moved to the oldest generation on the
    # way out, or the first collection after it walks all of it (1.0-1.7 s at 10,000 VMs).
    with collector_paused(long_lived=True):
        shards = plan_shards(analyzer.policy, default_jobs() if jobs is None else jobs, per_shard)
        if len(shards) == 1:
            return _Linter(analyzer, shortcuts=shortcuts).run()
        from .workers import run_shards  # (forks: only for a run of several)

        return run_shards(analyzer, shards, shortcuts)
