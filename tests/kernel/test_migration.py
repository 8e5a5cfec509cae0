"""Live migration in the kernel: established connections follow a VM to another node.

Two nodes share the bridged network `lan` (through the outside's bridge). `mover`
runs on node1 beside `stay`; streams are opened while the policy still admits them,
then the policy is tightened so that a NEW connection in the stream's direction is
refused (the streams live on as `established`), and `mover` migrates to node2, where
`nf_conntrack_tcp_loose=0`. With the state transfer the TCP stream and the UDP flow
(outside -> mover, stay -> mover) keep flowing; without it they stop: a mid-stream
TCP segment has no entry on node2 (invalid with loose=0) and a UDP datagram is a new
connection the policy refuses.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kernel.conftest import _kernel_check
from tests.labtools import unique_lab_name
from zonewall.lab import netns
from zonewall.lab.cluster import LabState, apply_policy, ensure_outside_address, lab_down, lab_prefix, lab_up
from zonewall.lab.migrate import lab_migrate
from zonewall.policy.documents import read_directory

pytestmark = pytest.mark.kernel

OUTSIDE = "203.0.113.50"
MOVER, STAY, OTHER = "10.81.1.10", "10.81.1.11", "10.81.1.12"
POLICY = """\
version: 1
settings:
  default: {{in: drop, out: accept}}
hosts:
  node1: {{address: [192.168.81.11], uplink: eth0}}
  node2: {{address: [192.168.81.12], uplink: eth0}}
networks:
  lan: {{bridge: vmbr1, subnets: [10.81.1.0/24], gateway: [10.81.1.1]}}
vms:
  mover:
    host: node1
    nics: [{{network: lan, mac: "52:54:00:81:01:0a", ips: [{mover}]}}]
    rules: {rules}
  stay:
    host: node1
    nics: [{{network: lan, mac: "52:54:00:81:01:0b", ips: [{stay}]}}]
  other:
    host: node2
    nics: [{{network: lan, mac: "52:54:00:81:01:0c", ips: [{other}]}}]
