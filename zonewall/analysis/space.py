"""Exact packet space: unions of disjoint boxes over the header fields zonewall matches.

A packet of a new connection is a point in seven dimensions:

| dim | values |
|---|---|
| PROTO | IP protocol number 0-255 (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...) |
| DPORT | destination port 0-65535; for ICMP/ICMPv6 the message type |
| FAM   | 4 or 6 |
| SRC   | source address as an integer (in the family's own space) |
| DST   | destination address as an integer |
| SPORT | source port 0-65535; for ICMP/ICMPv6 the message code (issue 18) |
| TIME  | minute of the week in UTC, Monday 00:00 = 0 (schedules) |

Each dimension of a box is a union of inclusive integer intervals, so a rule's match
(address sets, port lists, a schedule's windows) is one box per family/protocol
alternative, and first-match evaluation is exact: subtract what earlier rules took.
The dimension order puts the most selective fields first, so disjoint boxes are
usually told apart after one or two comparisons.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence

Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint, not adjacent, inclusive
Box = tuple[Intervals, ...]
Region = tuple[Box, ...]  # disjoint boxes

PROTO, DPORT, FAM, SRC, DST, SPORT, TIME = range(7)
DIMS = 7
WEEK_MINUTES = 7 * 1440
FULL: tuple[Intervals, ...] = (
    ((0, 255),),
    ((0, 65535),),
    ((4, 4), (6, 6)),
    ((0, (1 << 128) - 1),),  # the family decides which part is meaningful
    ((0, (1 << 128) - 1),),
    ((0, 65535),),
    ((0, WEEK_MINUTES - 1),),
)
# the family first (IPv4 and IPv6 boxes never meet), then the usually selective fields
OVERLAP_ORDER = (FAM, PROTO, DPORT, SRC, DST, SPORT, TIME)
ADDRESS_MAX = {4: (1 << 32) - 1, 6: (1 << 128) - 1}
EMPTY: Region = ()


# -- interval sets ----------------------------------------------------------------


def merge(intervals: Iterable[tuple[int, int]]) -> Intervals:
    out: list[list[int]] = []
    for low, high in sorted(intervals):
        if out and low <= out[-1][1] + 1:
            if high > out[-1][1]:
                out[-1][1] = high
        else:
            out.append([low, high])
    return tuple((a, b) for a, b in out)


def _high(interval: tuple[int, int]) -> int:
    return interval[1]


def _low(interval: tuple[int, int]) -> int:
    return interval[0]


def _clip(a: Intervals, low: int, high: int) -> tuple[int, int]:
    """The slice a[i:j] of the intervals meeting [low, high] (bisect: zone and group
    address lists run to thousands of intervals)."""
    return bisect_left(a, low, key=_high), bisect_left(a, high + 1, key=_low)


def iv_intersect(a: Intervals, b: Intervals) -> Intervals:
    if a is b:
        return a
    if not a or not b:
        return ()
    if len(a) == 1 and len(b) != 1:
        a, b = b, a
    if len(b) == 1:
        low, high = b[0]
        if low <= a[0][0] and a[-1][1] <= high:
            return a
        if high < a[0][0] or a[-1][1] < low:
            return ()
        if len(a) > 8:
            i, j = _clip(a, low, high)
            part = list(a[i:j])
            if part:
                if part[0][0] < low:
                    part[0] = (low, part[0][1])
                if part[-1][1] > high:
                    part[-1] = (part[-1][0], high)
            return tuple(part)
    if len(a) > len(b):
        a, b = b, a
    if len(b) > 16 * len(a):
        # a few intervals against hundreds (a class's peers): each clipped out by bisection
        # rather than walking the long list; the same pieces in the same order
        # (only a run's first and last intervals can stick out of [low, high]: the
        # ones between are copied as they are, a slice rather than a tuple each)
        found: list[tuple[int, int]] = []
        for low, high in a:
            i, j = _clip(b, low, high)
            if i == j:
                continue
            start = len(found)
            found += b[i:j]
            if found[start][0] < low:
                found[start] = (low, found[start][1])
            if found[-1][1] > high:
                found[-1] = (found[-1][0], high)
        return tuple(found)
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        low = max(a[i][0], b[j][0])
        high = min(a[i][1], b[j][1])
        if low <= high:
            out.append((low, high))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def iv_overlaps(a: Intervals, b: Intervals) -> bool:
    if a is b:
        return bool(a)
    la, lb = len(a), len(b)
    if la == 1 and lb == 1:
        return a[0][0] <= b[0][1] and b[0][0] <= a[0][1]
    if la > lb:
        a, b, la, lb = b, a, lb, la
    if not a or not b or a[-1][1] < b[0][0] or b[-1][1] < a[0][0]:
        return False
    if lb > 8 and la * 16 <= lb:  # a few intervals against a long list: bisect
        for low, high in a:
            k = bisect_left(b, low, key=_high)
            if k < lb and b[k][0] <= high:
                return True
        return False
    if la > 8:
        # two long lists (address sets of zones and groups): mostly single addresses,
        # where a set intersection in C beats the merge walk below
        points_a = _points(a)
        if points_a is not None:
            points_b = _points(b)
            if points_b is not None:
                return not points_a.isdisjoint(points_b)
    i = j = 0
    while i < la and j < lb:
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


_POINTS: dict[int, tuple[Intervals, frozenset[int] | None]] = {}
_POINTS_KEPT = 4096  # long lists are a policy's zone and group sets and their unions: few, asked often


def _points(intervals: Intervals) -> frozenset[int] | None:
    """The intervals as a set of values when every one is a single value.
    Memoised by identity (the tuple is kept with its set, so its id is not reused):
    lint tests the same zone and group lists against each other ~100,000 times."""
    found = _POINTS.get(id(intervals))
    if found is not None and found[0] is intervals:
        return found[1]
    lows = frozenset(low for low, high in intervals if low == high)
    points = lows if len(lows) == len(intervals) else None
    if len(_POINTS) >= _POINTS_KEPT:
        _POINTS.clear()
    _POINTS[id(intervals)] = (intervals, points)
    return points


def iv_subtract(a: Intervals, b: Intervals) -> Intervals:
    if a is b:
        return ()
    if len(b) == 1 and a:
        low, high = b[0]
        if low <= a[0][0] and a[-1][1] <= high:
            return ()
        if high < a[0][0] or a[-1][1] < low:
            return a
        if len(a) > 8:
            i, j = _clip(a, low, high)
            middle: list[tuple[int, int]] = []
            if i < j:
                if a[i][0] < low:
                    middle.append((a[i][0], low - 1))
                if a[j - 1][1] > high:
                    middle.append((high + 1, a[j - 1][1]))
            return a[:i] + tuple(middle) + a[j:]
    out: list[tuple[int, int]] = []
    j = 0
    for low, high in a:
        while j < len(b) and b[j][1] < low:
            j += 1
        k = j
        current = low
        while k < len(b) and b[k][0] <= high:
            if b[k][0] > current:
                out.append((current, b[k][0] - 1))
            current = max(current, b[k][1] + 1)
            if current > high:
                break
            k += 1
        if current <= high:
            out.append((current, high))
    return tuple(out)


def iv_union(a: Intervals, b: Intervals) -> Intervals:
    return merge(a + b)


def iv_size(a: Intervals) -> int:
    return sum(high - low + 1 for low, high in a)


# -- boxes --------------------------------------------------------------------------


def box(**dims: Intervals | Iterable[tuple[int, int]]) -> Box:
    """A box with the named dimensions restricted (proto=, dport=, fam=, src=, dst=,
    sport=, time=), every other dimension full."""
    names = {"proto": PROTO, "dport": DPORT, "fam": FAM, "src": SRC, "dst": DST, "sport": SPORT, "time": TIME}
    out = list(FULL)
    for name, value in dims.items():
        out[names[name]] = merge(value)
    return tuple(out)


def box_intersect(a: Box, b: Box) -> Box | None:
    out = []
    for x, y in zip(a, b):
        if x is not y:
            if len(x) == 1 and len(y) == 1:  # most dimensions of most boxes: inline (a call each costs more)
                (x_low, x_high), (y_low, y_high) = x[0], y[0]
                if x_high < y_low or y_high < x_low:
                    return None
                if x_low < y_low or y_high < x_high:
                    x = y if (x_low <= y_low and y_high <= x_high) else ((max(x_low, y_low), min(x_high, y_high)),)
            else:
                x = iv_intersect(x, y)
                if not x:
                    return None
        out.append(x)
    return tuple(out)


def box_overlaps(a: Box, b: Box) -> bool:
    for d in OVERLAP_ORDER:
        x, y = a[d], b[d]
        if x is y:
            continue
        if len(x) == 1 and len(y) == 1:
            if x[0][0] > y[0][1] or y[0][0] > x[0][1]:
                return False
        elif not iv_overlaps(x, y):
            return False
    return True


def box_subtract(a: Box, b: Box) -> list[Box]:
    """a minus b as disjoint boxes (at most one per dimension)."""
    if not box_overlaps(a, b):
        return [a]
    return _subtract_overlapping(a, b)


def _subtract_overlapping(a: Box, b: Box) -> list[Box]:
    pieces: list[Box] = []
    current = list(a)
    for d in range(DIMS):
        x, y = current[d], b[d]
        if x is y:
            continue
        if len(x) == 1 and len(y) == 1:  # inline: the boxes overlap, so these two intervals do
            (x_low, x_high), (y_low, y_high) = x[0], y[0]
            if y_low <= x_low and x_high <= y_high:
                continue  # nothing of this dimension outside b
            if x_low < y_low:
                rest: Intervals = ((x_low, y_low - 1), (y_high + 1, x_high)) if y_high < x_high else ((x_low, y_low - 1),)
            else:
                rest = ((y_high + 1, x_high),)
            inside: Intervals = y if (x_low <= y_low and y_high <= x_high) else ((max(x_low, y_low), min(x_high, y_high)),)
        else:
            rest = iv_subtract(x, y)
            inside = iv_intersect(x, y)
        if rest:
            piece = current.copy()
            piece[d] = rest
            pieces.append(tuple(piece))
        current[d] = inside
    return pieces


def box_restrict(a: Box, dim: int, values: Intervals) -> Box | None:
    z = iv_intersect(a[dim], values)
    if not z:
        return None
    return a[:dim] + (z,) + a[dim + 1 :]


# -- regions -------------------------------------------------------------------------


def region(*boxes: Box | None) -> Region:
    return tuple(b for b in boxes if b is not None)


def intersect(a: Region, b: Region) -> Region:
    out = []
    for x in a:
        for y in b:
            z = box_intersect(x, y)
            if z is not None:
                out.append(z)
    return tuple(out)


def overlaps(a: Region, b: Region) -> bool:
    for x in a:  # (loops, not any() over a generator: asked ~10^5 times per diff and lint)
        for y in b:
            if box_overlaps(x, y):
                return True
    return False


def subtract(a: Region, b: Region) -> Region:
    return cut(a, b)[0]


def cut(a: Region, b: Region) -> tuple[Region, bool]:
    """a minus b, and whether b met a at all (untouched boxes are not copied)."""
    pieces = a
    met = False
    for cutter in b:
        if not pieces:
            break
        out: list[Box] | None = None
        for index, piece in enumerate(pieces):
            if box_overlaps(piece, cutter):
                if out is None:
                    out = list(pieces[:index])
                out.extend(_subtract_overlapping(piece, cutter))
            elif out is not None:
                out.append(piece)
        if out is not None:
            pieces = tuple(out)
            met = True
    return pieces, met


def union(a: Region, b: Region) -> Region:
    """Disjoint union: b's part outside a is added."""
    if not a:
        return b
    return a + subtract(b, a)


