"""Cross-reference checks and the resolved policy the compiler and analyzer read.

Everything that can be wrong across keys is found here: dangling references, cycles,
duplicates, addresses outside their network, family mismatches. Problems are
collected (not raised one by one) so the operator sees all of them at once.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Literal

from .addresses import (
    AddressSet,
    AddressSyntaxError,
    Interval,
    RefItem,
    address_value,
    interval_of,
    parse_literal,
    parse_ref,
)
from .builtins import BUILTIN_FILTER_INCLUDES, BUILTIN_FILTERS, BUILTIN_SERVICES, ICMP_V4_TYPES, ICMP_V6_TYPES
from .checks_dataplane import check_dataplane, overlap_refused, tenant_of
from .errors import Loc, Problem, format_path
from .model import VM, Nic, PolicyDocument, Rule, Service
from .source import LList, locate

if TYPE_CHECKING:
    from .ruletable import RuleTable

Level = Literal["global", "vm", "zone", "host", "network", "security_group"]
# rule lists that may reference a security group (issue 18), and where a rule may be
# scoped to NICs (a VM's own rules) or node interfaces (host rules)
GROUP_USERS: tuple[str, ...] = ("global", "vm", "zone", "host")
MAC_FILTERS = ("no-mac-spoofing", "no-arp-mac-spoofing", "qemu-announce-self", "qemu-announce-self-rarp")


@dataclass(frozen=True)
class RuleRef:
    """A rule with where it lives: its level, owner, position and stable id."""

    rule: Rule
    level: Level  # global (global_rules), vm, zone, host (host_rules or a host's own), network
    owner: str  # vm/zone/network/host name; "" for global_rules and host_rules
    index: int
    id: str
    path: tuple[object, ...]
    loc: Loc | None

    @property
    def where(self) -> str:
        return f"{self.loc.file}:{self.loc.line}" if self.loc else format_path(self.path)


ELEMENTS_MEMO = "_elements_memo"  # addresses written as nft elements (compiler/matches.SetRegistry)
MATCHES_MEMO = "_matches_memo"  # rule match keys -> plan matches (compiler/plan/rules.RulePlanner)


class Policy:
    """A validated policy with its references resolved."""

    def __init__(self, doc: PolicyDocument, source: Any):
        self.doc = doc
        self.source = source
        # address_set() memo: the document is immutable and AddressSets are frozen,
        # and compiling asks for the same reference lists over and over.
        self._address_sets: dict[tuple[str, ...], AddressSet] = {}

    def build_indexes(self) -> None:
        """Build the whole-policy indexes that queries share (every rule with its id
        and position, grouped by owner; zone membership). The loader calls this, so a
        trace or a compile on a loaded policy pays only for what it asks about; and the
        VM rules by the references of their other end (policy/ownrules.py), which a
        reach query would otherwise find by scanning every VM's rules."""
        from .ownrules import own_rule_index  # it reads this module's RuleRef

        _ = self._rule_table, self._zone_members  # cached properties: computing them is the point
        own_rule_index(self, "in")

    # -- lookups ------------------------------------------------------------------

    def service(self, name: str) -> Service:
        if name in self.doc.services:
            return self.doc.services[name]
        return _builtin_service(name)

    def vms_on(self, host: str) -> list[str]:
        memo: dict[str, tuple[str, ...]] = self.__dict__.setdefault("_vms_on_memo", {})  # a compile asks several times; 10,000 VMs each
        found = memo.get(host)
        if found is None:
            found = memo[host] = tuple(sorted(name for name, vm in self.doc.vms.items() if vm.host == host))
        return list(found)

    def vm_addresses(self, name: str) -> AddressSet:
        memo: dict[str, AddressSet] = self.__dict__.setdefault("_vm_address_memo", {})
        found = memo.get(name)
        if found is None:
            found = memo[name] = _addresses_of(ip for nic in self.doc.vms[name].nics for ip in nic.ips)
        return found

    def nic_addresses(self, nic: Nic) -> AddressSet:
        return _addresses_of(nic.ips)

    def network_addresses(self, name: str) -> AddressSet:
        v4, v6 = [], []
        for subnet in self.doc.networks[name].subnets:
            net = ipaddress.ip_network(subnet)
            (v4 if net.version == 4 else v6).append(interval_of(net))
        return AddressSet.of(v4, v6)

    def ref_item_set(self, item: RefItem) -> AddressSet:
        if item.kind == "any":
            return AddressSet.everything()
        if item.kind == "literal":
            return parse_literal(item.name)
        if item.kind == "vm":
            return self.vm_addresses(item.name)
        if item.kind == "zone":
            return self.zone_set(item.name)
        if item.kind == "group":
            return self.group_set(item.name)
        if item.kind == "network":
            return self.network_addresses(item.name)
        if item.kind == "host":
            return _addresses_of(self.doc.hosts[item.name].address)
        raise KeyError(item.kind)

    def address_set(self, refs: list[str] | None) -> AddressSet:
        """The exact addresses a reference list means (None: any)."""
        if refs is None:
            return AddressSet.everything()
        key = tuple(refs)
        found = self._address_sets.get(key)
        if found is None:
            found = self._address_sets[key] = self._resolve_address_set(refs)
        return found

    def keep_compile_memos(self) -> None:
        """Keep, with this policy, what its compiles work out of unchanged rules (rule
        matches, addresses written as nft elements) instead of with each compile: for a
        holder that compiles it again and again, edited in rules alone (the agent; the
        memos pass on with share_address_memos). Others do not pay their memory."""
        self.__dict__.setdefault(ELEMENTS_MEMO, {})
        self.__dict__.setdefault(MATCHES_MEMO, {})

    def share_address_memos(self, other: Policy, changed_groups: frozenset[str] = frozenset()) -> None:
        """Take over `other`'s memos of what references mean in addresses (reference
        lists, VMs, groups, zones), of which VMs each host runs, of rule matches and of
        addresses written as nft elements. Only for a policy whose zones, networks,
        hosts, services and VMs (their hosts and NICs) are `other`'s, and whose groups
        are too but `changed_groups` (with every group holding one of them:
        `groups_holding`): one that differs in rules or in a group's members alone, as
        policy/incremental.py's edits do; a compile then resolves again only what
        names a changed group (a group member's change at the agent: its sets, not
        every address of the node, ~0.25 s at 10,000 VMs)."""
        if not changed_groups:
            self._address_sets = other._address_sets
            for memo in ("_vm_address_memo", "_group_memo", "_zone_set_memo", "_vms_on_memo", ELEMENTS_MEMO, MATCHES_MEMO):
                if memo in other.__dict__:
                    self.__dict__[memo] = other.__dict__[memo]
            return
        for memo in ("_vm_address_memo", "_zone_set_memo", "_vms_on_memo", ELEMENTS_MEMO):  # a group is none of their business
            if memo in other.__dict__:
                self.__dict__[memo] = other.__dict__[memo]
        # the rest copied without what names a changed group (the other policy's stay as they are)
        self._address_sets = {refs: found for refs, found in other._address_sets.items() if not names_group(refs, changed_groups)}
        groups: dict[str, AddressSet | None] = other.__dict__.get("_group_memo", {})
        self.__dict__["_group_memo"] = {name: found for name, found in groups.items() if found is not None and name not in changed_groups}
        matches = other.__dict__.get(MATCHES_MEMO)
        if matches is not None:  # keys: a rule's match values, its `from` and `to` among them (compiler/plan/rules.py)
            self.__dict__[MATCHES_MEMO] = {key: found for key, found in matches.items()
                                           if not any(value.__class__ is tuple and names_group(value, changed_groups) for value in key)}

    def _resolve_address_set(self, refs: list[str]) -> AddressSet:
        # every item's intervals merged once (a union per item re-merged the list so
        # far each time: quadratic in a list of thousands of addresses)
        items = [parse_ref(r) for r in refs]
        if len(items) == 1 and not items[0].negate:
            return self.ref_item_set(items[0])  # already merged (most lists are one item)
        parts: dict[bool, tuple[list[Interval], list[Interval]]] = {False: ([], []), True: ([], [])}
        for item in items:
            addresses = self.ref_item_set(item)
            v4, v6 = parts[item.negate]
            v4.extend(addresses.v4)
            v6.extend(addresses.v6)
        include, exclude = AddressSet.of(*parts[False]), AddressSet.of(*parts[True])
        if include.is_empty() and items and all(i.negate for i in items):
            include = AddressSet.everything()  # ["!10.0.9.0/24"] means "anything but"
        return include.minus(exclude)

    def group_set(self, name: str) -> AddressSet:
        """A group's exact addresses, groups inside it resolved. A cycle raises KeyError
        (the Checker reports cycles; a loaded policy has none)."""
        sets: dict[str, AddressSet | None] = self.__dict__.setdefault("_group_memo", {})
        if name in sets:
            found = sets[name]
            if found is None:
                raise KeyError(f"group cycle through group:{name}")
            return found
        sets[name] = None  # in progress
        try:
            found = self.address_set(self.doc.groups[name].members)
        except BaseException:
            del sets[name]
            raise
        sets[name] = found
        return found

    def zone_set(self, name: str) -> AddressSet:
        """Every address of the zone's VMs. Built per zone on first use: a query about
        two VMs must not pay for the addresses of every VM of the cluster."""
        memo: dict[str, AddressSet] = self.__dict__.setdefault("_zone_set_memo", {})
        found = memo.get(name)
        if found is None:
            # Every member's addresses merged once (a union per VM re-merged the
            # whole zone each time: quadratic in the zone's size).
            vms = self.doc.vms
            found = memo[name] = _addresses_of(
                ip for vm_name in self._zone_members.get(name, ()) for nic in vms[vm_name].nics for ip in nic.ips
            )
        return found

    def zone_members(self, name: str) -> list[str]:
        """The names of the zone's VMs, in document order."""
        return list(self._zone_members.get(name, ()))

    @cached_property
    def _zone_members(self) -> dict[str, list[str]]:
        members: dict[str, list[str]] = {}
        for vm_name, vm in self.doc.vms.items():
            if vm.zone is not None:
                members.setdefault(vm.zone, []).append(vm_name)
        return members

    def default_action(self, vm_name: str, direction: str) -> str:
        """VM default, else its zone's, else settings.default (per direction)."""
        vm = self.doc.vms[vm_name]
        key = "in_" if direction == "in" else "out"
        candidates = [vm.default]
        if vm.zone is not None:
            candidates.append(self.doc.zones[vm.zone].default)
        candidates.append(self.doc.settings.default)
        for candidate in candidates:
            if candidate is not None and getattr(candidate, key) is not None:
                return str(getattr(candidate, key))
        return "drop" if direction == "in" else "accept"

    def nic_filters(self, vm_name: str, nic_index: int) -> list[str]:
        """The NIC's guard filters (its network's, the VM's, the NIC's own), includes
        expanded, in order."""
        vm = self.doc.vms[vm_name]
        nic = vm.nics[nic_index]
        network = self.doc.networks.get(nic.network)
        # Thousands of NICs share a few filter lists: expand each list once.
        key = (tuple(network.filters) if network is not None else (), tuple(vm.filters), tuple(nic.filters))
        memo: dict[tuple[tuple[str, ...], ...], list[str]] = self.__dict__.setdefault("_nic_filter_memo", {})
        found = memo.get(key)
        if found is None:
            found = memo[key] = self._expand_filters(*key)
        return list(found)

    def _expand_filters(self, network_filters: tuple[str, ...], vm_filters: tuple[str, ...], nic_filters: tuple[str, ...]) -> list[str]:
        names = list(dict.fromkeys(network_filters + vm_filters + nic_filters))
        out: list[str] = []
        active: set[str] = set()  # an include cycle (reported by the Checker) must not recurse forever
        for name in names:
            self._expand_filter(name, out, active)
        return out

    def _expand_filter(self, name: str, out: list[str], active: set[str]) -> None:
        """`name` into `out` after what it includes, each once. (A method: a recursive
        closure is a reference cycle, and one holding the policy kept a revision
        alive, frozen, after the controller let it go: controller/store/cache.py.)"""
        if name in out or name in active:
            return
        active.add(name)
        includes = self.doc.filters[name].include if name in self.doc.filters else BUILTIN_FILTER_INCLUDES.get(name, ())
        for included in includes:
            self._expand_filter(included, out, active)
        out.append(name)

    # -- rules --------------------------------------------------------------------

    @cached_property
    def rules(self) -> list[RuleRef]:
        """Every rule of the policy with its id and position."""
        return self._rule_table.every

    def rules_of(self, level: Level, owner: str = "") -> list[RuleRef]:
        return list(self._rule_table.runs.get((level, owner), ()))

    def same_rules(self, other: Policy, level: Level, owner: str = "") -> bool:
        """Whether the owner's rules are the same in both policies, ids and places
        included. A policy edited from another shares the runs of the owners the
        edit left in place, and tells from their lines whether later lines moved
        them (policy/ruletable.py `kept_from`): no rule compared, no moved run made
        (a diff asks it of every VM)."""
        mine, theirs = self._rule_table.runs, other._rule_table.runs
        kept = theirs.kept_from(mine, (level, owner))  # `other` made from this one by an edit
        if kept is not None:
            return kept
        a, b = mine.get((level, owner), ()), theirs.get((level, owner), ())
        return a is b or (len(a) == len(b) and all(x is y or x == y for x, y in zip(a, b)))

    def rules_replaced_since(self, other: Policy) -> set[tuple[str, str]] | None:
        """The owners whose rules may differ from `other`'s, this policy edited from
        it in place (no line moved); None: not known so (`same_rules` tells each)."""
        return self._rule_table.runs.replaced_since(other._rule_table.runs)

    @cached_property
    def _rule_table(self) -> RuleTable:
        """`rules`, and the same grouped by (level, owner) in order, so rules_of() is
        a lookup (compiling a node calls it once per VM). One pass builds both: the
        owner's rules are a contiguous run of the list. The runs are kept as the
        `Runs` every table edited from this one starts from (policy/ruletable.py),
        with what they learn (explicit ids, moved runs) kept between reads."""
        from .ruletable import RuleTable, Runs  # (it reads this module's RuleRef)

        out: list[RuleRef] = []
        runs: list[tuple[tuple[str, str], int, int]] = []

        def add(rules: list[Rule], level: Level, owner: str, path: tuple[object, ...]) -> None:
            start = len(out)
            # Locate the owner's list once; each rule's position is then an index.
            container = _node_at(self.source, path)
            locs = container.value_locs if isinstance(container, LList) and len(container) == len(rules) else None
            for index, rule in enumerate(rules):
                rule_path = path + (index,)
                loc = locs[index] if locs is not None else locate(self.source, rule_path)
                rid = rule.id or default_rule_id(loc, rule_path)
                out.append(RuleRef(rule, level, owner, index, rid, rule_path, loc))
            if rules:
                runs.append(((level, owner), start, len(out)))

        add(self.doc.global_rules, "global", "", ("global_rules",))
        add(self.doc.host_rules, "host", "", ("host_rules",))
        for name, host in sorted(self.doc.hosts.items()):
            add(host.rules, "host", name, ("hosts", name, "rules"))
        for name, network in sorted(self.doc.networks.items()):
            add(network.rules, "network", name, ("networks", name, "rules"))
        for name, zone in sorted(self.doc.zones.items()):
            add(zone.rules, "zone", name, ("zones", name, "rules"))
        for name, vm in sorted(self.doc.vms.items()):
            add(vm.rules, "vm", name, ("vms", name, "rules"))
        for name, group in sorted(self.doc.security_groups.items()):
            add(group.rules, "security_group", name, ("security_groups", name, "rules"))
        unique = _unique_ids(out)
        by_owner: dict[tuple[str, str], list[RuleRef]] = {}
        for key, start, stop in runs:
            by_owner.setdefault(key, []).extend(unique[start:stop])
        table = RuleTable(Runs(by_owner))
        table.__dict__["every"] = unique
        return table

    def nic_index(self, vm_name: str, ref: int | str) -> int | None:
        """A VM's NIC named by a rule's `nic:` (an index, or the NIC's `name`)."""
        nics = self.doc.vms[vm_name].nics
        if isinstance(ref, int):
            return ref if ref < len(nics) else None
        return next((i for i, nic in enumerate(nics) if nic.name == ref), None)

    def rule_by_id(self, rule_id: str) -> RuleRef | None:
        for ref in self.rules:
            if ref.id == rule_id:
                return ref
        return None


