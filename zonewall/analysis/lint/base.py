"""The lint's shared state and the lookups every part uses (positions, related
entries, signatures)."""

from __future__ import annotations

from typing import Any

from ...policy.addresses import RefItem
from ...policy.resolve import Policy
from ...policy.source import LDict, LList
from ..chains import Step
from ..engine import Analyzer
from ..space import Region
from .cuts import _sig
from .report import Finding, Related
from .shards import Shard
from .state import _ChainState, _Conflict, _RuleStats, _Step


class LintBase:
    def __init__(self, analyzer: Analyzer, *, shortcuts: bool = True, shard: Shard | None = None):
        self.analyzer = analyzer
        self.shard = shard if shard is not None else Shard(0, 1)  # which chains and rules are this run's (shards.py)
        # shortcuts=False: the straightforward path (every rule's references and every
        # conflict's services judged on their own); the same findings, kept callable so
        # tests compare the two (tests/analysis/test_lint_shortcuts.py)
        self.shortcuts = shortcuts
        self.policy: Policy = analyzer.policy
        self.doc = self.policy.doc
        self.findings: list[Finding] = []
        self.stats: dict[str, _RuleStats] = {}
        self.surveyed: list[_ChainState] = []  # the chains analysed (survey)
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
        self._services_memo: dict[tuple[object, ...], str] = {}
        self._alive: list[Region] = []
        self._independent: dict[tuple[int, int], tuple[Region, bool]] = {}
        self._part_memo: dict[tuple[object, ...], tuple[list[_Step], bool]] = {}
        self._default_memo: dict[tuple[object, ...], Related] = {}
        self._related_memo: dict[str, Related] = {}
        self._parts: dict[tuple[str, str, str], list[Step]] = {}
        self._defaults: dict[str, Step] = {}
        self._step_memo: dict[tuple[str, int], _Step] = {}
        # (id of a plan step's matches, its window, the chain's restriction) -> (the
        # matches, region, effective region, signature, exposing?) of a VM's own rule
        self._shapes: dict[tuple[object, ...], tuple[object, Region, Region, int, bool]] = {}
        self._meets_of: dict[int, dict[int, bool]] = {}  # id(eff) -> the overlap memo of its steps
        self._essentials_step = Step(analyzer.essentials, "accept", "icmpv6-essentials")  # regions whose id() keys a memo
        self._fields: dict[str, dict[str, Any]] = {}  # rule id -> its findings' fields (conflicts: many per rule)
        self._empty_item: dict[str, str] = {}  # reference text -> its name when empty, else ""

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
