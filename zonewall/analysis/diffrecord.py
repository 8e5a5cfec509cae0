"""The diff's rows as the comparison finds them (differ.py): the flows of an endpoint
and its peers in a region whose two outcomes differ, their replies judged too, each
box described by its services, its time and its peers' labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property

from ..policy.addresses import AddressSet
from ..policy.resolve import Policy
from . import diffswitches as switches
from . import space as s
from .describe import addresses_text, services_of, time_text
from .endpoints import Endpoint
from .engine import Analyzer, Outcome, Path
from .flowrows import DiffRow, Owner, _decisive_label, _differs
from .labelsets import Alphabet, Labels
from .peerlabels import PeerLabels
from .reach import NicKey, endpoint_addresses
from .space import Region

# -- evaluation --------------------------------------------------------------------------


def partition(a: list[tuple[Region, Outcome]], b: list[tuple[Region, Outcome]], differing: bool = False) -> Iterable[tuple[Region, Outcome, Outcome]]:
    """The parts where a piece of `a` meets one of `b`; `differing`: only those whose
    outcomes differ (the others' intersections not made: most pairs of two sides)."""
    for ra, oa in a:
        for rb, ob in b:
            if differing and switches.ONLY_DIFFERING and not _differs(oa, ob):
                continue
            if s.overlaps(ra, rb):
                both = s.intersect(ra, rb)
                if both:
                    yield both, oa, ob


class Labeller:
    """An endpoint's label in the rows: `vm:web1`, `vm:web1@lan` (a VM of several NICs),
    `host:node1`; each made once."""

    def __init__(self, policy: Policy) -> None:
        self._vms = policy.doc.vms
        self._labels: dict[NicKey, str] = {}

    def __call__(self, key: NicKey) -> str:
        found = self._labels.get(key)
        if found is None:
            kind, name, nic = key
            if kind == "vm" and len(self._vms[name].nics) > 1:
                found = f"vm:{name}@{self._vms[name].nics[nic].network}"  # type: ignore[index]
            else:
                found = f"{kind}:{name}"
            self._labels[key] = found
        return found


class Recorder:
    """The rows found so far, and what describing them needs (labels, owners, the
    outside's addresses, whether a guard sees a pair's replies), memoised."""

    def __init__(self, a_old: Analyzer, a_new: Analyzer) -> None:
        self.a_old, self.a_new = a_old, a_new
        self.rows: dict[tuple[object, ...], DiffRow] = {}
        self._owners: dict[tuple[str, str], Owner] = {}
        self._outside: dict[tuple[int, s.Intervals], int] = {}
        self._guarded: dict[tuple[object, ...], bool] = {}  # _replies_guarded's answers
        # a peer's class for its replies (its network, node and guard filters in both
        # policies: all `reply_guards` reads of it), when its side was classed
        self._reply_class: dict[NicKey, tuple[object, ...]] = {}
        self._service_texts: dict[tuple[s.Intervals, s.Intervals, s.Intervals], tuple[str, ...]] = {}
        self._time_texts: dict[s.Intervals, str] = {}
        self._labeller = Labeller(a_new.policy)
        # sets of labels are bits of one numbering of them (labelsets.py): a row's
        # peers are united box after box, thousands at a time
        self.alphabet = Alphabet()
        # (given the labeller, not `self.label`: a bound method would make a cycle through
        # the recorder, keeping its analyzers alive until a collection, and a commit's
        # survivors are frozen: store/cache.py)
        self._peer_labels = PeerLabels(a_new.directory, self._labeller, self.alphabet)
        self.notes: list[str] = []

    @cached_property
    def cluster(self) -> AddressSet:
        """Every address of either policy's VMs and nodes (built only if a flow differs)."""
        return self.a_old.directory.cluster.union(self.a_new.directory.cluster)

    def label(self, key: NicKey) -> str:
        return self._labeller(key)

    def zone_labels(self) -> dict[str, frozenset[str]]:
        """Each zone of the new policy and the labels of its VMs' NICs (what a row's
        `zone:NAME` stands for: rowsides.py)."""
        found: dict[str, set[str]] = {}
        for name, vm in self.a_new.policy.doc.vms.items():
            if vm.zone is not None:
                found.setdefault(vm.zone, set()).update(self.label(("vm", name, nic)) for nic in range(len(vm.nics)))
        return {zone: frozenset(labels) for zone, labels in found.items()}

    def _owner(self, key: NicKey) -> Owner:
        """The endpoint's name as its stages carry it, and all its labels (a VM's NICs)."""
        kind, name, _nic = key
        found = self._owners.get((kind, name))
        if found is None:
            labels = frozenset(self.label((kind, name, i)) for i in range(len(self.a_new.policy.doc.vms[name].nics))) if kind == "vm" else frozenset({self.label(key)})
            found = self._owners[kind, name] = (f"{kind}:{name}", labels)
        return found

    def path(self, key: NicKey, role: str, peer: NicKey | None) -> Path:
        me = Endpoint(key[0], key[1])  # type: ignore[arg-type]
        other = Endpoint(peer[0], peer[1]) if peer is not None else Endpoint("outside", "outside")  # type: ignore[arg-type]
        other_nic = peer[2] if peer is not None else None
        return Path(other, me, other_nic, key[2]) if role == "receiver" else Path(me, other, key[2], other_nic)

    def record(self, key: NicKey, role: str, members: list[NicKey] | None, region: Region, old: Outcome, new: Outcome) -> None:
        """Rows for the flows of `region` that the policies treat differently, their
        replies judged too (guards are stateless: an accepted connection whose
        replies a guard drops fails, in each policy on its own)."""
        peers: list[NicKey | None] = list(members) if members is not None else [None]
        replying = [p for p in peers if self._replies_guarded(key, role, p)]
        if not replying:
            return self._record(key, role, members, region, old, new)
        rest = [p for p in peers if p not in replying]
        if rest:
            self._record(key, role, rest if members is not None else None, region, old, new)  # type: ignore[arg-type]
        peer_dim = s.SRC if role == "receiver" else s.DST
        for peer in replying:
            sub = region
            if peer is not None:
                addresses = endpoint_addresses(self.a_new, Endpoint(peer[0], peer[1]), peer[2])  # type: ignore[arg-type]
                sub = tuple(b for b in (s.box_restrict(box, peer_dim, addresses.get(box[s.FAM][0][0], ())) for box in region) if b is not None)
            path = self.path(key, role, peer)
            before = [(r, o) for r, o, note in self.a_old.with_replies(path, sub, old)]
            after = []
            for r, o, note in self.a_new.with_replies(path, sub, new):
                after.append((r, o))
                if note is not None:
                    self.notes.append(note)
            for part, o, n in partition(before, after):
                self._record(key, role, [peer] if peer is not None else None, part, o, n)

    def _replies_guarded(self, key: NicKey, role: str, peer: NicKey | None) -> bool:
        """Whether a guard in either policy sees the replies of the flows between `key`
        and `peer` (asked once per pair: a peer's rows are recorded piece by piece)."""
        reply_class = self._reply_class.get(peer) if peer is not None else None
        memo_key = (key, role, peer) if reply_class is None else (key, role, reply_class)
        found = self._guarded.get(memo_key)
        if found is None:
            path = self.path(key, role, peer)
            found = self._guarded[memo_key] = any(a.reply_guards(path) for a in (self.a_old, self.a_new))
        return found

    def _record(self, key: NicKey, role: str, members: list[NicKey] | None, region: Region, old: Outcome, new: Outcome) -> None:
        """Rows for `region`, if the two outcomes differ."""
        change = _differs(old, new)
        if change is not None:
            self._add_rows(key, role, change, self._described(region, role, members), old, new)

    def _described(self, part: Region, role: str, peers: list[NicKey] | None) -> list[tuple[tuple[str, ...], str, int]]:
        """What a row reads of each box: its services, its time, its peers' labels
        (their bits; `peers` None: outside addresses)."""
        peer_dim = s.SRC if role == "receiver" else s.DST
        out = []
        for box in part:
            family = box[s.FAM][0][0]
            out.append((self._services(box), self._time(box[s.TIME]),
                        self._peer_labels.within(peers, family, box[peer_dim]) if peers is not None else self._outside_labels(family, box[peer_dim])))
        return out

    def _services(self, box: s.Box) -> tuple[str, ...]:
        """A box's services (a diff's boxes share a handful: each text made once)."""
        key = (box[s.PROTO], box[s.DPORT], box[s.SPORT])
        found = self._service_texts.get(key)
        if found is None:
            found = self._service_texts[key] = tuple(services_of((box,)))
        return found

    def _time(self, values: s.Intervals) -> str:
        found = self._time_texts.get(values)
        if found is None:
            found = self._time_texts[values] = time_text(values)
        return found

    def _outside_labels(self, family: int, values: s.Intervals) -> int:
        """(every member of a zone asks it of the same outside: answered once; read only)"""
        found = self._outside.get((family, values))
        if found is None:
            found = self._outside[family, values] = self.alphabet.mask(self._outside_text(family, values))
        return found

    def _outside_text(self, family: int, values: s.Intervals) -> set[str]:
        peers = set(addresses_text(family, values))
        peers = {f"outside:{p}" for p in peers} if len(peers) < 6 else {f"outside ({len(values)} ranges)"}
        cluster = self.cluster.v4 if family == 4 else self.cluster.v6
        if values == s.iv_subtract(((0, s.ADDRESS_MAX[family]),), cluster):
            peers = {f"outside: any ipv{family}"}
        return peers

    def _add_rows(self, key: NicKey, role: str, change: str, described: list[tuple[tuple[str, ...], str, int]], old: Outcome, new: Outcome) -> None:
        """The rows of `key`'s flows with the peers of each box described."""
        me = self.label(key)
        old_label, new_label = _decisive_label(old), _decisive_label(new)
        owner = self._owner(key)
        for services, when, peers in described:
            if not peers:
                continue
            row_key = (change, me, role, services, when, old_label, new_label)
            row = self.rows.get(row_key)
            if row is None:
                row = self.rows[row_key] = DiffRow(change, Labels(self.alphabet), Labels(self.alphabet), services=services, when=when,
                                                   old=old, new=new, role=role, named=owner[0], owners={me: owner})
            if role == "receiver":
                row.dst.add(me)
                row.src |= Labels(self.alphabet, peers)
            else:
                row.src.add(me)
                row.dst |= Labels(self.alphabet, peers)
