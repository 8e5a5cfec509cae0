"""What the lint keeps per chain, step and rule."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...policy.addresses import AddressSet
from ...policy.resolve import RuleRef
from .. import space as s
from ..space import Intervals, Region
from .report import Related


class _Step:
    """One step of a chain as the lint sees it (restricted to what reaches the chain).
    Shared by the chains where it is the same (what it decides there is in
    _ChainState.lefts)."""

    __slots__ = ("action", "eff", "eid", "exposes", "key", "label", "limited", "logged", "mask", "meets", "ref", "region", "stats", "tag")

    def __init__(self, key: str, ref: RuleRef | None, label: str, region: Region, eff: Region, action: str, limited: bool, logged: bool, sig: int):
        self.key = key  # rule id (unique), or "@label" for built-ins
        self.ref = ref
        self.label = label
        self.region = region
        self.eff = eff
        self.action = action
        self.limited = limited
        self.logged = logged
        self.mask = sig
        self.stats: _RuleStats | None = None  # the rule's, set on first use
        self.exposes = False  # an in accept from a whole family to a management port
        self.eid = id(eff)  # memo keys: every eff is kept alive by the linter
        self.tag = (self.eid, action, logged, limited)  # what a redundancy judgement reads of it
        self.meets: dict[int, bool] = {}  # id(a later step's eff) -> do they overlap

@dataclass
class _Restriction:
    """What reaches a chain. VM chains: one address dimension (DST in, SRC out) holds
    the VM's addresses; per family `spec` is the single address (an int: the
    dimension is then replaced by a constant, so that chains of different VMs share
    their regions) or the intervals (several addresses). Network chains: `dims`."""

    dim: int = s.DST
    spec: dict[int, int | Intervals] = field(default_factory=dict)
    by_family: dict[int, Intervals] = field(default_factory=dict)
    dims: tuple[tuple[int, dict[int, Intervals]], ...] | None = None
    token: tuple[object, ...] = ()  # which families have one address, several, none

    @staticmethod
    def of_vm(dim: int, addresses: AddressSet) -> _Restriction:
        spec: dict[int, int | Intervals] = {}
        for family, values in ((4, addresses.v4), (6, addresses.v6)):
            if len(values) == 1 and values[0][0] == values[0][1]:
                spec[family] = values[0][0]
            elif values:
                spec[family] = values
        token = tuple((family, "one" if type(value) is int else value) for family, value in sorted(spec.items()))
        return _Restriction(dim, spec, {4: addresses.v4, 6: addresses.v6}, token=token)

@dataclass
class _ChainState:
    name: str
    kind: str  # vm | network | host
    owner: str  # the VM, network or node
    steps: list[_Step]
    default_action: str
    default_logged: bool
    default_related: Related
    # where the chain comes in the whole run's order (a VM's place in the document,
    # then direction and NIC; networks, then nodes): shards of a sharded run see
    # some chains only, and merge what they found in this order (shards.py)
    order: tuple[int, ...] = ()
    lefts: list[Region] = field(default_factory=list)  # what each step decides here

@dataclass(slots=True)
class _RuleStats:
    ref: RuleRef
    chains: int = 0
    dead: list[str] = field(default_factory=list)
    shadowed: list[str] = field(default_factory=list)
    live: int = 0
    covering: dict[str, Related] = field(default_factory=dict)
    exposure: dict[str, set[str]] = field(default_factory=dict)  # port label -> chains
    placements: list[tuple[_ChainState, int]] = field(default_factory=list)
    first: tuple[int, ...] = ()  # the chain order and index of its first placement

    def chain_names(self) -> list[str]:
        return [chain.name for chain, _ in self.placements]

@dataclass
class _Conflict:
    later: _Step  # as met in the first chain
    earlier: _Step
    chains: list[str]
    first: tuple[int, ...] = ()  # the order of the chain it was first met in
