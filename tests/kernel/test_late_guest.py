"""A guest whose port appears after the agent runs is closed until it is filtered,
and a guest that goes leaves nothing behind (settings.guest_ports, agent/links.py).

The lab's guest is unplugged, then plugged again the way libvirt does it: a new port
`vnet9` with the guest's MAC behind `fe:`, attached to the bridge while the guest is
already sending. Its policy lets it send udp/5001 out and drops udp/5002. The agent
(a real one, under a controller) learns the port from netlink and applies.

- fails closed: not one udp/5002 datagram reaches the outside, and udp/5001 starts to
  arrive once the agent has the port (the time is printed);
- a port the agent cannot tie to a NIC (its MAC is not the guest's behind `fe:`) stays
  closed: neither flow arrives;
- control: the same unknown port with `guest_ports: []` leaks udp/5002 (its frames pass
  as "not guest traffic"): what every guest's first packets met before an agent that
  wins the race against a hypervisor could be relied on;
- the port deleted, its name leaves every map and chain of the node within seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.labtools import managed_lab, write_policy
from zonewall.lab import netns
from zonewall.lab.cluster import ensure_outside_address

pytestmark = pytest.mark.kernel

POLICY = """\
version: 1
settings:
  default: {in: drop, out: accept}
  management: [192.168.100.0/24]
  guest_ports: GUEST_PORTS
hosts:
  node1: {address: [192.168.100.11], uplink: eth0}
networks:
  lan: {bridge: br0, subnets: [10.40.0.0/24], gateway: [10.40.0.1]}
zones:
  web: {}
vms:
  late1:
    host: node1
    zone: web
    nics:
      - {network: lan, mac: "52:54:00:00:0a:01", ips: [10.40.0.10]}
    rules:
      - {id: no-5002, direction: out, action: drop, udp: 5002}
"""
OUTSIDE = "198.51.100.50"
LISTENER = r"""
import json, select, socket, sys, time
socks = []
for port in (5001, 5002):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port)); socks.append(s)
print("listening", flush=True)
got = {5001: [], 5002: []}
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for s in select.select(socks, [], [], 0.1)[0]:
        data = s.recv(100)
        got[s.getsockname()[1]].append((int(data), time.time()))
print(json.dumps(got), flush=True)
"""
SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end, seq = time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    for port in (5001, 5002):
        try:
            s.sendto(str(seq).encode(), (sys.argv[1], port))
        except OSError:
            pass  # no interface or route yet: the port is not plugged
    seq += 1
    time.sleep(0.001)
"""


def plug_late(node_ns: str, guest_ns: str, port: str, node_mac: str) -> float:
    """Plug a new port named `port` for late1 (as libvirt would: the guest's MAC with fe:
    first on the node's side), with the guest already sending."""
    netns.ip("link", "add", port, "address", node_mac, "type", "veth", "peer", "name", "eth0", "netns", guest_ns,
             "address", "52:54:00:00:0a:01", ns=node_ns)
    netns.ip_batch(["addr add 10.40.0.10/24 dev eth0", "link set eth0 up", "route add default via 10.40.0.1"], ns=guest_ns)
    started = time.time()
    netns.ip("link", "set", port, "master", "br0", "up", ns=node_ns)
    return started


def run_late_guest(tmp_path: Path, guest_ports: str, node_mac: str = "fe:54:00:00:0a:01") -> tuple[dict[int, list[tuple[int, float]]], float, float]:
    policy = write_policy(tmp_path, POLICY.replace("GUEST_PORTS", guest_ports))
    with managed_lab(policy, "zonewall-late-") as lab:
        state = lab.lab
        ensure_outside_address(state, OUTSIDE)
        listener = subprocess.Popen(["ip", "netns", "exec", state.outside, sys.executable, "-c", LISTENER, "9"], stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        netns.ip("link", "del", "late1i0", ns=state.nodes["node1"])  # the lab's port goes: the guest is stopped
        time.sleep(1.0)  # the agent has seen it go
        sender = subprocess.Popen(["ip", "netns", "exec", state.vms["late1"], sys.executable, "-c", SENDER, OUTSIDE, "6"])
        try:
            time.sleep(0.5)
            plugged = plug_late(state.nodes["node1"], state.vms["late1"], "vnet9", node_mac)
            mapped = float("nan")
            while time.time() - plugged < 5:  # when the port is in the node's maps (the agent applied)
                if "vnet9" in netns.exec_in_netns(state.nodes["node1"], ["nft", "list", "map", "bridge", "zonewall", "nic-src"]).stdout:
                    mapped = time.time() - plugged
                    break
                time.sleep(0.01)
            got = json.loads(listener.stdout.readline())
        finally:
            sender.kill()
            listener.kill()
            sender.wait()
            listener.wait()
        yield_ = {int(k): v for k, v in got.items()}
        print(f"\nvnet9 in the node's maps {1000 * mapped:.0f} ms after it was plugged")
        # the guest goes: its port's name leaves the node's ruleset
        netns.ip("link", "del", "vnet9", ns=state.nodes["node1"])
        deadline = time.monotonic() + 10
        while True:
            text = netns.exec_in_netns(state.nodes["node1"], ["nft", "list", "ruleset"]).stdout
            if "vnet9" not in text:
                break
            assert time.monotonic() < deadline, "vnet9 is still in the node's ruleset 10 s after it was deleted"
            time.sleep(0.1)
        gone = time.monotonic() - deadline + 10
        return yield_, plugged, gone


def test_a_late_guest_is_closed_until_filtered_and_leaves_nothing(tmp_path: Path) -> None:
    got, plugged, gone = run_late_guest(tmp_path, '["vnet*", "tap*", "veth*", "fwpr*"]')
    assert got[5002] == [], f"{len(got[5002])} datagrams the policy drops reached the outside"
    assert got[5001], "the allowed flow never started: the agent did not find the new port"
    first = min(t for _, t in got[5001])
    print(f"\nlate guest: first allowed datagram {1000 * (first - plugged):.0f} ms after the port was plugged; "
          f"its name left the ruleset {1000 * gone:.0f} ms after the port was deleted")


UNKNOWN_MAC = "02:00:00:00:0a:99"  # not fe:54:00:00:0a:01: no NIC of the policy


def test_a_port_no_nic_is_known_on_stays_closed(tmp_path: Path) -> None:
    got, _, _ = run_late_guest(tmp_path, '["vnet*", "tap*", "veth*", "fwpr*"]', UNKNOWN_MAC)
    assert got == {5001: [], 5002: []}


def test_control_without_guest_ports_an_unknown_port_is_open(tmp_path: Path) -> None:
    got, _, _ = run_late_guest(tmp_path, "[]", UNKNOWN_MAC)
    assert got[5002] and got[5001], "without guest_ports, frames of an unknown port pass as 'not guest traffic'"
