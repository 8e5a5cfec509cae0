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

Modules: `report.py` (findings, JSON), `table.py` (rich), `state.py` (per chain,
step, rule), `cuts.py` (region tools), `chains.py` (the plan's chains as the lint
sees them), `decisions.py` (dead, shadowed, redundant), `smells.py` (conflicts,
management exposure), `definitions.py` (empty references, unused definitions),
`linter.py` (the run), `shards.py` (a run split over processes: which chains and
rules each takes), `workers.py` (the processes and the merge).
"""

from __future__ import annotations

from .linter import _Linter, lint
from .report import KINDS, SCHEMA_VERSION, SEVERITIES, Finding, LintReport, Related
from .table import lint_table

__all__ = ["KINDS", "SCHEMA_VERSION", "SEVERITIES", "Finding", "LintReport", "Related", "_Linter", "lint", "lint_table"]
