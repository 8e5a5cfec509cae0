"""The lint's shortcuts (address signatures, references judged once per `from`/`to`)
change no finding: the optimised path and the straightforward one
(`lint(..., shortcuts=False)`) give the same JSON on random policies, and the
address signature never tells two overlapping regions apart."""

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
from zonewall.analysis.lint import cuts, lint
from zonewall.policy.loader import load_policy_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import synth


def _both(text: str) -> tuple[str, str]:
    fast = json.dumps(lint(Analyzer(load_policy_text(text))).to_json(), sort_keys=True)
    plain = json.dumps(lint(Analyzer(load_policy_text(text)), shortcuts=False).to_json(), sort_keys=True)
    return fast, plain


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policies())
def test_shortcuts_give_the_same_findings_on_random_policies(drawn: tuple[str, Any]) -> None:
    fast, plain = _both(drawn[0])
    assert fast == plain


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shortcuts_give_the_same_findings_on_synthetic_policies(seed: int) -> None:
    fast, plain = _both(synth.policy_text(60, nodes=2, zones=5, seed=seed))
    assert fast == plain
    kinds = {f["kind"] for f in json.loads(fast)["findings"]}
    assert {"shadowed", "redundant", "conflict"} <= kinds  # the shortcuts had work to do


def test_a_wrong_shortcut_is_caught() -> None:
    """The comparison can fail: a signature that tells overlapping sources apart
    hides conflicts, and the reports differ."""
    text = synth.policy_text(30, nodes=2, zones=3, seed=1)
    good, _ = _both(text)
    original = cuts._address_sig
    try:
        cuts._address_sig = lambda region, dim: 1 << (id(region) % 64)  # type: ignore[assignment]
        import zonewall.analysis.lint.base as base

        base._address_sig = cuts._address_sig  # type: ignore[attr-defined]
        broken, plain = _both(text)
    finally:
        cuts._address_sig = original  # type: ignore[assignment]
        base._address_sig = original  # type: ignore[attr-defined]
    assert plain == good
    assert broken != good


def _intervals(draw: st.DrawFn, top: int) -> s.Intervals:
    points = sorted(set(draw(st.lists(st.integers(0, top), min_size=2, max_size=6))))
    pairs = [(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]
    return s.merge(pairs) if pairs else ((points[0], points[0]),)


@st.composite
def _regions(draw: st.DrawFn) -> s.Region:
    boxes = []
    for _ in range(draw(st.integers(1, 3))):
        family = draw(st.sampled_from([4, 6]))
        # addresses near each other (blocks that fold together) and far apart
        top = draw(st.sampled_from([1 << 12, 1 << 20, s.ADDRESS_MAX[family]]))
        boxes.append(s.box(fam=((family, family),), src=_intervals(draw, top), dst=_intervals(draw, top)))
    return tuple(boxes)


@settings(max_examples=300, deadline=None)
@given(_regions(), _regions())
def test_overlapping_regions_share_an_address_signature_bit(a: s.Region, b: s.Region) -> None:
    for dim in (s.SRC, s.DST):
        if s.overlaps(a, b):
            assert cuts._address_sig(a, dim) & cuts._address_sig(b, dim)


def test_regions_in_different_blocks_are_told_apart() -> None:
    ten = s.box(fam=((4, 4),), src=((0x0A000001, 0x0A000001),))
    other = s.box(fam=((4, 4),), src=((0x0A000101, 0x0A000101),))  # the next /24
    assert not cuts._address_sig((ten,), s.SRC) & cuts._address_sig((other,), s.SRC)
    wide = s.box(fam=((4, 4),), src=((0x0A000000, 0x0AFFFFFF),))  # a /8: every bit
    assert cuts._address_sig((ten,), s.SRC) & cuts._address_sig((wide,), s.SRC)
    six = s.box(fam=((6, 6),), src=((1, 1),))
    assert not cuts._address_sig((ten,), s.SRC) & cuts._address_sig((six,), s.SRC)  # families apart
