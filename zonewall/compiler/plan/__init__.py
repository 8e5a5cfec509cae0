"""The evaluation plan: what a policy means, derived once, read by every consumer.

A policy and a node give one plan (`Plan`): for every place a packet is evaluated
(a VM's `in`/`out`, a network's guest-to-guest check, the node's input and output)
the ordered steps, each with its match primitives and verdict. The compiler renders
the plan to nftables (compiler/levels.py, compiler/node.py); the analyzer turns the
same plan into regions of packet space (analysis/regions.py); lint walks it. The
meaning of every policy key lives here and only here (plan/rules.py: a rule's keys;
plan/chains.py: the order of levels; plan/vocabulary.py: the closed vocabulary the
two renderings interpret).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ...policy.resolve import Policy
from .chains import ChainPlanner, HostChain, Level, NetworkChain, VmChain
from .modes import HostServices, RoutedChecks, host_services, routed_checks
from .nat import PortForward, SourceNat, port_forwards, source_nats
from .protection import ProtectionChecks, protection_checks
from .rules import RulePlanner
from .switches import vm_filtered
from .tenants import ConntrackZone, conntrack_zones


class Plan:
    """The plan of a policy: its pieces built on demand, memoised, each a pure
    function of its inputs (so a consumer pays only for what it asks about)."""

    def __init__(self, policy: Policy, *, now: datetime | None = None, timezone: str | None = None):
        self.policy = policy
        self.rules = RulePlanner(policy, now, timezone)
        self.chains = ChainPlanner(policy, self.rules)

    def node(self, node: str) -> NodePlan:
        """What one node enforces: the plan's pieces for its guests, its networks and
        itself. Each piece is the one the whole-policy plan holds (equal for equal
        inputs, hashable), so a piece that did not change between two policies can be
        recognised and left alone."""
        vms = tuple(self.policy.vms_on(node))
        networks = tuple(sorted({nic.network for vm in vms for nic in self.policy.doc.vms[vm].nics}))
        filtered = tuple(vm for vm in vms if vm_filtered(self.policy, vm))  # enable switches (issue 18)
        zones = tuple(sorted({zone for vm in filtered if (zone := self.policy.doc.vms[vm].zone)}))
        return NodePlan(
            node=node,
            vm_chains=tuple(self.chains.vm(vm, direction) for vm in filtered for direction in ("in", "out")),
            shared=tuple(self.chains.level(kind, owner, direction) for kind, owners in (("global", ("",)), ("zone", zones)) for owner in owners for direction in ("in", "out")),
            networks=tuple(chain for network in networks if (chain := self.chains.network(network)) is not None),
            routed=tuple(checks for network in networks if (checks := routed_checks(self.policy, network)) is not None),
            host_services=tuple(found for network in networks if (found := host_services(self.policy, self.rules, network)) is not None),
            host_in=self.chains.host_in(node),
            host_out=self.chains.host_out(node),
            forwards=tuple(port_forwards(self.policy, node)),
            translations=tuple(source_nats(self.policy, node)),
            protection=protection_checks(self.policy, node),
            zones=conntrack_zones(self.policy, networks),
        )


@dataclass(frozen=True)
class NodePlan:
    """The node-scoped plan: everything `compile_node` renders for one node."""

    node: str
    vm_chains: tuple[VmChain, ...]  # each local VM's in and out
    shared: tuple[Level, ...]  # the global and zone levels its VMs jump to
    networks: tuple[NetworkChain, ...]  # checks between two guests of its networks
    routed: tuple[RoutedChecks, ...]  # what it routes in/out of its non-bridged networks
    host_services: tuple[HostServices, ...]
    host_in: HostChain
    host_out: HostChain | None
    forwards: tuple[PortForward, ...]
    translations: tuple[SourceNat, ...]
    protection: ProtectionChecks  # drops before any rule (plan/protection.py)
    zones: tuple[ConntrackZone, ...]  # conntrack zones of its tenants' networks (plan/tenants.py)

