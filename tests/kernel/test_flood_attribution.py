"""Denied-packet records only for packets really sent to or from a VM.

A bridge that does not know a unicast destination MAC floods the frame to every
port. With br_netfilter each copy passes the inet forward hook on its own, and the
bridge forward chain named each copy's destination NIC by the port it was copied to:
the copy to a bystander's port was judged by the bystander's `in` rules, dropped by
its default and logged against it (`bystander in drop 10.79.1.10 -> 10.79.1.40`), and
counted in its drop counters. Such a copy is now dropped in the bridge before any
rule (compiler/guards.py: `nic-PORT-in`), so no record, counter or delivery names a
guest the frame was not addressed to, while frames for the guest's own MAC are
judged (and logged) as before.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from zonewall.dataplane.nflog import LogRecord, NflogReader, resolve_vm
from zonewall.lab import raw

from .conftest import Lab

pytestmark = pytest.mark.kernel
GROUP = 6
UNKNOWN_MAC = "02:00:00:79:99:99"  # never sends: no bridge learns where it is
SENDER_MAC, SENDER_IP = "52:54:00:79:01:01", "10.79.1.10"


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[str], Lab]) -> Lab:
    return lab_factory("flood.yaml")


@pytest.fixture
def log(lab: Lab) -> Iterator[NflogReader]:
    with NflogReader(GROUP, netns=lab.node_ns("node1")) as reader:
        yield reader


def frames(dst_mac: str, dst_ip: str, dport: int, token: bytes, count: int = 20) -> list[bytes]:
    return [raw.ipv4_udp_frame(src_mac=SENDER_MAC, dst_mac=dst_mac, src_ip=SENDER_IP, dst_ip=dst_ip, payload=token + b"-%d" % i,
                               sport=40000 + i, dport=dport) for i in range(count)]


def ours(dport: int) -> Callable[[LogRecord], bool]:
    return lambda r: r.proto == "udp" and r.dport == dport and r.src == SENDER_IP


def named(lab: Lab, records: list[LogRecord]) -> list[str]:
    nics = lab.nics["node1"]
    return sorted({resolve_vm(r, nics) or "?" for r in records})


def test_a_flooded_frame_is_logged_against_no_bystander(lab: Lab, log: NflogReader) -> None:
    token = b"zw-flood-%d" % time.monotonic_ns()
    with raw.Sniffer(lab.vm_ns("bystander1"), "eth0") as sniffer:
        sent = raw.send_frames(lab.vm_ns("sender"), "eth0", frames(UNKNOWN_MAC, "10.79.1.40", 7001, token))
        seen_by_bystander = sniffer.wait_for(raw.incoming(raw.udp_payload_contains(token)), timeout=1.5)
    assert sent == 20
    log.read(timeout=1.0)
    records = [r for r in log.history if ours(7001)(r)]
    # before the fix: 40 records, 20 against each bystander (and the frames reached them)
    assert records == [], named(lab, records)
    assert seen_by_bystander is None  # a promiscuous bystander no longer sees other guests' unicast


def test_a_frame_for_a_guests_own_mac_is_still_judged_and_logged_against_it(lab: Lab, log: NflogReader) -> None:
    token = b"zw-direct-%d" % time.monotonic_ns()
    raw.send_frames(lab.vm_ns("sender"), "eth0", frames("52:54:00:79:01:02", "10.79.1.20", 7002, token, count=3))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and len([r for r in log.history if ours(7002)(r)]) < 3:
        log.read(timeout=0.2)
    records = [r for r in log.history if ours(7002)(r)]
    assert len(records) == 3 and named(lab, records) == ["bystander1"]
    assert {(r.direction, r.rule_id, r.verdict) for r in records} == {("in", "default-in", "drop")}


def test_the_copy_for_the_addressed_guest_passes_and_no_other_guest_gets_one(lab: Lab) -> None:
    """A frame for the target's MAC (flooded or forwarded, whatever the bridge knows)
    reaches the target through its rules; the guest on the other node, where the copy
    crosses the trunk and may be flooded again, does not get it."""
    token = b"zw-reach-%d" % time.monotonic_ns()
    with raw.Sniffer(lab.vm_ns("target"), "eth0") as target, raw.Sniffer(lab.vm_ns("remote"), "eth0") as remote:
        raw.send_frames(lab.vm_ns("sender"), "eth0", frames("52:54:00:79:01:04", "10.79.1.40", 5555, token, count=3))
        assert target.wait_for(raw.incoming(raw.udp_payload_contains(token)), timeout=2) is not None
        assert remote.wait_for(raw.incoming(raw.udp_payload_contains(token)), timeout=1) is None
