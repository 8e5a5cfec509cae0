"""analysis/peerlabels.py: the labels of the peers of a group with an address inside
some intervals, told from the places of addresses in the directory's table, are
those of every member that has one (counted the plain way)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.analysis.endpoints import owner_places, places_inside
from zonewall.analysis.labelsets import Alphabet
from zonewall.analysis.peerlabels import PeerLabels

# owners: a VM with two NICs on one network (one label), VMs of one or two addresses
# per family, a VM with no IPv6 address, a node
OWNERS = [("vm", "b", 0), ("vm", "b", 1), ("vm", "c", 0), ("vm", "d", 0), ("vm", "e", 0), ("host", "h", None)] + [("vm", f"v{i}", 0) for i in range(12)]


def label(owner: tuple[str, str, int | None]) -> str:
    return f"{owner[0]}:{owner[1]}"  # (b's two NICs share one label)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[Any, list[Any], int, tuple[tuple[int, int], ...]]:
    """A table of addresses (0..99) and their owners, a group, a family, intervals."""
    table = {}
    for family in (4, 6):
        pairs = []
        for owner in OWNERS:
            if owner[1] == "e" and family == 6:
                continue  # e has no IPv6 address
            pairs += [(address, owner) for address in draw(st.sets(st.integers(0, 99), min_size=1, max_size=3))]
        pairs.sort()
        table[family] = ([a for a, _o in pairs], [o for _a, o in pairs])
    members = draw(st.lists(st.sampled_from(OWNERS), unique=True, min_size=1))
    family = draw(st.sampled_from([4, 6]))
    bounds = sorted(draw(st.sets(st.integers(0, 100), max_size=8)))
    intervals = tuple((low, high) for low, high in zip(bounds[::2], bounds[1::2]))
    places = {family: owner_places(owners) for family, (_keys, owners) in table.items()}
    inside = lambda family, intervals: places_inside(table[family][0], intervals)  # (Directory.inside without its memo)
    return SimpleNamespace(owners=table, places=places.__getitem__, inside=inside), members, family, intervals


@settings(max_examples=400, deadline=None)
@given(worlds(), st.integers(1, 3))
def test_the_labels_within_are_those_of_every_member_with_an_address_inside(world: Any, asks: int) -> None:
    directory, members, family, intervals = world
    alphabet = Alphabet()
    peers = PeerLabels(directory, label, alphabet)
    keys, owners = directory.owners[family]
    inside = {owner for address, owner in zip(keys, owners) if any(low <= address <= high for low, high in intervals)}
    expected = {label(m) for m in members if m in inside}
    for _ in range(asks):  # (asked again: from its memos)
        assert set(alphabet.names(peers.within(members, family, intervals))) == expected


DIRECTORY = """\
version: 1
hosts:
  n1: {address: [192.168.1.1]}
networks:
  lan: {bridge: br0, subnets: [10.0.0.0/24]}
vms:
  a: {host: n1, nics: [{network: lan, ips: [10.0.0.10]}]}
  b: {host: n1, nics: [{network: lan, ips: [10.0.0.20, 10.0.0.21]}]}
"""


def test_the_places_inside_intervals_are_kept_with_the_table_and_lent_with_it(monkeypatch: Any) -> None:
    """Directory.inside: asked again, or of a policy the table was lent to (a diff of
    rule edits: the next commit's old side), the places are the ones made first; a
    policy whose addresses differ makes its own; a full memo starts again."""
    from zonewall.analysis import endpoints
    from zonewall.analysis.endpoints import Directory
    from zonewall.policy.loader import load_policy_text

    made: list[object] = []
    real = endpoints.places_inside
    monkeypatch.setattr(endpoints, "places_inside", lambda keys, intervals: made.append(intervals) or real(keys, intervals))
    a, b, c = 167772170, 167772180, 167772181  # 10.0.0.10, .20, .21
    first = load_policy_text(DIRECTORY)
    directory = Directory(first)
    assert directory.inside(4, ((b, c),)) == 0b110 and directory.inside(4, ((a, a),)) == 0b001  # (places: a, b's two, the node)
    assert directory.inside(4, ((b, c),)) == 0b110 and len(made) == 2  # asked again: kept
    second = load_policy_text(DIRECTORY)
    directory.lend(second)
    assert Directory(second).inside(4, ((b, c),)) == 0b110 and len(made) == 2  # lent with the table
    moved = load_policy_text(DIRECTORY.replace("10.0.0.10", "10.0.0.30"))
    assert Directory(moved).inside(4, ((b, c),)) == 0b011 and len(made) == 3  # other addresses: its own table, its own places
    monkeypatch.setattr(endpoints, "INSIDE_KEPT", 2)
    directory.inside(4, ((a, c),))  # a third set: the memo, full, starts again
    assert len(second.__dict__[endpoints._INSIDE]) == 1 and len(made) == 4
