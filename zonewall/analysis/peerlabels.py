"""Which of a group of peers have an address inside some intervals, as the bits of
their labels (labelsets.py): what a diff row names as a box's peers (diffrecord.py).

A zone rule open to everyone asks it ~280 times a commit at 10,000 VMs, of groups of
~7,000 peers, for ~135 different sets of addresses: everyone but the few addresses
an earlier rule took out. As sets of owners that was ~0.4 s (a set of ~10,000
owners made per set of addresses, and a group's subtracted from it). Here an
address is its place in the directory's sorted table (endpoints.Directory.owners; an
owner's places: Directory.places, kept with the policy),
a set of addresses inside intervals is one run of bits per interval (Directory.inside,
kept with the policy as well), and a group is
the bits of its members' addresses: only the group's addresses outside the
intervals (few) are looked at one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .endpoints import Directory
from .labelsets import Alphabet, set_bits
from .reach import NicKey
from .space import Intervals


@dataclass(frozen=True)
class _Group:
    addresses: int  # the places of the members' addresses of the family
    labels: int  # the labels of the members with an address of the family
    shared: dict[str, list[NicKey]]  # a label several of those members carry (two NICs on one network) -> them


class PeerLabels:
    """`within(members, family, intervals)`: the labels of the members with an address
    of `family` inside `intervals` (module docstring); the members are a list kept by
    the caller, known by its identity."""

    def __init__(self, directory: Directory, label: Callable[[NicKey], str], alphabet: Alphabet) -> None:
        self._directory = directory
        self._label = label
        self._alphabet = alphabet
        self._groups: dict[tuple[int, int], tuple[list[NicKey], _Group]] = {}
        self._answers: dict[tuple[int, int, Intervals], tuple[list[NicKey], int]] = {}  # (the members kept: their id stays theirs)
        self._numbers: dict[NicKey, int] = {}
        self._alike: dict[tuple[tuple[NicKey, ...], int], _Group] = {}

    def within(self, members: list[NicKey], family: int, intervals: Intervals) -> int:
        # (a class's rows ask it of the same group and addresses box after box)
        memo_key = (id(members), family, intervals)
        found = self._answers.get(memo_key)
        if found is None or found[0] is not members:
            found = self._answers[memo_key] = (members, self._within(members, family, intervals))
        return found[1]

    def _within(self, members: list[NicKey], family: int, intervals: Intervals) -> int:
        inside = self._directory.inside(family, intervals)  # (kept with the address table)
        group = self._group(members, family)
        out = group.addresses & ~inside
        if not out:
            return group.labels  # (most groups, for a rule open to everyone)
        owners = self._directory.owners[family][1]
        if 2 * out.bit_count() > group.addresses.bit_count():  # most out: the owners of those in
            return self._alphabet.mask({self._label(owners[place]) for place in set_bits(group.addresses & inside)})
        # a few out (the addresses an earlier rule took out): their owners are left out
        # unless another address of theirs is in, and their labels unless another owner
        # of the label is in
        gone = {self._label(owner) for owner in {owners[place] for place in set_bits(out)} if not self._has_inside(owner, family, inside)}
        if group.shared:
            gone = {label for label in gone if not any(self._has_inside(m, family, inside) for m in group.shared.get(label, ()))}
        return group.labels & ~self._alphabet.mask(gone)

    def _has_inside(self, owner: NicKey, family: int, inside: int) -> bool:
        return any(inside >> place & 1 for place in self._directory.places(family).get(owner, ()))

    def _number(self, owner: NicKey) -> int:
        """The number of the owner's label in the alphabet (asked of every peer of every group)."""
        found = self._numbers.get(owner)
        if found is None:
            found = self._numbers[owner] = self._alphabet.number(self._label(owner))
        return found

    def _group(self, members: list[NicKey], family: int) -> _Group:
        known = self._groups.get((id(members), family))
        if known is not None and known[0] is members:
            return known[1]
        # the same peers again (a class of peers meets each of a zone's changed pieces:
        # a group per piece, alike): a tuple of them hashed costs far less than their bits
        content = (tuple(members), family)
        group = self._alike.get(content)
        if group is None:
            group = self._alike[content] = self._made(members, family)
        self._groups[id(members), family] = (members, group)  # (the members kept: their id stays theirs)
        return group

    def _made(self, members: list[NicKey], family: int) -> _Group:
        places, number = self._directory.places(family), self._number
        buffer = bytearray(len(self._directory.owners[family][0]) // 8 + 1)
        numbered: list[tuple[int, NicKey]] = []
        for member in members:
            its = places.get(member)
            if not its:
                continue  # (no address of the family: never inside)
            for place in its:
                buffer[place >> 3] |= 1 << (place & 7)
            numbered.append((number(member), member))
        labels = bytearray(len(self._alphabet.labels) // 8 + 1)
        shared: set[int] = set()  # a label met twice: several members carry it
        for label, _member in numbered:
            byte, bit = label >> 3, 1 << (label & 7)
            if labels[byte] & bit:
                shared.add(label)
            labels[byte] |= bit
        keys_of: dict[str, list[NicKey]] = {}
        if shared:
            names = self._alphabet.labels
            for label, member in numbered:
                if label in shared:
                    keys_of.setdefault(names[label], []).append(member)
        return _Group(int.from_bytes(buffer, "little"), int.from_bytes(labels, "little"), keys_of)
