"""An endpoint's old and new side in a diff, evaluated as twins.

A group member commit's diff runs each endpoint's side (its guards, the ICMPv6
essentials, its chain) over the changed region on both policies. The two sides are
the same stages but for the chain, and the chains' first steps are the very same
step objects up to the first rule naming the group (a rule naming no edited group is
one step for both sides: `Analyzer.share_unchanged_meanings`). What those steps
decide of a region, and what they leave, is then the same on both sides: it is
worked out once (chains.SharedPrefix), and the new side goes on from there with its
own steps. Every stage before the chain is equal on both sides, so the chain meets
the same regions in the same order on each, and each side's pieces come out as its
own run would give them.
"""

from __future__ import annotations

from .chains import Chain, SharedPrefix
from .engine import GuardOrChain

TWINS = True  # False: each side evaluated on its own


def twin_sides(old: tuple[GuardOrChain, ...], new: tuple[GuardOrChain, ...]) -> tuple[tuple[GuardOrChain, ...], tuple[GuardOrChain, ...]]:
    """The two sides' stages, their chains sharing the work of their common first
    steps; as given when they differ otherwise (or share no first step)."""
    if not TWINS or len(old) != len(new):
        return old, new
    at = None
    for index, (a, b) in enumerate(zip(old, new)):
        if a is b or a == b:
            continue
        if at is not None or a.__class__ is not Chain or b.__class__ is not Chain:
            return old, new
        at = index
    if at is None:
        return old, new
    a, b = old[at], new[at]
    assert isinstance(a, Chain) and isinstance(b, Chain)
    start = 0
    for x, y in zip(a.steps, b.steps):
        if x is not y:
            break
        start += 1
    if not start:
        return old, new
    memo: dict[tuple[object, ...], tuple[tuple[tuple[object, ...], ...], tuple[object, ...]]] = {}
    twins = [SharedPrefix(c.name, c.steps, c.default, c.accept_ends, start, memo) for c in (a, b)]  # type: ignore[arg-type]
    return old[:at] + (twins[0],) + old[at + 1 :], new[:at] + (twins[1],) + new[at + 1 :]
