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
from ...policy.model import Dnat
from ...policy.resolve import Policy
from .rules import RulePlanner
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
    steps: tuple[Step, ...]
    shared: bool


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


def default_step(policy: Policy, action: str, label: str) -> Step:
    """A chain's default: logged (NFLOG) when it refuses and settings.log.denied."""
    return Step(None, action, label, log=action != "accept" and policy.doc.settings.log.denied)  # type: ignore[arg-type]


def network_has_chain(policy: Policy, network: str) -> bool:
    """Whether traffic between two guests of `network` passes a network check: an
    isolated network always (default drop), another one when it has rules."""
    spec = policy.doc.networks[network]
    return spec.isolated or any(rule.enabled for rule in spec.rules)


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
            steps = tuple(self.rules.steps(self.policy.rules_of(kind, owner), direction, peer))
            found = self._levels[key] = Level(kind, owner, direction, steps, kind in ("global", "zone"))
        return found

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
            default = default_step(self.policy, self.policy.default_action(vm, direction), f"default-{direction}")
            found = self._chains[key] = VmChain(vm, direction, tuple(levels), forwards, default)
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
        return (self.level("host", "", direction), self.level("host", node, direction))

    def host_in(self, node: str) -> HostChain:
        key = ("host-in", node)
        if key not in self._chains:
            management = self.management()
            default = default_step(self.policy, self.policy.doc.settings.host_default.in_, "host-default-in")
            self._chains[key] = HostChain(node, "in", (management,) if management else (), self.host_levels(node, "in"), default)
        return self._chains[key]  # type: ignore[return-value]

    def host_out(self, node: str) -> HostChain | None:
        """None when nothing is enforced on the node's output (no hook at all)."""
        key = ("host-out", node)
        if key not in self._chains:
            levels = self.host_levels(node, "out")
            action = self.policy.doc.settings.host_default.out
            chain = None
            if any(step.matches != () for level in levels for step in level.steps) or action != "accept":
                # a node that cannot send neighbour solicitations has no IPv6 at all
                chain = HostChain(node, "out", (ESSENTIALS,), levels, default_step(self.policy, action, "host-default-out"))
            self._chains[key] = chain
        return self._chains[key]  # type: ignore[return-value]
