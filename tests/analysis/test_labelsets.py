"""analysis/labelsets.py: a set of labels as the bits of an integer answers every
operation as a Python set of the same strings does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zonewall.analysis.labelsets import Alphabet, Labels

# a few labels, and many (a set of 64 or more is built through a byte array)
NAMES = st.sampled_from([f"vm:v{i}" for i in range(150)] + ["host:n1", "outside: any", "vm:b@x"])
SETS = st.one_of(st.frozensets(NAMES, max_size=8), st.frozensets(NAMES, min_size=60, max_size=150))


@settings(max_examples=300, deadline=None)
@given(SETS, SETS, st.booleans())
def test_labels_behave_as_a_set_of_strings(a: frozenset[str], b: frozenset[str], same_alphabet: bool) -> None:
    alphabet = Alphabet()
    x = alphabet.of(a)
    y = alphabet.of(b) if same_alphabet else set(b)  # (a plain set on the other side: the general way)
    assert set(x) == a and len(x) == len(a) and sorted(x) == sorted(a)
    assert all(label in x for label in a) and not any(label in x for label in b - a) and 5 not in x
    assert set(x | y) == a | b and set(x & y) == a & b and set(x - y) == a - b
    assert (x <= y) == (a <= b) and (x >= y) == (a >= b) and (x == y) == (a == b) and x.isdisjoint(y) == a.isdisjoint(b)
    assert x == set(a) and set(a) == x and (x != set(b)) == (a != b)
    assert set(set(b) - x) == b - a and set(set(b) | x) == a | b
    z = x.copy()
    z |= y
    assert set(z) == a | b and set(x) == a  # (the copy is its own)
    z -= y
    assert set(z) == a - b
    z.update(b)
    z.difference_update(a)
    assert set(z) == b - a


def test_a_label_added_later_gets_a_bit_of_its_own() -> None:
    alphabet = Alphabet()
    x = alphabet.of(["vm:a"])
    y = Labels(alphabet)
    y.add("vm:b")
    assert x.isdisjoint(y) and set(x | y) == {"vm:a", "vm:b"} and alphabet.names(x.bits | y.bits) == ["vm:a", "vm:b"]
    y.discard("vm:b")
    y.discard("vm:never")  # (a label never numbered: nothing to take out)
    assert not y and "vm:never" not in y
