"""`zonewall diff OLD NEW`: the flows two policies treat differently.

Only what changed is evaluated. First, cheaply, which chains can behave differently:
a VM whose own definition, zone, global rules, defaults or referenced sets (groups,
zones, services, schedules...) changed; a node's host rules; a network's
rules; a network's rules; a NIC's guard filters. For each such chain the rules are aligned old against
new (difflib): a packet outside every rule that differs is decided identically by
both, so only the union of the differing rules' regions is evaluated, exactly, on
both policies. Where a side's verdict differs, the peers on the other side (outside,
nodes, VM NICs grouped by behaviour as in `reach`) decide whether the whole flow
differs. Renaming a group, splitting a file or reordering rules without effect
therefore reports nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain
from typing import Any

from ..compiler.plan.modes import is_routed
from ..compiler.plan.nat import port_forwards, source_nats
from ..compiler.plan.switches import guard_filters
from ..policy.addresses import AddressSet
from ..policy.model import Dnat
from ..policy.naming import names_any, vms_naming
from ..policy.resolve import Level, Policy
from . import kept
from . import space as s
from .alignment import changed_region
from .approximations import approximations
from .chains import Chain, Step, essentials_region
from .describe import addresses_text, services_of, time_text
from .endpointclass import Member, Mine, alone, class_key, combined, loose_key, united
from .endpoints import Endpoint
from .engine import Analyzer, GuardOrChain, Outcome, Path
from .flowrows import DiffResult, DiffRow, Owner, _decisive_label, _differs, _final, _merge_rows
from .guards import GuardStage
from .peerclass import ClassedSides, both_sides_class, reply_class
from .peers import Effective, Key, PeerSides, PeerSpace, know_owners
from .peertemplate import Relabel, Sides, template_key
from .reach import NicKey, endpoint_addresses
from .space import Region
from .twins import twin_sides

Side = tuple[Endpoint, int | None]


# -- which endpoints exist in both ---------------------------------------------------


def _nic_keys(policy: Policy) -> dict[NicKey, tuple[str, tuple[str, ...]]]:
    out: dict[NicKey, tuple[str, tuple[str, ...]]] = {}
    for name, vm in policy.doc.vms.items():
        for index, nic in enumerate(vm.nics):
            out[("vm", name, index)] = (nic.network, tuple(sorted(nic.ips)))
    for name, host in policy.doc.hosts.items():
        out[("host", name, None)] = ("", tuple(sorted(host.address)))
    return out


def _endpoint_changes(old: Policy, new: Policy) -> tuple[list[dict[str, str]], set[NicKey]]:
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


def _changed_names(old: Policy, new: Policy) -> set[str]:
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
            if _resolves_differently(old, new, f"zone:{zone}"):
                changed.add(f"zone:{zone}")
    for kind, names in (("group", old.doc.groups.keys() | new.doc.groups.keys()), ("network", old.doc.networks.keys() | new.doc.networks.keys()),
                        ("host", old.doc.hosts.keys() | new.doc.hosts.keys())):
        for name in names:
            if _resolves_differently(old, new, f"{kind}:{name}"):
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


def _resolves_differently(old: Policy, new: Policy, ref: str) -> bool:
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


def _uses(rules: Iterable[Any], changed: set[str]) -> bool:
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


def _aligned_change(old: Chain | None, new: Chain | None) -> Region:
    """Packets the two chains may decide differently: the regions of the rules that
    do not line up (everything when the defaults differ)."""
    if old is None or new is None or old.default.action != new.default.action:
        return s.universe()
    return _aligned_steps(old.steps, new.steps)


def _aligned_steps(old: tuple[Step, ...], new: tuple[Step, ...]) -> Region:
    return changed_region(old, new)  # (difflib's alignment; analysis/alignment.py)


class _ZoneDelta:
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
class _Changes:
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
    `_changes`."""
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
    chains and zone levels alone, `_rule_edit_changes`); None otherwise. This is
    `_changes` for that case without its whole-policy comparisons: what a group
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
    changed = {ref for ref in holders if _resolves_differently(old, new, ref)}
    if any(_names(b[key], changed) for key in b if key not in ("vms", "zones", "groups")):
        return None  # global, host, network or security group rules, NAT, management: the whole comparison
    vms = vms_naming(new, changed) if NAMING_INDEX else [name for name, vm in new.doc.vms.items() if _uses(vm.rules, changed)]
    zones = [name for name, zone in new.doc.zones.items() if _uses(zone.rules, changed)]
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


def _all_endpoints(old: Policy, new: Policy) -> frozenset[NicKey]:
    """Every NIC and node of the policies when `rule_edits` or `group_edits` holds
    (the same in both): the old policy's, made by the previous commit's diff, is the
    new one's too (~10 ms at 10,000 VMs)."""
    found = old.__dict__.get(_ENDPOINTS)
    if found is None:
        found = frozenset({("vm", name, index) for name, vm in new.doc.vms.items() for index in range(len(vm.nics))}
                          | {("host", name, None) for name in new.doc.hosts})
    new.__dict__[_ENDPOINTS] = found
    return found  # type: ignore[no-any-return]


