"""The comparison itself: for each endpoint whose chains may differ (diffscope.py,
diffedits.py), where its own side decides differently, then which peers on the other
side (outside, nodes, VM NICs grouped by behaviour as in `reach`) make the whole flow
differ. Many endpoints alike (a zone's VMs) are compared with the peers once per class
(analysis/endpointclass.py), and peers alike once per class of peers
(analysis/peerclass.py, peertemplate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from collections.abc import Set as AbstractSet
from itertools import chain

from ..compiler.plan.modes import is_routed
from ..compiler.plan.switches import guard_filters
from ..policy.addresses import AddressSet
from . import diffswitches as switches
from . import space as s
from .chains import essentials_region
from .diffrecord import Recorder, partition
from .endpointclass import Member, Mine, alone, class_key, combined, loose_key, united
from .endpoints import Endpoint
from .engine import Analyzer, GuardOrChain, Outcome
from .flowrows import DiffRow, _decisive_label, _differs, _final
from .labelsets import Labels
from .peerclass import ClassedSides, both_sides_class, plain_classes, reply_class
from .peers import Effective, Key, PeerSides, PeerSpace, know_owners
from .peertemplate import Relabel, Sides, template_key
from .reach import NicKey, endpoint_addresses
from .space import Region
from .twins import twin_sides

# (piece, change, deciding labels old and new, services, time, family, own addresses)
PendingKey = tuple[int, str, "tuple[str, str] | None", "tuple[str, str] | None", tuple[str, ...], str, int, s.Intervals]
Pending = dict[PendingKey, tuple[Outcome, Outcome, int]]  # -> a sample part's peer outcomes, the peers' labels (bits)
# a group of peers (by its list's id, and by its peers) -> the list, whether a guard sees their replies, their VMs
Replied = dict[Hashable, tuple[list[NicKey], bool, set[str]]]
PeerReducer = Callable[[NicKey, tuple[int, ...], PeerSpace], "tuple[tuple[GuardOrChain, ...], Key] | None"]

class Differ(Recorder):
    """One diff's comparison (module docstring): `run` for one endpoint's changed
    region, `run_classes` for many endpoints at once; the rows found are the
    Recorder's (`rows`, `class_rows`), merged for reading by flowrows.py."""

    def __init__(self, a_old: Analyzer, a_new: Analyzer, common: AbstractSet[NicKey], *, shared_peers: bool = False,
                 same_side: Callable[[NicKey], bool] | None = None):
        super().__init__(a_old, a_new)
        self.common = common
        self.same_side = same_side or (lambda _owner: False)  # a peer whose side is the same in both policies
        # many endpoints to compare (a zone's VMs): each peer's side built once, whole,
        # for all of them, rather than filtered for each (the same outcomes: the
        # filter only leaves out steps no packet of the space can meet)
        self.shared_peers = shared_peers
        self.class_rows: list[DiffRow] = []  # a class's rows: several members' labels each (_add_pending)
        self._splits: dict[tuple[NicKey, str, NicKey], bool] = {}
        # no network the nodes route (all bridged): every flow splits into its two
        # sides (paths.splits), so no peer is asked (10,000 of them for a rule open to all)
        self.routing = any(is_routed(a.policy, name) for a in (a_old, a_new) for name in a.policy.doc.networks)
        self.essentials = essentials_region()
        self._narrow: dict[tuple[tuple[tuple[int, int], ...], ...], AddressSet | None] = {}
        self._beyond_of: dict[tuple[int, s.Intervals], s.Intervals] = {}
        self._points_of: dict[tuple[NicKey, ...], dict[int, s.Intervals]] = {}

    def side_stages(self, analyzer: Analyzer, key: NicKey, role: str, peer: AddressSet | None = None) -> tuple[GuardOrChain, ...]:
        endpoint = Endpoint(key[0], key[1])  # type: ignore[arg-type]
        return analyzer.receiver_stages(endpoint, key[2], peer) if role == "receiver" else analyzer.sender_stages(endpoint, key[2], peer)

    def narrow_peer(self, space: Region, peer_dim: int) -> AddressSet | None:
        """The other ends `space` holds, when they leave out part of the cluster: an
        endpoint's side built for them alone decides them exactly as its whole side
        (ChainBuilder.vm), without the steps of rules no packet of the space can meet.
        A group member's commit changes the flows of the group's few addresses through
        500 zone VMs' chains of ~14 own rules each: the rules naming other peers need
        no match keys built (their address sets resolved) on either policy. None: the
        space reaches every address of the cluster, where the whole side is built once."""
        if not switches.NARROW_SIDES:
            return None
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for box in space:
            (v4 if box[s.FAM][0][0] == 4 else v6).extend(box[peer_dim])
        key = (tuple(v4), tuple(v6))
        if key in self._narrow:
            return self._narrow[key]
        found = AddressSet.of(v4, v6)
        peer = None if self.cluster.minus(found).is_empty() else found
        if peer is not None:
            for analyzer in (self.a_old, self.a_new):
                know_owners(analyzer, peer)
        self._narrow[key] = peer
        return peer

    def run(self, key: NicKey, region: Region, role: str, whole_flow: bool = False) -> None:
        """Flows of `key` (as receiver or sender) in `region` that the policies treat differently."""
        found = self._own_delta(key, region, role, whole_flow)
        if found is not None:
            own, delta = found
            self._peers(alone(key, own, delta, s.DST if role == "receiver" else s.SRC), role, whole_flow, shared=self.shared_peers)

    def run_classes(self, regions: dict[NicKey, Region], role: str) -> None:
        """`run` for every endpoint of `regions`, the peers compared once per class of
        endpoints whose changed sides they cannot tell apart (analysis/endpointclass.py)."""
        own_dim = s.DST if role == "receiver" else s.SRC
        classes: dict[Hashable, list[Member]] = {}
        for key, region in sorted(regions.items(), key=lambda kv: str(kv[0])):
            found = self._own_delta(key, region, role, False)
            if found is None:
                continue
            own, delta = found
            network = guards = None
            if key[0] == "vm":
                network = self.a_new.policy.doc.vms[key[1]].nics[key[2]].network  # type: ignore[index]
                guards = tuple(tuple(guard_filters(a.policy, key[1], key[2])) for a in (self.a_old, self.a_new))  # type: ignore[arg-type]
            class_of = class_key(key, role, network, guards, own, delta, own_dim, self.cluster)
            member = Member(key, own, delta)
            classes.setdefault(class_of if class_of is not None else ("alone", key), []).append(member)
        peer_dim = s.SRC if role == "receiver" else s.DST
        kin: dict[Hashable, list[Hashable]] = {}  # classes alike but for which peers their pieces hold
        for class_of in classes:
            loose = loose_key(class_of, peer_dim) if switches.UNITED_CLASSES and class_of[0] != "alone" else None  # type: ignore[index]
            kin.setdefault(loose if loose is not None else ("apart", class_of), []).append(class_of)
        for kept_together in kin.values():
            if len(kept_together) > 1:
                mines = [combined(classes[class_of], own_dim, self.cluster) for class_of in kept_together]
                self._peers(united(mines, own_dim), role, False, shared=False, per_piece=True, classes_within=mines)
                continue
            members = classes[kept_together[0]]
            first = members[0]
            mine = combined(members, own_dim, self.cluster) if len(members) > 1 else alone(first.key, first.own, first.delta, own_dim)
            self._peers(mine, role, False, shared=False, per_piece=True)

    def _own_delta(self, key: NicKey, region: Region, role: str, whole_flow: bool) -> tuple[dict[int, s.Intervals], list[tuple[Region, Outcome, Outcome]]] | None:
        """The endpoint's addresses and where its own side decides differently (with
        the flows to and from outside recorded, and the peers' whole flows where they
        do not split); None: nothing of it differs."""
        own_dim, peer_dim = (s.DST, s.SRC) if role == "receiver" else (s.SRC, s.DST)
        own = endpoint_addresses(self.a_new, Endpoint(key[0], key[1]), key[2])  # type: ignore[arg-type]
        space = s.subtract(region, self.essentials)
        space = tuple(b for b in (s.box_restrict(box, own_dim, own.get(box[s.FAM][0][0], ())) for box in space) if b is not None)
        if not space:
            return None
        peer = self.narrow_peer(space, peer_dim)
        stages_old, stages_new = twin_sides(self.side_stages(self.a_old, key, role, peer), self.side_stages(self.a_new, key, role, peer))
        old_side = list(self.a_old.run(stages_old, space))
        new_side = list(self.a_new.run(stages_new, space))
        self.whole_flows(key, role, space)
        delta = [(r, o, n) for r, o, n in partition(old_side, new_side, differing=not whole_flow) if _differs(o, n) or whole_flow]
        if not delta:
            return None
        # peers outside: nothing of ours on their side
        for region_d, o, n in delta:
            # (what of a box's peers is outside: inside them, so the box's own, no intersection)
            outside = tuple(box[:peer_dim] + (rest,) + box[peer_dim + 1 :] for box in region_d if (rest := self._beyond(box[s.FAM][0][0], box[peer_dim])))
            if outside:
                self.record(key, role, None, outside, o, n)
        return own, delta

    def _beyond(self, family: int, peers: s.Intervals) -> s.Intervals:
        """The addresses of `peers` outside the cluster (every VM of a zone asks it of
        the same peers: "everyone", a subtraction of the cluster's ~10,000 addresses)."""
        found = self._beyond_of.get((family, peers))
        if found is None:
            found = self._beyond_of[family, peers] = s.iv_subtract(peers, self.cluster.v4 if family == 4 else self.cluster.v6)
        return found

    def _peers(self, mine: Mine, role: str, whole_flow: bool, *, shared: bool, per_piece: bool = False, classes_within: list[Mine] | None = None) -> None:
        """The flows between `mine` (an endpoint or a class of them) and the peers in the
        cluster, in the pieces where its own side decides differently. `classes_within`:
        `mine` unites these classes of endpoints (`united`): the peers run once for all,
        and each class's rows are made of the parts within its own pieces."""
        key, pieces = mine.key, mine.pieces
        peer_dim = s.SRC if role == "receiver" else s.DST
        receiver_first = role == "receiver"
        signatures: dict[NicKey, set[int]] = {}
        for index, r in enumerate(pieces):
            found: list[NicKey] = []
            for family in (4, 6):
                values = s.family_projection(r, peer_dim, family)
                if values:
                    found.extend(self.a_new.directory.owners_within(family, values))
            for owner in dict.fromkeys(found):  # (in order of address, as the peers' groups are made)
                if owner not in self.common or (mine.single and owner[1] == key[1] and owner[0] == key[0]):
                    continue
                if self.split(key, role, owner):
                    signatures.setdefault(owner, set()).add(index)
        peer_sides = [self._peer_sides(a, key, role, mine.addresses, pieces, peer_dim, shared) for a in (self.a_old, self.a_new)]
        reducers = [found[0] for found in peer_sides]
        classes = [found[1] for found in peer_sides]
        # key -> the first peer's sides, the peers, the pieces they meet, each peer's sides
        groups: dict[tuple[object, ...], tuple[tuple[GuardOrChain, ...], tuple[GuardOrChain, ...], list[NicKey], tuple[int, ...], list[Sides]]] = {}
        class_groups: dict[tuple[object, ...], tuple[tuple[object, ...], Sides]] = {}  # a class of peers -> the key of its group, its sides
        # a class of endpoints: peers whose sides differ in their rules' names alone (each
        # VM's own `reject tcp 25`) run as one template, relabelled where they decide
        templated = per_piece and not mine.single and switches.PEER_TEMPLATES
        for owner, indexes in signatures.items():  # (~10,000 peers for a zone rule open to everyone: asked once each)
            same = self.same_side(owner)
            replies = reply_class(owner, classes, same) if switches.PEER_CLASSES else None
            if replies is not None:
                self._reply_class[owner] = replies
            ordered = sorted(indexes)
            plain = plain_classes(owner, classes, same) if switches.PEER_CLASSES else None  # (its classes asked once, not per piece)
            # a class of endpoints: each piece on its own, so a peer's rule that meets only
            # one piece (a VM's `reject tcp 25`, in every peer) keeps it from sharing the others
            for signature in [(index,) for index in ordered] if per_piece else [tuple(ordered)]:
                if plain is not None:
                    peer_class: tuple[Hashable, ...] | None = (*plain, signature)  # both_sides_class's answer
                else:
                    peer_class = both_sides_class(owner, classes, same, signature) if switches.PEER_CLASSES else None
                if peer_class is not None:
                    known = class_groups.get(peer_class)
                    if known is not None:  # its sides are its class's (analysis/peerclass.py): nothing of it to reduce
                        groups[known[0]][2].append(owner)
                        groups[known[0]][4].append(known[1])
                        continue
                addresses = endpoint_addresses(self.a_new, Endpoint(owner[0], owner[1]), owner[2])  # type: ignore[arg-type]
                own_region = PeerSpace(pieces, signature, addresses, peer_dim)
                before = reducers[0](owner, signature, own_region)
                stages = [before, before if same else reducers[1](owner, signature, own_region)]
                assert stages[0] is not None and stages[1] is not None, (key, owner)  # self.split
                shapes = (template_key(*stages[0]), template_key(*stages[1])) if templated else (None, None)
                group_key: tuple[object, ...]
                if shapes[0] is not None and shapes[1] is not None:
                    group_key = (owner[0], signature, shapes[0], shapes[1], stages[1] is stages[0], "template")
                else:
                    group_key = (owner[0], signature, stages[0][1], stages[1][1])
                sides = (stages[0][0], stages[1][0])
                if group_key in groups:
                    groups[group_key][2].append(owner)
                    groups[group_key][4].append(sides)
                else:
                    groups[group_key] = (stages[0][0], stages[1][0], [owner], signature, [sides])
                if peer_class is not None and all(c is None or c.settled(owner, signature) for c in (classes[0], None if same else classes[1])):
                    class_groups[peer_class] = (group_key, sides)
        by_owner = self.a_new.directory.addresses
        # who takes the rows: the class, or each class `mine` unites, each with its rows of
        # every member (_record_members' pending); the facts of a group of peers (whether a
        # guard sees their replies) are one class's for all: the classes `mine` unites
        # share their network and guard filters (endpointclass.loose_key)
        replied: Replied = {}
        audiences: list[tuple[Mine, Pending]] = [(mine, {}) for mine in classes_within] if classes_within else [(mine, {})]
        united_classes = classes_within is not None

        def deliver(index: int, peers: list[NicKey], part: Region, po: Outcome, pn: Outcome) -> None:
            for audience, pending in audiences:
                own_part = s.intersect(part, audience.pieces[index]) if united_classes else part
                if own_part:
                    self._record_members(audience, index, role, peers, own_part, po, pn, replied, pending)

        for stages_old, stages_new, members, signature, members_sides in groups.values():
            merged = self._addresses_of(members, by_owner)
            cells = [None] if mine.single else mine.cells(chain(stages_old, stages_new), self.essentials)
            for index, cell in ((index, cell) for index in signature for cell in cells):
                sub = tuple(b for b in (s.box_restrict(box, peer_dim, merged[box[s.FAM][0][0]]) for box in pieces[index]) if b is not None)
                if cell is not None:  # a class of endpoints: cell by cell (Mine.cells)
                    sub = tuple(b for b in (s.box_restrict(box, mine.own_dim, cell.get(box[s.FAM][0][0], ())) for box in sub) if b is not None)
                if not sub:
                    continue
                peer_old = list(self.a_old.run(stages_old, sub))
                peer_new = peer_old if stages_new is stages_old else list(self.a_new.run(stages_new, sub))  # the same side: run once
                relabel = Relabel(stages_old, stages_new, members, members_sides) if templated else None
                for part, po, pn in partition(peer_old, peer_new):
                    if relabel is not None and not relabel.alike:
                        _region, o, n = mine.members[0].delta[index]
                        if _differs(_final(po, o, receiver_first), _final(pn, n, receiver_first)) is None:
                            continue  # no member's flows differ: the verdicts are every peer's of the template
                        for po_j, pn_j, members_j in relabel.split(po, pn):
                            deliver(index, members_j, part, po_j, pn_j)
                        continue
                    if mine.single:
                        _region, o, n = mine.members[0].delta[index]
                        final_old, final_new = _final(po, o, receiver_first), _final(pn, n, receiver_first)
                        if whole_flow or _differs(final_old, final_new):  # (record judges the replies)
                            self.record(key, role, members, part, final_old, final_new)
                        continue
                    deliver(index, members, part, po, pn)
        for audience, pending in audiences:
            if pending:
                self._add_pending(audience, role, pending)

    def _addresses_of(self, peers: list[NicKey], by_owner: Callable[[NicKey], dict[int, list[int]]]) -> dict[int, s.Intervals]:
        """The peers' addresses per family, merged: once per set of peers (a class of
        peers is a group for each piece it meets: 10,000 peers, 4 pieces a zone commit)."""
        content = tuple(peers)
        found = self._points_of.get(content)
        if found is None:
            points_of: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
            for member in peers:
                for family, points in by_owner(member).items():
                    points_of[family].extend((v, v) for v in points)
            found = self._points_of[content] = {f: s.merge(v) for f, v in points_of.items()}
        return found

    def _record_members(self, mine: Mine, index: int, role: str, peers: list[NicKey], part: Region, po: Outcome, pn: Outcome,
                        replied: Replied, pending: Pending) -> None:
        """`record` for each member of a class of endpoints with an address in `part`:
        its own outcomes, its own addresses, its peers but itself."""
        receiver_first = role == "receiver"
        # the members' own outcomes differ in their stages' names only, their guards
        # not at all (endpointclass.class_key): whether the flows differ, and which
        # peers' replies a guard sees, are the first member's answers
        first = mine.members[0]
        _region, o, n = first.delta[index]
        change = _differs(_final(po, o, receiver_first), _final(pn, n, receiver_first))
        if change is None:
            return  # (most parts: the peer's own rule refuses where the member's did)
        facts = replied.get(id(peers))
        if facts is None or facts[0] is not peers:  # once per group of peers (kept with it: its id stays its own)
            # and once per set of peers: a class of peers is a group for each piece it meets
            # (280 groups of a zone rule's commit at 10,000 VMs, 5 sets of peers)
            content = tuple(peers)
            alike = replied.get(content)
            facts = replied[id(peers)] = (peers, *alike[1:]) if alike is not None else \
                (peers, any(self._replies_guarded(first.key, role, p) for p in peers), {p[1] for p in peers if p[0] == "vm"})
            replied[content] = facts
        _peers, guarded, peer_vms = facts
        if not guarded:
            # the members' rows of a box are the same but for their own outcomes: the
            # box's peers are gathered with the other parts' of the same rows and the
            # same members (a handful of address sets), each member's rows made once
            final_old, final_new = _final(po, o, receiver_first), _final(pn, n, receiver_first)
            old_label, new_label = _decisive_label(final_old), _decisive_label(final_new)
            for box, (services, when, labels) in zip(part, self._described(part, role, peers)):
                if not labels:
                    continue
                family = box[s.FAM][0][0]
                entry_key = (index, change, old_label, new_label, services, when, family, box[mine.own_dim])
                entry = pending.get(entry_key)
                pending[entry_key] = (po, pn, labels) if entry is None else (entry[0], entry[1], entry[2] | labels)
            return
        # a guard sees some peer's replies: each member's flows the general way (`record` judges the replies)
        own_parts: dict[int, tuple[Member, list[s.Box]]] = {}
        for box in part:
            for member, narrowed in mine.members_in(box):
                own_parts.setdefault(id(member), (member, []))[1].append(narrowed)
        for member, boxes in own_parts.values():
            _region, o, n = member.delta[index]
            final_old, final_new = _final(po, o, receiver_first), _final(pn, n, receiver_first)
            kind, name, _nic = member.key
            others = [p for p in peers if p[1] != name or p[0] != kind] if kind == "vm" and name in peer_vms else peers
            if others:
                self.record(member.key, role, others, tuple(boxes), final_old, final_new)

    def _add_pending(self, mine: Mine, role: str, pending: Pending) -> None:
        """The class's rows of the parts that held every member: one row per part for
        the members with an address in it, with the first one's outcomes (the members'
        differ in their names only) and the part's peers, its members among them:
        flowrows merges rows alike but for their names, and takes each member's own
        labels out of its peers."""
        receiver_first = role == "receiver"
        owners = {self.label(m.key): self._owner(m.key) for m in mine.members}
        for (index, change, _o, _n, services, when, family, own), (po, pn, labels) in pending.items():
            members = mine.members_within(family, own)
            if not members:
                continue
            _region, o, n = members[0].delta[index]
            row = DiffRow(change, services=services, when=when, old=_final(po, o, receiver_first), new=_final(pn, n, receiver_first),
                          role=role, named=self._owner(members[0].key)[0], owners=owners)
            own_labels, peers = self.alphabet.of(self.label(m.key) for m in members), Labels(self.alphabet, labels)
            row.src, row.dst = (peers, own_labels) if receiver_first else (own_labels, peers)
            self.class_rows.append(row)

    def _peer_sides(self, analyzer: Analyzer, key: NicKey, role: str, own_addresses: AddressSet, pieces: list[Region],
                    peer_dim: int, shared: bool) -> tuple[PeerReducer, ClassedSides | None]:
        """How `analyzer` gives a peer's side, reduced to what `pieces` can meet, and
        the peers' classes when it sorts them (analysis/peerclass.py)."""
        if not shared:  # few endpoints (a rule of one VM open to many peers): from pieces the peers share, as reach
            sides = PeerSides(analyzer, key, role, own_addresses, pieces, peer_dim, grouped=switches.GROUPED_PEERS)
            if switches.GROUPED_PEERS and switches.PEER_CLASSES:
                classes = ClassedSides(sides)
                return classes.reduced, classes
            return sides.reduced, None
        effective = Effective()  # many endpoints (a zone's VMs): each peer's whole side, built once for all of them

        def whole(owner: NicKey, signature: tuple[int, ...], own_region: PeerSpace) -> tuple[tuple[GuardOrChain, ...], Key] | None:
            found = analyzer.paths.peer_side(key, role, owner, None)
            return effective.reduce(found, signature, pieces, own_region, peer_dim) if found is not None else None

        return whole, None

    def split(self, key: NicKey, role: str, owner: NicKey) -> bool:
        """Whether flows between the two split into their two sides in both policies
        (asked of every peer by `whole_flows` and again by `run`: answered once)."""
        if not self.routing:
            return True
        memo_key = (key, role, owner)
        found = self._splits.get(memo_key)
        if found is None:
            found = self._splits[memo_key] = all(a.paths.splits(key, role, owner) is not None for a in (self.a_old, self.a_new))
        return found

    def whole_flows(self, key: NicKey, role: str, space: Region) -> None:
        """Peers whose flows with `key` do not split into two sides (a translated
        source, a routed guest and its own node): the whole flows, both policies."""
        if not self.routing:
            return  # every flow splits
        peer_dim = s.SRC if role == "receiver" else s.DST
        owners: set[NicKey] = set()
        for family in (4, 6):
            values = s.family_projection(space, peer_dim, family)
            if values:
                owners.update(o for o in self.a_new.directory.owners_within(family, values) if o in self.common and o[:2] != key[:2])
        for owner in sorted((o for o in owners if not self.split(key, role, o)), key=str):
            addresses = endpoint_addresses(self.a_new, Endpoint(owner[0], owner[1]), owner[2])  # type: ignore[arg-type]
            sub = tuple(b for b in (s.box_restrict(box, peer_dim, addresses.get(box[s.FAM][0][0], ())) for box in space) if b is not None)
            if not sub:
                continue
            flow = (owner, key) if role == "receiver" else (key, owner)
            old = list(self.a_old.run(self.a_old.paths.flow(*flow), sub))
            new = list(self.a_new.run(self.a_new.paths.flow(*flow), sub))
            for part, o, n in partition(old, new, differing=True):
                if _differs(o, n):
                    self.record(key, role, [owner], part, o, n)
