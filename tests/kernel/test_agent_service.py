"""The agent as systemd runs it (Type=notify): READY=1 only once a ruleset is applied,
the watchdog fed while its main loop turns, STOPPING=1 when it stops."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.labtools import unique_lab_name, write_policy
from zonewall.lab import netns
from zonewall.lab.cluster import lab_down, lab_up
from zonewall.lab.managed import ManagedLab

pytestmark = pytest.mark.kernel

POLICY = """\
version: 1
settings: {management: [192.168.100.0/24]}
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  lan: {bridge: br0, subnets: [10.41.0.0/24]}
vms:
  vm1:
    host: node1
    nics: [{network: lan, mac: "52:54:00:00:41:01", ips: [10.41.0.10]}]
"""


def messages(sock: socket.socket, seconds: float, until: str | None = None) -> list[str]:
    out: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (until and any(until in m for m in out)):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            break
    return out


def test_agent_is_ready_only_once_its_ruleset_is_applied(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY)
    name = unique_lab_name()
    state = lab_up(str(policy), name, apply=False)
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    lab = ManagedLab(state, tmp_path / "data", agent_env={"node1": {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"}})
    try:
        lab.start(verify_interval=0.5)
        early = messages(listener, 4.0)  # no policy at the controller yet: nothing applied
        assert not any("READY=1" in m for m in early), early
        assert any("WATCHDOG=1" in m for m in early), early  # alive all the same
        assert netns.exec_in_netns(state.nodes["node1"], ["nft", "list", "tables"]).stdout.strip() == ""
        lab.upload(policy)
        later = messages(listener, 30.0, until="READY=1")
        ready = [m for m in later if "READY=1" in m]
        assert ready and "STATUS=revision 1 applied" in ready[0], later
        tables = netns.exec_in_netns(state.nodes["node1"], ["nft", "list", "tables"]).stdout
        assert "table inet zonewall" in tables and "table bridge zonewall" in tables
        lab.agents["node1"].stop()
        assert any("STOPPING=1" in m for m in messages(listener, 10.0, until="STOPPING=1"))
    finally:
        lab.stop()
        listener.close()
        lab_down(name)