def _rule_edit_changes(a_old: Analyzer, a_new: Analyzer, edits: RuleEdits) -> _Changes:
    """`_changes` when only rules of VMs and zones differ: an edited VM's chains'
    aligned change, and for the other VMs of an edited zone the zone level's
    (`_ZoneDelta`: their global and own levels and defaults are the same), on each
    of their NICs; nothing else can differ."""
    out = _Changes()
    nics = lambda name: range(len(a_new.policy.doc.vms[name].nics))
    for name in edits.vms:
        changed_in = _aligned_change(a_old.chains.vm(name, "in"), a_new.chains.vm(name, "in"))
        changed_out = _aligned_change(a_old.chains.vm(name, "out"), a_new.chains.vm(name, "out"))
        for nic in nics(name):
            out.add(out.receivers, ("vm", name, nic), changed_in)
            out.add(out.senders, ("vm", name, nic), changed_out)
    zone_delta = _ZoneDelta(a_old, a_new)
    edited = set(edits.vms)
    for zone in edits.zones:
        for name in a_new.policy.zone_members(zone):
            if name in edited:
                continue
            for nic in nics(name):
                out.add(out.receivers, ("vm", name, nic), zone_delta.region(name, zone, "in"))
                out.add(out.senders, ("vm", name, nic), zone_delta.region(name, zone, "out"))
    return out


def _changes(a_old: Analyzer, a_new: Analyzer, common: set[NicKey]) -> _Changes:
    old, new = a_old.policy, a_new.policy
    changed = _changed_names(old, new)
    global_changed = old.doc.global_rules != new.doc.global_rules or _uses(new.doc.global_rules + old.doc.global_rules, changed)
    settings_changed = old.doc.settings.default != new.doc.settings.default
    zone_changed = {
        z for z in old.doc.zones.keys() | new.doc.zones.keys()
        if old.doc.zones.get(z) != new.doc.zones.get(z) or _uses((old.doc.zones[z].rules if z in old.doc.zones else []) + (new.doc.zones[z].rules if z in new.doc.zones else []), changed)
    }
    filters_changed = old.doc.filters != new.doc.filters
    # what the node does around the chains: network modes, host services, NAT
    routing = _routing_changes(old, new)
    nat_changed = old.doc.nat != new.doc.nat
    forward_targets = {e.to.vm for p in (old, new) for e in p.doc.nat if isinstance(e, Dnat)}
    out = _Changes()
    zone_delta = _ZoneDelta(a_old, a_new)
    for key in common:
        kind, name, nic = key
        if (kind == "vm" and (new.doc.vms[name].nics[nic].network in routing or new.doc.vms[name].host in routing)) or (kind == "host" and (name in routing or nat_changed)):  # type: ignore[index]
            out.add(out.receivers, key, s.universe())
            out.add(out.senders, key, s.universe())
        if kind == "vm":
            vo, vn = old.doc.vms[name], new.doc.vms[name]
            same_definition = _same_source(old, new, "vms", name) or (vo.rules == vn.rules and vo.default == vn.default and vo.zone == vn.zone)
            own_levels_same = not (
                global_changed or settings_changed or not same_definition or (nat_changed and name in forward_targets) or _uses(vo.rules + vn.rules, changed)
            )
            if own_levels_same and vn.zone is not None and vn.zone in zone_changed:
                out.add(out.receivers, key, zone_delta.region(name, vn.zone, "in"))
                out.add(out.senders, key, zone_delta.region(name, vn.zone, "out"))
            elif not own_levels_same or vo.zone in zone_changed or vn.zone in zone_changed:
                out.add(out.receivers, key, _aligned_change(a_old.chains.vm(name, "in"), a_new.chains.vm(name, "in")))
                out.add(out.senders, key, _aligned_change(a_old.chains.vm(name, "out"), a_new.chains.vm(name, "out")))
            if filters_changed or old.nic_filters(name, nic) != new.nic_filters(name, nic) or vo.nics[nic].mac != vn.nics[nic].mac:  # type: ignore[arg-type]
                changed_in = _guard_change(a_old.guards.stage(name, nic, "in"), a_new.guards.stage(name, nic, "in"))  # type: ignore[arg-type]
                changed_out = _guard_change(a_old.guards.stage(name, nic, "out"), a_new.guards.stage(name, nic, "out"))  # type: ignore[arg-type]
                out.add(out.receivers, key, changed_in)
                out.add(out.senders, key, changed_out)
                if changed_in or changed_out:
                    # guards are stateless: the replies of its connections (either way)
                    # cross the other direction's guards; the whole flows are compared
                    out.add(out.replies, key, s.universe())
        else:
            out.add(out.receivers, key, _aligned_change(a_old.chains.host_in(name), a_new.chains.host_in(name)))
            out.add(out.senders, key, _aligned_change(a_old.chains.host_out(name), a_new.chains.host_out(name)))
    # network checks: a change matters between two of its guests
    for network in old.doc.networks.keys() & new.doc.networks.keys():
        chain_old, chain_new = a_old.chains.network(network), a_new.chains.network(network)
        if chain_old is None and chain_new is None:
            continue
        region = _aligned_change(chain_old, chain_new)
        if not region:
            continue
        for key in common:
            if key[0] == "vm" and new.doc.vms[key[1]].nics[key[2]].network == network:  # type: ignore[index]
                out.add(out.between, key, region)
    return out


# -- evaluation --------------------------------------------------------------------------


def _partition(a: list[tuple[Region, Outcome]], b: list[tuple[Region, Outcome]], differing: bool = False) -> Iterable[tuple[Region, Outcome, Outcome]]:
    """The parts where a piece of `a` meets one of `b`; `differing`: only those whose
    outcomes differ (the others' intersections not made: most pairs of two sides)."""
    for ra, oa in a:
        for rb, ob in b:
            if differing and ONLY_DIFFERING and not _differs(oa, ob):
                continue
            if s.overlaps(ra, rb):
                both = s.intersect(ra, rb)
                if both:
                    yield both, oa, ob


def _same_sides(a_old: Analyzer, a_new: Analyzer, edits: RuleEdits) -> Callable[[NicKey], bool]:
    """When only the rules of `edits`' VMs and zones differ: whether a peer's side
    (its chain for packets with the endpoint at the other end) is the same in both
    policies, so it is reduced and run once. A VM peer's side reads the global rules,
    its own, its zone's and everything that is not a rule (equal here); it is the
    same when none of those rules was edited and each kept its id and place (an added
    or removed line moves the default ids, `file:line`, of the rules after it)."""
    old, new = a_old.policy, a_new.policy
    if not REUSE_SAME_SIDES or not _same_rules(old, new, "global", ""):
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


