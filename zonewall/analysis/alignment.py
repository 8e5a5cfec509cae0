"""The packets two versions of a chain may decide differently: the regions of the
steps that do not line up, old against new.

The alignment is difflib's (`SequenceMatcher`, no junk): what `diff` has always
reported, and its rows are made box by box of this region, so the region must be
the same tuple of boxes, not merely the same packets. difflib hashes every step's
key (a region of nested tuples, hashed anew each time) and searches for the longest
matching blocks; a group member commit asks it of ~1,000 chains.

Most such pairs need no search: the two chains have the same length and differ only
at some positions (the steps of the rules naming an edited group), each of whose
keys occurs nowhere in the other chain. Then difflib's matching blocks are exactly
the runs of equal positions, and its opcodes replace each maximal run of differing
positions by itself:

* a block difflib finds lies within one run of equal positions on each side (a
  differing key matches nothing on the other side);
* the longest block is an aligned run: a block shifted within one run is shorter
  than the run, and one joining run x of `old` to another run y of `new` is no
  longer than both, and when as long, run y equals run x and is aligned in `old`
  too, so among the longest blocks the one that starts earliest in `old` (difflib's
  choice) is aligned: were its partner in `new` earlier, so would be an aligned one;
* the search recurses on either side of that block, where the same holds.

`changed_region` takes that shortcut when its conditions hold and asks difflib
otherwise; both give the same region, its boxes in the same order (the union of each
replaced run's old steps, then its new steps, run after run).
"""

from __future__ import annotations

import difflib

from . import space as s
from .chains import Step
from .space import Region

PAIRWISE = True  # False: always difflib (the shortcut's tests compare the two)


def changed_region(old: tuple[Step, ...], new: tuple[Step, ...]) -> Region:
    """The union of the regions of the steps that do not line up, in difflib's order."""
    if PAIRWISE:
        found = _pairwise(old, new)
        if found is not None:
            return found
    return _by_difflib(old, new)


def _by_difflib(old: tuple[Step, ...], new: tuple[Step, ...]) -> Region:
    a = [step.key for step in old]
    b = [step.key for step in new]
    region: Region = ()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        for step in old[i1:i2]:
            region = s.union(region, step.region)
        for step in new[j1:j2]:
            region = s.union(region, step.region)
    return region


def _pairwise(old: tuple[Step, ...], new: tuple[Step, ...]) -> Region | None:
    """The region when the chains differ position by position with keys the other
    chain does not hold (module docstring); None when that does not hold."""
    if len(old) != len(new):
        return None
    a = [step.key for step in old]
    b = [step.key for step in new]
    # (an unchanged step of a group edit is the same region object on both sides:
    # the comparison stops at identity)
    differing = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if not differing:
        return ()
    for i in differing:
        if a[i] in b or b[i] in a:
            return None
    region: Region = ()
    start = 0
    while start < len(differing):
        end = start
        while end + 1 < len(differing) and differing[end + 1] == differing[end] + 1:
            end += 1
        low, high = differing[start], differing[end] + 1
        for step in old[low:high]:
            region = s.union(region, step.region)
        for step in new[low:high]:
            region = s.union(region, step.region)
        start = end + 1
    return region
