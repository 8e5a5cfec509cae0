"""The span a change touches, found by comparing the texts (`text_span`), is the one
found line by line (`line_span` with nothing known): the controller's scoping, the
nodes it counts as affected and the deltas it sends all rest on it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.policy.delta import (
    BLOCK,
    DeltaMismatch,
    apply_delta,
    changed_lines,
    line_span,
    make_delta,
    splice_lines,
    text_span,
)


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


def _split_and_joined(text: str, start: int, end: int, lines: list[str]) -> str:
    old = text.split("\n")
    return "\n".join(old[:start] + lines + old[end:])


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 10**6), count=st.sampled_from([0, 1, 2, 7, 300, 70_000]), blank=st.floats(0, 1), data=st.data())
def test_a_span_of_lines_is_replaced_as_if_the_text_were_split_and_joined(seed: int, count: int, blank: float, data: st.DataObject) -> None:
    rnd = random.Random(seed)
    text = "\n".join("" if rnd.random() < blank else rnd.choice(["a", "  b: c", "x" * 70]) for _ in range(count))
    lines_count = text.count("\n") + 1
    start = data.draw(st.integers(0, lines_count))
    end = data.draw(st.integers(start, lines_count))
    new = data.draw(st.lists(st.sampled_from(["", "n", "  - {tcp: 1}"]), max_size=3))
    assert splice_lines(text, start, end, new) == _split_and_joined(text, start, end, new)


def test_a_span_outside_the_text_is_refused() -> None:
    for start, end in ((0, 4), (-1, 1), (3, 2), ("0", 1)):
        with pytest.raises(DeltaMismatch, match="does not fit the base"):
            apply_delta({"p.yaml": "a\nb\nc"}, {"changed": {"p.yaml": [start, end, ["x"]]}, "added": {}, "removed": []})
    assert apply_delta({"p.yaml": "a\nb\nc"}, {"changed": {"p.yaml": [3, 3, ["d"]]}, "added": {}, "removed": []}) == {"p.yaml": "a\nb\nc\nd"}


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 10**6), count=st.sampled_from([0, 1, 2, 5, 40, 3000]), edits=st.integers(0, 3), end=st.sampled_from(["", "\n"]))
def test_the_changed_lines_are_found_without_splitting_as_by_splitting(seed: int, count: int, edits: int, end: str) -> None:
    rnd = random.Random(seed)
    lines = [rnd.choice(["", "a", "b", "  key: value", f"  vm{rnd.randrange(9)}:"]) for _ in range(count)]
    old = "\n".join(lines) + end
    new = "\n".join(_edited(old.split("\n"), rnd, edits)) + rnd.choice(["", "\n", "\na"])
    a, b = old.split("\n"), new.split("\n")
    start, old_end, new_end = line_span(a, b)
    assert changed_lines(old, new) == (start, old_end, b[start:new_end])
    assert changed_lines(new, old) == (start, new_end, a[start:old_end])
    delta = make_delta({"p.yaml": old}, {"p.yaml": new})
    assert delta["changed"] == ({"p.yaml": [start, old_end, b[start:new_end]]} if old != new else {})
