"""Conntrack helpers with real packets: FTP through a policy that opens only port 21.

With `settings.conntrack.helpers: [ftp]` a passive-mode and an active-mode transfer
succeed (the data connections are `related`); a connection to a data port nobody
announced stays blocked. Without the helper the same policy stops both transfers at
the data connection, so it is the helper that opens them and nothing else.

The FTP server is a minimal stdlib one (USER/PASS/TYPE/PASV/PORT/RETR/QUIT), the
client is ftplib running inside the client's namespace.
"""

from __future__ import annotations

import ftplib
import socket
import threading
from pathlib import Path

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.compiler.node import compile_node
from zonewall.compiler.render import normalize_listing, render_table
from zonewall.lab import netns
from zonewall.lab.cluster import apply_policy
from zonewall.lab.probing import Service, probe
from zonewall.policy.loader import load_policy

POLICY = """
version: 1
settings:
  conntrack: {helpers: [ftp]}
hosts: {node1: {address: 192.168.100.11}}
networks: {lan: {bridge: vmbr1, subnets: [10.8.0.0/24]}}
vms:
  client: {host: node1, nics: [{network: lan, ips: [10.8.0.10]}]}
  server:
    host: node1
    nics: [{network: lan, ips: [10.8.0.20]}]
    rules: [{id: ftp-control, direction: in, action: accept, tcp: 21}]
"""
SERVER, CLIENT = "10.8.0.20", "10.8.0.10"
PAYLOAD = b"zonewall ftp payload\n" * 50


class MiniFtpServer:
    """One control connection at a time; enough of RFC 959 for ftplib's retrbinary."""

    def __init__(self, ns: str, address: str) -> None:
        self.ns, self.address = ns, address
        self.sock = netns.netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((address, 21))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    self._session(conn)
                except OSError:
                    pass

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        reader = conn.makefile("rb")
        conn.sendall(b"220 mini ftp\r\n")
        passive: socket.socket | None = None
        active: tuple[str, int] | None = None
        for raw in reader:
            command, _, argument = raw.decode().strip().partition(" ")
            command = command.upper()
            if command == "QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            if command == "PASV":
                passive = netns.netns_socket(self.ns, socket.AF_INET, socket.SOCK_STREAM)
                passive.bind((self.address, 0))
                passive.listen(1)
                passive.settimeout(3)
                port = passive.getsockname()[1]
                numbers = self.address.replace(".", ",") + f",{port >> 8},{port & 255}"
                conn.sendall(f"227 Entering Passive Mode ({numbers})\r\n".encode())
            elif command == "PORT":
                parts = argument.split(",")
                active = (".".join(parts[:4]), int(parts[4]) * 256 + int(parts[5]))
                conn.sendall(b"200 port ok\r\n")
            elif command == "RETR":
                conn.sendall(b"150 opening data connection\r\n")
                try:
                    if passive is not None:
                        data, _ = passive.accept()
                    else:
                        assert active is not None
                        data = netns.netns_socket(self.ns, socket.AF_INET, socket.SOCK_STREAM)
                        data.settimeout(3)
                        data.connect(active)
                    with data:
                        data.sendall(PAYLOAD)
                    conn.sendall(b"226 transfer complete\r\n")
                except OSError:
                    conn.sendall(b"425 cannot open data connection\r\n")
                finally:
                    if passive is not None:
                        passive.close()
                    passive = active = None
            elif command == "PASS":
                conn.sendall(b"230 logged in\r\n")
            elif command == "USER":
                conn.sendall(b"331 password please\r\n")
            elif command in ("TYPE", "MODE", "STRU"):
                conn.sendall(b"200 ok\r\n")
            else:
                conn.sendall(b"502 not implemented\r\n")


def transfer(client_ns: str, passive: bool) -> bytes | str:
    """Fetch the payload from the server inside the client's namespace; the error text if it fails."""

    def session() -> bytes | str:
        chunks: list[bytes] = []
        try:
            with ftplib.FTP(timeout=4) as ftp:
                ftp.connect(SERVER, 21, source_address=(CLIENT, 0))
                ftp.login("anonymous", "zonewall@")
                ftp.set_pasv(passive)
                ftp.retrbinary("RETR payload", chunks.append)
        except (ftplib.Error, OSError, EOFError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return b"".join(chunks)

    return netns.run_in_netns(client_ns, session)


@pytest.fixture(scope="module")
def ftp_lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("ftp")
    path = write_policy(base, POLICY)
    with running_lab(path) as (state, policy):
        server = MiniFtpServer(state.vms["server"], SERVER)
        try:
            yield state, policy, base
        finally:
            server.close()


@pytest.mark.kernel
@pytest.mark.parametrize("passive", [True, False], ids=["passive", "active"])
def test_ftp_transfer_through_port_21_only(ftp_lab, passive):
    state, _, _ = ftp_lab
    assert transfer(state.vms["client"], passive) == PAYLOAD


@pytest.mark.kernel
def test_unannounced_data_port_stays_closed(ftp_lab):
    state, policy, _ = ftp_lab
    result = probe(state, policy, "vm:client", "vm:server", Service("tcp", 40021), timeout=0.5)
    assert result.verdict == "blocked", result


@pytest.mark.kernel
def test_helper_objects_list_as_rendered(ftp_lab):
    state, policy, _ = ftp_lab
    listing = netns.exec_in_netns(state.nodes["node1"], ["nft", "list", "table", "inet", "zonewall"]).stdout
    expected = render_table(compile_node(policy, "node1", timezone="UTC").table("inet", "zonewall"))
    assert normalize_listing(listing) == normalize_listing(expected)


@pytest.mark.kernel
def test_without_the_helper_data_connections_are_blocked(ftp_lab):
    state, _, base = ftp_lab
    without = write_policy(base / "without", POLICY.replace("conntrack: {helpers: [ftp]}", "conntrack: {helpers: []}"))
    try:
        apply_policy(state, load_policy(without))
        for passive in (True, False):
            outcome = transfer(state.vms["client"], passive)
            assert outcome != PAYLOAD, f"{'passive' if passive else 'active'} transfer succeeded without the helper"
    finally:
        apply_policy(state, load_policy(Path(state.policy)))
