"""Fixtures for the lab primitive tests: unique namespaces, always removed."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from zonewall.lab import netns

_counter = itertools.count()


def unique_prefix(tag: str) -> str:
    """``zwt-<pid>-<n>-<tag>-``: unique per xdist worker (pid) and per use (n)."""
    return f"zwt-{os.getpid()}-{next(_counter)}-{tag}-"


@pytest.fixture
def ns_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh prefix; every namespace starting with it is deleted afterwards."""
    prefix = unique_prefix(request.node.name[:12].replace("[", "").replace("]", ""))
    try:
        yield prefix
    finally:
        netns.delete_all(prefix)


@dataclass
class Topo:
    """A --- br0 --- B, with the bridge in its own namespace."""

    a: str
    b: str
    br: str
    a_mac: str = "02:00:00:00:00:0a"
    b_mac: str = "02:00:00:00:00:0b"
    a4: str = "10.77.0.1"
    b4: str = "10.77.0.2"
    a6: str = "fd77::1"
    b6: str = "fd77::2"


def build_topo(prefix: str) -> Topo:
    t = Topo(a=prefix + "a", b=prefix + "b", br=prefix + "br")
    for name in (t.a, t.b, t.br):
        netns.create_netns(name)
    netns.add_bridge(t.br, "br0")
    netns.add_veth(t.a, "eth0", t.br, "pa", mac_a=t.a_mac)
    netns.add_veth(t.b, "eth0", t.br, "pb", mac_a=t.b_mac)
    netns.set_master(t.br, "pa", "br0")
    netns.set_master(t.br, "pb", "br0")
    for ns, v4, v6 in ((t.a, t.a4, t.a6), (t.b, t.b4, t.b6)):
        netns.add_address(ns, "eth0", f"{v4}/24")
        netns.add_address(ns, "eth0", f"{v6}/64")
    return t


@pytest.fixture
def topo(ns_prefix: str) -> Topo:
    return build_topo(ns_prefix)


def nft(ns: str, ruleset: str) -> None:
    netns.exec_in_netns(ns, ["nft", "-f", "-"], input=ruleset)


@pytest.fixture
def load_nft():
    """``load_nft(ns, ruleset)``: ``ip netns exec NS nft -f -``."""
    return nft
