"""Which endpoints exist in both policies, and which chains may decide differently.

The cheap first step of diff.py: a VM whose own definition, zone, global rules,
defaults or referenced sets (groups, zones, services, schedules...) changed; a node's
host rules; a network's rules; a NIC's guard filters; the networks and nodes whose
routing or translations changed. Each such chain's rules are aligned old against new
(analysis/alignment.py), and only the union of the differing rules' regions is
evaluated later (differ.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from ..compiler.plan.nat import port_forwards, source_nats
from ..policy.model import Dnat
from ..policy.resolve import Policy
from . import space as s
from .alignment import changed_region
from .chains import Chain, Step
from .engine import Analyzer
from .guards import GuardStage
from .reach import NicKey
from .space import Region

# -- which endpoints exist in both ---------------------------------------------------


def _nic_keys(policy: Policy) -> dict[NicKey, tuple[str, tuple[str, ...]]]:
    out: dict[NicKey, tuple[str, tuple[str, ...]]] = {}
    for name, vm in policy.doc.vms.items():
        for index, nic in enumerate(vm.nics):
            out[("vm", name, index)] = (nic.network, tuple(sorted(nic.ips)))
    for name, host in policy.doc.hosts.items():
        out[("host", name, None)] = ("", tuple(sorted(host.address)))
    return out


def endpoint_changes(old: Policy, new: Policy) -> tuple[list[dict[str, str]], set[NicKey]]:
    a, b = _nic_keys(old), _nic_keys(new)
    changes, common = [], set()
    for key in sorted(set(a) | set(b), key=str):
        label = f"{key[0]}:{key[1]}" + (f" nic {key[2]}" if key[2] is not None else "")
        if key not in b:
            changes.append({"endpoint": label, "change": "removed"})
        elif key not in a:
            changes.append({"endpoint": label, "change": "added"})
        elif a[key] != b[key]:
            changes.append({"endpoint": label, "change": "readdressed", "old": " ".join(a[key][1]), "new": " ".join(b[key][1])})
        else:
            common.add(key)
    return changes, common


# -- which chains may differ -----------------------------------------------------------


def changed_names(old: Policy, new: Policy) -> set[str]:
    """References (`group:x`, `zone:y`, service/schedule names) whose meaning changed."""
    changed: set[str] = set()
    # VMs and zones are compared by definition first (a VM's addresses, a zone's
    # members): resolving every address set of two 10,000-VM policies costs more
    # than the rest of the diff. Only a definition that differs is resolved.
    readdressed = {name for name in old.doc.vms.keys() | new.doc.vms.keys() if _vm_ips(old, name) != _vm_ips(new, name)}
    changed.update(f"vm:{name}" for name in readdressed)
    for zone in old.doc.zones.keys() | new.doc.zones.keys():
        members_old, members_new = old.zone_members(zone), new.zone_members(zone)
        if sorted(members_old) != sorted(members_new) or readdressed.intersection(members_new):
            if resolves_differently(old, new, f"zone:{zone}"):
                changed.add(f"zone:{zone}")
    for kind, names in (("group", old.doc.groups.keys() | new.doc.groups.keys()), ("network", old.doc.networks.keys() | new.doc.networks.keys()),
                        ("host", old.doc.hosts.keys() | new.doc.hosts.keys())):
        for name in names:
            if resolves_differently(old, new, f"{kind}:{name}"):
                changed.add(f"{kind}:{name}")
    for name in old.doc.services.keys() | new.doc.services.keys():
        if old.doc.services.get(name) != new.doc.services.get(name):
            changed.add(f"service:{name}")
    for name in old.doc.schedules.keys() | new.doc.schedules.keys():
        if old.doc.schedules.get(name) != new.doc.schedules.get(name):
            changed.add(f"schedule:{name}")
    return changed


def _vm_ips(policy: Policy, name: str) -> tuple[tuple[str, ...], ...] | None:
    vm = policy.doc.vms.get(name)
    return None if vm is None else tuple(tuple(nic.ips) for nic in vm.nics)


def resolves_differently(old: Policy, new: Policy, ref: str) -> bool:
    try:
        return old.address_set([ref]) != new.address_set([ref])
    except KeyError:  # defined on one side only
        return True


def _same_source(old: Policy, new: Policy, *path: str) -> bool:
    """Whether both policies were written with equal YAML at `path` (a dict compare
    in C, where comparing the pydantic models costs ~2 us per rule). False when
    unsure: the caller then compares the models."""
    a, b = old.source, new.source
    for key in path:
        if not isinstance(a, dict) or not isinstance(b, dict) or key not in a or key not in b:
            return False
        a, b = a[key], b[key]
    return bool(a == b)


def uses(rules: Iterable[Any], changed: set[str]) -> bool:
    """Whether a rule names one of the `changed` references (a group change asks it
    of every rule of the cluster: 200,000 at 10,000 VMs, so nothing is built per rule)."""
    if not changed:
        return False
    named = any(ref.startswith(("service:", "schedule:")) for ref in changed)
    for rule in rules:
        for ref in chain(rule.from_ or (), rule.to or ()):
            if ref in changed or ref.lstrip("!").strip() in changed:
                return True
        if named and (any(f"service:{name}" in changed for name in rule.service or ()) or (rule.schedule and f"schedule:{rule.schedule}" in changed)):
            return True
    return False


def _routing_changes(old: Policy, new: Policy) -> set[str]:
    """Networks (and nodes) whose traffic the node routes, translates or serves
    differently: a changed mode, subnets, gateway or host_services; a node whose
    source translations, addresses or uplink changed."""
    out: set[str] = set()
    for name in old.doc.networks.keys() & new.doc.networks.keys():
        a, b = old.doc.networks[name], new.doc.networks[name]
        if (a.mode, a.subnets, a.gateway, a.host_services, a.bridge) != (b.mode, b.subnets, b.gateway, b.host_services, b.bridge):
            out.add(name)
    for node in old.doc.hosts.keys() & new.doc.hosts.keys():
        if old.doc.hosts[node] != new.doc.hosts[node] or source_nats(old, node) != source_nats(new, node) or port_forwards(old, node) != port_forwards(new, node):
            out.add(node)
    return out


def aligned_change(old: Chain | None, new: Chain | None) -> Region:
    """Packets the two chains may decide differently: the regions of the rules that
    do not line up (everything when the defaults differ)."""
    if old is None or new is None or old.default.action != new.default.action:
        return s.universe()
    return _aligned_steps(old.steps, new.steps)


def _aligned_steps(old: tuple[Step, ...], new: tuple[Step, ...]) -> Region:
    return changed_region(old, new)  # (difflib's alignment; analysis/alignment.py)


class ZoneDelta:
    """The aligned change of a zone's own rules, once per zone and direction.

    A VM whose definition, global rules and referenced names are unchanged has the
    same global and VM levels in both chains (the plan's order: global, VM, zone,
    default), so the aligned change of its whole chain lies within that of its
    zone's level: a zone rule edit costs the zone's steps once, not the chains of
    each of its VMs on both sides."""

    def __init__(self, a_old: Analyzer, a_new: Analyzer):
        self.a_old, self.a_new = a_old, a_new
        self._memo: dict[tuple[str, str], Region] = {}

    def region(self, vm: str, zone: str, direction: str) -> Region:
        if self.a_old.policy.default_action(vm, direction) != self.a_new.policy.default_action(vm, direction):
            return s.universe()
        key = (zone, direction)
        found = self._memo.get(key)
        if found is None:
            old, new = (tuple(a.chains.step(step) for step in a.plan.chains.level("zone", zone, direction).steps) for a in (self.a_old, self.a_new))
            found = self._memo[key] = _aligned_steps(old, new)
        return found


def _guard_change(old: GuardStage | None, new: GuardStage | None) -> Region:
    key = lambda g: None if g is None else tuple((n, tuple((r.region, r.action) for r in rules)) for n, rules in g.filters)
    return () if key(old) == key(new) else s.universe()


@dataclass
class Changes:
    receivers: dict[NicKey, Region] = field(default_factory=dict)
    senders: dict[NicKey, Region] = field(default_factory=dict)
    # receivers on an isolated network whose check changed: the network chain is on
    # the peer's side of the pair, so the whole flow is compared, not one side first
    between: dict[NicKey, Region] = field(default_factory=dict)
    # NICs whose guards changed: their flows in both roles, replies included
    replies: dict[NicKey, Region] = field(default_factory=dict)

    def add(self, table: dict[NicKey, Region], key: NicKey, region: Region) -> None:
        if region:
            table[key] = s.union(table.get(key, ()), region)


def changed_chains(a_old: Analyzer, a_new: Analyzer, common: AbstractSet[NicKey]) -> Changes:
    old, new = a_old.policy, a_new.policy
    changed = changed_names(old, new)
    global_changed = old.doc.global_rules != new.doc.global_rules or uses(new.doc.global_rules + old.doc.global_rules, changed)
    settings_changed = old.doc.settings.default != new.doc.settings.default
    zone_changed = {
        z for z in old.doc.zones.keys() | new.doc.zones.keys()
        if old.doc.zones.get(z) != new.doc.zones.get(z) or uses((old.doc.zones[z].rules if z in old.doc.zones else []) + (new.doc.zones[z].rules if z in new.doc.zones else []), changed)
    }
    filters_changed = old.doc.filters != new.doc.filters
    # what the node does around the chains: network modes, host services, NAT
    routing = _routing_changes(old, new)
    nat_changed = old.doc.nat != new.doc.nat
    forward_targets = {e.to.vm for p in (old, new) for e in p.doc.nat if isinstance(e, Dnat)}
    out = Changes()
    zone_delta = ZoneDelta(a_old, a_new)
    for key in common:
        kind, name, nic = key
        if (kind == "vm" and (new.doc.vms[name].nics[nic].network in routing or new.doc.vms[name].host in routing)) or (kind == "host" and (name in routing or nat_changed)):  # type: ignore[index]
            out.add(out.receivers, key, s.universe())
            out.add(out.senders, key, s.universe())
        if kind == "vm":
            assert nic is not None  # (a VM's key names its NIC)
            vo, vn = old.doc.vms[name], new.doc.vms[name]
            same_definition = _same_source(old, new, "vms", name) or (vo.rules == vn.rules and vo.default == vn.default and vo.zone == vn.zone)
            own_levels_same = not (
                global_changed or settings_changed or not same_definition or (nat_changed and name in forward_targets) or uses(vo.rules + vn.rules, changed)
            )
            if own_levels_same and vn.zone is not None and vn.zone in zone_changed:
                out.add(out.receivers, key, zone_delta.region(name, vn.zone, "in"))
                out.add(out.senders, key, zone_delta.region(name, vn.zone, "out"))
            elif not own_levels_same or vo.zone in zone_changed or vn.zone in zone_changed:
                out.add(out.receivers, key, aligned_change(a_old.chains.vm(name, "in"), a_new.chains.vm(name, "in")))
                out.add(out.senders, key, aligned_change(a_old.chains.vm(name, "out"), a_new.chains.vm(name, "out")))
            if filters_changed or old.nic_filters(name, nic) != new.nic_filters(name, nic) or vo.nics[nic].mac != vn.nics[nic].mac:
                changed_in = _guard_change(a_old.guards.stage(name, nic, "in"), a_new.guards.stage(name, nic, "in"))
                changed_out = _guard_change(a_old.guards.stage(name, nic, "out"), a_new.guards.stage(name, nic, "out"))
                out.add(out.receivers, key, changed_in)
                out.add(out.senders, key, changed_out)
                if changed_in or changed_out:
                    # guards are stateless: the replies of its connections (either way)
                    # cross the other direction's guards; the whole flows are compared
                    out.add(out.replies, key, s.universe())
        else:
            out.add(out.receivers, key, aligned_change(a_old.chains.host_in(name), a_new.chains.host_in(name)))
            out.add(out.senders, key, aligned_change(a_old.chains.host_out(name), a_new.chains.host_out(name)))
    # network checks: a change matters between two of its guests
    for network in old.doc.networks.keys() & new.doc.networks.keys():
        chain_old, chain_new = a_old.chains.network(network), a_new.chains.network(network)
        if chain_old is None and chain_new is None:
            continue
        region = aligned_change(chain_old, chain_new)
        if not region:
            continue
        for key in common:
            if key[0] == "vm" and new.doc.vms[key[1]].nics[key[2]].network == network:  # type: ignore[index]
                out.add(out.between, key, region)
    return out


