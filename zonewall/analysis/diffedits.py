"""The diff's shortcut for the controller's commonest commits: only the rules of some
VMs and zones differ (`rule_edits`), or only the members of some groups (`group_edits`).

Such a change touches those VMs' chains and their zones' levels alone, so the
whole-policy comparisons of diffscope.changed_chains are skipped, and a peer whose
side is the same in both policies is reduced and run once (`same_sides`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..policy.naming import vms_naming
from ..policy.resolve import Level, Policy
from . import diffswitches as switches
from .diffscope import Changes, ZoneDelta, aligned_change, resolves_differently, uses
from .engine import Analyzer
from .reach import NicKey


@dataclass(frozen=True)
class RuleEdits:
    """What differs between two policies when only rule lists of VMs and zones do."""

    vms: tuple[str, ...]  # VMs whose own `rules` differ
    zones: tuple[str, ...]  # zones whose `rules` differ
    names: frozenset[str] = frozenset()  # group_edits: the groups (`group:x`) whose addresses changed


def rule_edits(old: Policy, new: Policy) -> RuleEdits | None:
    """The VMs and zones whose `rules` are all that differs between the two
    policies, as written (YAML compared as data: a dict compare in C, positions
    ignored); None when anything else differs or the sources cannot tell. Rules
    mean nothing outside their own level (plan/chains.py: names, addresses, zone
    membership, guards, networks, nodes and translations are read from other keys),
    so such a change touches those VMs' chains and their zones' levels alone: the
    controller's commonest commit, diffed without the whole-policy comparisons of
    `changed_chains`."""
    a, b = old.source, new.source
    if not isinstance(a, dict) or not isinstance(b, dict) or a.keys() != b.keys():
        return None
    if any(a[key] != b[key] for key in a if key not in ("vms", "zones")):
        return None
    vms, zones = _edited_rules(a.get("vms"), b.get("vms")), _edited_rules(a.get("zones"), b.get("zones"))
    if vms is None or zones is None:
        return None
    if any(name not in p.doc.vms for name in vms for p in (old, new)) or any(name not in p.doc.zones for name in zones for p in (old, new)):
        return None
    return RuleEdits(tuple(vms), tuple(zones))


def group_edits(old: Policy, new: Policy) -> RuleEdits | None:
    """When only the members of some groups differ (as written) and only VM and zone
    rules name the groups whose addresses changed (or groups holding them): the VMs
    and zones whose rules name them, diffed as if those rules had been edited (their
    chains and zone levels alone, `rule_edit_changes`); None otherwise. This is
    `changed_chains` for that case without its whole-policy comparisons: what a group
    means can reach a flow only through a rule that names it."""
    a, b = old.source, new.source
    if not isinstance(a, dict) or not isinstance(b, dict) or a.keys() != b.keys() or "groups" not in a:
        return None
    if any(a[key] != b[key] for key in a if key != "groups"):
        return None
    edited = _edited_entries(a["groups"], b["groups"])
    if not edited:
        return None
    holders = {f"group:{name}" for name in _holders(old, edited) | _holders(new, edited)}
    changed = {ref for ref in holders if resolves_differently(old, new, ref)}
    if any(_names(b[key], changed) for key in b if key not in ("vms", "zones", "groups")):
        return None  # global, host, network or security group rules, NAT, management: the whole comparison
    vms = vms_naming(new, changed) if switches.NAMING_INDEX else [name for name, vm in new.doc.vms.items() if uses(vm.rules, changed)]
    zones = [name for name, zone in new.doc.zones.items() if uses(zone.rules, changed)]
    return RuleEdits(tuple(vms), tuple(zones), frozenset(changed))


def _edited_entries(old: Any, new: Any) -> set[str] | None:
    if not isinstance(old, dict) or not isinstance(new, dict) or old.keys() != new.keys():
        return None
    return {name for name in old if old[name] != new[name]}


def _holders(policy: Policy, names: set[str]) -> set[str]:
    """`names` and every group holding one of them, directly or through others."""
    out, grew = set(names), True
    while grew:
        grew = False
        for name, group in policy.doc.groups.items():
            if name not in out and any(ref.lstrip("!").strip() in {f"group:{n}" for n in out} for ref in group.members):
                out.add(name)
                grew = True
    return out


def _names(data: Any, refs: set[str]) -> bool:
    """Whether any string inside `data` (YAML as read) is one of `refs` (negated or not)."""
    if isinstance(data, str):
        return data.lstrip("!").strip() in refs
    if isinstance(data, dict):
        return any(_names(value, refs) for value in data.values())
    if isinstance(data, list):
        return any(_names(value, refs) for value in data)
    return False


def _edited_rules(old: Any, new: Any) -> list[str] | None:
    """The entries of two mappings (`vms:`, `zones:`) that differ in `rules` only;
    None when entries differ otherwise."""
    if old is None and new is None:
        return []
    if not isinstance(old, dict) or not isinstance(new, dict) or old.keys() != new.keys():
        return None
    edited = [name for name, body in old.items() if body != new[name]]
    for name in edited:
        x, y = old[name], new[name]
        if not isinstance(x, dict) or not isinstance(y, dict) or x.keys() - {"rules"} != y.keys() - {"rules"}:
            return None
        if any(x[key] != y[key] for key in x if key != "rules"):
            return None
    return edited


_ENDPOINTS = "_diff_endpoints"  # where a policy keeps its endpoints (its __dict__, as its other memos)


def all_endpoints(old: Policy, new: Policy) -> frozenset[NicKey]:
    """Every NIC and node of the policies when `rule_edits` or `group_edits` holds
    (the same in both): the old policy's, made by the previous commit's diff, is the
    new one's too (~10 ms at 10,000 VMs)."""
    found = old.__dict__.get(_ENDPOINTS)
    if found is None:
        found = frozenset({("vm", name, index) for name, vm in new.doc.vms.items() for index in range(len(vm.nics))}
                          | {("host", name, None) for name in new.doc.hosts})
    new.__dict__[_ENDPOINTS] = found
    return found


