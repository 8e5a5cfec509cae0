"""Reading a set's elements back (nftstate._elements) when the kernel repeats some: a
hash set resized by the kernel while it is dumped sends elements twice (and a dump in
parts may skip as many as it repeats), as seen right after a stage's commit."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from zonewall.dataplane import nftstate
from zonewall.dataplane.netlink import NLA_F_NESTED, attr, string_attr


def _element(value: int, *, ends_range: bool = False) -> bytes:
    key = attr(1 | NLA_F_NESTED, attr(1, struct.pack("!I", value)))  # NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE }
    flags = attr(3, struct.pack("!I", 1 if ends_range else 0))  # NFTA_SET_ELEM_FLAGS
    return attr(1 | NLA_F_NESTED, key + flags)  # NFTA_LIST_ELEM


def _message(elements: list[bytes]) -> bytes:
    return string_attr(1, "zonewall") + string_attr(2, "admins") + attr(3 | NLA_F_NESTED, b"".join(elements))


class Dumps:
    """A socket whose successive element dumps are given (each a list of messages)."""

    def __init__(self, *dumps: list[list[bytes]]) -> None:
        self.dumps = list(dumps)
        self.asked = 0

    def request(self, _message_type: int, _family: int, _payload: bytes, *, dump: bool) -> Iterator[tuple[bytes, int, int]]:
        assert dump
        self.asked += 1
        for message in self.dumps.pop(0):
            buf = _message(message)
            yield buf, 0, len(buf)


def _read(sock: Dumps) -> tuple[int, list[bytes]]:
    return nftstate._elements(sock, 1, string_attr(1, "zonewall"), "admins")  # type: ignore[arg-type]


ONE_TO_FOUR = [[_element(1), _element(2)], [_element(3), _element(4)]]


def test_a_dump_without_repeats_is_read_once() -> None:
    sock = Dumps(ONE_TO_FOUR)
    count, elements = _read(sock)
    assert (count, len(elements), sock.asked) == (4, 4, 1)


def test_a_dump_that_repeats_elements_is_made_again() -> None:
    # the resized table walked again: 1 and 2 twice, 4 skipped
    sock = Dumps([[_element(1), _element(2)], [_element(1), _element(2), _element(3)]], ONE_TO_FOUR)
    count, elements = _read(sock)
    assert (count, sock.asked) == (4, 2)
    assert sorted(elements) == sorted(_read(Dumps(ONE_TO_FOUR))[1])


def test_repeats_in_every_dump_count_each_element_once_and_range_ends_not_at_all() -> None:
    repeating = [[_element(1), _element(2), _element(2, ends_range=True)], [_element(1), _element(3)]]
    sock = Dumps(*[repeating] * nftstate.ELEMENT_READS)
    count, elements = _read(sock)
    assert sock.asked == nftstate.ELEMENT_READS
    assert (count, len(elements)) == (3, 4)  # 1, 2, 3 and the end of the range that starts at 2
