"""How the analyzer writes address ranges (diff rows, reach, trace): each range as
the fewest CIDR blocks, in order, a single address without its /32 or /128, as
Python's ipaddress summarises them (describe.py computes them on integers: a /31
network object refers to itself, a reference cycle the controller would keep)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from zonewall.analysis.describe import addresses_text


def _reference(family: int, values: tuple[tuple[int, int], ...], limit: int = 6) -> list[str]:
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    out: list[str] = []
    for low, high in values:
        for net in ipaddress.summarize_address_range(cls(low), cls(high)):
            out.append(str(net) if net.num_addresses > 1 else str(net.network_address))
            if len(out) > limit:
                return out[:limit] + [f"... ({len(values)} ranges)"]
    return out


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, tuple[tuple[int, int], ...]]:
    family = draw(st.sampled_from([4, 6]))
    top = (1 << (32 if family == 4 else 128)) - 1
    out, low = [], draw(st.integers(0, top))
    for _ in range(draw(st.integers(1, 4))):
        if low > top:
            break
        high = min(top, low + draw(st.one_of(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, top))))
        out.append((low, high))
        low = high + 2 + draw(st.integers(0, 1000))
    return family, tuple(out)


@given(ranges())
def test_ranges_are_written_as_the_fewest_cidr_blocks(case: tuple[int, tuple[tuple[int, int], ...]]) -> None:
    family, values = case
    assert addresses_text(family, values) == _reference(family, values)


def test_single_addresses_lose_their_prefix_and_long_lists_are_cut() -> None:
    ten = int(ipaddress.IPv4Address("10.0.0.0"))
    assert addresses_text(4, ((ten, ten + 1),)) == ["10.0.0.0/31"]
    assert addresses_text(4, ((ten, ten),)) == ["10.0.0.0"]
    assert addresses_text(4, ((ten + 1, ten + 6),)) == ["10.0.0.1", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6"]
    assert addresses_text(6, ((0, (1 << 128) - 1),)) == ["::/0"]
    many = tuple((ten + 4 * k, ten + 4 * k) for k in range(9))
    assert addresses_text(4, many) == [f"10.0.0.{4 * k}" for k in range(6)] + ["... (9 ranges)"]
