"""The plan's chains: which steps run, in which order, for each place of evaluation.

* a VM's `in`/`out` chain: `global_rules` -> the VM's own `rules` -> its zone's
  `rules` -> (in: open port forwards) -> the default (the VM's, else its zone's, else
  `settings.default`); first match wins;
* a network's guest-to-guest chain: its `rules`, then accept (drop when `isolated`);
* a node's input and output: the anti-lockout for `settings.management`,
  `host_rules`, the host's own `rules`, `settings.host_default`.

Each piece is a pure function of its inputs (a VM chain of the VM, its zone, the
global rules, the settings and the sets they reference), built once and memoised:
the compiler renders the pieces of one node, the analyzer evaluates the pieces of a
flow's path, lint walks them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ...policy.addresses import FAMILIES, AddressSet
from ...policy.builtins import ICMP_V6_TYPES, MANAGEMENT_TCP_PORTS
from ...policy.model import Dnat, LogDefaults
from ...policy.resolve import Policy, RuleRef
from .groups import Context, GroupCall, Item, flatten
from .rules import RulePlanner
from .switches import cluster_filtered, host_filtered
from .vocabulary import Addresses, DnatOrigin, IcmpTypes, Match, Ports, Step

LevelKind = Literal["global", "vm", "zone", "host"]

# Link-local ICMPv6 that IPv6 cannot work without (RFC 4890 4.4.1): neighbour and
# router discovery, multicast listener discovery. Accepted before any rule by the
# forward, input and output hooks; guards vet what guests send.
ICMPV6_ESSENTIAL = (
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
    "nd-router-solicit",
    "nd-router-advert",
    "mld-listener-query",
    "mld-listener-report",
    "mld-listener-done",
    "mld2-listener-report",
)
ESSENTIALS = Step(
    (Match("ipv6", l4=IcmpTypes("icmpv6", tuple((ICMP_V6_TYPES[t], t) for t in ICMPV6_ESSENTIAL))),),
    "accept",
    "icmpv6-essentials",
)


@dataclass(frozen=True)
class Level:
    """A run of rules of one level and owner. `shared`: one chain per node that
    every VM of the level jumps to (global, zone), not a copy per VM."""

    kind: LevelKind
    owner: str
    direction: str
    steps: tuple[Step, ...]  # flat: security groups' steps in place (what the analyzer evaluates)
    shared: bool
    items: tuple[Item, ...] = ()  # with security group references as such (issue 18); () when it has none

    @property
    def body(self) -> tuple[Item, ...]:
        """What the compiler renders: steps, and references to security groups."""
        return self.items or self.steps


@dataclass(frozen=True)
class VmChain:
    vm: str
    direction: str
    levels: tuple[Level, ...]  # in evaluation order
    forwards: tuple[Step, ...]  # open port forwards (direction in): before the default
    default: Step

    @property
    def name(self) -> str:
        return f"vm:{self.vm} {self.direction}"

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every step in evaluation order (the default excluded)."""
        return tuple(step for level in self.levels for step in level.steps) + self.forwards


@dataclass(frozen=True)
class NetworkChain:
    """Between two guests of one network: its rules, then accept (drop if isolated)."""

    network: str
    steps: tuple[Step, ...]
    default: Step

    @property
    def name(self) -> str:
        return f"network:{self.network}"


@dataclass(frozen=True)
class HostChain:
    node: str
    direction: str
    before: tuple[Step, ...]  # built-in steps ahead of the rules (anti-lockout, ICMPv6 essentials)
    levels: tuple[Level, ...]  # host_rules, then the host's own rules
    default: Step

    @property
    def name(self) -> str:
        return f"host:{self.node} {self.direction}"

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.before + tuple(step for level in self.levels for step in level.steps)


def default_step(policy: Policy, action: str, label: str, direction: str | None = None, logging: LogDefaults | None = None) -> Step:
    """A chain's default: logged (NFLOG) when it refuses and settings.log.denied; a
    VM's or node's `log` (issue 18) logs what its default decides in `direction` at
    that level, whatever the action, or nothing (`nolog`)."""
    choice = getattr(logging, "in_" if direction == "in" else "out") if logging is not None and direction is not None else None
    if choice == "nolog":
        return Step(None, action, label)  # type: ignore[arg-type]
    if choice is not None:
        return Step(None, action, label, log=True, log_level=choice)  # type: ignore[arg-type]
    return Step(None, action, label, log=action != "accept" and policy.doc.settings.log.denied)  # type: ignore[arg-type]