class _Differ:
    def __init__(self, a_old: Analyzer, a_new: Analyzer, common: set[NicKey] | frozenset[NicKey], *, shared_peers: bool = False,
                 same_side: Callable[[NicKey], bool] | None = None):
        self.a_old, self.a_new, self.common = a_old, a_new, common
        self.same_side = same_side or (lambda _owner: False)  # a peer whose side is the same in both policies
        # many endpoints to compare (a zone's VMs): each peer's side built once, whole,
        # for all of them, rather than filtered for each (the same outcomes: the
        # filter only leaves out steps no packet of the space can meet)
        self.shared_peers = shared_peers
        self.rows: dict[tuple[object, ...], DiffRow] = {}
        self.class_rows: list[DiffRow] = []  # a class's rows: several members' labels each (_add_pending)
        self._owners: dict[tuple[str, str], Owner] = {}
        self._outside: dict[tuple[int, s.Intervals], set[str]] = {}
        self._guarded: dict[tuple[object, ...], bool] = {}  # _replies_guarded's answers
        # a peer's class for its replies (its network, node and guard filters in both
        # policies: all `reply_guards` reads of it), when its side was classed
        self._reply_class: dict[NicKey, tuple[object, ...]] = {}
        self._labels: dict[NicKey, str] = {}
        self._splits: dict[tuple[NicKey, str, NicKey], bool] = {}
        # no network the nodes route (all bridged): every flow splits into its two
        # sides (paths.splits), so no peer is asked (10,000 of them for a rule open to all)
        self.routing = any(is_routed(a.policy, name) for a in (a_old, a_new) for name in a.policy.doc.networks)
        self._labelled: dict[tuple[object, ...], tuple[list[NicKey], set[str]]] = {}
        self._owned: dict[tuple[int, s.Intervals], frozenset[NicKey]] = {}
        self._group_labels: dict[int, tuple[list[NicKey], frozenset[NicKey], set[str], dict[str, list[NicKey]]]] = {}  # id(peers) -> _group_of
        self.essentials = essentials_region()
        self._narrow: dict[tuple[tuple[tuple[int, int], ...], ...], AddressSet | None] = {}
        self.notes: list[str] = []

    @cached_property
    def cluster(self) -> AddressSet:
        """Every address of either policy's VMs and nodes (built only if a flow differs)."""
        return self.a_old.directory.cluster.union(self.a_new.directory.cluster)

    def label(self, key: NicKey) -> str:
        found = self._labels.get(key)
        if found is None:
            kind, name, nic = key
            if kind == "vm" and len(self.a_new.policy.doc.vms[name].nics) > 1:
                found = f"vm:{name}@{self.a_new.policy.doc.vms[name].nics[nic].network}"  # type: ignore[index]
            else:
                found = f"{kind}:{name}"
            self._labels[key] = found
        return found

    def _member_labels(self, members: list[NicKey], family: int, intervals: s.Intervals) -> set[str]:
        """The labels of the members with an address inside the intervals (a group's
        rows ask it of the same addresses box after box: 10,000 peers' at a rule
        open to everyone). The members are kept with the answer: their id stays theirs."""
        memo_key = (id(members), len(members), family, intervals)
        found = self._labelled.get(memo_key)
        if found is None or found[0] is not members:
            found = self._labelled[memo_key] = (members, self._labels_within(members, family, intervals))
        return found[1]  # (read only: rows take a union of it)

    def _labels_within(self, members: list[NicKey], family: int, intervals: s.Intervals) -> set[str]:
        # the same addresses are asked of many groups of peers (each box of a class's
        # rows): their owners found once; a group wholly inside them (most: a rule open
        # to everyone) answered with all its labels, made once per group
        owned = self._owned.get((family, intervals))
        if owned is None:
            owned = self._owned[family, intervals] = frozenset(self.a_new.directory.owners_within(family, intervals))
        known = self._group_labels.get(id(members))
        if known is None or known[0] is not members:
            known = self._group_labels[id(members)] = self._group_of(members)
        _members, as_set, labels, shared = known
        left_out = as_set - owned
        if not left_out:
            return labels
        if len(left_out) * 2 > len(as_set):
            return {self.label(m) for m in as_set & owned}
        # a few left out (the addresses an earlier rule took out): the labels but theirs,
        # unless another NIC with the same label is in (two NICs on one network)
        gone = {self.label(m) for m in left_out}
        if shared:
            gone = {label for label in gone if not any(m in owned for m in shared.get(label, ()))}
        return labels - gone

    def _group_of(self, members: list[NicKey]) -> tuple[list[NicKey], frozenset[NicKey], set[str], dict[str, list[NicKey]]]:
        """A group of peers, as a set, their labels and the labels several of them share."""
        keys_of: dict[str, list[NicKey]] = {}
        for m in members:
            keys_of.setdefault(self.label(m), []).append(m)
        shared = {label: keys for label, keys in keys_of.items() if len(keys) > 1}
        return members, frozenset(members), set(keys_of), shared

    def side_stages(self, analyzer: Analyzer, key: NicKey, role: str, peer: AddressSet | None = None) -> tuple[GuardOrChain, ...]:
        endpoint = Endpoint(key[0], key[1])  # type: ignore[arg-type]
        return analyzer.receiver_stages(endpoint, key[2], peer) if role == "receiver" else analyzer.sender_stages(endpoint, key[2], peer)

    def narrow_peer(self, space: Region, peer_dim: int) -> AddressSet | None:
        """The other ends `space` holds, when they leave out part of the cluster: an
        endpoint's side built for them alone decides them exactly as its whole side
        (ChainBuilder.vm), without the steps of rules no packet of the space can meet.
        A group member's commit changes the flows of the group's few addresses through
        500 zone VMs' chains of ~14 own rules each: the rules naming other peers need
        no match keys built (their address sets resolved) on either policy. None: the
        space reaches every address of the cluster, where the whole side is built once."""
        if not NARROW_SIDES:
            return None
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for box in space:
            (v4 if box[s.FAM][0][0] == 4 else v6).extend(box[peer_dim])
        key = (tuple(v4), tuple(v6))
        if key in self._narrow:
            return self._narrow[key]
        found = AddressSet.of(v4, v6)
        peer = None if self.cluster.minus(found).is_empty() else found
        for analyzer in (self.a_old, self.a_new) if peer is not None else ():
            know_owners(analyzer, peer)
        self._narrow[key] = peer
        return peer

    def run(self, key: NicKey, region: Region, role: str, whole_flow: bool = False) -> None:
        """Flows of `key` (as receiver or sender) in `region` that the policies treat differently."""
        found = self._own_delta(key, region, role, whole_flow)
        if found is not None:
            own, delta = found
            self._peers(alone(key, own, delta, s.DST if role == "receiver" else s.SRC), role, whole_flow, shared=self.shared_peers)

    def run_classes(self, regions: dict[NicKey, Region], role: str) -> None:
        """`run` for every endpoint of `regions`, the peers compared once per class of
        endpoints whose changed sides they cannot tell apart (analysis/endpointclass.py)."""
        own_dim = s.DST if role == "receiver" else s.SRC
        classes: dict[Hashable, list[Member]] = {}
        for key, region in sorted(regions.items(), key=lambda kv: str(kv[0])):
            found = self._own_delta(key, region, role, False)
            if found is None:
                continue
            own, delta = found
            network = guards = None
            if key[0] == "vm":
                network = self.a_new.policy.doc.vms[key[1]].nics[key[2]].network  # type: ignore[index]
                guards = tuple(tuple(guard_filters(a.policy, key[1], key[2])) for a in (self.a_old, self.a_new))  # type: ignore[arg-type]
            class_of = class_key(key, role, network, guards, own, delta, own_dim, self.cluster)
            member = Member(key, own, delta)
            classes.setdefault(class_of if class_of is not None else ("alone", key), []).append(member)
        peer_dim = s.SRC if role == "receiver" else s.DST
        kin: dict[Hashable, list[Hashable]] = {}  # classes alike but for which peers their pieces hold
        for class_of in classes:
            loose = loose_key(class_of, peer_dim) if UNITED_CLASSES and class_of[0] != "alone" else None  # type: ignore[index]
            kin.setdefault(loose if loose is not None else ("apart", class_of), []).append(class_of)
        for kept_together in kin.values():
            if len(kept_together) > 1:
                mines = [combined(classes[class_of], own_dim, self.cluster) for class_of in kept_together]
                self._peers(united(mines, own_dim), role, False, shared=False, per_piece=True, classes_within=mines)
                continue
            members = classes[kept_together[0]]
            first = members[0]
            mine = combined(members, own_dim, self.cluster) if len(members) > 1 else alone(first.key, first.own, first.delta, own_dim)
            self._peers(mine, role, False, shared=False, per_piece=True)

    def _own_delta(self, key: NicKey, region: Region, role: str, whole_flow: bool) -> tuple[dict[int, s.Intervals], list[tuple[Region, Outcome, Outcome]]] | None:
        """The endpoint's addresses and where its own side decides differently (with
        the flows to and from outside recorded, and the peers' whole flows where they
        do not split); None: nothing of it differs."""
        own_dim, peer_dim = (s.DST, s.SRC) if role == "receiver" else (s.SRC, s.DST)
        own = endpoint_addresses(self.a_new, Endpoint(key[0], key[1]), key[2])  # type: ignore[arg-type]
        space = s.subtract(region, self.essentials)
        space = tuple(b for b in (s.box_restrict(box, own_dim, own.get(box[s.FAM][0][0], ())) for box in space) if b is not None)
        if not space:
            return None
        peer = self.narrow_peer(space, peer_dim)
        stages_old, stages_new = twin_sides(self.side_stages(self.a_old, key, role, peer), self.side_stages(self.a_new, key, role, peer))
        old_side = list(self.a_old.run(stages_old, space))
        new_side = list(self.a_new.run(stages_new, space))
        self.whole_flows(key, role, space)
        delta = [(r, o, n) for r, o, n in _partition(old_side, new_side, differing=not whole_flow) if _differs(o, n) or whole_flow]
        if not delta:
            return None
        # peers outside: nothing of ours on their side
        for region_d, o, n in delta:
            outside = tuple(b for b in (s.box_restrict(box, peer_dim, s.iv_subtract(box[peer_dim], self.cluster.v4 if box[s.FAM][0][0] == 4 else self.cluster.v6)) for box in region_d) if b is not None)
            if outside:
                self.record(key, role, None, outside, o, n)
        return own, delta

    def _peers(self, mine: Mine, role: str, whole_flow: bool, *, shared: bool, per_piece: bool = False, classes_within: list[Mine] | None = None) -> None:
        """The flows between `mine` (an endpoint or a class of them) and the peers in the
        cluster, in the pieces where its own side decides differently. `classes_within`:
        `mine` unites these classes of endpoints (`united`): the peers run once for all,
        and each class's rows are made of the parts within its own pieces."""
        key, pieces = mine.key, mine.pieces
        peer_dim = s.SRC if role == "receiver" else s.DST
        receiver_first = role == "receiver"
        signatures: dict[NicKey, set[int]] = {}
        for index, r in enumerate(pieces):
            found: list[NicKey] = []
            for family in (4, 6):
                values = s.family_projection(r, peer_dim, family)
                if values:
                    found.extend(self.a_new.directory.owners_within(family, values))
            for owner in dict.fromkeys(found):  # (in order of address, as the peers' groups are made)
                if owner not in self.common or (mine.single and owner[1] == key[1] and owner[0] == key[0]):
                    continue
                if self.split(key, role, owner):
                    signatures.setdefault(owner, set()).add(index)
        sides = [self._peer_sides(a, key, role, mine.addresses, pieces, peer_dim, shared) for a in (self.a_old, self.a_new)]
        reducers = [found[0] for found in sides]
        classes = [found[1] for found in sides]
        # key -> the first peer's sides, the peers, the pieces they meet, each peer's sides
        groups: dict[tuple[object, ...], tuple[tuple[GuardOrChain, ...], tuple[GuardOrChain, ...], list[NicKey], tuple[int, ...], list[Sides]]] = {}
        class_groups: dict[tuple[object, ...], tuple[tuple[object, ...], Sides]] = {}  # a class of peers -> the key of its group, its sides
        # a class of endpoints: peers whose sides differ in their rules' names alone (each
        # VM's own `reject tcp 25`) run as one template, relabelled where they decide
        templated = per_piece and not mine.single and PEER_TEMPLATES
        # a class of endpoints: each piece on its own, so a peer's rule that meets only
        # one piece (a VM's `reject tcp 25`, in every peer) keeps it from sharing the others
        units = ((owner, (index,)) for owner, indexes in signatures.items() for index in sorted(indexes)) if per_piece else \
            ((owner, tuple(sorted(indexes))) for owner, indexes in signatures.items())
        for owner, signature in units:
            same = self.same_side(owner)
            replies = reply_class(owner, classes, same) if PEER_CLASSES else None
            if replies is not None:
                self._reply_class[owner] = replies
            peer_class = both_sides_class(owner, classes, same, signature) if PEER_CLASSES else None
            if peer_class is not None:
                known = class_groups.get(peer_class)
                if known is not None:  # its sides are its class's (analysis/peerclass.py): nothing of it to reduce
                    groups[known[0]][2].append(owner)
                    groups[known[0]][4].append(known[1])
                    continue
            addresses = endpoint_addresses(self.a_new, Endpoint(owner[0], owner[1]), owner[2])  # type: ignore[arg-type]
            own_region = PeerSpace(pieces, signature, addresses, peer_dim)
            before = reducers[0](owner, signature, own_region)
            stages = [before, before if same else reducers[1](owner, signature, own_region)]
            assert stages[0] is not None and stages[1] is not None, (key, owner)  # self.split
            shapes = (template_key(*stages[0]), template_key(*stages[1])) if templated else (None, None)
            if shapes[0] is not None and shapes[1] is not None:
                group_key = (owner[0], signature, shapes[0], shapes[1], stages[1] is stages[0], "template")
            else:
                group_key = (owner[0], signature, stages[0][1], stages[1][1])
            sides = (stages[0][0], stages[1][0])
            if group_key in groups:
                groups[group_key][2].append(owner)
                groups[group_key][4].append(sides)
            else:
                groups[group_key] = (stages[0][0], stages[1][0], [owner], signature, [sides])
            if peer_class is not None and all(c is None or c.settled(owner, signature) for c in (classes[0], None if same else classes[1])):
                class_groups[peer_class] = (group_key, sides)
        by_owner = self.a_new.directory.addresses
        # who takes the rows: the class, or each class `mine` unites, each with its rows of
        # every member (_record_members' pending); the facts of a group of peers (whether a
        # guard sees their replies) are one class's for all: the classes `mine` unites
        # share their network and guard filters (endpointclass.loose_key)
        replied: dict[int, tuple[list[NicKey], bool, set[str]]] = {}
        audiences: list[tuple[Mine, Pending]] = [(mine, {}) for mine in classes_within] if classes_within else [(mine, {})]
        united_classes = classes_within is not None

        def deliver(index: int, peers: list[NicKey], part: Region, po: Outcome, pn: Outcome) -> None:
            for audience, pending in audiences:
                own_part = s.intersect(part, audience.pieces[index]) if united_classes else part
                if own_part:
                    self._record_members(audience, index, role, peers, own_part, po, pn, replied, pending)

        for stages_old, stages_new, members, signature, members_sides in groups.values():
            addresses: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
            for member in members:
                for family, points in by_owner(member).items():
                    addresses[family].extend((v, v) for v in points)
            merged = {f: s.merge(v) for f, v in addresses.items()}
            cells = [None] if mine.single else mine.cells(chain(stages_old, stages_new), self.essentials)
            for index, cell in ((index, cell) for index in signature for cell in cells):
                sub = tuple(b for b in (s.box_restrict(box, peer_dim, merged[box[s.FAM][0][0]]) for box in pieces[index]) if b is not None)
                if cell is not None:  # a class of endpoints: cell by cell (Mine.cells)
                    sub = tuple(b for b in (s.box_restrict(box, mine.own_dim, cell.get(box[s.FAM][0][0], ())) for box in sub) if b is not None)
                if not sub:
                    continue
                peer_old = list(self.a_old.run(stages_old, sub))
                peer_new = peer_old if stages_new is stages_old else list(self.a_new.run(stages_new, sub))  # the same side: run once
                relabel = Relabel(stages_old, stages_new, members, members_sides) if templated else None
                for part, po, pn in _partition(peer_old, peer_new):
                    if relabel is not None and not relabel.alike:
                        _region, o, n = mine.members[0].delta[index]
                        if _differs(_final(po, o, receiver_first), _final(pn, n, receiver_first)) is None:
                            continue  # no member's flows differ: the verdicts are every peer's of the template
                        for po_j, pn_j, members_j in relabel.split(po, pn):
                            deliver(index, members_j, part, po_j, pn_j)
                        continue
                    if mine.single:
                        _region, o, n = mine.members[0].delta[index]
                        final_old, final_new = _final(po, o, receiver_first), _final(pn, n, receiver_first)
                        if whole_flow or _differs(final_old, final_new):  # (record judges the replies)
                            self.record(key, role, members, part, final_old, final_new)
                        continue
                    deliver(index, members, part, po, pn)
        for audience, pending in audiences:
            if pending:
                self._add_pending(audience, role, pending)

    def _record_members(self, mine: Mine, index: int, role: str, peers: list[NicKey], part: Region, po: Outcome, pn: Outcome,
                        replied: dict[int, tuple[list[NicKey], bool, set[str]]], pending: Pending) -> None:
        """`record` for each member of a class of endpoints with an address in `part`:
        its own outcomes, its own addresses, its peers but itself."""
        receiver_first = role == "receiver"
        # the members' own outcomes differ in their stages' names only, their guards
        # not at all (endpointclass.class_key): whether the flows differ, and which
        # peers' replies a guard sees, are the first member's answers
        first = mine.members[0]
        _region, o, n = first.delta[index]
        change = _differs(_final(po, o, receiver_first), _final(pn, n, receiver_first))
        if change is None:
            return  # (most parts: the peer's own rule refuses where the member's did)
        facts = replied.get(id(peers))
        if facts is None or facts[0] is not peers:  # once per group of peers (kept with it: its id stays its own)
            facts = replied[id(peers)] = (peers, any(self._replies_guarded(first.key, role, p) for p in peers), {p[1] for p in peers if p[0] == "vm"})
        _peers, guarded, peer_vms = facts
        if not guarded:
            # the members' rows of a box are the same but for their own outcomes: the
            # box's peers are gathered with the other parts' of the same rows and the
            # same members (a handful of address sets), each member's rows made once
            final_old, final_new = _final(po, o, receiver_first), _final(pn, n, receiver_first)
            old_label, new_label = _decisive_label(final_old), _decisive_label(final_new)
            for box, (services, when, labels) in zip(part, self._described(part, role, peers)):
                if not labels:
                    continue
                family = box[s.FAM][0][0]
                entry_key = (index, change, old_label, new_label, services, when, family, box[mine.own_dim])
                entry = pending.get(entry_key)
                if entry is None:
                    pending[entry_key] = (po, pn, set(labels))
                else:
                    entry[2].update(labels)
            return
        # a guard sees some peer's replies: each member's flows the general way (`record` judges the replies)
        own_parts: dict[int, tuple[Member, list[s.Box]]] = {}
        for box in part:
            for member, narrowed in mine.members_in(box):
                own_parts.setdefault(id(member), (member, []))[1].append(narrowed)
        for member, boxes in own_parts.values():
            _region, o, n = member.delta[index]
            final_old, final_new = _final(po, o, receiver_first), _final(pn, n, receiver_first)
            kind, name, _nic = member.key
            others = [p for p in peers if p[1] != name or p[0] != kind] if kind == "vm" and name in peer_vms else peers
            if others:
                self.record(member.key, role, others, tuple(boxes), final_old, final_new)

    def _add_pending(self, mine: Mine, role: str, pending: Pending) -> None:
        """The class's rows of the parts that held every member: one row per part for
        the members with an address in it, with the first one's outcomes (the members'
        differ in their names only) and the part's peers, its members among them:
        flowrows merges rows alike but for their names, and takes each member's own
        labels out of its peers."""
        receiver_first = role == "receiver"
        owners = {self.label(m.key): self._owner(m.key) for m in mine.members}
        for (index, change, _o, _n, services, when, family, own), (po, pn, labels) in pending.items():
            members = mine.members_within(family, own)  # type: ignore[arg-type]
            if not members:
                continue
            _region, o, n = members[0].delta[index]  # type: ignore[index]
            row = DiffRow(change, services=services, when=when, old=_final(po, o, receiver_first), new=_final(pn, n, receiver_first),  # type: ignore[arg-type]
                          role=role, named=self._owner(members[0].key)[0], owners=owners)
            own_labels = {self.label(m.key) for m in members}
            row.src, row.dst = (labels, own_labels) if receiver_first else (own_labels, labels)
            self.class_rows.append(row)

    def _owner(self, key: NicKey) -> Owner:
        """The endpoint's name as its stages carry it, and all its labels (a VM's NICs)."""
        kind, name, _nic = key
        found = self._owners.get((kind, name))
        if found is None:
            labels = frozenset(self.label((kind, name, i)) for i in range(len(self.a_new.policy.doc.vms[name].nics))) if kind == "vm" else frozenset({self.label(key)})
            found = self._owners[kind, name] = (f"{kind}:{name}", labels)
        return found

    def _peer_sides(self, analyzer: Analyzer, key: NicKey, role: str, own_addresses: AddressSet, pieces: list[Region],
                    peer_dim: int, shared: bool) -> tuple[PeerReducer, ClassedSides | None]:
        """How `analyzer` gives a peer's side, reduced to what `pieces` can meet, and
        the peers' classes when it sorts them (analysis/peerclass.py)."""
        if not shared:  # few endpoints (a rule of one VM open to many peers): from pieces the peers share, as reach
            sides = PeerSides(analyzer, key, role, own_addresses, pieces, peer_dim, grouped=GROUPED_PEERS)
            if GROUPED_PEERS and PEER_CLASSES:
                classes = ClassedSides(sides)
                return classes.reduced, classes
            return sides.reduced, None
        effective = Effective()  # many endpoints (a zone's VMs): each peer's whole side, built once for all of them

        def whole(owner: NicKey, signature: tuple[int, ...], own_region: PeerSpace) -> tuple[tuple[GuardOrChain, ...], Key] | None:
            found = analyzer.paths.peer_side(key, role, owner, None)
            return effective.reduce(found, signature, pieces, own_region, peer_dim) if found is not None else None

        return whole, None

    def split(self, key: NicKey, role: str, owner: NicKey) -> bool:
        """Whether flows between the two split into their two sides in both policies
        (asked of every peer by `whole_flows` and again by `run`: answered once)."""
        if not self.routing:
            return True
        memo_key = (key, role, owner)
        found = self._splits.get(memo_key)
        if found is None:
            found = self._splits[memo_key] = all(a.paths.splits(key, role, owner) is not None for a in (self.a_old, self.a_new))
        return found

    def whole_flows(self, key: NicKey, role: str, space: Region) -> None:
        """Peers whose flows with `key` do not split into two sides (a translated
        source, a routed guest and its own node): the whole flows, both policies."""
        if not self.routing:
            return  # every flow splits
        peer_dim = s.SRC if role == "receiver" else s.DST
        owners: set[NicKey] = set()
        for family in (4, 6):
            values = s.family_projection(space, peer_dim, family)
            if values:
                owners.update(o for o in self.a_new.directory.owners_within(family, values) if o in self.common and o[:2] != key[:2])
        for owner in sorted((o for o in owners if not self.split(key, role, o)), key=str):
            addresses = endpoint_addresses(self.a_new, Endpoint(owner[0], owner[1]), owner[2])  # type: ignore[arg-type]
            sub = tuple(b for b in (s.box_restrict(box, peer_dim, addresses.get(box[s.FAM][0][0], ())) for box in space) if b is not None)
            if not sub:
                continue
            flow = (owner, key) if role == "receiver" else (key, owner)
            old = list(self.a_old.run(self.a_old.paths.flow(*flow), sub))
            new = list(self.a_new.run(self.a_new.paths.flow(*flow), sub))
            for part, o, n in _partition(old, new, differing=True):
                if _differs(o, n):
                    self.record(key, role, [owner], part, o, n)

    def path(self, key: NicKey, role: str, peer: NicKey | None) -> Path:
        me = Endpoint(key[0], key[1])  # type: ignore[arg-type]
        other = Endpoint(peer[0], peer[1]) if peer is not None else Endpoint("outside", "outside")  # type: ignore[arg-type]
        other_nic = peer[2] if peer is not None else None
        return Path(other, me, other_nic, key[2]) if role == "receiver" else Path(me, other, key[2], other_nic)

    def record(self, key: NicKey, role: str, members: list[NicKey] | None, region: Region, old: Outcome, new: Outcome) -> None:
        """Rows for the flows of `region` that the policies treat differently, their
        replies judged too (guards are stateless: an accepted connection whose
        replies a guard drops fails, in each policy on its own)."""
        peers: list[NicKey | None] = list(members) if members is not None else [None]
        replying = [p for p in peers if self._replies_guarded(key, role, p)]
        if not replying:
            return self._record(key, role, members, region, old, new)
        rest = [p for p in peers if p not in replying]
        if rest:
            self._record(key, role, rest if members is not None else None, region, old, new)  # type: ignore[arg-type]
        peer_dim = s.SRC if role == "receiver" else s.DST
        for peer in replying:
            sub = region
            if peer is not None:
                addresses = endpoint_addresses(self.a_new, Endpoint(peer[0], peer[1]), peer[2])  # type: ignore[arg-type]
                sub = tuple(b for b in (s.box_restrict(box, peer_dim, addresses.get(box[s.FAM][0][0], ())) for box in region) if b is not None)
            path = self.path(key, role, peer)
            before = [(r, o) for r, o, note in self.a_old.with_replies(path, sub, old)]
            after = []
            for r, o, note in self.a_new.with_replies(path, sub, new):
                after.append((r, o))
                if note is not None:
                    self.notes.append(note)
            for part, o, n in _partition(before, after):
                self._record(key, role, [peer] if peer is not None else None, part, o, n)

    def _replies_guarded(self, key: NicKey, role: str, peer: NicKey | None) -> bool:
        """Whether a guard in either policy sees the replies of the flows between `key`
        and `peer` (asked once per pair: a peer's rows are recorded piece by piece)."""
        reply_class = self._reply_class.get(peer) if peer is not None else None
        memo_key = (key, role, peer) if reply_class is None else (key, role, reply_class)
        found = self._guarded.get(memo_key)
        if found is None:
            path = self.path(key, role, peer)
            found = self._guarded[memo_key] = any(a.reply_guards(path) for a in (self.a_old, self.a_new))
        return found

    def _record(self, key: NicKey, role: str, members: list[NicKey] | None, region: Region, old: Outcome, new: Outcome) -> None:
        """Rows for `region`, if the two outcomes differ."""
        change = _differs(old, new)
        if change is not None:
            self._add_rows(key, role, change, self._described(region, role, members), old, new)

    def _described(self, part: Region, role: str, peers: list[NicKey] | None) -> list[tuple[tuple[str, ...], str, set[str]]]:
        """What a row reads of each box: its services, its time, its peers' labels
        (`peers` None: outside addresses)."""
        peer_dim = s.SRC if role == "receiver" else s.DST
        out = []
        for box in part:
            family = box[s.FAM][0][0]
            out.append((tuple(services_of((box,))), time_text(box[s.TIME]),
                        self._member_labels(peers, family, box[peer_dim]) if peers is not None else self._outside_labels(family, box[peer_dim])))
        return out

    def _outside_labels(self, family: int, values: s.Intervals) -> set[str]:
        """(every member of a zone asks it of the same outside: answered once; read only)"""
        found = self._outside.get((family, values))
        if found is None:
            found = self._outside[family, values] = self._outside_text(family, values)
        return found

    def _outside_text(self, family: int, values: s.Intervals) -> set[str]:
        peers = set(addresses_text(family, values))
        peers = {f"outside:{p}" for p in peers} if len(peers) < 6 else {f"outside ({len(values)} ranges)"}
        cluster = self.cluster.v4 if family == 4 else self.cluster.v6
        if values == s.iv_subtract(((0, s.ADDRESS_MAX[family]),), cluster):
            peers = {f"outside: any ipv{family}"}
        return peers

    def _add_rows(self, key: NicKey, role: str, change: str, described: list[tuple[tuple[str, ...], str, set[str]]], old: Outcome, new: Outcome) -> None:
        """The rows of `key`'s flows with the peers of each box described."""
        me = self.label(key)
        old_label, new_label = _decisive_label(old), _decisive_label(new)
        owner = self._owner(key)
        for services, when, peers in described:
            if not peers:
                continue
            row_key = (change, me, role, services, when, old_label, new_label)
            row = self.rows.get(row_key)
            if row is None:
                row = self.rows[row_key] = DiffRow(change, services=services, when=when, old=old, new=new, role=role, named=owner[0], owners={me: owner})
            if role == "receiver":
                row.dst.add(me)
                row.src |= peers
            else:
                row.src.add(me)
                row.dst |= peers


