"""The endpoints of one diff whose sides changed alike, compared with their peers once.

An edit of a zone rule with no `to:` changes the side of every VM of the zone (500
of them in a 10,000-VM cluster) against every peer of the cluster: compared endpoint
by endpoint, that is 5,000,000 (endpoint, peer) side reductions. Most of the zone's
VMs differ in nothing the peers can tell apart but their addresses: the same pieces
changed (what their own sides decide differently, up to their own address), with the
same outcomes (the same rules decide; the stage names carry the VM's name), on the
same network (the peers' sides read it for the network's check between them).

`Mine` is the endpoint (or the class of endpoints) whose side changed, as the peers
see it: its addresses (a class's: its members' together), its changed pieces with
the own address dimension widened to all of them, and for each member its own
outcomes on each piece. `differ.Differ` runs the peers once per `Mine` and records
the rows of each member from the part of each outcome that holds its addresses
(`Mine.members_in`): what a peer's side does with a packet depends on its source
or destination address only through the address sets of its steps, which the run
splits exactly.

`class_key` says which endpoints share a class; None keeps an endpoint to itself
(a node, a routed network, an own side whose changed pieces do not take every own
address alike). tests/analysis/test_endpoint_classes.py compares the flows with
and without classes.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import cast

from ..policy.addresses import AddressSet
from . import space as s
from .chains import Chain
from .engine import Outcome
from .guards import GuardStage
from .paths import ESSENTIALS, Scoped
from .peers import NicKey
from .space import Intervals, Region

Delta = list[tuple[Region, Outcome, Outcome]]  # (piece, old outcome, new outcome) of an endpoint's own side


@dataclass
class Member:
    key: NicKey
    own: dict[int, Intervals]  # its addresses per family
    delta: Delta  # its own outcomes, piece by piece (aligned with the class's pieces)


@dataclass
class Mine:
    """One endpoint, or a class of them, whose side changed (module docstring)."""

    key: NicKey  # the first member: what the peers' sides read of it is every member's
    members: list[Member]
    pieces: list[Region]  # the changed pieces, own dimension widened to every member's addresses
    own_dim: int
    addresses: AddressSet = field(init=False)
    widened: dict[int, Intervals] = field(init=False)
    _points: dict[int, tuple[list[int], list[Member]]] = field(init=False)
    _within: dict[tuple[int, Intervals], list[Member]] = field(init=False, default_factory=dict)
    _cells: dict[frozenset[Intervals], list[dict[int, Intervals]]] = field(init=False, default_factory=dict)
    _order: dict[int, int] = field(init=False)

    def __post_init__(self) -> None:
        by_family: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        points: dict[int, list[tuple[int, int, Member]]] = {4: [], 6: []}
        for index, member in enumerate(self.members):
            for family, intervals in member.own.items():
                by_family[family].extend(intervals)
                points[family].extend((low, index, member) for low, _high in intervals)
        self._order = {id(member): index for index, member in enumerate(self.members)}
        self.addresses = AddressSet(s.merge(by_family[4]), s.merge(by_family[6]))
        self.widened = {4: self.addresses.v4, 6: self.addresses.v6}  # the own dimension of a box that holds every member
        self._points = {}
        for family, found in points.items():
            found.sort(key=lambda item: (item[0], item[1]))
            self._points[family] = ([low for low, _i, _m in found], [m for _low, _i, m in found])

    @property
    def single(self) -> bool:
        return len(self.members) == 1

    def cells(self, stages: Iterable[object], essentials: Region) -> list[dict[int, Intervals]]:
        """The members' addresses cut into cells no region of the stages cuts: run
        cell by cell, the stages split each cell's boxes as they split each member's
        alone (a step whose own addresses take some members of a box would cut it
        where, alone, it misses them), so every member's rows come out as alone."""
        cuts = _own_cuts(stages, self.own_dim, essentials)
        if cuts is None:  # a stage whose regions are not known here: each member its own cell
            return [member.own for member in self.members]
        cuts.discard(self.widened.get(4, ()))
        cuts.discard(self.widened.get(6, ()))
        if not cuts:
            return [self.widened]
        # (a class's peers' sides cut it by a handful of address sets: 751 groups of a
        # zone commit at 10,000 VMs, 16 different sets of cuts)
        known = frozenset(cuts)
        found = self._cells.get(known)
        if found is None:
            found = self._cells[known] = self._cut(sorted(cuts))
        return found

    def _cut(self, ordered: list[Intervals]) -> list[dict[int, Intervals]]:
        """The members' addresses in cells by which of the cuts hold them."""
        by_vector: dict[tuple[bool, ...], dict[int, list[tuple[int, int]]]] = {}
        for member in self.members:
            for family, intervals in member.own.items():
                address = intervals[0][0]  # (one address per family: `class_key`)
                vector = (family, *(_inside(address, cut) for cut in ordered))
                by_vector.setdefault(vector, {}).setdefault(family, []).append((address, address))  # type: ignore[arg-type]
        cells: dict[tuple[bool, ...], dict[int, Intervals]] = {}
        for vector, by_family in by_vector.items():
            cells[vector[1:]] = {**cells.get(vector[1:], {}), **{f: s.merge(v) for f, v in by_family.items()}}
        return list(cells.values())

    def members_within(self, family: int, intervals: Intervals) -> list[Member]:
        """The members with their address inside the intervals, in the members' order
        (a class's members have one address per family: `class_key`)."""
        found = self._within.get((family, intervals))
        if found is None:
            keys, members = self._points[family]
            inside = {id(m): m for low, high in intervals for m in members[bisect_left(keys, low) : bisect_right(keys, high)]}
            found = self._within[family, intervals] = sorted(inside.values(), key=lambda m: self._order[id(m)])
        return found

    def members_in(self, box: s.Box) -> Iterator[tuple[Member, s.Box]]:
        """Each member with its address in the box, and the box narrowed to it."""
        family, own_dim = box[s.FAM][0][0], self.own_dim
        for member in self.members_within(family, box[own_dim]):
            yield member, box[:own_dim] + (member.own[family],) + box[own_dim + 1 :]


