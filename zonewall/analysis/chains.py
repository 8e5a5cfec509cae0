"""The plan's chains as ordered (region, action) lists, and first match.

The chains, their order and their steps are the evaluation plan's
(compiler/plan/chains.py): a VM's `in`/`out`, a network's guest-to-guest check, a
node's input and output. Here each step gets its region (regions.py), and
evaluating a chain over a region splits it into the parts each step decides; the
remainder goes to the default.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from ..compiler.plan import Plan
from ..compiler.plan.chains import ESSENTIALS, HostChain, NetworkChain, VmChain
from ..compiler.plan.vocabulary import Condition, NewConnection, NotForwarded, Scope
from ..compiler.plan.vocabulary import Step as PlanStep
from ..policy.addresses import AddressSet
from ..policy.resolve import RuleRef
from . import space as s
from .regions import Regions, matches_region
from .space import Region


@dataclass(frozen=True)
class Step:
    """One rule of a chain (or its default when `ref` is None and `default` is set)."""

    region: Region
    action: str  # accept | drop | reject
    label: str  # rule id, or e.g. default-in
    ref: RuleRef | None = None
    limited: bool = False  # accept with `limit`: over the rate it does not match
    condition: Condition | None = None  # a condition on the connection (dnat)
    over_only: bool = False  # matches only over a rate (protection.synflood): a drop of what exceeds it
    packet_limited: bool = False  # accept with `packet_limit`: over the packet rate its packets are dropped
    # `nic:` / `interface:` (issue 18): a path property, not the packet's; in the key so
    # that diff sees a rule moved between NICs or interfaces (chains built for one NIC
    # or interface already leave out the steps scoped elsewhere)
    scope: Scope | None = None

    @property
    def where(self) -> str:
        return self.ref.where if self.ref is not None else "built-in"

    @property
    def key(self) -> tuple[object, ...]:
        """What the step does, without where it is written (diff compares these)."""
        return (self.region, self.action, self.limited, self.condition, self.over_only, self.packet_limited, self.scope)

    @property
    def rate_dependent(self) -> bool:
        """Whether the step decides differently over a rate than within it."""
        return self.limited or self.over_only or self.packet_limited


@dataclass(frozen=True)
class Chain:
    name: str  # shown in traces: "vm:web1 in", "network:nas", "host:node1 in"
    steps: tuple[Step, ...]
    default: Step
    accept_ends: bool = False  # an accept here is final (the node's input), not "go on"

    def key(self) -> tuple[object, ...]:
        return (tuple(step.key for step in self.steps), self.default.action)


@dataclass(frozen=True)
class SharedPrefix(Chain):
    """A chain whose first `start` steps are the very step objects of another's
    (analysis/twins.py: the old and new side of one endpoint in a diff): what those
    steps decide of a region, and what they leave, is worked out once for both,
    in `memo` (shared by the two chains)."""

    start: int = 0
    memo: dict[tuple[object, ...], tuple[tuple[tuple[Region, Step], ...], Region]] = field(default_factory=dict, compare=False, hash=False)


def first_match(chain: Chain, space: Region, *, over_rate: bool = False, forwarded: int | None = None) -> Iterator[tuple[Region, Step]]:
    """(part of `space`, the step deciding it), in chain order. `over_rate`: rate
    limited accepts are exhausted (the packet is over the rate and falls through).
    `forwarded`: the nat entry that forwarded the connection (dnat), if any."""
    remaining, steps = space, chain.steps
    if chain.__class__ is SharedPrefix and chain.start:
        key = (space, over_rate, forwarded)
        found = chain.memo.get(key)
        if found is None:
            found = chain.memo[key] = _decide(steps[: chain.start], space, over_rate, forwarded)
        yield from found[0]
        remaining, steps = found[1], steps[chain.start :]
    hits, remaining = _decide(steps, remaining, over_rate, forwarded)
    yield from hits
    if remaining:
        yield remaining, chain.default


def _decide(steps: tuple[Step, ...], space: Region, over_rate: bool, forwarded: int | None) -> tuple[tuple[tuple[Region, Step], ...], Region]:
    """What `steps` decide of `space`, in order, and what they leave (first_match, and the prefix twin chains share)."""
    hits, remaining = [], space
    for step in steps:
        if not remaining:
            break
        if (over_rate and step.limited) or (not over_rate and step.over_only):
            continue
        if step.condition is not None and not holds(step.condition, forwarded):
            continue
        if not s.overlaps(remaining, step.region):
            continue
        hit = s.intersect(remaining, step.region)
        if hit:
            hits.append((hit, over_packet_rate(step) if over_rate and step.packet_limited else step))
            remaining = s.subtract(remaining, step.region)
    return tuple(hits), remaining


PASS = "pass"  # the label of a default that lets the packet go on, unrecorded


def over_packet_rate(step: Step) -> Step:
    """A packet-limited accept over its packet rate: the packet is dropped there."""
    return replace(step, action="drop", label=f"{step.label} (over its packet_limit)")


def holds(condition: Condition, forwarded: int | None) -> bool:
    """Whether a step's connection condition holds for a flow that the nat entry
    `forwarded` translated (None: no dnat)."""
    if isinstance(condition, NewConnection):
        return True  # every flow the analyzer judges is a new connection
    if isinstance(condition, NotForwarded):
        return forwarded is None
    return condition.entry == forwarded


def essentials_region() -> Region:
    return matches_region(ESSENTIALS.matches, None)


class ChainBuilder:
    """The plan's chains (compiler/plan/chains.py) as analyzer chains: each step with
    its region. The order and the steps are the plan's; only regions are added."""

    def __init__(self, plan: Plan, regions: Regions):
        self.plan, self.regions = plan, regions
        self._memo: dict[tuple[object, ...], Chain | None] = {}
        self._rendered: dict[int, tuple[VmChain, Chain]] = {}
        self._steps: dict[int, tuple[PlanStep, Step]] = {}
        self._lender: ChainBuilder | None = None

    def borrow_steps(self, other: ChainBuilder | None) -> None:
        """Take the step of a plan step `other` has rendered (the same object: lent by
        a planner that borrows from `other`'s, RulePlanner.borrow_matches) from it: its
        region is a function of the plan step alone. None: stop."""
        self._lender = other

    def step(self, step: PlanStep) -> Step:
        # memoised per plan step object: a zone's and the global steps are shared by
        # the chains of every VM (the plan step is kept alive, so its id is not reused)
        found = self._steps.get(id(step))
        if found is None:
            lent = self._lender._steps.get(id(step)) if self._lender is not None else None
            found = self._steps[id(step)] = lent if lent is not None and lent[0] is step else (step, self.render(step))
        return found[1]

    def render(self, step: PlanStep) -> Step:
        """The step with its region, not memoised: for a caller that meets each step
        once (lint, a VM's own rules: 200,000 entries the memo would keep for nothing)."""
        over = step.limit is not None and step.limit.over
        return Step(self.regions.of(step), step.action, step.label, step.ref, step.limited and not over, step.condition, over, step.packet_limit is not None, step.scope)  # type: ignore[arg-type]

    def _chain(self, plan: VmChain | NetworkChain | HostChain) -> Chain:
        return Chain(plan.name, tuple(self.step(step) for step in plan.steps), self.step(plan.default))

    def vm(self, vm: str, direction: str, peer: AddressSet | None = None, nic: int | None = None) -> Chain:
        """The VM's chain; with `peer`, only the steps that can match packets whose
        other end is in `peer` (ChainPlanner.vm). Reach asks this of every VM of the
        cluster, where building every rule's region costs seconds. With `nic`, as
        that NIC's traffic meets it (rules scoped to other NICs left out, issue 18)."""
        key = ("vm", vm, direction, peer, nic)
        found = self._memo.get(key)
        if found is None:
            plan = self.plan.chains.vm_nic(vm, direction, nic, peer)
            # every NIC's chain is the VM's own plan chain when no rule names a NIC:
            # rendered once for all of them (the plan chain kept beside it: its id stays its own)
            rendered = self._rendered.get(id(plan))
            if rendered is None or rendered[0] is not plan:
                rendered = self._rendered[id(plan)] = (plan, self._chain(plan))
            found = self._memo[key] = rendered[1]
        return found

    def network(self, network: str) -> Chain | None:
        """The check between two guests of `network` (None: there is none)."""
        key = ("net", network)
        if key not in self._memo:
            plan = self.plan.chains.network(network)
            self._memo[key] = self._chain(plan) if plan is not None else None
        return self._memo[key]

    def host_in(self, node: str, interface: str | None = None) -> Chain:
        """The node's input chain; with `interface`, as that interface's packets meet
        it (`interface:` rules, issue 18; None: every step, whatever its scope)."""
        key = ("host-in", node, interface)
        found = self._memo.get(key)
        if found is None:
            plan = self.plan.chains.host_in(node)
            found = self._memo[key] = self._chain(plan if interface is None else self.plan.chains.host_interface(plan, interface))
        return found

    def host_out(self, node: str, interface: str | None = None) -> Chain | None:
        """None when the compiler writes no output chain (nothing to enforce)."""
        key = ("host-out", node, interface)
        if key not in self._memo:
            plan = self.plan.chains.host_out(node)
            if plan is not None and interface is not None:
                plan = self.plan.chains.host_interface(plan, interface)
            self._memo[key] = self._chain(plan) if plan is not None else None
        return self._memo[key]