SHARED_PEERS_FROM = 8  # endpoints compared; a one-VM edit (2) keeps the filtered, cheaper sides
GROUPED_PEERS = True  # below SHARED_PEERS_FROM: peers' sides from shared pieces (False: each built and reduced)
REUSE_SAME_SIDES = True  # after a rule edit: a peer whose side is the same in both policies reduced and run once (False: twice)
KEEP_AFTER_RULE_EDITS = True  # rule edits: the new side's analyzer kept for the next commit's old side too (analysis/kept.py; False: group edits only)
SHARE_UNNAMED = True  # group edits: rules naming no edited group read through the old policy's matches (False: each side's own)
NAMING_INDEX = True  # group edits: the VMs naming a group from policy/naming.py's index (False: every VM's rules scanned)
ONLY_DIFFERING = True  # an endpoint's own sides: only pieces whose outcomes differ intersected (False: every pair)
ENDPOINT_CLASSES = True  # many endpoints, no routed network: the peers compared once per class of endpoints (analysis/endpointclass.py; False: per endpoint)
UNITED_CLASSES = True  # with ENDPOINT_CLASSES: classes alike but for the peers their pieces hold compared with the peers once (False: each class)
PEER_TEMPLATES = True  # with ENDPOINT_CLASSES: peers' sides alike but for their rules' names run once (analysis/peertemplate.py; False: apart)
NARROW_SIDES = True  # an endpoint's own side built for the other ends its changed space holds (False: whole)
PEER_CLASSES = True  # with GROUPED_PEERS: peers of one shape reduced once (analysis/peerclass.py; False: each peer)
Pending = dict[tuple[object, ...], tuple[Outcome, Outcome, set[str]]]  # (piece, change, decisions, services, time) -> a sample part's peer outcomes, the peers
PeerReducer = Callable[[NicKey, tuple[int, ...], PeerSpace], "tuple[tuple[GuardOrChain, ...], Key] | None"]


