"""Which VMs' rules name a reference, by the reference.

A group member commit diffs the VMs whose rules name a group whose addresses changed
(analysis/diffedits.py `group_edits`). Finding them by scanning every VM's rules costs
~140 ms at 10,000 VMs (200,000 rules) on every such commit; the rules do not change
with a group's members, so the answer per reference text is made once per whole
load and carried with each group edit (policy/incremental.py) to the next policy.
The same index tells a group edit's validation which VMs' rules can name the group
(the family check of every rule naming it: a scan of 200,000 rules, ~50 ms).

Both ends of a rule count (`from` and `to`, whatever its direction), enabled or not,
each text as written and without its `!` and spaces: what `diff._uses` asks of a rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .addresses import parse_ref

if TYPE_CHECKING:
    from .model import Rule
    from .resolve import Policy

MEMO = "_naming_index"  # where a policy keeps it: reference text -> the VMs naming it


def vms_naming(policy: Policy, refs: set[str]) -> list[str]:
    """The VMs one of whose rules names one of `refs` (as written, or negated), in
    document order."""
    index = _index(policy)
    hits: set[str] = set()
    for ref in refs:
        hits |= index.get(ref, set())
    return [name for name in policy.doc.vms if name in hits] if hits else []


def names_any(rule: Rule, refs: frozenset[str] | set[str]) -> bool:
    """Whether the rule's `from` or `to` names one of `refs`, as written or negated
    (the reference half of `diff._uses`, asked of each rule a group edit's diff
    reads: without its service and schedule half, which a group edit never needs)."""
    for texts in (rule.from_, rule.to):
        if texts:
            for text in texts:
                if text in refs or text.lstrip("!").strip() in refs:
                    return True
    return False


def vms_naming_groups(policy: Policy, groups: set[str] | frozenset[str]) -> set[str]:
    """The VMs one of whose rules has a reference text that starts with `group:` and
    names one of `groups` (and perhaps some more VMs: a negated text is filed under
    its plain form too): the only VMs whose rules a group edit's family check reads
    (policy/incremental.py)."""
    hits: set[str] = set()
    for text, vms in _index(policy).items():
        if text.startswith("group:"):
            try:
                named = parse_ref(text).name in groups
            except ValueError:
                named = True  # (a loaded policy has none such; the caller reads its rules)
            if named:
                hits |= vms
    return hits


def _index(policy: Policy) -> dict[str, set[str]]:
    index: dict[str, set[str]] | None = policy.__dict__.get(MEMO)
    if index is None:
        index = policy.__dict__[MEMO] = _build(policy)
    return index


def _build(policy: Policy) -> dict[str, set[str]]:
    index: dict[str, set[str]] = {}
    for name, vm in policy.doc.vms.items():
        texts: set[str] = set()
        for rule in vm.rules:
            for refs in (rule.from_, rule.to):
                if refs:
                    texts.update(refs)
        for text in texts:
            for key in {text, text.lstrip("!").strip()}:
                found = index.get(key)
                if found is None:
                    index[key] = {name}
                else:
                    found.add(name)
    return index
