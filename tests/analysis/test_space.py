"""The packet-space algebra against brute force: every region operation is exact."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.analysis import space as s

# A small world: every dimension takes values 0..3 (the family 4 or 6), so a region
# can be enumerated point by point and compared with the set it should be.
SMALL = 3


def _intervals() -> st.SearchStrategy[s.Intervals]:
    return st.lists(st.tuples(st.integers(0, SMALL), st.integers(0, SMALL)).map(lambda t: (min(t), max(t))), min_size=1, max_size=2).map(s.merge)


@st.composite
def boxes(draw: st.DrawFn) -> s.Box:
    dims = [draw(_intervals()) for _ in range(s.DIMS)]
    dims[s.FAM] = draw(st.sampled_from([((4, 4),), ((6, 6),), ((4, 4), (6, 6))]))
    return tuple(dims)


def _disjoint(bs: list[s.Box]) -> s.Region:
    out: s.Region = ()
    for b in bs:
        out = s.union(out, (b,))
    return out



regions = st.lists(boxes(), max_size=3).map(lambda bs: _disjoint(bs))


def points(region: s.Region) -> set[tuple[int, ...]]:
    out: set[tuple[int, ...]] = set()
    for b in region:
        ranges = [[v for low, high in dim for v in range(low, high + 1)] for dim in b]
        out |= set(itertools.product(*ranges))
    return out


def disjoint(region: s.Region) -> bool:
    return sum(len(points((b,))) for b in region) == len(points(region))


@settings(max_examples=300, deadline=None)
@given(regions, regions)
def test_region_operations_are_exact(a: s.Region, b: s.Region) -> None:
    pa, pb = points(a), points(b)
    assert disjoint(a) and disjoint(b)
    assert points(s.intersect(a, b)) == pa & pb
    difference = s.subtract(a, b)
    assert points(difference) == pa - pb and disjoint(difference)
    joined = s.union(a, b)
    assert points(joined) == pa | pb and disjoint(joined)
    assert s.overlaps(a, b) == bool(pa & pb)
    assert s.covers(a, b) == (pb <= pa)
    assert points(s.coalesce(a)) == pa


def _long_intervals() -> st.SearchStrategy[s.Intervals]:
    # up to 40 intervals over 0..200: the bisect paths start above 8 intervals
    return st.lists(st.tuples(st.integers(0, 200), st.integers(0, 3)).map(lambda t: (t[0], t[0] + t[1])), max_size=40).map(s.merge)


def _address_points() -> st.SearchStrategy[s.Intervals]:
    # single addresses, sparse (a zone's or a group's VMs): the set-intersection path
    return st.lists(st.integers(0, 400).map(lambda v: (2 * v, 2 * v)), min_size=9, max_size=60).map(s.merge)


@settings(max_examples=300)
@given(st.one_of(_intervals(), _long_intervals(), _address_points()), st.one_of(_intervals(), _long_intervals(), _address_points()))
def test_interval_operations_are_exact(a: s.Intervals, b: s.Intervals) -> None:
    def values(x: s.Intervals) -> set[int]:
        return {v for low, high in x for v in range(low, high + 1)}

    assert values(s.iv_intersect(a, b)) == values(a) & values(b)
    assert values(s.iv_subtract(a, b)) == values(a) - values(b)
    assert values(s.iv_union(a, b)) == values(a) | values(b)
    assert s.iv_overlaps(a, b) == bool(values(a) & values(b))


@settings(max_examples=200)
@given(st.lists(st.one_of(_long_intervals(), _address_points()), min_size=2, max_size=6))
def test_overlaps_of_long_lists_asked_again_and_again(lists: list[s.Intervals]) -> None:
    """The memo of long lists' values (by identity) answers like the first time, for
    every pair, whichever was asked before; equal lists that are other objects too."""
    values = [{v for low, high in x for v in range(low, high + 1)} for x in lists]
    for _ in range(2):
        for i, a in enumerate(lists):
            for j, b in enumerate(lists):
                assert s.iv_overlaps(a, b) == bool(values[i] & values[j])
                assert s.iv_overlaps((*a,), b) == bool(values[i] & values[j])  # equal, another object


def _pairwise(a: s.Intervals, b: s.Intervals) -> s.Intervals:
    """The intersection as walking both lists gives it: every pair's overlap, in order."""
    return tuple(sorted((max(x[0], y[0]), min(x[1], y[1])) for x in a for y in b if max(x[0], y[0]) <= min(x[1], y[1])))


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 800), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])), min_size=2, max_size=4).map(s.merge),
       st.lists(st.integers(0, 400).map(lambda v: (2 * v, 2 * v + v % 2)), min_size=40, max_size=160).map(s.merge))
def test_a_few_intervals_against_hundreds_give_the_walks_pieces(few: s.Intervals, many: s.Intervals) -> None:
    """A short list against one 16 times longer is clipped by bisection: the same
    pieces, in the same order, as walking both (boxes are compared by their tuples)."""
    assert s.iv_intersect(few, many) == _pairwise(few, many)
    assert s.iv_intersect(many, few) == _pairwise(few, many)
