"""Replacing the ruleset is atomic: no packet slips through, no connection is reset.

While `apply` swaps between two rulesets 200 times, a UDP flood that both drop
reaches its target 0 times, and a TCP stream that both allow is never reset.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.labtools import running_lab, write_policy
from zonewall.compiler.node import compile_node
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.lab.netns import netns_socket
from zonewall.policy.loader import load_policy

POLICY = """
version: 1
settings: {{default: {{in: drop, out: accept}}}}
hosts: {{node1: {{address: 192.168.100.11}}}}
networks: {{lan: {{bridge: vmbr1, subnets: [10.5.0.0/24]}}}}
zones:
  z:
    rules:
      - {{id: stream, direction: in, action: accept, from: vm:client, tcp: 5001}}
      - {{id: control, direction: in, action: accept, from: vm:client, udp: 9998}}
      {extra}
vms:
  client: {{host: node1, zone: z, nics: [{{network: lan, mac: "52:54:00:05:00:10", ips: [10.5.0.10]}}]}}
  server: {{host: node1, zone: z, nics: [{{network: lan, mac: "52:54:00:05:00:20", ips: [10.5.0.20]}}]}}
"""
FLOOD_PORT, CONTROL_PORT, STREAM_PORT = 9999, 9998, 5001
SERVER = "10.5.0.20"


def _udp_receiver(ns: str, port: int) -> tuple[socket.socket, list[int], threading.Event]:
    sock = netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(0.2)
    count, stop = [0], threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                sock.recv(2048)
                count[0] += 1
            except TimeoutError:
                continue
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=loop, daemon=True).start()
    return sock, count, stop


@pytest.mark.kernel
@pytest.mark.parametrize("incremental", [False, True], ids=["full-replace", "incremental"])
def test_apply_200_times_is_atomic(tmp_path, incremental):
    policy_a = write_policy(tmp_path / "a", POLICY.format(extra=""))
    policy_b = write_policy(tmp_path / "b", POLICY.format(extra="- {id: other, direction: in, action: accept, from: 10.99.99.0/24, tcp: 7777}"))
    rulesets = [compile_node(load_policy(p), "node1") for p in (policy_a, policy_b)]
    with running_lab(policy_a) as (state, _):
        client_ns, server_ns, node_ns = state.vms["client"], state.vms["server"], state.nodes["node1"]

        flood_sock, flooded, stop_flood_rx = _udp_receiver(server_ns, FLOOD_PORT)
        control_sock, controlled, stop_control_rx = _udp_receiver(server_ns, CONTROL_PORT)

        listener = netns_socket(server_ns, socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((SERVER, STREAM_PORT))
        listener.listen(1)
        client = netns_socket(client_ns, socket.AF_INET, socket.SOCK_STREAM)
        client.connect((SERVER, STREAM_PORT))
        server_conn, _ = listener.accept()
        received, errors, stop = [0], [], threading.Event()

        def stream_send() -> None:
            chunk = b"x" * 1024
            client.settimeout(2)
            try:
                while not stop.is_set():
                    client.sendall(chunk)
            except OSError as exc:
                if not stop.is_set():  # a reset or a stall while the test still runs
                    errors.append(f"send: {exc!r}")

        def stream_receive() -> None:
            server_conn.settimeout(2)
            try:
                while not stop.is_set():
                    data = server_conn.recv(65536)
                    if not data:
                        errors.append("stream closed")
                        return
                    received[0] += len(data)
            except OSError as exc:
                if not stop.is_set():
                    errors.append(f"recv: {exc!r}")

        sent = [0]

        def flood() -> None:
            sock = netns_socket(client_ns, socket.AF_INET, socket.SOCK_DGRAM)
            while not stop.is_set():
                sock.sendto(b"flood", (SERVER, FLOOD_PORT))
                sent[0] += 1
            sock.close()

        # control: the same path delivers where the policy allows it
        control = netns_socket(client_ns, socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):
            control.sendto(b"control", (SERVER, CONTROL_PORT))
        time.sleep(0.3)
        assert controlled[0] > 0, "the control flow must arrive, else the flood proves nothing"

        threads = [threading.Thread(target=f, daemon=True) for f in (stream_send, stream_receive, flood)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        before = received[0]
        with LibNftBackend(netns=node_ns) as backend:
            for i in range(200):
                apply_ruleset(backend, rulesets[(i + 1) % 2], previous=rulesets[i % 2] if incremental else None)
        during = received[0] - before
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        stop_flood_rx.set()
        stop_control_rx.set()
        time.sleep(0.3)  # let the receivers see the stop before their sockets close
        for sock in (flood_sock, control_sock, listener, client, server_conn, control):
            sock.close()

    assert sent[0] > 1000, "the flood must really have been sent"
    assert flooded[0] == 0, f"{flooded[0]} flood packets got through during the applies"
    assert errors == [], errors
    assert during > 0, "the stream must keep flowing while the ruleset is replaced"
