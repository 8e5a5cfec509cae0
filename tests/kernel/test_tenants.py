"""Tenants with overlapping subnets on one node (`networks.NAME.tenant`): each
tenant's connections live in its own conntrack zone, so one tenant's packet never
rides on the other tenant's connection with the same addresses and ports.

Lab (policies/tenants.yaml): networks `red` (vmbr1) and `blue` (vmbr2) share
10.84.1.0/24, and their guests the addresses 10.84.1.10 (client) and .20 (server).
red-server accepts UDP 9999 and TCP 80 from red-client; blue-server accepts
nothing. A red UDP conversation is answered with real sockets; then blue-client
sends a datagram with exactly its addresses and ports towards blue-server. In the
tenants' zones it is a new connection there and dropped; the control removes the
zones (the same rules otherwise) and the same datagram passes as "established" on
red's conversation.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.compiler.naming import TABLE
from zonewall.compiler.node import compile_node
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.lab import netns, raw

from .conftest import Lab

pytestmark = pytest.mark.kernel

CLIENT, SERVER = "10.84.1.10", "10.84.1.20"
ARRIVE, ABSENT = 1.5, 0.7
PORT = 9999


@pytest.fixture(scope="module")
def lab(lab_factory: Callable[[str], Lab]) -> Lab:
    return lab_factory("tenants.yaml")


def apply(lab: Lab) -> None:
    with LibNftBackend(netns=lab.node_ns("node1")) as backend:
        apply_ruleset(backend, compile_node(lab.policy, "node1"))


@contextmanager
def red_connection(lab: Lab) -> Iterator[int]:
    """A UDP conversation red-client -> red-server:9999 that got its answer (conntrack:
    established); yields its source port. UDP, because a forged TCP segment would
    also have to guess the window (conntrack calls it invalid otherwise)."""
    server = netns.netns_socket(lab.vm_ns("red-server"), socket.AF_INET, socket.SOCK_DGRAM)
    client = netns.netns_socket(lab.vm_ns("red-client"), socket.AF_INET, socket.SOCK_DGRAM)
    try:
        server.bind((SERVER, PORT))
        server.settimeout(3)
        client.settimeout(3)
        client.sendto(b"red", (SERVER, PORT))
        data, peer = server.recvfrom(100)
        server.sendto(data, peer)
        assert client.recvfrom(100)[0] == b"red"
        yield client.getsockname()[1]
    finally:
        client.close()
        server.close()


def blue_datagram_arrives(lab: Lab, sport: int, *, expect: bool) -> bool:
    """blue-client sends a datagram with red's conversation's addresses and ports."""
    client, server = lab.nic("blue-client"), lab.nic("blue-server")
    token = b"zw-blue-" + os.urandom(6).hex().encode()
    frame = raw.ipv4_udp_frame(src_mac=client.mac, dst_mac=server.mac, src_ip=CLIENT, dst_ip=SERVER, sport=sport, dport=PORT, payload=token)  # type: ignore[arg-type]
    with raw.Sniffer(lab.vm_ns("blue-server"), "eth0") as sniffer:
        raw.send_frame(lab.vm_ns("blue-client"), "eth0", frame)
        return sniffer.wait_for(raw.incoming(raw.udp_payload_contains(token)), timeout=ARRIVE if expect else ABSENT) is not None


def test_tenants_with_the_same_subnet_keep_their_connections_apart(lab: Lab) -> None:
    apply(lab)
    with red_connection(lab) as sport:
        assert not blue_datagram_arrives(lab, sport, expect=False), "blue's packet rode on red's conversation"
    # blue's own new connections stay refused (blue-server accepts nothing)
    blue = netns.netns_socket(lab.vm_ns("blue-client"), socket.AF_INET, socket.SOCK_STREAM)
    with blue:
        blue.settimeout(1)
        with pytest.raises(OSError):
            blue.connect((SERVER, 80))


def test_the_analyzer_keeps_tenants_apart_as_the_kernel_does(lab: Lab) -> None:
    """trace: red's own flow is accepted by its rule; blue reaches neither red-server
    (no path between tenants, although red-web's `from` holds blue-client's address)
    nor its own server (no rule)."""
    analyzer = Analyzer(lab.policy)
    udp = FlowSpec(proto="udp", port=PORT)
    assert trace(analyzer, "vm:red-client", "vm:red-server", udp).verdict == "accept"
    across = trace(analyzer, "vm:blue-client", "vm:red-server", udp)
    assert across.verdict == "drop" and across.cases[0].outcome.decisive.label.startswith("tenants:"), across.to_json()
    assert trace(analyzer, "vm:blue-client", "vm:blue-server", udp).verdict == "drop"
    apply(lab)
    with red_connection(lab):
        pass  # red's own conversation works (asserted inside)
    assert not blue_datagram_arrives(lab, 40123, expect=False), "blue's new conversation to its server"


def test_control_without_zones_the_segment_passes(lab: Lab) -> None:
    """The same rules without the conntrack-zones chain: the check above can fail."""
    apply(lab)
    try:
        netns.exec_in_netns(lab.node_ns("node1"), ["nft", "delete", "chain", "inet", TABLE, "conntrack-zones"])
        with red_connection(lab) as sport:
            assert blue_datagram_arrives(lab, sport, expect=True), "without zones blue's datagram is established on red's conversation"
    finally:
        apply(lab)
