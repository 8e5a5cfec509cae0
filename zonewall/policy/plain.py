"""The read document as pydantic is given it: plain dicts and lists, each rule line
written several times validated once.

Large policies repeat their rules: the same `{direction: in, action: accept, service:
ssh, from: group:admins}` under a thousand VMs (80 % of a synthetic 10,000-VM policy's
rule lines are repeats). Validating a `Rule` is context-free (its validators read the
rule alone; the cross-references are the checker's), so a line validated alone at its
second occurrence serves every later line with the same text: pydantic takes a `Rule`
instance in a `list[Rule]` as it is. Rules are frozen, so VMs sharing one is only
fewer objects. A line's first occurrence stays a dict, validated with the document (a
policy whose lines all differ pays no validation call per rule), and so does every
occurrence of a line that does not validate: the document's validation reports each
where it stands, as before.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .model import Rule
from .source import LDict

# sections whose entries (by name) carry `rules`, and the top-level rule lists (as
# Policy._rule_table reads them); rules anywhere else stay dicts, validated with the
# document: a section missing here loses only the sharing
_OWNER_SECTIONS = frozenset({"hosts", "networks", "zones", "vms", "security_groups"})
_RULE_LISTS = frozenset({"global_rules", "host_rules"})
_ONCE, _INVALID = "met once", "does not validate"  # (a line's state in _Rules, beside its Rule)


def plain_data(value: Any) -> Any:
    """LDict/LList -> dict/list (pydantic must not see the location attributes);
    policy/incremental.py validates edited lines through it as the whole load does."""
    # scalars are taken as they are, without a call each (a policy has millions)
    if isinstance(value, dict):
        return {k: plain_data(v) if isinstance(v, (dict, list)) else v for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def plain_document(data: LDict) -> dict[str, Any]:
    """`plain_data(data)`, but with a validated `Rule` for each rule whose line's text
    was validated before (and validates)."""
    rules = _Rules()
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _RULE_LISTS:
            out[key] = rules.plain(value)
        elif key in _OWNER_SECTIONS and isinstance(value, dict):
            out[key] = {name: _plain_owner(body, rules) for name, body in value.items()}
        else:
            out[key] = plain_data(value)
    return out


def _plain_owner(body: Any, rules: _Rules) -> Any:
    if not isinstance(body, dict):
        return plain_data(body)
    return {k: rules.plain(v) if k == "rules" else plain_data(v) if isinstance(v, (dict, list)) else v for k, v in body.items()}


class _Rules:
    """Rule line text -> how its lines are given to pydantic: `_ONCE` for a line met
    once (given as a dict, validated with the document, as any line written once),
    then its `Rule`, or `_INVALID` where it does not validate (a dict again: the
    document's validation reports each place)."""

    def __init__(self) -> None:
        self.known: dict[str, Rule | str] = {}

    def plain(self, items: Any) -> Any:
        if not isinstance(items, list):
            return plain_data(items)
        return [self.rule(item) for item in items]

    def rule(self, item: Any) -> Any:
        text = item.flow_text() if isinstance(item, LDict) else None
        if text is None:
            return plain_data(item)
        known = self.known.get(text)
        if known is None:
            self.known[text] = _ONCE
            return plain_data(item)
        if known is _ONCE:  # the second time: validated alone, for this place and every later one
            data = plain_data(item)
            try:
                known = self.known[text] = Rule.model_validate(data)
            except ValidationError:
                self.known[text] = _INVALID
                return data
        return known if known is not _INVALID else plain_data(item)

