"""Protection (Proxmox's tcpflags, nosmurfs, protection_synflood) and the SYN check,
with real frames: each drop next to the packet it must not touch, and each under
the same ruleset without the setting (the control: the test can fail).

Lab (policies/protection.yaml): `client`, `other` and `server` on one bridged
network; `server` accepts tcp 80 and udp 9999, so only protection decides.
`settings.conntrack.invalid: accept` (Proxmox's nf_conntrack_allow_invalid): conntrack
itself calls most impossible flag combinations invalid, so without it the control
could not show what tcpflags adds. Frames are hand-built (zonewall.lab.raw) and
written to the sender's eth0; a sniffer on the receiver's eth0 decides. Each test
applies the variant it needs first (xdist may run them in any worker, in any order).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from zonewall.analysis.engine import Analyzer
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.compiler.node import compile_node
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.lab import netns, raw
from zonewall.policy.loader import load_policy

from .conftest import POLICIES, Lab

pytestmark = pytest.mark.kernel

CLIENT, OTHER, SERVER, NODE = "10.81.1.10", "10.81.1.11", "10.81.1.20", "192.168.81.11"
OUTSIDE = "192.168.81.50"  # a host on the nodes' LAN
ARRIVE, ABSENT = 1.5, 0.6  # seconds to wait for a frame expected / not expected
SYNFLOOD = {"rate": 5, "burst": 10}
FLOOD = 200


@dataclass
class World:
    lab: Lab
    tmp: Path

    def ns(self, vm: str) -> str:
        return self.lab.vm_ns(vm)

    def mac(self, vm: str) -> str:
        return self.lab.nic(vm).mac  # type: ignore[return-value]


@pytest.fixture(scope="module")
def world(lab_factory: Callable[[str], Lab], tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(lab_factory("protection.yaml"), tmp_path_factory.mktemp("protection"))


def apply(world: World, settings: dict | None = None, host_protection: dict | None = None) -> None:
    """Re-apply the lab's node with `settings` (merged over the file's) and the
    host's own `protection` (None: none)."""
    document = yaml.safe_load((POLICIES / "protection.yaml").read_text())
    for key, value in (settings or {}).items():
        document["settings"][key] = value
    if host_protection is not None:
        document["hosts"]["node1"]["protection"] = host_protection
    path = world.tmp / f"variant-{os.urandom(4).hex()}.yaml"
    path.write_text(yaml.safe_dump(document))
    with LibNftBackend(netns=world.lab.node_ns("node1")) as backend:
        apply_ruleset(backend, compile_node(load_policy(str(path)), "node1"))


ALL_ON = {"protection": {"tcpflags": True, "nosmurfs": True, "synflood": SYNFLOOD, "guests": True}}
ALL_OFF = {"protection": {}}


def delivered(world: World, frame: bytes, predicate: raw.Predicate, *, expect: bool, sender: str = "client") -> bool:
    with raw.Sniffer(world.ns("server"), "eth0") as sniffer:
        raw.send_frame(world.ns(sender), "eth0", frame)
        return sniffer.wait_for(raw.incoming(predicate), timeout=ARRIVE if expect else ABSENT) is not None


def tcp(world: World, flags: str, sport: int, *, payload: bytes = b"", src: str = CLIENT, sender: str = "client") -> bytes:
    return raw.ipv4_tcp_frame(src_mac=world.mac(sender), dst_mac=world.mac("server"), src_ip=src, dst_ip=SERVER, sport=sport, dport=80, flags=flags, payload=payload)


def udp_from(world: World, source: str, *, expect: bool) -> bool:
    token = b"zw-smurf-" + os.urandom(6).hex().encode()
    frame = raw.ipv4_udp_frame(src_mac=world.mac("client"), dst_mac=world.mac("server"), src_ip=source, dst_ip=SERVER, dport=9999, payload=token)
    return delivered(world, frame, raw.udp_payload_contains(token), expect=expect)


IMPOSSIBLE = {"xmas (fin,psh,urg)": ("fin,psh,urg", 41001), "no flag at all": ("", 41002), "syn+rst": ("syn,rst", 41003), "syn+fin": ("syn,fin", 41004), "syn from port 0": ("syn", 0)}


