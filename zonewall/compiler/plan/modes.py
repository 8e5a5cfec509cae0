"""Network modes (libvirt's) and host services, as plan steps.

`bridged` (the default) gives the node no L3 presence on the network: no steps. The
other modes make the node the guests' router (their gateway is on its bridge):

* `nat`: routed out (and masqueraded, plan/nat.py); routed in only when the
  connection was forwarded by a dnat entry (or is established);
* `routed`: forwarded without NAT, only from and to the network's subnets;
* `isolated`: nothing routed in or out; guests reach each other and the node.

On those networks, and on a bridged one that lists `host_services`, a guest reaches
of the node only its network's `host_services` (after its own `out` rules).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ...policy.addresses import FAMILIES, Family
from ...policy.model import Rule
from ...policy.resolve import Policy
from .rules import RulePlanner
from .switches import cluster_filtered
from .vocabulary import Addresses, Match, NotForwarded, Step

L3_MODES = ("nat", "routed", "isolated")


@dataclass(frozen=True)
class RoutedChecks:
    """What the node checks for traffic it routes out of (`outbound`) and into
    (`inbound`) a non-bridged network; the steps only drop."""

    network: str
    mode: str
    outbound: tuple[Step, ...]
    inbound: tuple[Step, ...]


@dataclass(frozen=True)
class HostServices:
    """What a guest of `network` may reach of its node: `steps` accept, then `default` drops."""

    network: str
    steps: tuple[Step, ...]
    default: Step


def is_routed(policy: Policy, network: str) -> bool:
    return policy.doc.networks[network].mode in L3_MODES


def subnets(policy: Policy, network: str, family: Family) -> tuple[tuple[int, int], ...]:
    texts = [s for s in policy.doc.networks[network].subnets if ipaddress.ip_network(s).version == (4 if family == "ipv4" else 6)]
    return policy.address_set(texts).family(family) if texts else ()


def _outside_subnets(policy: Policy, network: str, side: str, label: str) -> tuple[Step, ...]:
    """Drops of what is not from (`src`) / to (`dst`) the network's subnets, per family
    (a family without subnets: all of it)."""
    out = []
    for family in FAMILIES:
        values = subnets(policy, network, family)
        addresses = Addresses(values, negate=True) if values else None
        match = Match(family, src=addresses if side == "src" else None, dst=addresses if side == "dst" else None)
        out.append(Step((match,), "drop", label))
    return tuple(out)


def routed_checks(policy: Policy, network: str) -> RoutedChecks | None:
    mode = policy.doc.networks[network].mode
    if mode in L3_MODES and not cluster_filtered(policy):
        return RoutedChecks(network, mode, (), ())  # the firewall is off (issue 18): routed, nothing checked
    if mode == "isolated":
        outbound: tuple[Step, ...] = (Step(None, "drop", "isolated network: nothing is routed out"),)
        inbound: tuple[Step, ...] = (Step(None, "drop", "isolated network: nothing is routed in"),)
    elif mode == "routed":
        outbound = _outside_subnets(policy, network, "src", "routed network: only from its subnets")
        inbound = _outside_subnets(policy, network, "dst", "routed network: only to its subnets")
    elif mode == "nat":
        outbound = ()  # guests may go out (their own out rules decide)
        inbound = (Step(None, "drop", "nat network: only forwarded ports come in", condition=NotForwarded()),)
    else:
        return None
    return RoutedChecks(network, mode, outbound, inbound)


def host_services(policy: Policy, rules: RulePlanner, network: str) -> HostServices | None:
    """None where guests reach the node like anybody else (a bridged network
    without `host_services`: the node has no address there)."""
    spec = policy.doc.networks[network]
    if spec.mode not in L3_MODES and not spec.host_services:
        return None
    if not cluster_filtered(policy):  # the firewall is off (issue 18): guests reach the node like anybody
        return HostServices(network, (), Step(None, "accept", "firewall off"))
    steps: tuple[Step, ...] = ()
    if spec.host_services:
        offered = Rule(action="accept", service=list(spec.host_services))
        steps = (Step(rules.matches(offered), "accept", "host_services"),)
    return HostServices(network, steps, Step(None, "drop", "nothing else of the node"))
