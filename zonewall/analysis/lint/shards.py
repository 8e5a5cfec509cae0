"""A lint run split into shards, one process each (workers.py): which chains a shard
analyses, and which rules it answers for alone.

A rule is placed only in the chains of its owner: a VM's rules in that VM's chains,
a zone's in the chains of the zone's VMs, a network's and a node's in theirs. A shard
takes a set of VMs (whole zones where that keeps the shards even), and shard 0 also
every network's and node's chains. A rule whose chains all fall in one shard is that
shard's own: it reports it alone, as a run of one shard would. The others are
*shared*: the global rules, security groups' rules (any chain may call a group), and
the rules of a zone whose VMs were split. Each shard tells what it saw of them, and
shard 0 merges that and reports them (workers.py).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from itertools import pairwise

from ...policy.resolve import Policy, RuleRef
from .report import Related
from .state import _RuleStats

# A shard takes this many VMs at least: for fewer a process is not worth its memory
# and the fork (two processes took 150 VMs from 0.20-0.25 s to 0.16-0.20 s, 500 VMs
# from 0.55-0.67 s to 0.40-0.46 s; 2026-12-07, 2 CPUs).
MIN_VMS_PER_SHARD = 500
# A zone is split only if keeping it whole would leave a shard this far from its share.
ZONE_SLACK = 0.05
# Shard 0's share of the work against another shard's. It also reports the definitions
# and merges and sorts every shard's findings, but the other's chains cost it more (its
# first writes copy the pages it shares with shard 0): even, as measured at 10,000 VMs.
HOME_SHARE = 1.0


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    vms: frozenset[str] | None = None  # None: every VM (a run of one shard)
    zone_home: dict[str, int] = field(default_factory=dict)  # a zone kept whole -> its shard
    split_zones: frozenset[str] = frozenset()

    @property
    def takes_nodes(self) -> bool:
        """Networks' and nodes' chains, the definitions, and what no chain holds."""
        return self.index == 0

    def takes_vm(self, vm: str) -> bool:
        return self.vms is None or vm in self.vms

    def shared(self, ref: RuleRef) -> bool:
        """Whether the rule may be placed in the chains of more than one shard."""
        if self.count == 1:
            return False
        level = ref.level
        return level == "global" or level == "security_group" or (level == "zone" and ref.owner in self.split_zones)

    def owns(self, ref: RuleRef) -> bool:
        """Whether this shard alone answers for the rule (a rule of no shard's chains,
        e.g. of a zone without VMs, is shard 0's)."""
        if self.count == 1:
            return True
        level = ref.level
        if level == "vm":
            return self.vms is not None and ref.owner in self.vms
        if level == "zone":
            return ref.owner not in self.split_zones and self.zone_home.get(ref.owner, 0) == self.index
        return self.index == 0 and not self.shared(ref)


def plan_shards(policy: Policy, jobs: int, per_shard: int = MIN_VMS_PER_SHARD) -> list[Shard]:
    """Up to `jobs` shards of even work (one per `per_shard` VMs at most). VMs are
    taken in zone order; a cut falls on the nearest zone edge when one is within
    ZONE_SLACK of a shard's work, else inside the zone (whose rules are then shared)."""
    doc = policy.doc
    count = max(1, min(jobs, len(doc.vms) // max(1, per_shard)))
    if count == 1:
        return [Shard(0, 1)]
    zones = [doc.vms[vm].zone for vm in doc.vms]
    order = sorted(range(len(zones)), key=lambda i: (zones[i] is None, zones[i] or ""))  # stable: document order within a zone
    names = list(doc.vms)
    zone_steps = {name: len(policy.rules_of("zone", name)) for name in doc.zones}
    done = [0]  # done[i]: the work of the first i VMs in `order` (a VM's steps, roughly)
    for i in order:
        done.append(done[-1] + 2 + len(policy.rules_of("vm", names[i])) + zone_steps.get(zones[i] or "", 0))
    # where a cut keeps every zone whole: between two zones, or next to a VM of none
    edges = [k for k in range(1, len(order)) if zones[order[k - 1]] != zones[order[k]] or zones[order[k]] is None]
    shares = [HOME_SHARE] + [1.0] * (count - 1)
    unit = done[-1] / sum(shares)
    cuts, target = [], 0.0
    for share in shares[:-1]:
        target += share * unit
        at = min(bisect.bisect_left(done, target), len(order) - 1)
        k = bisect.bisect_left(edges, at)
        near = [edges[j] for j in (k - 1, k) if 0 <= j < len(edges)]
        best = min(near, key=lambda e: abs(done[e] - target), default=None)
        cuts.append(best if best is not None and abs(done[best] - target) <= ZONE_SLACK * unit else at)
    bounds = [0, *sorted(set(cuts)), len(order)]
    parts = [frozenset(names[i] for i in order[a:b]) for a, b in pairwise(bounds) if b > a]
    homes: dict[str, set[int]] = {}
    for index, part in enumerate(parts):
        for vm in part:
            zone = doc.vms[vm].zone
            if zone is not None:
                homes.setdefault(zone, set()).add(index)
    split = frozenset(zone for zone, where in homes.items() if len(where) > 1)
    zone_home = {zone: min(where) for zone, where in homes.items() if len(where) == 1}
    return [Shard(index, len(parts), part, zone_home, split) for index, part in enumerate(parts)]


@dataclass
class SharedStats:
    """What one shard saw of a shared rule (its _RuleStats without the chains' objects)."""

    chains: int
    dead: list[str]
    shadowed: list[str]
    live: int
    covering: dict[str, Related]
    exposure: dict[str, set[str]]
    placed_in: list[str]  # the chains' names, in order
    first: tuple[int, ...]

    @staticmethod
    def of(stats: _RuleStats) -> SharedStats:
        return SharedStats(stats.chains, stats.dead, stats.shadowed, stats.live, stats.covering, stats.exposure, stats.chain_names(), stats.first)

    def add(self, other: SharedStats) -> None:
        self.chains += other.chains
        self.dead += other.dead
        self.shadowed += other.shadowed
        self.live += other.live
        for key, related in other.covering.items():
            self.covering.setdefault(key, related)
        for label, chains in other.exposure.items():
            self.exposure.setdefault(label, set()).update(chains)
        self.placed_in += other.placed_in
        self.first = min(self.first, other.first)

    def as_stats(self, ref: RuleRef) -> _RuleStats:
        """As the rule's _RuleStats for reporting (no placements: those stay with the shards)."""
        return _RuleStats(ref, self.chains, self.dead, self.shadowed, self.live, self.covering, self.exposure, first=self.first)


@dataclass
class SharedConflict:
    """What one shard saw of a conflict whose later rule is shared: as met in its
    first chain there (the merge keeps the earliest chain's), and every chain."""

    first: tuple[int, ...]
    chains: list[str]
    later_action: str
    earlier: Related
    overlap: str
    exception: bool

    def add(self, other: SharedConflict) -> SharedConflict:
        """The two shards' sightings as one: the earlier chain's, every chain."""
        kept = self if self.first <= other.first else other
        return SharedConflict(kept.first, self.chains + other.chains, kept.later_action, kept.earlier, kept.overlap, kept.exception)
