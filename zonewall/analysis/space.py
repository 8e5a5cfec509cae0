"""Exact packet space: unions of disjoint boxes over the header fields zonewall matches.

A packet of a new connection is a point in seven dimensions:

| dim | values |
|---|---|
| PROTO | IP protocol number 0-255 (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...) |
| DPORT | destination port 0-65535; for ICMP/ICMPv6 the message type |
| FAM   | 4 or 6 |
| SRC   | source address as an integer (in the family's own space) |
| DST   | destination address as an integer |
| SPORT | source port 0-65535 |
| TIME  | minute of the week in UTC, Monday 00:00 = 0 (schedules) |

Each dimension of a box is a union of inclusive integer intervals, so a rule's match
(address sets, port lists, a schedule's windows) is one box per family/protocol
alternative, and first-match evaluation is exact: subtract what earlier rules took.
The dimension order puts the most selective fields first, so disjoint boxes are
usually told apart after one or two comparisons.
"""

from __future__ import annotations

from typing import Iterable, Sequence

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


def iv_intersect(a: Intervals, b: Intervals) -> Intervals:
    if a is b:
        return a
    if len(a) == 1 and len(b) == 1:
        low = a[0][0] if a[0][0] > b[0][0] else b[0][0]
        high = a[0][1] if a[0][1] < b[0][1] else b[0][1]
        if low > high:
            return ()
        return a if (low, high) == a[0] else b if (low, high) == b[0] else ((low, high),)
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
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][1] < b[j][0]:
            i += 1
        elif b[j][1] < a[i][0]:
            j += 1
        else:
            return True
    return False


def iv_subtract(a: Intervals, b: Intervals) -> Intervals:
    if a is b:
        return ()
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
        z = iv_intersect(x, y)
        if not z:
            return None
        out.append(z)
    return tuple(out)


def box_overlaps(a: Box, b: Box) -> bool:
    for x, y in zip(a, b):
        if not iv_overlaps(x, y):
            return False
    return True


def box_subtract(a: Box, b: Box) -> list[Box]:
    """a minus b as disjoint boxes (at most one per dimension)."""
    if not box_overlaps(a, b):
        return [a]
    pieces: list[Box] = []
    current = list(a)
    for d in range(DIMS):
        rest = iv_subtract(current[d], b[d])
        if rest:
            piece = current.copy()
            piece[d] = rest
            pieces.append(tuple(piece))
        current[d] = iv_intersect(current[d], b[d])
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
    return any(box_overlaps(x, y) for x in a for y in b)


def subtract(a: Region, b: Region) -> Region:
    pieces = list(a)
    for cut in b:
        if not pieces:
            break
        next_pieces: list[Box] = []
        for piece in pieces:
            if box_overlaps(piece, cut):
                next_pieces.extend(box_subtract(piece, cut))
            else:
                next_pieces.append(piece)
        pieces = next_pieces
    return tuple(pieces)


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
