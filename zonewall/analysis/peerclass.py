"""One endpoint's peers sorted by what decides their side, before the per-peer work.

`PeerSides` builds a VM peer's side from pieces the peers share: its NIC's guard
filters, the ICMPv6 essentials, its node's protection, the global level, its own
rules that can meet the endpoint, its zone's level, its default, and (on the
endpoint's own segment) its network's check. Of the peer it reads only its
*shape*: the NIC's index, network, node, zone, whether the NIC is filtered and by
which filter lists, the default's action and logging, and its own rules that can
meet the endpoint. Two peers of one shape none of whose own rules meets the packets
in question (most of them: a rule of one VM open to everyone has 10,000 peers, a
few hundred shapes) get the same reduction, but for the steps whose region names particular peer addresses; those
are tested against the peer's own packets (`PeerSpace.region`, which notes that it
was read). So a reduction that read no peer address holds for every peer of its
shape and signature (which of the endpoint's pieces the peer meets).

`ClassedSides.reduced` answers what `PeerSides.reduced` answers: once per (shape,
signature) when the first reduction of it read no peer address, else per peer; a
peer with own rules that meet the endpoint's packets, one behind an open port forward,
a node, and any side `PeerSides` builds the general way: per peer, as before.
`both_sides_class` and `reply_class` are what `diff` groups a peer by with them: its
classes in both policies, and what decides whether a guard sees its replies.
tests/analysis/test_peer_classes.py holds the diff equal with and without it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING

from ..compiler.plan.switches import nic_filtered
from .peers import Key, NicKey, PeerSides, PeerSpace

if TYPE_CHECKING:
    from .engine import Analyzer
    from .paths import PathStage

Shape = tuple[Hashable, ...]
Reduced = tuple[tuple["PathStage", ...], Key]
_UNSEEN = object()
_SHAPES = "_peer_shapes"  # where an analyzer keeps its peers' shapes (its __dict__)
_PER_PEER = object()  # a reduction of this shape read the peer's addresses


class ClassedSides:
    """`PeerSides.reduced`, once per class of peers (module docstring)."""

    def __init__(self, sides: PeerSides):
        self.sides = sides
        self.policy = sides.policy
        # a peer's shape is its policy's, whatever the endpoint: kept on the analyzer
        # (a zone edit's hundreds of classes of endpoints ask it of the same 10,000 peers)
        self._shapes = shapes_of(sides.analyzer).setdefault(sides.direction, {})
        self._reduced: dict[tuple[Shape, tuple[int, ...]], object] = {}
        # a peer -> its class whatever the signature (`plain`; None: not so)
        self._plain: dict[NicKey, Shape | None] = {}
        self._every_piece = tuple(range(len(sides.pieces)))

    def shape(self, owner: NicKey) -> Shape | None:
        """What of the peer its side reads, but for its own rules (None: not a VM NIC)."""
        found = self._shapes.get(owner, _UNSEEN)
        if found is _UNSEEN:
            found = self._shapes[owner] = self._shape(owner)
        return found  # type: ignore[return-value]

    def _shape(self, owner: NicKey) -> Shape | None:
        kind, name, nic = owner
        if kind != "vm" or nic is None:
            return None
        policy = self.policy
        vm = policy.doc.vms[name]
        filters = tuple(policy.nic_filters(name, nic)) if nic_filtered(policy, name, nic) else None
        logging = vm.log
        choice = (logging.in_ if self.sides.direction == "in" else logging.out) if logging is not None else None
        return (nic, vm.nics[nic].network, vm.host, vm.zone, filters, policy.default_action(name, self.sides.direction), choice)

    def plain(self, owner: NicKey) -> Shape | None:
        """The peer's class whatever the signature: its shape, when none of its own
        rules that can meet the endpoint meets any of the pieces and no open port
        forward leads to it (most peers: at 10,000 VMs every peer's `dns` and `reject
        tcp 25`, open to everyone, meet no piece of a zone commit); None: `classed`
        tells per signature, or its side is its own."""
        found = self._plain.get(owner, _UNSEEN)
        if found is _UNSEEN:
            found = self._plain[owner] = self._classed(owner, self._every_piece)
        return found  # type: ignore[return-value]

    def classed(self, owner: NicKey, signature: tuple[int, ...]) -> Shape | None:
        """The peer's class: its shape, when its side is one of the shape's (none of
        its own rules that can meet the endpoint meets the pieces of `signature`, no
        open port forward leads to it); None: its own."""
        plain = self.plain(owner)
        return plain if plain is not None else self._classed(owner, signature)

    def _classed(self, owner: NicKey, signature: tuple[int, ...]) -> Shape | None:
        shape = self.shape(owner)
        if shape is None or self.sides.forwarded(owner[1]):
            return None
        candidates = self.sides.candidates(owner[1])
        if candidates is None:
            return None
        sides = self.sides
        if any(sides.effective.meets(candidate[1], signature, sides.pieces) for candidate in candidates):
            return None  # a rule of its own in its side
        return shape

    def settled(self, owner: NicKey, signature: tuple[int, ...]) -> bool:
        """Whether the peer's side is its class's, for every peer of the class with this signature."""
        shape = self.classed(owner, signature)
        if shape is None:
            return False
        found = self._reduced.get((shape, signature), _UNSEEN)
        return found is not _UNSEEN and found is not _PER_PEER

    def reduced(self, owner: NicKey, signature: tuple[int, ...], own: PeerSpace) -> Reduced | None:
        shape = self.classed(owner, signature)
        if shape is None:
            return self.sides.reduced(owner, signature, own)
        memo_key = (shape, signature)
        found = self._reduced.get(memo_key, _UNSEEN)
        if found is _PER_PEER:
            return self.sides.reduced(owner, signature, own)
        if found is not _UNSEEN:
            return found  # type: ignore[return-value]
        own.read = False
        fast = self.sides.shared(owner, signature, own)
        if fast is None:  # the general way: the peer's own
            self._reduced[memo_key] = _PER_PEER
            return self.sides.reduced_slowly(owner, signature, own)
        self._reduced[memo_key] = _PER_PEER if own.read else fast
        return fast


def shapes_of(analyzer: Analyzer) -> dict[str, dict[NicKey, Shape | None]]:
    """The analyzer's peers' shapes by direction (kept on it, as its other memos)."""
    found: dict[str, dict[NicKey, Shape | None]] = analyzer.__dict__.setdefault(_SHAPES, {})
    return found


def share_shapes(analyzer: Analyzer, other: Analyzer) -> None:
    """Let `analyzer` read and add peers' shapes in `other`'s memo, the same dict.

    Exact when the two policies differ in rules or group members only (diffedits.py:
    a shape reads NICs, networks, nodes, zones, filters, defaults and logging, never
    a rule or a group). A controller's chain of such commits then works the shapes
    out once: each diff's new side is kept for the next diff's old one (kept.py),
    with the memo both filled; before, a peer whose side was the same in both
    policies had its shape asked of the old side only, and the next commit asked all
    10,000 again (~20 % of a VM rule's diff at 10,000 VMs). Every analyzer sharing
    the memo agrees on every entry: their policies are pairwise such edits."""
    analyzer.__dict__[_SHAPES] = shapes_of(other)


def both_sides_class(owner: NicKey, classes: list[ClassedSides | None], same: bool, signature: tuple[int, ...]) -> tuple[Hashable, ...] | None:
    """What decides both of the peer's reduced sides in a diff, when its classes
    settle them: its class in the old policy, in the new one unless its side is
    the same in both (`same`), and which pieces it meets; None: its own."""
    if classes[0] is None or classes[1] is None:
        return None
    before = classes[0].classed(owner, signature)
    if before is None:
        return None
    if same:
        return (before, None, signature)
    after = classes[1].classed(owner, signature)
    return None if after is None else (before, after, signature)


def plain_classes(owner: NicKey, classes: list[ClassedSides | None], same: bool) -> tuple[Shape, Shape | None] | None:
    """The first two parts of every `both_sides_class` of the peer, whatever the
    signature, when the peer is `plain` in both policies (None: ask per signature)."""
    if classes[0] is None or classes[1] is None:
        return None
    before = classes[0].plain(owner)
    if before is None:
        return None
    if same:
        return (before, None)
    after = classes[1].plain(owner)
    return None if after is None else (before, after)


def reply_class(owner: NicKey, classes: list[ClassedSides | None], same: bool) -> tuple[Hashable, ...] | None:
    """The peer's class for whether a guard sees the replies of its flows with the
    endpoint (`Analyzer.reply_guards` reads of it its network, node and guard
    filters, all in its shape): its shapes in both policies; None: unknown."""
    if classes[0] is None or classes[1] is None:
        return None
    before = classes[0].shape(owner)
    after = before if same else classes[1].shape(owner)  # the same side: the same shape
    return None if before is None or after is None else (before, after)
