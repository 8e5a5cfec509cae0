"""A diff row's sides written as the policy writes peers (`from:`, `to:`).

A side is a set of labels (`vm:web1`, `vm:db1@lan`, `host:node1`, `outside: any`).
A zone rule open to everyone changes the flows of each zone VM to the whole cluster:
at 10,000 VMs its rows held 1.25 million labels, 15 MB of JSON stored with the
revision and sent with the commit's answer, unreadable in the console. So a side of
many labels names each zone it holds most of, as a policy does: `zone:NAME` stands
for every NIC of every VM of that zone (in the new policy, whose labels the rows
carry), and the zone's NICs the side leaves out follow with a leading `!` (the
policy's exclusion), after the names: `["host:node1", "vm:a", "zone:db",
"zone:web", "!vm:db17"]`. A zone is named only where that shortens the list (it
holds more than half of the zone's labels); the rest is listed label by label.
The listing is exact: `expand` gives the side back (tests/analysis/test_row_sides.py).

A side of fewer than `NAMED_FROM` labels is listed label by label, as before: the
rows of a small change read as they always did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet

from .labelsets import Alphabet, Labels

NAMED_FROM = 32  # labels in a side from which its zones are named
ZoneLabels = Mapping[str, frozenset[str]]  # zone name -> the labels of its VMs' NICs


class SideLister:
    """Each side of the final rows as a list, its zones named where the side is large
    (module docstring): the names and labels sorted, then the exclusions sorted.
    `zones` is asked once, and only if some side is large. The sides are `Labels`
    (labelsets.py: the zones' labels become bits of their alphabet) or plain sets."""

    def __init__(self, sides: Iterable[AbstractSet[str]], zones: Callable[[], ZoneLabels]) -> None:
        large = {id(side): side for side in sides if len(side) >= NAMED_FROM}
        self._kept = list(large.values())  # (their ids stay theirs while listed)
        self._listed: dict[int, list[str]] = {}
        if not large:
            return
        alphabet = next((side.alphabet for side in large.values() if isinstance(side, Labels)), None) or Alphabet()
        named = sorted((name, bits, bits.bit_count()) for name, bits in
                       ((name, alphabet.mask(labels)) for name, labels in zones().items() if len(labels) > 1))
        parts = {key: _zones_named(side.bits if isinstance(side, Labels) and side.alphabet is alphabet else alphabet.mask(side), named, alphabet)
                 for key, side in large.items()}
        rests = _Sorter(rest for _names, _excluded, rest in parts.values())
        # (two sorted runs: `sorted` merges them)
        self._listed = {key: sorted(names + rests(rest)) + excluded for key, (names, excluded, rest) in parts.items()}

    def __call__(self, side: AbstractSet[str]) -> list[str]:
        found = self._listed.get(id(side))
        return found if found is not None else sorted(side)


def _zones_named(side: int, zones: list[tuple[str, int, int]], alphabet: Alphabet) -> tuple[list[str], list[str], list[str]]:
    """The zones a side (its bits) names, the labels it then excludes, and the labels it lists."""
    names: list[str] = []
    excluded: list[str] = []
    taken = 0
    for name, labels, size in zones:
        if not labels & side:
            continue
        left_out = labels & ~side
        if 2 * left_out.bit_count() + 1 >= size:
            continue  # (listing its labels is no longer)
        names.append(f"zone:{name}")
        excluded.extend(f"!{label}" for label in sorted(alphabet.names(left_out)))
        taken |= labels
    return names, excluded, alphabet.names(side & ~taken)


_READ_OUT = 4  # a rest holding more than a quarter of all the labels is read out of them


class _Sorter:
    """Lists of labels sorted as `sorted` sorts them: many long lists that are most of
    one set of labels (a cluster without zones: each side its ~10,000 peers but a
    few) are read out of all their labels, sorted once, by membership tests."""

    def __init__(self, lists: Iterable[list[str]]) -> None:
        self._every = sorted(set().union(*lists))

    def __call__(self, labels: list[str]) -> list[str]:
        if len(labels) * _READ_OUT < len(self._every):
            return sorted(labels)
        wanted = set(labels)
        return [label for label in self._every if label in wanted]


def expand(listed: list[str], zones: ZoneLabels) -> set[str]:
    """The labels a listed side stands for (what `SideLister` was given)."""
    labels: set[str] = set()
    for entry in listed:
        if entry.startswith("zone:"):
            labels |= zones[entry[len("zone:"):]]
        elif not entry.startswith("!"):
            labels.add(entry)
    return labels - {entry[1:] for entry in listed if entry.startswith("!")}
