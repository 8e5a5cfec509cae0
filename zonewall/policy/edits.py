"""Targeted changes: edit the one document that defines a VM or zone.

A change finds the document whose `vms:` (or `zones:`) mapping defines the target
and edits its data; the document's text is then patched where the data differs
(yamlpatch.py), so its comments, blank lines and layout stay and the change can be
pulled into the operator's git checkout as a small diff. Every other document is
kept byte for byte. The result is validated as a whole by the caller, like an upload.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import yaml

from .documents import Documents
from .yamlpatch import PatchFailed, parse, patch

log = logging.getLogger("zonewall.policy.edits")


class ChangeError(ValueError):
    """The change cannot be made (unknown VM/zone/rule); nothing was changed."""

    def __init__(self, message: str, *, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Edited:
    documents: Documents
    document: str  # the name of the document that was rewritten
    summary: dict[str, Any]  # what was done, recorded in the revision


def _parse(text: str) -> Any:
    return parse(text)


def _dump(original: str, data: Any) -> str:
    """The original text patched to read as `data`; a plain dump if it cannot be (the
    meaning is right either way, only the comments would be lost)."""
    try:
        return patch(original, data)
    except PatchFailed as exc:
        log.warning("the edited document is written without its comments: %s", exc)
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=120)


KINDS = {"vms": "VM", "zones": "zone", "groups": "group"}


def owner(documents: Documents, section: str, name: str) -> tuple[str, dict[str, Any]]:
    """(document name, its parsed data) for the document defining `section.name`."""
    for document, text in documents.items():
        data = _parse(text)
        if isinstance(data, dict) and isinstance(data.get(section), dict) and name in data[section]:
            return document, data
    raise ChangeError(f"no {KINDS[section]} named {name!r} in the current policy")


def _edited(documents: Documents, document: str, data: Any, summary: dict[str, Any]) -> Edited:
    changed = dict(documents)
    changed[document] = _dump(documents[document], data)
    return Edited(changed, document, summary)


def _entry(data: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    entry = data[section][name]
    if entry is None:  # `zones: {dmz: }` is a zone with nothing set
        entry = data[section][name] = {}
    if not isinstance(entry, dict):
        raise ChangeError(f"{section}.{name} is not a mapping", status=409)
    return entry


def _rules(entry: dict[str, Any], where: str) -> list[Any]:
    rules = entry.get("rules")
    if rules is None:
        rules = entry["rules"] = []
    if not isinstance(rules, list):
        raise ChangeError(f"{where}.rules is not a list", status=409)
    return rules


def add_rule(documents: Documents, section: str, name: str, rule: dict[str, Any], position: int | None = None) -> Edited:
    """Insert `rule` into `section.name.rules` (at `position`, default: last).

    First match wins, so the position matters; the rule itself is validated with
    the whole policy afterwards.
    """
    document, data = owner(documents, section, name)
    rules = _rules(_entry(data, section, name), f"{section}.{name}")
    rule_id = rule.get("id")
    if rule_id is not None and any(isinstance(r, dict) and r.get("id") == rule_id for r in rules):
        raise ChangeError(f"{section}.{name} already has a rule with id {rule_id!r}", status=409)
    index = len(rules) if position is None else max(0, min(position, len(rules)))
    rules.insert(index, copy.deepcopy(rule))
    return _edited(documents, document, data, {"op": "add-rule", "target": f"{section}.{name}", "position": index, "rule": rule})


def remove_rule(documents: Documents, section: str, name: str, rule_id: str) -> Edited:
    """Remove the rule with this explicit `id` from `section.name.rules`."""
    document, data = owner(documents, section, name)
    entry = _entry(data, section, name)
    rules = _rules(entry, f"{section}.{name}")
    kept = [r for r in rules if not (isinstance(r, dict) and r.get("id") == rule_id)]
    if len(kept) == len(rules):
        raise ChangeError(f"{section}.{name} has no rule with id {rule_id!r} (only rules with an explicit id can be removed by id)")
    entry["rules"] = kept
    return _edited(documents, document, data, {"op": "remove-rule", "target": f"{section}.{name}", "id": rule_id})


def move_vm(documents: Documents, vm: str, zone: str | None) -> Edited:
    """Put a VM into another zone (None: no zone, only settings.default applies)."""
    document, data = owner(documents, "vms", vm)
    entry = _entry(data, "vms", vm)
    before = entry.get("zone")
    if zone is None:
        entry.pop("zone", None)
    else:
        entry["zone"] = zone
    return _edited(documents, document, data, {"op": "move-vm", "target": f"vms.{vm}", "from": before, "to": zone})


def replace_rules(documents: Documents, section: str, name: str, rules: list[Any]) -> Edited:
    """Make `section.name.rules` exactly `rules` (the dashboard's editor, PUT .../rules).
    Rules that stay keep their lines and comments in the document."""
    if not isinstance(rules, list):
        raise ChangeError("rules must be a list", status=422)
    document, data = owner(documents, section, name)
    entry = _entry(data, section, name)
    if rules:
        entry["rules"] = copy.deepcopy(rules)
    else:
        entry.pop("rules", None)
    return _edited(documents, document, data, {"op": "set-rules", "target": f"{section}.{name}", "rules": len(rules)})


def set_host(documents: Documents, vm: str, node: str) -> Edited:
    """The documents with `vms.VM.host` set to `node` (only the defining document changes)."""
    document, data = owner(documents, "vms", vm)
    entry = _entry(data, "vms", vm)
    before = entry.get("host")
    if before == node:
        raise ChangeError(f"VM {vm!r} is already on {node!r}", status=409)
    entry["host"] = node
    return _edited(documents, document, data, {"op": "migrate", "target": f"vms.{vm}", "from": before, "to": node})


def group_members(data: dict[str, Any], name: str) -> list[Any]:
    """A group's members, written as a list (`admins: [..]`) or a mapping with `members`."""
    entry = data["groups"][name]
    members = entry.get("members") if isinstance(entry, dict) else entry
    return list(members or []) if isinstance(members, list) else [members]


def replace_members(documents: Documents, group: str, members: list[Any]) -> Edited:
    """Make a group's members exactly `members` (its written form, list or mapping, stays)."""
    if not isinstance(members, list):
        raise ChangeError("members must be a list", status=422)
    document, data = owner(documents, "groups", group)
    if isinstance(data["groups"][group], dict):
        data["groups"][group]["members"] = copy.deepcopy(members)
    else:
        data["groups"][group] = copy.deepcopy(members)
    return _edited(documents, document, data, {"op": "set-members", "target": f"groups.{group}", "members": len(members)})
