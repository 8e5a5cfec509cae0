"""The policy's evaluation chains as ordered (region, action) lists, and first match.

One chain per place the compiler puts one: a VM's `in`/`out` (global -> the VM's own
-> its zone's -> its default), an isolated network's guest-to-guest check (default
drop), a node's input (ICMPv6 essentials, anti-lockout, host rules, host default)
and output. Evaluating a chain over a region splits the region into the parts each
rule decides; the remainder goes to the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from ..compiler.node import ICMPV6_ESSENTIAL  # accepted before any rule in forward/input (RFC 4890)
from ..policy.builtins import ICMP_V6_TYPES, MANAGEMENT_TCP_PORTS
from ..policy.addresses import AddressSet
from ..policy.model import Rule
from ..policy.resolve import Level, Policy, RuleRef
from . import space as s
from .matching import Matcher
from .space import Region


@dataclass(frozen=True)
class Step:
    """One rule of a chain (or its default when `ref` is None and `default` is set)."""

    region: Region
    action: str  # accept | drop | reject
    label: str  # rule id, or e.g. default-in
    ref: RuleRef | None = None
    limited: bool = False  # accept with `limit`: over the rate it does not match

    @property
    def where(self) -> str:
        return self.ref.where if self.ref is not None else "built-in"

    @property
    def key(self) -> tuple[object, ...]:
        """What the step does, without where it is written (diff compares these)."""
        return (self.region, self.action, self.limited)


@dataclass(frozen=True)
class Chain:
    name: str  # shown in traces: "vm:web1 in", "network:nas", "host:node1 in"
    steps: tuple[Step, ...]
    default: Step

    def key(self) -> tuple[object, ...]:
        return (tuple(step.key for step in self.steps), self.default.action)


def first_match(chain: Chain, space: Region, *, over_rate: bool = False) -> Iterator[tuple[Region, Step]]:
    """(part of `space`, the step deciding it), in chain order. `over_rate`: rate
    limited accepts are exhausted (the packet is over the rate and falls through)."""
    remaining = space
    for step in chain.steps:
        if not remaining:
            return
        if over_rate and step.limited:
            continue
        if not s.overlaps(remaining, step.region):
            continue
        hit = s.intersect(remaining, step.region)
        if hit:
            yield hit, step
            remaining = s.subtract(remaining, step.region)
    if remaining:
        yield remaining, chain.default


def essentials_region() -> Region:
    types = s.merge((ICMP_V6_TYPES[t], ICMP_V6_TYPES[t]) for t in ICMPV6_ESSENTIAL)
    return ((((58, 58),), types, ((6, 6),), ((0, s.ADDRESS_MAX[6]),), ((0, s.ADDRESS_MAX[6]),), s.FULL[s.SPORT], s.FULL[s.TIME]),)


class ChainBuilder:
    """The chains of a policy, built on demand and memoised."""

    def __init__(self, policy: Policy, matcher: Matcher):
        self.policy, self.matcher = policy, matcher
        self._memo: dict[tuple[object, ...], Chain | None] = {}
        self._shared: dict[tuple[object, ...], tuple[Step, ...]] = {}

    def steps(self, refs: list[RuleRef], direction: str, peer: AddressSet | None = None) -> list[Step]:
        out = []
        for ref in refs:
            rule = ref.rule
            if not rule.enabled or rule.direction not in (direction, None):
                continue
            if peer is not None and not self._may_meet(rule, direction, peer):
                continue
            region = self.matcher.rule(rule)
            out.append(Step(region, rule.action, ref.id, ref, limited=rule.limit is not None))
        return out

    def _may_meet(self, rule: Rule, direction: str, peer: AddressSet) -> bool:
        """Whether the rule's other-end addresses (`to` of an out rule, `from` of an in
        rule) meet `peer` at all; a rule that cannot is skipped before its region is
        built."""
        refs = rule.to if direction == "out" else rule.from_
        if refs is None:
            return True
        addresses = self.policy.address_set(refs)
        return bool(
            (addresses.v4 and peer.v4 and s.iv_overlaps(addresses.v4, peer.v4))
            or (addresses.v6 and peer.v6 and s.iv_overlaps(addresses.v6, peer.v6))
        )

    def vm(self, vm: str, direction: str, peer: AddressSet | None = None) -> Chain:
        """The VM's chain. With `peer`, only the steps that can match packets whose
        other end (the destination of `out`, the source of `in`) is in `peer`: for
        those packets it decides exactly as the whole chain does. Reach asks this of
        every VM of the cluster, where building every rule's region costs seconds."""
        key = ("vm", vm, direction) if peer is None else ("vm", vm, direction, peer)
        found = self._memo.get(key)
        if found is None:
            policy = self.policy
            zone = policy.doc.vms[vm].zone
            steps = [*self._shared_steps("global", "", direction, peer), *self.steps(policy.rules_of("vm", vm), direction, peer)]
            if zone:
                steps += self._shared_steps("zone", zone, direction, peer)
            action = policy.default_action(vm, direction)
            default = Step(s.universe(), action, f"default-{direction}")
            found = self._memo[key] = Chain(f"vm:{vm} {direction}", tuple(steps), default)
        return found

    def _shared_steps(self, level: Level, owner: str, direction: str, peer: AddressSet | None) -> tuple[Step, ...]:
        """Global and zone steps, built once for all the VMs that share them."""
        key = (level, owner, direction, peer)
        found = self._shared.get(key)
        if found is None:
            found = self._shared[key] = tuple(self.steps(self.policy.rules_of(level, owner), direction, peer))
        return found

    def network(self, network: str) -> Chain:
        key = ("net", network)
        found = self._memo.get(key)
        if found is None:
            steps = self.steps(self.policy.rules_of("network", network), "net")
            found = self._memo[key] = Chain(f"network:{network}", tuple(steps), Step(s.universe(), "drop", f"net-{network}-default"))
        return found

    def management(self) -> Step | None:
        refs = self.policy.doc.settings.management
        if not refs:
            return None
        addresses = self.policy.address_set(refs)
        ports = s.merge((p, p) for p in MANAGEMENT_TCP_PORTS)
        boxes = []
        for family in (4, 6):
            src = addresses.v4 if family == 4 else addresses.v6
            if src:
                boxes.append((((6, 6),), ports, ((family, family),), src, ((0, s.ADDRESS_MAX[family]),), s.FULL[s.SPORT], s.FULL[s.TIME]))
        return Step(tuple(boxes), "accept", "anti-lockout") if boxes else None

    def host_in(self, node: str) -> Chain:
        key = ("host-in", node)
        found = self._memo.get(key)
        if found is None:
            steps: list[Step] = []  # the ICMPv6 essentials come first (engine.ESSENTIALS)
            management = self.management()
            if management is not None:
                steps.append(management)
            steps += self.steps(self.policy.rules_of("host", "") + self.policy.rules_of("host", node), "in")
            default = Step(s.universe(), self.policy.doc.settings.host_default.in_, "host-default-in")
            found = self._memo[key] = Chain(f"host:{node} in", tuple(steps), default)
        return found

    def host_out(self, node: str) -> Chain | None:
        """None when the compiler writes no output chain (nothing to enforce)."""
        key = ("host-out", node)
        if key not in self._memo:
            steps = self.steps(self.policy.rules_of("host", "") + self.policy.rules_of("host", node), "out")
            action = self.policy.doc.settings.host_default.out
            chain = None
            if steps or action != "accept":
                essentials = Step(essentials_region(), "accept", "icmpv6-essentials")  # as compiler/node.py
                chain = Chain(f"host:{node} out", (essentials, *steps), Step(s.universe(), action, "host-default-out"))
            self._memo[key] = chain
        return self._memo[key]