def alone(key: NicKey, own: dict[int, Intervals], delta: Delta, own_dim: int) -> Mine:
    return Mine(key, [Member(key, own, delta)], [r for r, _o, _n in delta], own_dim)


def class_key(key: NicKey, role: str, network: str | None, guards: Hashable, own: dict[int, Intervals], delta: Delta, own_dim: int,
              cluster: AddressSet) -> Hashable | None:
    """What the peers can tell of the endpoint's changed side: its changed pieces within
    the cluster with its own addresses taken out, their outcomes with its name taken
    out, its network and its guard filters (whether a guard sees the replies: read
    once per class); None: compared on its own."""
    kind, name, _nic = key
    if kind != "vm" or network is None or any(len(v) != 1 or v[0][0] != v[0][1] for v in own.values()):
        return None  # (several addresses of one family: a step can cut between them, see `Mine.cells`)
    peer_dim = s.DST if own_dim == s.SRC else s.SRC
    mark = f"vm:{name}"
    entries: list[Hashable] = []
    for region, old, new in delta:
        boxes: list[Hashable] = []
        for box in region:
            family = box[s.FAM][0][0]
            if box[own_dim] != own.get(family):
                return None  # a piece of only some of its addresses: its own
            inside = s.iv_intersect(box[peer_dim], cluster.v4 if family == 4 else cluster.v6)
            if inside:
                abstract: list[object] = list(box)
                abstract[own_dim], abstract[peer_dim] = None, inside  # its own address left out
                boxes.append(tuple(abstract))
        entries.append((tuple(boxes), _outcome_key(old, mark), _outcome_key(new, mark)))
    return (role, network, guards, tuple(entries))


def _outcome_key(outcome: Outcome, mark: str) -> Hashable:
    return (outcome.verdict, tuple((d.stage.replace(mark, "\0"), d.action, d.label) for d in outcome.decisions))