"""
OPEN = "[{id: tcp, direction: in, action: accept, tcp: [5001, 5003]}, {id: udp, direction: in, action: accept, udp: [5002, 5004]}]"


def write(policy_dir: Path, rules: str) -> None:
    (policy_dir / "policy.yaml").write_text(POLICY.format(rules=rules, mover=MOVER, stay=STAY, other=OTHER))


class Stream:
    """A TCP stream and a UDP flow (echoed: answered, so established) from
    `client_ns` to `server` in `server_ns`; records when data arrives."""

    def __init__(self, server_ns: str, server: str, client_ns: str, port: int, bind: str | None = None) -> None:
        self.port = port
        self.stop = threading.Event()
        self.tcp_times: list[float] = []
        self.udp_times: list[float] = []
        listener = netns.netns_socket(server_ns, socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((server, port))
        listener.listen(1)
        self.udp_server = netns.netns_socket(server_ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_server.bind((server, port + 1))
        self.udp_server.settimeout(0.1)
        self.client = netns.netns_socket(client_ns, socket.AF_INET, socket.SOCK_STREAM)
        self.udp_client = netns.netns_socket(client_ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.udp_client.settimeout(0.1)
        if bind:
            self.client.bind((bind, 0))
            self.udp_client.bind((bind, 0))
        self.client.settimeout(3)
        self.client.connect((server, port))
        self.conn, _ = listener.accept()
        listener.close()
        self.conn.settimeout(0.1)
        self.client.settimeout(0.1)
        self.server = server
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._recv_tcp, self._recv_udp, self._recv_echo)]
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        chunk = b"x" * 1000
        while not self.stop.is_set():
            try:
                self.client.send(chunk)
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                return
            try:
                self.udp_client.sendto(b"u" * 100, (self.server, self.port + 1))
            except OSError:
                pass
            time.sleep(0.01)

    def _recv_tcp(self) -> None:
        while not self.stop.is_set():
            try:
                if self.conn.recv(65536):
                    self.tcp_times.append(time.monotonic())
            except TimeoutError:
                continue
            except OSError:
                return

    def _recv_udp(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.udp_server.recvfrom(2048)
                self.udp_server.sendto(data, peer)  # an echo: the flow is answered, hence established
            except TimeoutError:
                continue
            except OSError:
                return

    def _recv_echo(self) -> None:
        while not self.stop.is_set():
            try:
                self.udp_client.recv(2048)
                self.udp_times.append(time.monotonic())
            except TimeoutError:
                continue
            except OSError:
                return

    def flowing_since(self, since: float, window: float = 1.5) -> tuple[bool, bool]:
        """Did TCP data and UDP datagrams arrive between since+window/3 and since+window?"""
        time.sleep(max(0.0, since + window - time.monotonic()))
        start = since + window / 3
        return any(t > start for t in self.tcp_times), any(t > start for t in self.udp_times)

    def gap(self, around: float) -> float:
        """The longest silence of the TCP stream after `around` - 1 s."""
        times = [t for t in self.tcp_times if t > around - 1.0]
        return max((b - a for a, b in zip(times, times[1:])), default=float("inf"))

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2)
        for s in (self.client, self.conn, self.udp_client, self.udp_server):
            s.close()


@pytest.fixture
def migration_lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabState]:
    _kernel_check(request.config)
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    write(policy_dir, OPEN)
    name = unique_lab_name()
    try:
        state = lab_up(str(policy_dir), name)
        ensure_outside_address(state, OUTSIDE)
        netns.set_sysctl(state.nodes["node2"], "net.netfilter.nf_conntrack_tcp_loose", 0)
        yield state
    finally:
        lab_down(name)
        assert not netns.list_netns(lab_prefix(name))


def run_migration(state: LabState, transfer: bool) -> tuple[list[tuple[str, bool, bool]], dict]:
    streams = {
        "outside->mover": Stream(state.vms["mover"], MOVER, state.outside, 5001, bind=OUTSIDE),
        "stay->mover": Stream(state.vms["mover"], MOVER, state.vms["stay"], 5003),
    }
    try:
        now = time.monotonic()
        for label, stream in streams.items():
            assert stream.flowing_since(now) == (True, True), f"{label} does not flow before the migration"
        # tighten: new connections to mover on 5001/5002 are refused from now on
        policy_dir = Path(state.policy)
        write(policy_dir, "[]")
        apply_policy(state)
        now = time.monotonic()
        for label, stream in streams.items():
            assert stream.flowing_since(now) == (True, True), f"{label} stopped when the policy was tightened"
        report = lab_migrate(state, read_directory(policy_dir), "mover", "node2", transfer_state=transfer)
        switched = time.monotonic()
        result = [(label, *stream.flowing_since(switched, 2.0)) for label, stream in streams.items()]
        report["gaps"] = {label: stream.gap(switched) for label, stream in streams.items()}
        return result, report
    finally:
        for stream in streams.values():
            stream.close()


def test_streams_survive_migration_with_state_transfer(migration_lab: LabState) -> None:
    result, report = run_migration(migration_lab, transfer=True)
    assert all(tcp and udp for _, tcp, udp in result), (result, report)
    # the VM's chains moved: node1 no longer has them, the policy says node2
    policy_text = (Path(migration_lab.policy) / "policy.yaml").read_text()
    assert "host: node2" in policy_text.split("mover:")[1].split("stay:")[0]
    assert all(gap < 1.0 for gap in report["gaps"].values()), report


def test_streams_break_without_state_transfer(migration_lab: LabState) -> None:
    """The control: the same migration without the transfer breaks the streams, so the
    transfer (not a permissive kernel or policy) is what keeps them alive."""
    result, report = run_migration(migration_lab, transfer=False)
    assert not any(tcp or udp for _, tcp, udp in result), (result, report)