def rule_edit_changes(a_old: Analyzer, a_new: Analyzer, edits: RuleEdits) -> Changes:
    """`changed_chains` when only rules of VMs and zones differ: an edited VM's chains'
    aligned change, and for the other VMs of an edited zone the zone level's
    (`ZoneDelta`: their global and own levels and defaults are the same), on each
    of their NICs; nothing else can differ."""
    out = Changes()
    nics = lambda name: range(len(a_new.policy.doc.vms[name].nics))
    for name in edits.vms:
        changed_in = aligned_change(a_old.chains.vm(name, "in"), a_new.chains.vm(name, "in"))
        changed_out = aligned_change(a_old.chains.vm(name, "out"), a_new.chains.vm(name, "out"))
        for nic in nics(name):
            out.add(out.receivers, ("vm", name, nic), changed_in)
            out.add(out.senders, ("vm", name, nic), changed_out)
    zone_delta = ZoneDelta(a_old, a_new)
    edited = set(edits.vms)
    for zone in edits.zones:
        for name in a_new.policy.zone_members(zone):
            if name in edited:
                continue
            for nic in nics(name):
                out.add(out.receivers, ("vm", name, nic), zone_delta.region(name, zone, "in"))
                out.add(out.senders, ("vm", name, nic), zone_delta.region(name, zone, "out"))
    return out


def same_sides(a_old: Analyzer, a_new: Analyzer, edits: RuleEdits) -> Callable[[NicKey], bool]:
    """When only the rules of `edits`' VMs and zones differ: whether a peer's side
    (its chain for packets with the endpoint at the other end) is the same in both
    policies, so it is reduced and run once. A VM peer's side reads the global rules,
    its own, its zone's and everything that is not a rule (equal here); it is the
    same when none of those rules was edited and each kept its id and place (an added
    or removed line moves the default ids, `file:line`, of the rules after it)."""
    old, new = a_old.policy, a_new.policy
    if not switches.REUSE_SAME_SIDES or not _same_rules(old, new, "global", ""):
        return lambda _owner: False
    vms, zones = set(edits.vms), set(edits.zones)
    zone_same: dict[str, bool] = {}
    vm_same: dict[str, bool] = {}  # asked per (endpoint, peer): 50,000 times for a zone edit at 1,000 VMs
    # the owners whose rules may differ, when the new table was made from the old by
    # edits in place (every other VM's rules are the same: no per-VM comparison)
    replaced = new.rules_replaced_since(old)

    def same(owner: NicKey) -> bool:
        kind, name, _nic = owner
        if kind != "vm" or name in vms:
            return False
        found = vm_same.get(name)
        if found is None:
            found = vm_same[name] = _same_vm(name)
        return found

    def _same_vm(name: str) -> bool:
        zone = new.doc.vms[name].zone
        if zone:
            found = zone_same.get(zone)
            if found is None:
                found = zone_same[zone] = zone not in zones and _same_rules(old, new, "zone", zone)
            if not found:
                return False
        if replaced is not None and ("vm", name) not in replaced:
            return True
        return _same_rules(old, new, "vm", name)

    return same


def _same_rules(old: Policy, new: Policy, level: Level, owner: str) -> bool:
    return old.same_rules(new, level, owner)