@lru_cache(maxsize=4096)  # each NIC address is checked against its network's few subnets
def _subnet(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def _node_at(root: Any, path: tuple[object, ...]) -> Any:
    """The source node at `path`, or None where the path leaves the source."""
    node = root
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


@cache
def _builtin_service(name: str) -> Service:
    """A built-in service's model, validated once (it is frozen): a plan asks for a
    rule's services once per distinct rule, ~20,000 times in a 10,000-VM lint shard."""
    return Service.model_validate(BUILTIN_SERVICES[name])


def _addresses_of(ips: Iterable[str]) -> AddressSet:
    v4, v6 = [], []
    for text in ips:
        family, value = address_value(text)  # the loader has validated every address
        (v4 if family == 4 else v6).append((value, value))
    return AddressSet.of(v4, v6)


def default_rule_id(loc: Loc | None, path: tuple[object, ...]) -> str:
    """`file-stem:line`: short enough for log prefixes, and points at the rule."""
    if loc is None:
        return format_path(path)
    return f"{file_stem(loc.file)}:{loc.line}"


@lru_cache(maxsize=256)
def file_stem(file: str) -> str:
    return PurePath(file).stem  # one parse per policy file, not one per rule


def _unique_ids(refs: list[RuleRef]) -> list[RuleRef]:
    """Derived ids that collide (two flow-style rules on one line) get the column."""
    ids = [ref.id for ref in refs]
    if len(set(ids)) == len(ids):  # the common case, one rule per line: nothing collides (~0.1 s less at 10,000 VMs)
        return refs
    counts: dict[str, int] = {}
    for rid in ids:
        counts[rid] = counts.get(rid, 0) + 1
    out = []
    for ref in refs:
        if counts[ref.id] > 1 and ref.rule.id is None and ref.loc is not None:
            ref = RuleRef(ref.rule, ref.level, ref.owner, ref.index, f"{ref.id}:{ref.loc.col}", ref.path, ref.loc)
        out.append(ref)
    return out


# ---------------------------------------------------------------------------
# Cross-reference validation


class Checker:
    def __init__(self, doc: PolicyDocument, source: Any):
        self.doc, self.source = doc, source
        self.problems: list[Problem] = []

    @cached_property
    def policy(self) -> Policy:
        """The document resolved: one instance, so its caches serve every check."""
        return Policy(self.doc, self.source)

    def problem(self, path: tuple[object, ...], message: str) -> None:
        self.problems.append(Problem(locate(self.source, path), format_path(path), message))

    def run(self) -> list[Problem]:
        self.check_hosts()
        self.check_networks()
        self.check_groups()
        self.check_filters()
        self.check_vms()
        self.check_rules()
        self.check_nat()
        self.check_management()
        check_dataplane(self)
        return self.problems

    # -- references -----------------------------------------------------------------

    def known(self, kind: str) -> dict[str, Any]:
        return {
            "vm": self.doc.vms,
            "zone": self.doc.zones,
            "group": self.doc.groups,
            "network": self.doc.networks,
            "host": self.doc.hosts,
        }[kind]

    def check_refs(self, refs: list[str] | None, path: tuple[object, ...]) -> None:
        for index, text in enumerate(refs or []):
            item = parse_ref(text)
            if item.kind in ("any", "literal"):
                continue
            names = self.known(item.kind)
            if item.name not in names:
                hint = f" (known: {', '.join(sorted(names))})" if names else f" (no {item.kind}s are defined)"
                self.problem(path + (index,), f"{item.kind}:{item.name} does not exist{hint}")

    # -- sections -------------------------------------------------------------------

    def check_hosts(self) -> None:
        seen: dict[str, str] = {}
        for name, host in self.doc.hosts.items():
            for index, address in enumerate(host.address):
                if address in seen:
                    self.problem(("hosts", name, "address", index), f"address {address} is also host {seen[address]}'s")
                seen[address] = name

    def check_networks(self) -> None:
        bridges: dict[str, str] = {}
        subnets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
        for name, network in self.doc.networks.items():
            if network.bridge in bridges:
                self.problem(("networks", name, "bridge"), f"bridge {network.bridge} is also used by network {bridges[network.bridge]}")
            bridges[network.bridge] = name
            for index, text in enumerate(network.subnets):
                subnet = ipaddress.ip_network(text)
                for other, other_name in subnets:
                    if subnet.version == other.version and subnet.overlaps(other):
                        refused = overlap_refused(self.doc, name, other_name)
                        if refused is not None:
                            self.problem(("networks", name, "subnets", index), f"{subnet} overlaps {other} of network {other_name}{refused}")
                subnets.append((subnet, name))
            for index, flt in enumerate(network.filters):
                self.check_filter_name(flt, ("networks", name, "filters", index))
            for index, service in enumerate(network.host_services):
                if service not in self.doc.services and service not in BUILTIN_SERVICES:
                    self.problem(("networks", name, "host_services", index), f"service {service} does not exist")

    def check_groups(self) -> None:
        for name, group in self.doc.groups.items():
            self.check_refs(group.members, ("groups", name, "members"))
        # cycles: depth-first search over group:NAME members
        state: dict[str, int] = {}
        for name in sorted(self.doc.groups):
            if name not in state:
                self._visit_group(name, [name], state)

    # (the searches are methods: a recursive closure is a reference cycle, and one
    # holding the checker kept a revision's document alive, frozen, after the
    # controller let it go: controller/store/cache.py)

    def _visit_group(self, name: str, trail: list[str], state: dict[str, int]) -> None:
        state[name] = 1
        for index, text in enumerate(self.doc.groups[name].members):
            item = parse_ref(text)
            if item.kind != "group" or item.name not in self.doc.groups:
                continue
            if state.get(item.name) == 1:
                cycle = trail[trail.index(item.name):] + [item.name] if item.name in trail else [name, item.name]
                self.problem(("groups", name, "members", index), f"group cycle: {' -> '.join(cycle)}")
            elif state.get(item.name) is None:
                self._visit_group(item.name, trail + [item.name], state)
        state[name] = 2

    def check_filters(self) -> None:
        for name, flt in self.doc.filters.items():
            if name in BUILTIN_FILTERS:
                self.problem(("filters", name), f"{name} is a built-in filter; choose another name")
            for index, included in enumerate(flt.include):
                if included not in self.doc.filters and included not in BUILTIN_FILTERS:
                    self.problem(("filters", name, "include", index), f"filter {included} does not exist")
            for index, rule in enumerate(flt.rules):
                for key in ("from_", "to"):
                    self.check_refs(getattr(rule, key), ("filters", name, "rules", index, "from" if key == "from_" else "to"))
                for key, value in (("mac", rule.mac), ("arp", rule.arp)):
                    if value is None:
                        continue
                    for field, text in value.model_dump(exclude_none=True).items():
                        if field == "op" or text in ("$IP", "$MAC"):
                            continue
                        try:
                            (ipaddress.ip_address(text) if field.startswith("ip") else _check_mac(text))
                        except ValueError:
                            expected = "an IP address or $IP" if field.startswith("ip") else "a MAC address or $MAC"
                            self.problem(("filters", name, "rules", index, key, field), f"{text!r} is not {expected}")
        state: dict[str, int] = {}
        for name in sorted(self.doc.filters):
            if name not in state:
                self._visit_filter(name, [name], state)

    def _visit_filter(self, name: str, trail: list[str], state: dict[str, int]) -> None:
        state[name] = 1
        for index, included in enumerate(self.doc.filters[name].include):
            if included not in self.doc.filters:
                continue
            if state.get(included) == 1:
                self.problem(("filters", name, "include", index), f"filter include cycle: {' -> '.join(trail + [included])}")
            elif state.get(included) is None:
                self._visit_filter(included, trail + [included], state)
        state[name] = 2

    def check_vms(self) -> None:
        macs: dict[str, str] = {}
        ips: dict[str, str] = {}
        policy = self.policy
        for name, vm in self.doc.vms.items():
            base = ("vms", name)
            if vm.host not in self.doc.hosts:
                self.problem(base + ("host",), f"host {vm.host} does not exist" + _known(self.doc.hosts))
            if vm.zone is not None and vm.zone not in self.doc.zones:
                self.problem(base + ("zone",), f"zone {vm.zone} does not exist" + _known(self.doc.zones))
            for index, flt in enumerate(vm.filters):
                self.check_filter_name(flt, base + ("filters", index))
            for n, nic in enumerate(vm.nics):
                self.check_nic(name, vm, n, nic, macs, ips)
                if nic.mac is None and not self.problems_in(base):
                    needing = [f for f in policy.nic_filters(name, n) if f in MAC_FILTERS or self.uses_mac(f)]
                    if needing:
                        self.problem(base + ("nics", n), f"filter {needing[0]} needs the NIC's `mac` (it checks frames against it)")

    def uses_mac(self, name: str) -> bool:
        flt = self.doc.filters.get(name)
        return flt is not None and any("$MAC" in str(rule.model_dump()) for rule in flt.rules)

    def check_filter_name(self, name: str, path: tuple[object, ...]) -> None:
        if name not in self.doc.filters and name not in BUILTIN_FILTERS:
            self.problem(path, f"filter {name} does not exist (built-in: {', '.join(BUILTIN_FILTERS)})")

    def check_nic(self, vm_name: str, vm: VM, n: int, nic: Nic, macs: dict[str, str], ips: dict[str, str]) -> None:
        path = ("vms", vm_name, "nics", n)
        if nic.name is not None and any(other.name == nic.name for other in vm.nics[:n]):
            self.problem(path + ("name",), f"NIC name {nic.name} is used twice in vm {vm_name}")
        for index, flt in enumerate(nic.filters):
            self.check_filter_name(flt, path + ("filters", index))
        if nic.mac is not None:
            if nic.mac in macs:
                self.problem(path + ("mac",), f"MAC {nic.mac} is also {macs[nic.mac]}'s")
            macs[nic.mac] = f"{vm_name} nic {n}"
        network = self.doc.networks.get(nic.network)
        if network is None:
            self.problem(path + ("network",), f"network {nic.network} does not exist" + _known(self.doc.networks))
        for index, text in enumerate(nic.ips):
            key = f"{tenant_of(self.doc, nic.network)}/{text}"  # tenants may use the same addresses
            if key in ips:
                self.problem(path + ("ips", index), f"address {text} is also {ips[key]}'s")
            ips[key] = f"{vm_name} nic {n}"
            if network is not None and network.subnets:
                ip = ipaddress.ip_address(text)
                if not any(ip in _subnet(s) for s in network.subnets if _subnet(s).version == ip.version):
                    self.problem(path + ("ips", index), f"{text} is not inside network {nic.network}'s subnets ({', '.join(network.subnets)})")

    def check_rules(self) -> None:
        policy = self.policy
        ids: dict[str, RuleRef] = {}
        # A rule's checks read the rule, its level and (for `nic`) its owner's NICs:
        # a rule object that passed them at a level passes them there again. Rule
        # lines written several times share one object (policy/plain.py), and each
        # is checked once per level. (The document keeps every rule alive: ids stay
        # theirs.)
        passed: dict[str, set[int]] = {}  # level -> id() of the rules that passed there
        for ref in policy.rules:
            at_level = passed.get(ref.level)
            if at_level is None:
                at_level = passed[ref.level] = set()
            if id(ref.rule) not in at_level:
                found = len(self.problems)
                self.check_rule(ref, policy)
                if len(self.problems) == found and ref.rule.nic is None:
                    at_level.add(id(ref.rule))
            if ref.rule.id is not None:
                if ref.id in ids:
                    self.problem(ref.path + ("id",), f"rule id {ref.id} is also used at {ids[ref.id].where}")
                else:
                    ids[ref.id] = ref

    def check_rule(self, ref: RuleRef, policy: Policy) -> None:
        rule, path = ref.rule, ref.path
        self.check_scope(ref, policy)
        if rule.security_group is not None:
            return
        if ref.level != "network" and rule.direction is None:
            self.problem(path + ("direction",), "missing required key `direction` (expected in or out)")
        self.check_refs(rule.from_, path + ("from",))
        self.check_refs(rule.to, path + ("to",))
        for index, name in enumerate(rule.service or []):
            if name not in self.doc.services and name not in BUILTIN_SERVICES:
                self.problem(path + ("service", index), f"service {name} does not exist (define it under services: or use a built-in)")
        if rule.schedule is not None and rule.schedule not in self.doc.schedules:
            self.problem(path + ("schedule",), f"schedule {rule.schedule} does not exist" + _known(self.doc.schedules))
        if rule.family is not None and not self.problems_in(path):
            for key, refs in (("from", rule.from_), ("to", rule.to)):
                if refs is None:
                    continue
                try:
                    peers = policy.address_set(refs)
                except (KeyError, AddressSyntaxError):
                    continue
                if not peers.is_empty() and not peers.family(rule.family):
                    other = "IPv6" if rule.family == "ipv4" else "IPv4"
                    self.problem(path + ("family",), f"family {rule.family} but `{key}` has only {other} addresses")
        if rule.icmp is not None and rule.family == "ipv4":
            v6_only = [t for t in rule.icmp if t not in ICMP_V4_TYPES and t != "any" and not t.isdigit() and t in ICMP_V6_TYPES]
            if v6_only:
                self.problem(path + ("icmp",), f"ICMP type {v6_only[0]} exists only in IPv6 but the rule has family: ipv4")

    def check_scope(self, ref: RuleRef, policy: Policy) -> None:
        """Security group references, `nic:` and `interface:` (issue 18): where each
        may be written and what it must name."""
        rule, path = ref.rule, ref.path
        if rule.security_group is not None:
            if ref.level not in GROUP_USERS:
                where = "in a security group (groups do not nest)" if ref.level == "security_group" else f"in {ref.level} rules"
                self.problem(path + ("security_group",), f"a security group cannot be referenced {where}; reference it from VM, zone, global or host rules")
            elif rule.security_group not in self.doc.security_groups:
                self.problem(path + ("security_group",), f"security group {rule.security_group} does not exist" + _known(self.doc.security_groups))
        if rule.nic is not None:
            if ref.level != "vm":
                self.problem(path + ("nic",), "`nic` scopes a VM's own rules (or a security group reference in them) to some of its NICs; "
                             f"it cannot be used in {ref.level.replace('_', ' ')} rules")
            else:
                for index, nic in enumerate(rule.nic):
                    if policy.nic_index(ref.owner, nic) is None:
                        names = [n.name for n in self.doc.vms[ref.owner].nics if n.name]
                        known = f"indexes 0-{len(self.doc.vms[ref.owner].nics) - 1}" + (f", names {', '.join(names)}" if names else "")
                        self.problem(path + ("nic", index), f"vm {ref.owner} has no NIC {nic!r} ({known})")
        if rule.interface is not None and ref.level != "host":
            self.problem(path + ("interface",), "`interface` scopes host rules (host_rules, a host's rules, or a security group reference in them) "
                         f"to node interfaces; it cannot be used in {ref.level.replace('_', ' ')} rules")

    def problems_in(self, path: tuple[object, ...]) -> bool:
        prefix = format_path(path)
        return any(p.key.startswith(prefix) for p in self.problems)

    def check_nat(self) -> None:
        for index, entry in enumerate(self.doc.nat):
            path: tuple[object, ...] = ("nat", index)
            if entry.type == "masquerade":
                if entry.network not in self.doc.networks:
                    self.problem(path + ("network",), f"network {entry.network} does not exist" + _known(self.doc.networks))
            elif entry.type == "snat":
                self.check_refs(entry.from_, path + ("from",))
                if entry.host is not None and entry.host not in self.doc.hosts:
                    self.problem(path + ("host",), f"host {entry.host} does not exist" + _known(self.doc.hosts))
            else:
                if entry.host not in self.doc.hosts:
                    self.problem(path + ("host",), f"host {entry.host} does not exist" + _known(self.doc.hosts))
                vm = self.doc.vms.get(entry.to.vm)
                if vm is None:
                    self.problem(path + ("to", "vm"), f"vm {entry.to.vm} does not exist" + _known(self.doc.vms))
                elif vm.host != entry.host:
                    self.problem(path + ("to", "vm"), f"vm {entry.to.vm} runs on {vm.host}, not on {entry.host} where this dnat listens")
                elif entry.to.address is not None and entry.to.address not in [ip for nic in vm.nics for ip in nic.ips]:
                    self.problem(path + ("to", "address"), f"{entry.to.address} is not an address of vm {entry.to.vm}")
                elif not any(ip for nic in vm.nics for ip in nic.ips):
                    self.problem(path + ("to", "vm"), f"vm {entry.to.vm} has no address to forward to")

    def check_management(self) -> None:
        self.check_refs(self.doc.settings.management, ("settings", "management"))


def _known(names: dict[str, Any]) -> str:
    return f" (known: {', '.join(sorted(names))})" if names else " (none are defined)"


def _check_mac(text: str) -> None:
    import re

    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", text):
        raise ValueError(text)


def names_group(refs: Iterable[str] | None, names: Iterable[str] | frozenset[str] | set[str]) -> bool:
    """Whether a reference list names one of the groups `names`."""
    return any(text.__class__ is str and "group:" in text and _group_named(text) in names for text in refs or ())


def _group_named(text: str) -> str | None:
    try:
        item = parse_ref(text)
    except AddressSyntaxError:
        return None
    return item.name if item.kind == "group" else None


def groups_holding(groups: dict[str, Any], names: Iterable[str]) -> frozenset[str]:
    """`names` and every group of `groups` that holds one of them, directly or through others."""
    holders, grew = set(names), True
    while grew:
        grew = False
        for other, group in groups.items():
            if other not in holders and names_group(group.members, holders):
                holders.add(other)
                grew = True
    return frozenset(holders)


def changed_groups(old: dict[str, Any], new: dict[str, Any]) -> frozenset[str]:
    """The groups whose members differ between two policies' groups (added and
    removed ones too), with every group holding one of them."""
    if old is new:
        return frozenset()
    differ = {name for name in old.keys() | new.keys() if old.get(name) is not new.get(name) and old.get(name) != new.get(name)}
    return groups_holding(new, differ) | groups_holding(old, differ) if differ else frozenset()