def diff_policies(old: Policy, new: Policy, *, now: Any = None, timezone: str | None = None) -> DiffResult:
    a_old, a_new = kept.kept_analyzer(old, now, timezone) or Analyzer(old, now, timezone), Analyzer(new, now, timezone)
    edits = rule_edits(old, new)
    grouped = group_edits(old, new) if edits is None else None
    if edits is not None:  # only rules of VMs and zones differ: the same NICs, addresses and names
        endpoints, common = [], _all_endpoints(old, new)
        a_new.share_meanings(a_old)
        changes = _rule_edit_changes(a_old, a_new, edits)
    elif grouped is not None:  # only group members differ: the rules that name them
        endpoints, common = [], _all_endpoints(old, new)
        if SHARE_UNNAMED:  # a rule naming no such group: one step region for both sides
            names = grouped.names  # (group references only: `names_any` is `_uses` for them)
            a_new.share_unchanged_meanings(a_old, lambda rule: names_any(rule, names))
        else:
            a_new.share_addresses(a_old)
        changes = _rule_edit_changes(a_old, a_new, grouped)
    else:
        endpoints, common = _endpoint_changes(old, new)
        changes = _changes(a_old, a_new, common)
    runs = len(changes.receivers) + len(changes.senders) + len(changes.between) + 2 * len(changes.replies)
    edited = edits if edits is not None else grouped
    same_side = _same_sides(a_old, a_new, edited) if edited is not None else None
    differ = _Differ(a_old, a_new, common, shared_peers=runs > SHARED_PEERS_FROM, same_side=same_side)
    if ENDPOINT_CLASSES and differ.shared_peers and not differ.routing:
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
    if (grouped is not None and SHARE_UNNAMED) or (edits is not None and KEEP_AFTER_RULE_EDITS):
        kept.keep(a_new, now)  # for the next commit's diff, where `new` is the old policy (analysis/kept.py)
    rows = _merge_rows(list(differ.rows.values()) + differ.class_rows)
    notes = sorted(set(differ.notes)) + [f"approximated: {w}" for w in approximations(new)]
    if endpoints:
        notes.append("flows to and from added, removed or readdressed endpoints are not compared; they are listed under endpoints")
    return DiffResult(rows, endpoints, notes)