def network_has_chain(policy: Policy, network: str) -> bool:
    """Whether traffic between two guests of `network` passes a network check: an
    isolated network always (default drop), another one when it has rules."""
    spec = policy.doc.networks[network]
    return cluster_filtered(policy) and (spec.isolated or any(rule.enabled for rule in spec.rules))


class ChainPlanner:
    """The chains of a policy, built on demand and memoised."""

    def __init__(self, policy: Policy, rules: RulePlanner):
        self.policy, self.rules = policy, rules
        self._levels: dict[tuple[object, ...], Level] = {}
        self._chains: dict[tuple[object, ...], object] = {}

    def level(self, kind: LevelKind, owner: str, direction: str, peer: AddressSet | None = None) -> Level:
        key = (kind, owner, direction, peer)
        found = self._levels.get(key)
        if found is None:
            refs = self.policy.rules_of(kind, owner)
            shared = kind in ("global", "zone")
            if self.policy.doc.security_groups and any(ref.rule.security_group is not None for ref in refs):  # (a loaded policy references only groups it has)
                items = self.items(refs, direction, peer, "host" if kind == "host" else "guest")
                found = Level(kind, owner, direction, flatten(items), shared, items)
            else:
                found = Level(kind, owner, direction, tuple(self.rules.steps(refs, direction, peer)), shared)
            self._levels[key] = found
        return found

    # -- security groups (issue 18, plan/groups.py) ------------------------------------

    def items(self, refs: list[RuleRef], direction: str, peer: AddressSet | None, context: Context) -> tuple[Item, ...]:
        """A rule list's steps with its security group references, in order."""
        out: list[Item] = []
        for ref in refs:
            rule = ref.rule
            if rule.security_group is None:
                out += self.rules.steps([ref], direction, peer)
            elif rule.enabled:
                steps = self.group_steps(rule.security_group, direction, peer)
                if steps:
                    out.append(GroupCall(rule.security_group, context, direction, steps, ref.id, ref, self.rules.scope(ref)))
        return tuple(out)

    def group_steps(self, group: str, direction: str, peer: AddressSet | None = None) -> tuple[Step, ...]:
        key = ("sg", group, direction, peer)
        found = self._chains.get(key)
        if found is None:
            found = self._chains[key] = tuple(self.rules.steps(self.policy.rules_of("security_group", group), direction, peer))
        return found  # type: ignore[return-value]

    def vm(self, vm: str, direction: str, peer: AddressSet | None = None) -> VmChain:
        """The VM's chain. With `peer`, only the steps that can match packets whose
        other end (the destination of `out`, the source of `in`) is in `peer`: for
        those packets it decides exactly as the whole chain does."""
        key = ("vm", vm, direction, peer)
        found = self._chains.get(key)
        if found is None:
            zone = self.policy.doc.vms[vm].zone
            levels = [self.level("global", "", direction, peer), self.level("vm", vm, direction, peer)]
            if zone:
                levels.append(self.level("zone", zone, direction, peer))
            forwards = self.forwards(vm) if direction == "in" else ()
            spec = self.policy.doc.vms[vm]
            default = default_step(self.policy, self.policy.default_action(vm, direction), f"default-{direction}", direction, spec.log)
            found = self._chains[key] = VmChain(vm, direction, tuple(levels), forwards, default)
        return found  # type: ignore[return-value]

    def vm_nic(self, vm: str, direction: str, nic: int | None, peer: AddressSet | None = None) -> VmChain:
        """The VM's chain as one NIC's traffic meets it (issue 18): steps scoped to
        other NICs left out. The same chain as `vm` when nothing in it is scoped."""
        chain = self.vm(vm, direction, peer)
        if nic is None or not any(step.scope is not None and step.scope.nics for step in chain.steps):
            return chain
        key = ("vm-nic", vm, direction, nic, peer)
        found = self._chains.get(key)
        if found is None:
            levels = tuple(
                Level(level.kind, level.owner, level.direction, tuple(st for st in level.steps if st.scope is None or st.scope.holds_for_nic(nic)), level.shared)
                for level in chain.levels
            )
            found = self._chains[key] = VmChain(vm, direction, levels, chain.forwards, chain.default)
        return found  # type: ignore[return-value]

    def forwards(self, vm: str) -> tuple[Step, ...]:
        """Accepts for connections an `open` dnat entry forwards to `vm` (after its
        rules, where its default would decide: an explicit drop still wins)."""
        out = []
        for index, entry in enumerate(self.policy.doc.nat):
            if not isinstance(entry, Dnat) or entry.to.vm != vm or not entry.open:
                continue
            protocol = "tcp" if entry.listen.tcp is not None else "udp"
            listen = entry.listen.tcp if entry.listen.tcp is not None else entry.listen.udp
            port = entry.to.port or listen
            match = Match(None, l4=Ports(protocol, ((port, port),)))  # type: ignore[arg-type]
            out.append(Step((match,), "accept", f"nat[{index}] dnat open", condition=DnatOrigin(protocol, listen, port, index)))  # type: ignore[arg-type]
        return tuple(out)

    def network(self, network: str) -> NetworkChain | None:
        """The check between two guests of `network` (None: there is none)."""
        key = ("net", network)
        if key not in self._chains:
            chain = None
            if network_has_chain(self.policy, network):
                steps = tuple(self.rules.steps(self.policy.rules_of("network", network), "net"))
                action = "drop" if self.policy.doc.networks[network].isolated else "accept"
                chain = NetworkChain(network, steps, default_step(self.policy, action, f"net-{network}-default"))
            self._chains[key] = chain
        return self._chains[key]  # type: ignore[return-value]

    def management(self) -> Step | None:
        """Anti-lockout: settings.management always reaches ssh and zonewall's ports."""
        refs = self.policy.doc.settings.management
        if not refs:
            return None
        addresses = self.policy.address_set(refs)
        ports = Ports("tcp", tuple((p, p) for p in MANAGEMENT_TCP_PORTS))
        matches = tuple(
            Match(family, Addresses(addresses.family(family), ("settings", "management")), None, ports) for family in FAMILIES if addresses.family(family)
        )
        return Step(matches, "accept", "anti-lockout") if matches else None

    def host_levels(self, node: str, direction: str) -> tuple[Level, ...]:
        if not host_filtered(self.policy, node):
            return ()  # the node's firewall is off (issue 18, plan/switches.py)
        return (self.level("host", "", direction), self.level("host", node, direction))

    def host_default(self, node: str, direction: str) -> Step:
        settings = self.policy.doc.settings.host_default
        action = (settings.in_ if direction == "in" else settings.out) if host_filtered(self.policy, node) else "accept"
        return default_step(self.policy, action, f"host-default-{direction}", direction, self.policy.doc.hosts[node].log)

    def host_in(self, node: str) -> HostChain:
        key = ("host-in", node)
        if key not in self._chains:
            management = self.management()
            self._chains[key] = HostChain(node, "in", (management,) if management else (), self.host_levels(node, "in"), self.host_default(node, "in"))
        return self._chains[key]  # type: ignore[return-value]

    def host_out(self, node: str) -> HostChain | None:
        """None when nothing is enforced on the node's output (no hook at all)."""
        key = ("host-out", node)
        if key not in self._chains:
            levels = self.host_levels(node, "out")
            default = self.host_default(node, "out")
            chain = None
            if any(step.matches != () for level in levels for step in level.steps) or default.action != "accept" or default.log:
                # a node that cannot send neighbour solicitations has no IPv6 at all
                chain = HostChain(node, "out", (ESSENTIALS,), levels, default)
            self._chains[key] = chain
        return self._chains[key]  # type: ignore[return-value]

    def host_interface(self, chain: HostChain, interface: str | None) -> HostChain:
        """A node's chain as the packets of one interface meet it (issue 18): steps
        scoped to other interfaces left out. When the interface is unknown (None: the
        analyzer's paths do not carry it), the most open reading: scoped accepts kept,
        scoped refusals left out, so an analysis never reports closed what one
        interface lets through."""
        if not any(step.scope is not None and step.scope.interfaces for level in chain.levels for step in level.steps):
            return chain
        key = ("host-if", chain.node, chain.direction, interface)
        found = self._chains.get(key)
        if found is None:
            levels = tuple(
                Level(level.kind, level.owner, level.direction, tuple(st for st in level.steps if _applies_on(st, interface)), level.shared)
                for level in chain.levels
            )
            found = self._chains[key] = HostChain(chain.node, chain.direction, chain.before, levels, chain.default)
        return found  # type: ignore[return-value]


def _applies_on(step: Step, interface: str | None) -> bool:
    if step.scope is None or not step.scope.interfaces:
        return True
    if interface is None:
        return step.action == "accept"
    return step.scope.holds_for_interface(interface)
