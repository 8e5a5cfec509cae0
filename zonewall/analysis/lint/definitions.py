"""Definitions: references that resolve to no address, and groups, services,
filters, schedules, zones and networks nothing uses."""

from __future__ import annotations

from ...policy.addresses import RefItem, parse_ref
from ...policy.builtins import BUILTIN_SERVICES
from .base import LintBase
from .report import Finding, _related_rule, _rule_fields, _rules_never_apply


class Definitions(LintBase):
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

    def empty_sides(self, from_: list[str] | None, to: list[str] | None) -> tuple[list[str], list[str], list[str]]:
        """(problems, empty sides, empty references named) of a rule's `from` and `to`."""
        problems: list[str] = []
        empty_side: list[str] = []
        names: list[str] = []
        for key, refs in (("from", from_), ("to", to)):
            if refs is None:
                continue
            items = self.empty_items(refs)
            names += items
            if self.policy.address_set(refs).is_empty():
                empty_side.append(key)
                problems.append(f"`{key}` resolves to no address" + (f" ({', '.join(items)} {'is' if len(items) == 1 else 'are'} empty)" if items else ""))
            elif items:
                problems.append(f"`{key}` refers to {', '.join(items)}, which {'has' if len(items) == 1 else 'have'} no address")
        return problems, empty_side, names

    def check_empty_refs(self) -> None:
        """The shard's own rules' references (shard 0: the shared rules' too, and the
        groups' and settings')."""
        policy, shard = self.policy, self.shard
        every_rule = shard.count == 1
        judged: dict[tuple[tuple[str, ...] | None, tuple[str, ...] | None], tuple[list[str], list[str], list[str]]] = {}
        for ref in policy.rules:
            if not every_rule and not shard.owns(ref) and not (shard.takes_nodes and shard.shared(ref)):
                continue
            rule = ref.rule
            # rules repeat their `from`/`to` (templates, one VM's rules per VM): judged once
            sides = (None if rule.from_ is None else tuple(rule.from_), None if rule.to is None else tuple(rule.to))
            found = judged.get(sides) if self.shortcuts else None
            if found is None:
                found = judged[sides] = self.empty_sides(rule.from_, rule.to)
            problems, empty_side, names = found
            if not problems:
                continue
            if empty_side and rule.enabled:
                self.empty_sided.add(ref.id)
            severity = "warning" if empty_side else "info"
            message = "; ".join(problems) + (": the rule can never match" if empty_side else "")
            self.findings.append(Finding("empty-ref", severity, message, **_rule_fields(ref), details={"refs": list(names), "empty": list(empty_side)}))
        if not shard.takes_nodes:
            return
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
        for name in doc.zones:
            if name in populated:
                continue
            rules = [r for r in self.policy.rules_of("zone", name) if r.rule.enabled]
            tail = f": {_rules_never_apply(len(rules))}" if rules else ""
            self.findings.append(
                Finding("unused", "info", f"zone {name} has no VMs{tail}", where=self.key_where(("zones", name)), object=f"zone:{name}", related=[_related_rule(r) for r in rules])
            )
            self.unused_owner.add(("zone", name))
        # network rules: only networks with guests have the chain
        for name in doc.networks:
            rules = [r for r in self.policy.rules_of("network", name) if r.rule.enabled]
            if not rules:
                continue
            if self.network_guests(name).is_empty():
                message = f"network {name} has no guest addresses: {_rules_never_apply(len(rules))}"
            else:
                continue
            self.findings.append(Finding("unused", "warning", message, where=self.key_where(("networks", name)), object=f"network:{name}", related=[_related_rule(r) for r in rules]))
            self.unused_owner.add(("network", name))