def test_tcpflags_drops_impossible_flag_combinations(world: World) -> None:
    apply(world, ALL_ON)
    for what, (flags, sport) in IMPOSSIBLE.items():
        assert not delivered(world, tcp(world, flags, sport), raw.tcp_matching(sport=sport, dport=80), expect=False), f"{what} passed tcpflags"
    assert delivered(world, tcp(world, "syn", 41010), raw.tcp_matching(sport=41010, dport=80), expect=True), "a plain SYN"
    apply(world, ALL_OFF)  # the control: the same frames, the same rules, no tcpflags
    for what, (flags, sport) in IMPOSSIBLE.items():
        assert delivered(world, tcp(world, flags, sport + 100 if sport else 0), raw.tcp_matching(sport=sport + 100 if sport else 0, dport=80), expect=True), f"{what}: the control"


SMURF_SOURCES = ("255.255.255.255", "224.0.0.9", "10.81.1.255")  # limited broadcast, multicast, the network's broadcast


def test_nosmurfs_drops_broadcast_and_multicast_sources_as_trace_says(world: World) -> None:
    apply(world, ALL_ON)
    analyzer = Analyzer(load_policy(str(POLICIES / "protection.yaml")))
    for source in SMURF_SOURCES:
        assert not udp_from(world, source, expect=False), f"source {source} passed nosmurfs"
        found = trace(analyzer, f"outside:{source}", "vm:server", FlowSpec(proto="udp", port=9999))
        assert found.verdict == "drop" and found.cases[0].outcome.decisive.label == "protection:nosmurfs", found.to_json()
    assert udp_from(world, CLIENT, expect=True), "the client's own address"
    assert trace(analyzer, "vm:client", "vm:server", FlowSpec(proto="udp", port=9999)).verdict == "accept"
    apply(world, ALL_OFF)
    for source in SMURF_SOURCES:
        assert udp_from(world, source, expect=True), f"{source}: the control"


def test_syn_check_refuses_a_mid_stream_segment_without_a_connection(world: World) -> None:
    apply(world, {**ALL_OFF, "conntrack": {"invalid": "accept", "new_tcp": "syn"}})
    stray = tcp(world, "ack,psh", 42001, payload=b"zw-mid-stream")
    assert not delivered(world, stray, raw.tcp_matching(sport=42001, dport=80), expect=False), "an ACK without a connection started one"
    with Stream(world, 8081) as stream:  # a real connection opens and carries data
        assert stream.exchange(5) == 5
    apply(world, ALL_OFF)  # new_tcp: any (the default): conntrack picks the segment up as new
    assert delivered(world, tcp(world, "ack,psh", 42002, payload=b"zw-mid-stream"), raw.tcp_matching(sport=42002, dport=80), expect=True), "the control"


def _flood(world: World, first_sport: int) -> tuple[int, float]:
    """Send FLOOD SYNs from the client as fast as it can; (SYNs the server saw, seconds)."""
    frames = [tcp(world, "syn", first_sport + i) for i in range(FLOOD)]
    ports = range(first_sport, first_sport + FLOOD)
    with raw.Sniffer(world.ns("server"), "eth0") as sniffer:
        started = time.monotonic()
        raw.send_frames(world.ns("client"), "eth0", frames)
        elapsed = time.monotonic() - started
        time.sleep(ABSENT)
        seen = {f.sport for f in sniffer.frames() if not f.outgoing and f.ip_proto == socket.IPPROTO_TCP and f.dport == 80 and f.tcp_flags == 0x02 and f.sport in ports}
    return len(seen), elapsed


