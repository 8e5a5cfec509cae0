"""`zonewall diff OLD NEW`: the flows two policies treat differently.

Only what changed is evaluated. First, cheaply, which chains can behave differently
(diffscope.py; diffedits.py when only rules or group members differ): a VM whose own
definition, zone, global rules, defaults or referenced sets (groups, zones, services,
schedules...) changed; a node's host rules; a network's rules; a NIC's guard filters.
For each such chain the rules are aligned old against new (difflib): a packet outside
every rule that differs is decided identically by both, so only the union of the
differing rules' regions is evaluated, exactly, on both policies (differ.py). Where a
side's verdict differs, the peers on the other side (outside, nodes, VM NICs grouped
by behaviour as in `reach`) decide whether the whole flow differs. Renaming a group,
splitting a file or reordering rules without effect therefore reports nothing. The
rows are merged for reading in flowrows.py; the shortcuts taken on the way, each with
the computation it replaces, are listed in diffswitches.py.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

from ..policy.naming import names_any
from ..policy.resolve import Policy
from . import diffswitches as switches
from . import kept
from .approximations import approximations
from .diffedits import all_endpoints, group_edits, rule_edit_changes, rule_edits, same_sides
from .differ import Differ
from .diffscope import changed_chains, endpoint_changes
from .engine import Analyzer
from .flowrows import DiffResult, DiffRow, _merge_rows
from .peerclass import share_shapes
from .peers import lend_candidates
from .reach import NicKey

__all__ = ["DiffResult", "DiffRow", "diff_policies"]


def diff_policies(old: Policy, new: Policy, *, now: Any = None, timezone: str | None = None) -> DiffResult:
    a_old, a_new = kept.kept_analyzer(old, now, timezone) or Analyzer(old, now, timezone), Analyzer(new, now, timezone)
    edits = rule_edits(old, new)
    grouped = group_edits(old, new) if edits is None else None
    endpoints: list[dict[str, str]] = []  # NICs and nodes added, removed or readdressed
    common: AbstractSet[NicKey]
    if edits is not None:  # only rules of VMs and zones differ: the same NICs, addresses and names
        common = all_endpoints(old, new)
        # (steps lent only after an edit in place: once a line moved, the later owners' RuleRefs are new)
        replaced = new.rules_replaced_since(old)
        lend = switches.LEND_STEPS and replaced is not None
        a_new.share_meanings(a_old, steps=lend)
        if lend and switches.LEND_CANDIDATES:
            lend_candidates(a_new, a_old, (owner for level, owner in replaced or () if level == "vm"))
        changes = rule_edit_changes(a_old, a_new, edits)
    elif grouped is not None:  # only group members differ: the rules that name them
        common = all_endpoints(old, new)
        if switches.SHARE_UNNAMED:  # a rule naming no such group: one step region for both sides
            names = grouped.names  # (group references only: `names_any` is `uses` for them)
            a_new.share_unchanged_meanings(a_old, lambda rule: names_any(rule, names))
        else:
            a_new.share_addresses(a_old)
        changes = rule_edit_changes(a_old, a_new, grouped)
    else:
        endpoints, common = endpoint_changes(old, new)
        changes = changed_chains(a_old, a_new, common)
    runs = len(changes.receivers) + len(changes.senders) + len(changes.between) + 2 * len(changes.replies)
    edited = edits if edits is not None else grouped
    if edited is not None and switches.SHARE_SHAPES:
        share_shapes(a_new, a_old)  # (only rules or group members differ: the peers' shapes are the same)
    same_side = same_sides(a_old, a_new, edited) if edited is not None else None
    differ = Differ(a_old, a_new, common, shared_peers=runs > switches.SHARED_PEERS_FROM, same_side=same_side)
    if switches.ENDPOINT_CLASSES and differ.shared_peers and not differ.routing:
        differ.run_classes(changes.receivers, "receiver")
        differ.run_classes(changes.senders, "sender")
    else:
        for key, region in sorted(changes.receivers.items(), key=lambda kv: str(kv[0])):
            differ.run(key, region, "receiver")
        for key, region in sorted(changes.senders.items(), key=lambda kv: str(kv[0])):
            differ.run(key, region, "sender")
    for key, region in sorted(changes.between.items(), key=lambda kv: str(kv[0])):
        differ.run(key, region, "receiver", whole_flow=True)
    for key, region in sorted(changes.replies.items(), key=lambda kv: str(kv[0])):
        differ.run(key, region, "receiver", whole_flow=True)
        differ.run(key, region, "sender", whole_flow=True)
    if (grouped is not None and switches.SHARE_UNNAMED) or (edits is not None and switches.KEEP_AFTER_RULE_EDITS):
        kept.keep(a_new, now)  # for the next commit's diff, where `new` is the old policy (analysis/kept.py)
    rows = _merge_rows(list(differ.rows.values()) + differ.class_rows, differ.zone_labels)
    notes = sorted(set(differ.notes)) + [f"approximated: {w}" for w in approximations(new)]
    if endpoints:
        notes.append("flows to and from added, removed or readdressed endpoints are not compared; they are listed under endpoints")
    return DiffResult(rows, endpoints, notes)