def restrict(a: Region, dim: int, values: Intervals) -> Region:
    return tuple(r for r in (box_restrict(x, dim, values) for x in a) if r is not None)


def is_empty(a: Region) -> bool:
    return not a


def covers(a: Region, b: Region) -> bool:
    """Every packet of b is in a."""
    return not subtract(b, a)


def equal(a: Region, b: Region) -> bool:
    return covers(a, b) and covers(b, a)


def projection(a: Region, dim: int) -> Intervals:
    """The values dimension `dim` takes anywhere in the region."""
    found: list[tuple[int, int]] = []
    for x in a:
        found.extend(x[dim])
    return merge(found)


def family_projection(a: Region, dim: int, family: int) -> Intervals:
    found: list[tuple[int, int]] = []
    for x in a:
        if iv_overlaps(x[FAM], ((family, family),)):
            found.extend(x[dim])
    return merge(found)


def point(proto: int, dport: int, fam: int, src: int, dst: int, sport: int, time: Intervals | None = None) -> Box:
    return (
        ((proto, proto),),
        ((dport, dport),),
        ((fam, fam),),
        ((src, src),),
        ((dst, dst),),
        ((sport, sport),),
        time if time is not None else FULL[TIME],
    )


def coalesce(a: Sequence[Box]) -> Region:
    """Merge boxes that differ in one dimension only (display is shorter; same set)."""
    boxes = list(a)
    changed = True
    while changed and len(boxes) > 1:
        changed = False
        seen: dict[tuple[int, Box], int] = {}
        dirty: set[int] = set()  # grown this pass: its other keys are stale
        out: list[Box] = []
        for b in boxes:
            merged = False
            for d in range(DIMS):
                index = seen.get((d, b[:d] + ((),) + b[d + 1 :]))
                if index is not None and index not in dirty:
                    other = out[index]
                    out[index] = other[:d] + (iv_union(other[d], b[d]),) + other[d + 1 :]
                    dirty.add(index)
                    merged = changed = True
                    break
            if not merged:
                for d in range(DIMS):
                    seen[(d, b[:d] + ((),) + b[d + 1 :])] = len(out)
                out.append(b)
        boxes = out
    return tuple(boxes)


def universe(time: Intervals | None = None) -> Region:
    """Every packet: one box per family, addresses within the family's range."""
    when = time if time is not None else FULL[TIME]
    return tuple(
        FULL[:FAM] + (((f, f),), ((0, ADDRESS_MAX[f]),), ((0, ADDRESS_MAX[f]),), FULL[SPORT], when) for f in (4, 6)
    )
