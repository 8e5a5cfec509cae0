"""Sets of a diff's endpoint labels as the bits of an integer.

A zone rule open to everyone gives a diff rows whose peers are most of the cluster:
~7,600 labels each at 10,000 VMs, united, compared and subtracted row by row while
the rows are gathered and merged (diffrecord.py, flowrows.py). As sets of strings
that was ~1 s of each such commit; as integers over one numbering of the labels (an
`Alphabet` per diff) each union, difference or subset test is one operation on
~1,250 bytes. `Labels` is such a set with the interface of a Python set of
strings, so a row reads as before (`"vm:web1" in row.src`, `row.dst == {"vm:db1"}`,
`sorted(row.src)`); code that knows it (`.bits`) works on the integer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from collections.abc import Set as AbstractSet
from typing import Any

# a byte's set bits, low to high (for listing a set: each non-zero byte looked up once)
_BITS = tuple(tuple(k for k in range(8) if byte >> k & 1) for byte in range(256))


def set_bits(bits: int) -> list[int]:
    """The numbers of the bits set in `bits`, low to high (each non-zero byte looked up once)."""
    out: list[int] = []
    for at, byte in enumerate(bits.to_bytes((bits.bit_length() + 7) // 8, "little")):
        if byte:
            base = at * 8
            out += [base + k for k in _BITS[byte]]
    return out


class Alphabet:
    """A numbering of labels: a label's bit is 1 << its number (given as first met)."""

    __slots__ = ("labels", "numbers")

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.labels: list[str] = []

    def number(self, label: str) -> int:
        found = self.numbers.get(label)
        if found is None:
            found = self.numbers[label] = len(self.labels)
            self.labels.append(label)
        return found

    def mask(self, labels: Iterable[str]) -> int:
        """The bits of `labels` (numbering those not met yet)."""
        numbers = [self.number(label) for label in labels]
        if len(numbers) < 64:
            bits = 0
            for number in numbers:
                bits |= 1 << number
            return bits
        # (an integer built bit by bit is copied at each bit: a byte array instead)
        buffer = bytearray(len(self.labels) // 8 + 1)
        for number in numbers:
            buffer[number >> 3] |= 1 << (number & 7)
        return int.from_bytes(buffer, "little")

    def names(self, bits: int) -> list[str]:
        """The labels of `bits`, in the order of their numbers."""
        labels = self.labels
        return [labels[number] for number in set_bits(bits)]

    def of(self, labels: Iterable[str]) -> Labels:
        return Labels(self, self.mask(labels))


class Labels(MutableSet[str]):
    """A set of labels of one `Alphabet` (module docstring). With another set of the
    same alphabet every operation is one on integers; with any other set of strings
    it works as a set does."""

    __slots__ = ("alphabet", "bits")
    __hash__ = None  # type: ignore[assignment]  # (mutable, as a set)

    def __init__(self, alphabet: Alphabet, bits: int = 0) -> None:
        self.alphabet = alphabet
        self.bits = bits

    def _bits_of(self, other: Iterable[Any]) -> int:
        if isinstance(other, Labels) and other.alphabet is self.alphabet:
            return other.bits
        return self.alphabet.mask(label for label in other if isinstance(label, str))

    def _from_iterable(self, it: Iterable[Any]) -> Labels:  # type: ignore[override]  # (the Set mixins' constructor)
        return Labels(self.alphabet, self._bits_of(it))

    # -- the set protocol
    def __contains__(self, label: object) -> bool:
        number = self.alphabet.numbers.get(label) if isinstance(label, str) else None
        return number is not None and bool(self.bits >> number & 1)

    def __iter__(self) -> Iterator[str]:
        return iter(self.alphabet.names(self.bits))

    def __len__(self) -> int:
        return self.bits.bit_count()

    def __repr__(self) -> str:
        return f"Labels({sorted(self)!r})"

    def add(self, label: str) -> None:
        self.bits |= 1 << self.alphabet.number(label)

    def discard(self, label: str) -> None:
        number = self.alphabet.numbers.get(label)
        if number is not None:
            self.bits &= ~(1 << number)

    def copy(self) -> Labels:
        return Labels(self.alphabet, self.bits)

    # -- whole-set operations on the integers
    def __or__(self, other: AbstractSet[Any]) -> Labels:
        return Labels(self.alphabet, self.bits | self._bits_of(other))

    __ror__ = __or__

    def __and__(self, other: AbstractSet[Any]) -> Labels:
        return Labels(self.alphabet, self.bits & self._bits_of(other))

    __rand__ = __and__

    def __sub__(self, other: AbstractSet[Any]) -> Labels:
        return Labels(self.alphabet, self.bits & ~self._bits_of(other))

    def __rsub__(self, other: AbstractSet[Any]) -> Labels:
        return Labels(self.alphabet, self._bits_of(other) & ~self.bits)

    def __ior__(self, other: AbstractSet[Any]) -> Labels:
        self.bits |= self._bits_of(other)
        return self

    def __iand__(self, other: AbstractSet[Any]) -> Labels:
        self.bits &= self._bits_of(other)
        return self

    def __isub__(self, other: AbstractSet[Any]) -> Labels:
        self.bits &= ~self._bits_of(other)
        return self

    def update(self, other: Iterable[str]) -> None:
        self.bits |= self._bits_of(other)

    def difference_update(self, other: Iterable[str]) -> None:
        self.bits &= ~self._bits_of(other)

    def isdisjoint(self, other: Iterable[Any]) -> bool:
        return not self.bits & self._bits_of(other)

    def __le__(self, other: AbstractSet[Any]) -> bool:
        if isinstance(other, Labels) and other.alphabet is self.alphabet:
            return not self.bits & ~other.bits
        return all(label in other for label in self)

    def __ge__(self, other: AbstractSet[Any]) -> bool:
        if isinstance(other, Labels) and other.alphabet is self.alphabet:
            return not other.bits & ~self.bits
        return all(label in self for label in other)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Labels) and other.alphabet is self.alphabet:
            return self.bits == other.bits
        if not isinstance(other, AbstractSet):
            return NotImplemented
        return len(self) == len(other) and self <= other