def combined(members: list[Member], own_dim: int, cluster: AddressSet) -> Mine:
    """The class of `members` (one `class_key`): the first member's pieces within the
    cluster, the own dimension widened to every member's addresses."""
    first = members[0]
    mine = Mine(first.key, members, [], own_dim)
    peer_dim = s.DST if own_dim == s.SRC else s.SRC
    widened = mine.widened
    for region, _old, _new in first.delta:
        boxes = []
        for box in region:
            family = box[s.FAM][0][0]
            inside = s.iv_intersect(box[peer_dim], cluster.v4 if family == 4 else cluster.v6)
            if inside:
                box = box[:peer_dim] + (inside,) + box[peer_dim + 1 :]
                boxes.append(box[:own_dim] + (widened[family],) + box[own_dim + 1 :])
        mine.pieces.append(tuple(boxes))
    return mine


def loose_key(class_of: Hashable, peer_dim: int) -> Hashable | None:
    """A `class_key` with the peers' addresses of its pieces left out: the classes of a
    zone whose VMs' own earlier rules took different sources out of the changed pieces
    (each VM's `drop from: group:gN`) share one. None: a piece with two boxes alike but
    for their peers (their union would not be disjoint)."""
    role, network, guards, entries = cast(tuple[str, str, Hashable, tuple[tuple[tuple[s.Box, ...], Hashable, Hashable], ...]], class_of)
    out = []
    for boxes, old, new in entries:
        shapes = tuple(box[:peer_dim] + (None,) + box[peer_dim + 1 :] for box in boxes)
        if len(set(shapes)) != len(shapes):
            return None
        out.append((shapes, old, new))
    return (role, network, guards, tuple(out))


def united(classes: list[Mine], own_dim: int) -> Mine:
    """One `Mine` for classes of one `loose_key` (each made by `combined`): every
    member, each piece's boxes holding every class's peers and every member's
    addresses. A peer's side run over it splits each class's part as the class's own
    run would (its regions split the peers' and the own addresses exactly); the
    classes' rows are then made of the parts within their own pieces."""
    members = [member for mine in classes for member in mine.members]
    out = Mine(classes[0].key, members, [], own_dim)
    peer_dim = s.DST if own_dim == s.SRC else s.SRC
    for index, piece in enumerate(classes[0].pieces):
        boxes = []
        for at, box in enumerate(piece):
            peers = s.merge(interval for mine in classes for interval in mine.pieces[index][at][peer_dim])
            box = box[:peer_dim] + (peers,) + box[peer_dim + 1 :]
            boxes.append(box[:own_dim] + (out.widened[box[s.FAM][0][0]],) + box[own_dim + 1 :])
        out.pieces.append(tuple(boxes))
    return out


def _inside(address: int, intervals: Intervals) -> bool:
    at = bisect_right(intervals, (address, 1 << 129)) - 1
    return at >= 0 and intervals[at][0] <= address <= intervals[at][1]


def _own_cuts(stages: Iterable[object], own_dim: int, essentials: Region) -> set[Intervals] | None:
    """The own-address sets of every region the stages test (None: a stage of a kind
    whose regions are not walked here: translations, forwards)."""
    found: set[Intervals] = set()
    full = ((0, (1 << 128) - 1),)

    def regions(region: Region) -> None:
        for box in region:
            values = box[own_dim]
            if values != full and values != ((0, s.ADDRESS_MAX[4]),):
                found.add(values)

    regions(essentials)
    pending = list(stages)
    while pending:
        stage = pending.pop()
        if isinstance(stage, Chain):
            for step in stage.steps:
                regions(step.region)
            regions(stage.default.region)
        elif isinstance(stage, GuardStage):
            for _name, rules in stage.filters:
                for rule in rules:
                    regions(rule.region)
        elif isinstance(stage, Scoped):
            regions(stage.region)
            pending.extend(stage.stages)
        elif stage is not ESSENTIALS:
            return None
    return found
