"""Conntrack export/import between two namespaces: NAT'd and window-scaled entries
are recreated as they were (zonewall/dataplane/conntrack.py)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.kernel.conftest import _kernel_check
from zonewall.agent.migration import pack_export, unpack_export
from zonewall.dataplane.conntrack import IPS_DST_NAT, IPS_SRC_NAT, ConntrackSocket, Entry, Tuple, delete_entries
from zonewall.lab import netns

pytestmark = pytest.mark.kernel
VM = "10.1.0.5"


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    _kernel_check(request.config)
    names = (f"zwct{os.getpid()}a", f"zwct{os.getpid()}b")
    try:
        for ns in names:
            netns.create_netns(ns)
            netns.exec_in_netns(ns, ["nft", "add table inet t; add chain inet t c { type filter hook forward priority 0; ct state established accept; }"])
        yield names
    finally:
        for ns in names:
            netns.delete_netns(ns)


def test_entries_round_trip_with_nat_and_tcp_state(pair: tuple[str, str]) -> None:
    source, target = pair
    entries = [
        Entry(socket.AF_INET, Tuple(VM, "198.51.100.7", 6, 40000, 443), Tuple("198.51.100.7", VM, 6, 443, 40000), status=0x6, timeout=600, tcp=(3, 7, 9, 0x23, 0x21)),
        Entry(socket.AF_INET, Tuple(VM, "203.0.113.9", 17, 5000, 53), Tuple("203.0.113.9", "192.0.2.1", 17, 53, 5000), status=0x6 | IPS_SRC_NAT, timeout=100),
        Entry(socket.AF_INET, Tuple("203.0.113.9", "192.0.2.1", 6, 4444, 8080), Tuple(VM, "203.0.113.9", 6, 80, 4444), status=0x6 | IPS_DST_NAT, timeout=100, tcp=(3, 7, 7, 0x23, 0x23)),
        Entry(socket.AF_INET6, Tuple("fd00::5", "fd00::9", 17, 1000, 2000), Tuple("fd00::9", "fd00::5", 17, 2000, 1000), status=0x6, timeout=100, mark=42),
        Entry(socket.AF_INET, Tuple("10.9.9.9", "10.9.9.8", 17, 1, 2), Tuple("10.9.9.8", "10.9.9.9", 17, 2, 1), status=0x6, timeout=100),  # not the VM's
    ]
    with ConntrackSocket(source) as sock:
        assert sock.create(entries).created == len(entries)
        export = sock.export_raw([VM, "fd00::5"])
    assert len(export) == 4 and export.scanned == 5
    with ConntrackSocket(target) as sock:
        result = sock.create_raw(unpack_export(pack_export(export)))
        assert (result.created, result.failed) == (4, 0), result
        assert sock.create_raw(export).existed == 4  # a second pass adds nothing
        copied = {(e.orig.src, e.orig.dst, e.orig.proto): e for e in sock.dump()}
    assert len(copied) == 4
    nat_src = copied[(VM, "203.0.113.9", 17)]
    assert nat_src.snat and (nat_src.reply.src, nat_src.reply.dst) == ("203.0.113.9", "192.0.2.1")
    nat_dst = copied[("203.0.113.9", "192.0.2.1", 6)]
    assert nat_dst.dnat and (nat_dst.reply.src, nat_dst.reply.sport) == (VM, 80)
    tcp = copied[(VM, "198.51.100.7", 6)]
    assert tcp.tcp is not None and tcp.tcp[:3] == (3, 7, 9) and tcp.tcp[3] & 1  # window scaling kept
    assert copied[("fd00::5", "fd00::9", 17)].mark == 42
    # cleanup on the source keeps entries shared with a guest staying there
    assert delete_entries([VM, "fd00::5"], keep=["fd00::9"], netns=source).created == 3
    with ConntrackSocket(source) as sock:
        assert {e.orig.src for e in sock.dump()} == {"fd00::5", "10.9.9.9"}
