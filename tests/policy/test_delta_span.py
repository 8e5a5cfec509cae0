"""The span a change touches, found by comparing the texts (`text_span`), is the one
found line by line (`line_span` with nothing known): the controller's scoping, the
nodes it counts as affected and the deltas it sends all rest on it."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.policy.delta import BLOCK, apply_delta, line_span, make_delta, text_span


def _edited(lines: list[str], rnd: random.Random, edits: int) -> list[str]:
    out = list(lines)
    for _ in range(edits):
        at = rnd.randrange(len(out) + 1)
        kind = rnd.randrange(5)
        if kind == 0 and at < len(out):
            out[at] += "x"
        elif kind == 1:
            out.insert(at, rnd.choice(["", "a", "  - {tcp: 1}"]))
        elif kind == 2 and at < len(out):
            del out[at]
        elif kind == 3 and at < len(out):
            out[at] = out[at][:-1]  # a line shortened: a prefix of the old one
        else:
            out[at:at] = ["a"] * rnd.randrange(1, 2 * BLOCK // 3)  # equal lines added: the span is ambiguous, both must agree
    return out


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 10**6), count=st.sampled_from([0, 1, 2, 5, 40, 3000, 30000]), edits=st.integers(0, 3), end=st.sampled_from(["", "\n"]))
def test_the_span_found_from_the_texts_is_the_span_found_line_by_line(seed: int, count: int, edits: int, end: str) -> None:
    rnd = random.Random(seed)
    lines = [rnd.choice(["", "a", "b", "  key: value", f"  vm{rnd.randrange(99)}:"]) for _ in range(count)]
    old = "\n".join(lines) + end
    new = "\n".join(_edited(old.split("\n"), rnd, edits))
    a, b = old.split("\n"), new.split("\n")
    assert text_span(old, new, a, b) == line_span(a, b)
    assert apply_delta({"p.yaml": old}, make_delta({"p.yaml": old}, {"p.yaml": new})) == {"p.yaml": new}


def test_the_span_of_a_one_line_edit_in_a_large_text() -> None:
    lines = [f"      - {{direction: in, action: accept, tcp: {n}}}" for n in range(200_000)]
    edited = list(lines)
    edited[123_456] = edited[123_456].replace("tcp", "udp")
    old, new = "\n".join(lines), "\n".join(edited)
    assert text_span(old, new, lines, edited) == (123_456, 123_457, 123_457)
    edited.insert(7, "      # added")
    assert text_span(old, "\n".join(edited), lines, edited) == line_span(lines, edited)
