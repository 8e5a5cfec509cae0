"""Proxmox security groups (`[group NAME]` in cluster.fw) -> zonewall's
`security_groups`, referenced from every rule list that uses them (issue 18).

A group is written once and referenced where it translates to the same rules in
every place it is used. It stays copied in place (the import report says why) where
that cannot be so: a rule of the group scoped to an interface (`-i`), or a name the group uses that
a guest defines for itself (Proxmox resolves aliases and IP sets in the guest's
file first, so the same group means other addresses there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..emit import Commented, Flow
from ..names import sanitize
from ..report import ImportFailure, Report
from .parse import FwFile, FwRule

# translate(rules, vm, vmid, guest, host_scope, report) -> the rules, as one_rule writes them
Translate = Callable[[list[FwRule], FwFile | None, int | None, Any, bool, Report], list[Commented]]


class SecurityGroups:
    """Which groups are referenced, and their definitions for the cluster document."""

    def __init__(self, cluster: FwFile, report: Report, translate: Translate) -> None:
        self.cluster, self.report, self.translate = cluster, report, translate
        self.definitions: dict[str, Commented] = {}  # zonewall name -> {comment, rules}
        self._alone: dict[str, tuple[Any, ...] | None] = {}  # group -> its rules in no guest's context (None: not portable)
        self._copied: set[tuple[str, int | None]] = set()  # (group, vmid) already reported as copied

    def reference(self, rule: FwRule, vm: FwFile | None, vmid: int | None, guest: Any, host_scope: bool) -> Commented | None:
        """The `{security_group: NAME}` entry for a GROUP line, or None: copy it in place."""
        name = rule.action.lower()
        group = self.cluster.groups[name]
        if any(inner.iface for inner in group.rules):
            self.copied(name, vmid, rule, "a rule of the group has -i")
            return None
        alone = self.alone(name)
        if alone is None or (vm is not None and _values(self.quiet(group.rules, vm, vmid, guest, host_scope)) != alone):
            self.copied(name, vmid, rule, "its names mean other addresses in this guest (aliases or IP sets of its own)" if alone is not None else "its rules cannot be written once for every place it is used")
            return None
        target = self.define(name)
        entry: dict[str, Any] = {"security_group": target}
        if rule.iface and host_scope:
            entry["interface"] = [rule.iface[:-1] + "*" if rule.iface.endswith("+") else rule.iface]
        elif rule.iface:
            if guest is None or guest.nic(rule.iface) is None:
                return None  # copied: each rule written disabled (never matches), as before
            entry["nic"] = [rule.iface]
        if not rule.enabled:
            entry["enabled"] = False
        return Commented(Flow(entry), f"from {rule.where}")

    def alone(self, name: str) -> tuple[Any, ...] | None:
        if name not in self._alone:
            self._alone[name] = _values(self.quiet(self.cluster.groups[name].rules, None, None, None, False))
        return self._alone[name]

    def quiet(self, rules: list[FwRule], vm: FwFile | None, vmid: int | None, guest: Any, host_scope: bool) -> list[Commented] | None:
        """The rules translated without reporting (a probe); None when they cannot be."""
        try:
            return self.translate(rules, vm, vmid, guest, host_scope, Report())
        except ImportFailure:
            return None

    def define(self, name: str) -> str:
        target = sanitize(name)
        if target not in self.definitions:
            group = self.cluster.groups[name]
            rules = self.translate(group.rules, None, None, None, False, self.report)
            self.definitions[target] = Commented({**({"comment": group.comment} if group.comment else {}), "rules": rules}, f"Proxmox security group {name} ({group.where})")
        return target

    def copied(self, name: str, vmid: int | None, rule: FwRule, why: str) -> None:
        if (name, vmid) not in self._copied:
            self._copied.add((name, vmid))
            self.report.note(rule.where, f"security group {name} copied into these rules, not referenced: {why}")


def _values(rules: list[Commented] | None) -> tuple[Any, ...] | None:
    """What translated rules say, without their comments (which name where they came from)."""
    if rules is None:
        return None
    return tuple(tuple(sorted((k, repr(v)) for k, v in item.value.items())) for item in rules)