def test_synflood_cuts_a_flood_while_an_established_stream_keeps_flowing(world: World) -> None:
    apply(world, ALL_ON)
    with Stream(world, 8080) as stream:
        assert stream.exchange(3) == 3
        stream.background()  # a chunk every 10 ms through the whole flood
        seen, elapsed = _flood(world, 20000)
        during = stream.stop_background()
    allowed = SYNFLOOD["burst"] + SYNFLOOD["rate"] * (elapsed + ABSENT) + 2
    assert SYNFLOOD["burst"] // 2 <= seen <= allowed, f"{seen} of {FLOOD} SYNs arrived in {elapsed:.2f}s (budget {allowed:.0f})"
    assert during.sent >= 20 and during.echoed == during.sent, f"the established stream stalled during the flood: {during}"
    # the budget is per source: another guest's SYN still passes right after
    assert delivered(world, tcp(world, "syn", 43001, src=OTHER, sender="other"), raw.tcp_matching(sport=43001, dport=80, src=OTHER), expect=True)
    apply(world, ALL_OFF)
    seen, _ = _flood(world, 30000)
    assert seen >= FLOOD - 2, f"the control: {seen} of {FLOOD} SYNs arrived without synflood"


def test_host_synflood_protects_the_node_itself(world: World) -> None:
    """The node's own protection (hosts.node1.protection, Proxmox's host.fw options):
    SYNs to the node beyond the budget get no answer; within it the node answers
    (a reset: nothing listens on 2222)."""
    outside, uplink = world.lab.state.outside, "n0.up"
    node_mac = netns.get_mac(world.lab.node_ns("node1"), "eth0")
    outside_mac = netns.get_mac(outside, uplink)
    netns.ip("addr", "add", f"{OUTSIDE}/32", "dev", "lo", ns=outside, check=False)

    def flood(first: int) -> int:
        frames = [raw.ipv4_tcp_frame(src_mac=outside_mac, dst_mac=node_mac, src_ip=OUTSIDE, dst_ip=NODE, sport=first + i, dport=2222, flags="syn") for i in range(FLOOD)]
        with raw.Sniffer(outside, uplink) as sniffer:
            raw.send_frames(outside, uplink, frames)
            time.sleep(1.0)
            return len({f.dport for f in sniffer.frames() if f.ip_proto == socket.IPPROTO_TCP and f.ip_src == NODE and f.sport == 2222 and first <= (f.dport or 0) < first + FLOOD})

    apply(world, ALL_OFF, host_protection={"synflood": SYNFLOOD})
    answered = flood(50000)
    assert SYNFLOOD["burst"] // 2 <= answered <= SYNFLOOD["burst"] + 3 * SYNFLOOD["rate"] + 2, f"the node answered {answered} of {FLOOD} SYNs"
    apply(world, ALL_OFF)
    assert flood(51000) >= FLOOD - 2, "the control: the node answers every SYN without synflood"


class Stream:
    """A TCP connection from the client to the server, echoing chunks."""

    @dataclass
    class Counts:
        sent: int = 0
        echoed: int = 0

    def __init__(self, world: World, port: int) -> None:
        listener = netns.netns_socket(world.ns("server"), socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((SERVER, port))
        listener.listen(1)
        self.client = netns.netns_socket(world.ns("client"), socket.AF_INET, socket.SOCK_STREAM)
        self.client.settimeout(3)
        self.client.connect((SERVER, port))
        self.conn, _ = listener.accept()
        listener.close()
        self.conn.settimeout(3)
        self.echo = threading.Thread(target=self._echo, daemon=True)
        self.echo.start()
        self.stop = threading.Event()
        self.counts = Stream.Counts()
        self.sender: threading.Thread | None = None

    def _echo(self) -> None:
        try:
            while data := self.conn.recv(4096):
                self.conn.sendall(data)
        except OSError:
            return

    def exchange(self, count: int) -> int:
        echoed = 0
        for _ in range(count):
            self.client.sendall(b"z" * 100)
            got = b""
            while len(got) < 100:
                got += self.client.recv(100 - len(got))
            echoed += 1
        return echoed

    def background(self) -> None:
        def run() -> None:
            while not self.stop.is_set():
                try:
                    self.counts.sent += 1
                    self.counts.echoed += self.exchange(1)
                except OSError:
                    return
                time.sleep(0.01)

        self.sender = threading.Thread(target=run, daemon=True)
        self.sender.start()

    def stop_background(self) -> Stream.Counts:
        self.stop.set()
        assert self.sender is not None
        self.sender.join(timeout=5)
        return self.counts

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        for sock in (self.client, self.conn):
            sock.close()
