"""Region tools of the first-match analysis: signatures that tell most rule pairs
apart with one AND, restriction to what reaches a chain, the first-match cut, and
whether later steps decide a region alike."""

from __future__ import annotations

from ...analysis import space as s
from ...analysis.space import Box, Intervals, Region

FAMILY_RANGE: dict[int, Intervals] = {f: ((0, s.ADDRESS_MAX[f]),) for f in (4, 6)}

# (protocol, port, name): what an accept from everywhere should not open
MANAGEMENT_PORTS: tuple[tuple[int, int, str], ...] = (
    (6, 22, "ssh"),
    (6, 23, "telnet"),
    (6, 3389, "rdp"),
    (6, 5900, "vnc"),
    (6, 5985, "winrm"),
    (6, 5986, "winrm-https"),
    (6, 9440, "zonewall controller"),
    (6, 9441, "zonewall agent"),
    (17, 161, "snmp"),
)

PROTO_NAME = {6: "tcp", 17: "udp"}

_MARK: Intervals = ((0, 0),)

_FAMILY: dict[int, Intervals] = {4: ((4, 4),), 6: ((6, 6),)}

# The signature of a region: one bit per (family, protocol, port bucket) it touches.
# Two regions whose signatures share no bit cannot overlap; most rule pairs of a chain
# differ in protocol or port and are told apart by one AND.
_BUCKET_SHIFT = 8  # ports 0-65535 in 256 buckets of 256

_BUCKETS = 65536 >> _BUCKET_SHIFT

_PORT_CLASSES = {6: 0, 17: 1, 132: 2}  # the protocols whose DPORT is a port

_OTHER_BASE = len(_PORT_CLASSES) * _BUCKETS  # then one bit per other protocol

_FAMILY_BITS = _OTHER_BASE + 256

_PORT_PROTO_BITS = sum(1 << (_OTHER_BASE + proto) for proto in _PORT_CLASSES)


def _bits(low: int, high: int) -> int:
    return (1 << (high + 1)) - (1 << low)

def _sig(region: Region) -> int:
    mask = 0
    for b in region:
        part = 0
        dport = b[s.DPORT]
        buckets = 0
        for low, high in dport:
            buckets |= _bits(low >> _BUCKET_SHIFT, min(high, 65535) >> _BUCKET_SHIFT)
        for low, high in b[s.PROTO]:
            for proto, index in _PORT_CLASSES.items():
                if low <= proto <= high:
                    part |= buckets << (index * _BUCKETS)
            part |= _bits(_OTHER_BASE + low, _OTHER_BASE + high) & ~_PORT_PROTO_BITS
        for low, high in b[s.FAM]:
            if low <= 4 <= high:
                mask |= part
            if low <= 6 <= high:
                mask |= part << _FAMILY_BITS
    return mask

def _restrict(region: Region, dim: int, by_family: dict[int, Intervals]) -> Region:
    """The region's packets whose `dim` is in the family's intervals."""
    out: list[Box] = []
    for b in region:
        fam = b[s.FAM]
        if len(fam) == 1 and fam[0][0] == fam[0][1]:
            values = by_family.get(fam[0][0], ())
            if not values:
                continue
            current = b[dim]
            z = s.iv_intersect(current, values)
            if z:
                out.append(b if z is current else b[:dim] + (z,) + b[dim + 1 :])
        else:  # a box over both families: split it
            for f in (4, 6):
                values = by_family.get(f, ())
                part = s.box_restrict(b, s.FAM, ((f, f),))
                if part is not None and values:
                    part = s.box_restrict(part, dim, values)
                    if part is not None:
                        out.append(part)
    return tuple(out)

def _first_match_cut(eff: Region, earlier: list[Region], memo: dict[tuple[int, int], tuple[Region, Region, Region, bool]]) -> tuple[Region, tuple[int, ...]]:
    """eff minus the earlier regions in order, and which of them took part of it.

    Cutting by the earlier regions leaves the same as cutting by what they decide
    (their union is the same), with fewer boxes; what an earlier region removes from
    the rest is exactly the part of eff it decides. Once nothing is left, no later
    region decides any of it. Each cut is memoised by the identity of its operands:
    chains sharing rules share the leading cuts."""
    pieces = eff
    met: list[int] = []
    for index, region in enumerate(earlier):
        key = (id(pieces), id(region))
        found = memo.get(key)
        if found is None or found[0] is not pieces or found[1] is not region:
            rest, hit = s.cut(pieces, region)
            found = memo[key] = (pieces, region, rest, hit)
        if found[3]:
            pieces = found[2]
            met.append(index)
            if not pieces:
                break
    return pieces, tuple(met)

def _same_without(pieces: Region, action: str, later: list[tuple[Region, str, bool, bool]], default_action: str, default_logged: bool) -> tuple[bool, tuple[int, ...], bool]:
    """Do the later steps (region, action, logged, limited) and the default decide
    `pieces` as `action`, unlogged? And which of them take part (and the default?)."""
    used: list[int] = []
    for index, (region, other, logged, limited) in enumerate(later):
        if not s.overlaps(pieces, region):
            continue
        if other != action or logged:
            return False, (), False
        used.append(index)
        if not limited:  # over the rate a limited accept lets packets fall through
            pieces = s.subtract(pieces, region)
            if not pieces:
                return True, tuple(used), False
    if default_action != action or default_logged:
        return False, (), False
    return True, tuple(used), True

def _service_part(a: Box, b: Box) -> Box:
    """The protocol and ports two overlapping boxes share (what services_of reads)."""
    out = list(a)
    for d in (s.PROTO, s.DPORT, s.SPORT):
        out[d] = s.iv_intersect(a[d], b[d])
    return tuple(out)

def _contains(values: Intervals, value: int) -> bool:
    for low, high in values:
        if low <= value <= high:
            return True
        if low > value:
            return False
    return False

def _fams(b: Box) -> set[int]:
    return {f for f in (4, 6) if _contains(b[s.FAM], f)}
