"""A second signature of a region, of its addresses: most pairs of a chain's rules
that share a protocol and port (the first signature, cuts._sig, tells the others
apart) differ in the address at the other end (`from` of an in rule, `to` of an out
rule), which the exact test finds only after walking both regions' boxes and, for
a zone's or a group's list, bisecting thousands of intervals. Two regions that share
a packet share a bit of this signature in both dimensions, so one AND per dimension
tells most of the others apart (at 10,000 VMs ~90 % of the pairs the first
signature lets through)."""

from __future__ import annotations

from .. import space as s
from ..space import Region

# IPv4: an address per bit, modulo a prime (a zone's addresses, a /24, a range of a few
# addresses spread over the bits). IPv6: a /48 per bit (guests' and groups' prefixes
# are /48 to /64; a single address would make every /64 take all the bits).
BITS = 4093
_ALL = (1 << BITS) - 1
_V6_SHIFT = 80


def _range_bits(low: int, high: int) -> int:
    """The bits of the values low..high modulo BITS."""
    if high - low + 1 >= BITS:
        return _ALL
    a, b = low % BITS, high % BITS
    if a <= b:
        return (1 << (b + 1)) - (1 << a)
    return _ALL ^ ((1 << a) - (1 << (b + 1)))  # wraps around: all but b+1..a-1


def _dimension_bits(values: s.Intervals, families: tuple[bool, bool]) -> int:
    v4 = v6 = 0
    for low, high in values:
        if families[0]:
            v4 |= _range_bits(low, high)
        if families[1]:
            v6 |= _range_bits(low >> _V6_SHIFT, high >> _V6_SHIFT)
    return v4 | (v6 << BITS)


def address_sig(region: Region) -> tuple[int, int]:
    """(source bits, destination bits) of the region. A box of both families (its
    address values read in either) sets the bits of both: never fewer than a packet
    of it has."""
    src = dst = 0
    for b in region:
        fam = b[s.FAM]
        families = (s.iv_overlaps(fam, ((4, 4),)), s.iv_overlaps(fam, ((6, 6),)))
        src |= _dimension_bits(b[s.SRC], families)
        dst |= _dimension_bits(b[s.DST], families)
    return src, dst
