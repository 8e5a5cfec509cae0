"""The lint's overlap shortcuts (issue 13: lint at 10,000 VMs) change no finding:
one overlap memo per region shared by every step with it, and an address signature
(zonewall/analysis/lint/addresses.py) that tells most pairs of regions apart before
the exact test. The signature never separates two regions that share a packet (the
exact regions are compared on random ones), the whole lint gives the same JSON with
and without the shortcuts on random policies, and a signature that misses part of
a range is caught."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.analysis.policygen import policies
from zonewall.analysis import space as s
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.lint import base, lint
from zonewall.analysis.lint import addresses as a
from zonewall.policy.loader import load_policy_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synth

# Address values where the signature has edges: around multiples of BITS (a range
# wraps around the bits there), single addresses, ranges longer than BITS, IPv6
# prefixes (a /48 per bit), and both families' whole ranges.
_V6 = 1 << 80
_POINTS = st.one_of(
    st.integers(0, 3 * a.BITS),
    st.integers(0, 4).map(lambda k: k * a.BITS - 1),
    st.integers(0, (1 << 32) - 1),
    st.integers(0, 5).map(lambda k: k * _V6 + 7),
)


@st.composite
def _interval(draw: st.DrawFn) -> tuple[int, int]:
    low = draw(_POINTS)
    length = draw(st.one_of(st.just(0), st.integers(0, 300), st.integers(a.BITS - 2, a.BITS + 2), st.integers(0, 3 * _V6)))
    return low, low + length


@st.composite
def _box(draw: st.DrawFn) -> s.Box:
    dims = list(s.FULL)
    dims[s.FAM] = draw(st.sampled_from([((4, 4),), ((6, 6),), ((4, 4), (6, 6))]))
    for dim in (s.SRC, s.DST):
        dims[dim] = s.merge(draw(st.lists(_interval(), min_size=1, max_size=3)))
    return tuple(dims)


_regions = st.lists(_box(), min_size=1, max_size=3).map(tuple)


def _share(x: s.Region, y: s.Region) -> bool:
    (src_x, dst_x), (src_y, dst_y) = a.address_sig(x), a.address_sig(y)
    return bool(src_x & src_y and dst_x & dst_y)


@settings(max_examples=400, deadline=None)
@given(_regions, _regions)
def test_regions_that_share_a_packet_share_signature_bits(x: s.Region, y: s.Region) -> None:
    if s.overlaps(x, y):
        assert _share(x, y)


def test_the_signature_tells_disjoint_addresses_apart() -> None:
    """Positive and negative side by side: two single IPv4 addresses share bits only
    when they are equal modulo BITS; a range wrapping around the bits holds both ends;
    a range of BITS addresses or more, or another family's box, decides nothing."""
    def at(src: int, fam: int = 4, high: int | None = None) -> s.Region:
        return (s.box(fam=((fam, fam),), src=((src, src if high is None else high),), dst=((0, 0),)),)

    assert not _share(at(10), at(11))
    assert _share(at(10), at(10 + a.BITS))  # the same bit: the exact test decides
    wrapping = at(a.BITS - 2, high=a.BITS + 1)
    assert _share(wrapping, at(a.BITS - 1)) and _share(wrapping, at(0)) and not _share(wrapping, at(2))
    assert _share(at(5, high=5 + a.BITS), at(1234))
    assert not _share(at(10, fam=6), at(10))  # each family has its own bits
    assert _share(at(10 * _V6, fam=6), at(10 * _V6 + 99, fam=6)) and not _share(at(10 * _V6, fam=6), at(11 * _V6, fam=6))


def _both(text: str) -> tuple[str, str]:
    fast = json.dumps(lint(Analyzer(load_policy_text(text))).to_json(), sort_keys=True)
    plain = json.dumps(lint(Analyzer(load_policy_text(text)), shortcuts=False).to_json(), sort_keys=True)
    return fast, plain


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policies())
def test_the_overlap_shortcuts_give_the_same_findings_on_random_policies(drawn: tuple[str, Any]) -> None:
    fast, plain = _both(drawn[0])
    assert fast == plain


def test_a_signature_that_misses_part_of_a_range_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison can fail: a signature taking each interval for its first address
    calls overlapping rules disjoint, and the findings differ."""
    text = synth.policy_text(40, nodes=2, zones=4, seed=2)
    good, plain = _both(text)
    assert good == plain

    def first_addresses(region: s.Region) -> tuple[int, int]:
        return (sum(1 << (b[s.SRC][0][0] % a.BITS) for b in region) or 1, -1)

    monkeypatch.setattr(base, "address_sig", first_addresses)
    broken = json.dumps(lint(Analyzer(load_policy_text(text))).to_json(), sort_keys=True)
    assert broken != good
