"""zonewall on real QEMU guests under libvirtd (lab/guests.py, lab/guestlab.py).

Two lab nodes, each with its own libvirtd (its network namespace and a mount
namespace of its own) carrying zonewall's qemu hook as the package installs it; a
controller and one agent per node; guests booted from Debian's kernel with a busybox
initramfs (TCG). No NIC of the policy names a `tap:`.

- the agents find the guests' vnetN ports by themselves;
- the hook fires on start and stop (the agents log each event);
- the policy holds for real guest traffic: outside -> guest, guest -> guest across
  the two nodes, each with a closed port beside the open one;
- anti-spoofing from inside a real guest: a forged source address gets no answer
  from the filtered guest, and does from the unfiltered one (control);
- a guest started after everything runs is filtered from its first packet: of its
  connection attempts from boot on, not one to the port its policy drops arrives,
  while those to the allowed port do; destroyed, its port leaves the node's ruleset;
- live migration of a real guest from node1 to node2 by libvirt, driven through the
  controller's API: a TCP stream from the outside to the guest keeps flowing with
  zonewall's conntrack transfer; migrated back without it, the stream breaks
  (nf_conntrack_tcp_loose=0 on both nodes: conntrack does not pick a stream up mid-flow).

The module shares one lab (guests take 15 s to boot idle, minutes under load), so
xdist keeps its tests on one worker (`make test` runs --dist loadgroup).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.labtools import unique_lab_name, write_policy
from zonewall.lab import netns
from zonewall.lab.cluster import ensure_outside_address
from zonewall.lab.guestlab import GuestLab
from zonewall.lab.guests import tcp_echo

pytestmark = [pytest.mark.kernel, pytest.mark.xdist_group("libvirt-guests")]

OUTSIDE = "198.51.100.60"
POLICY = f"""\
version: 1
settings:
  default: {{in: drop, out: accept}}
  host_default: {{in: accept}}
  management: [192.168.100.0/24]
hosts:
  node1: {{address: [192.168.100.11], uplink: eth0}}
  node2: {{address: [192.168.100.12], uplink: eth0}}
networks:
  front: {{bridge: br0, subnets: [10.70.1.0/24], gateway: [10.70.1.1]}}
zones:
  dmz:
    rules:
      - {{id: http, direction: in, action: accept, tcp: 80}}
      - {{id: stream, direction: in, action: accept, from: [{OUTSIDE}], tcp: 7000}}
  app:
    rules:
      - {{id: app-from-dmz, direction: in, action: accept, from: zone:dmz, tcp: 8080}}
  late:
    rules:
      - {{id: no-5002, direction: out, action: drop, tcp: 5002}}
vms:
  web1:
    host: node1
    zone: dmz
    nics: [{{network: front, mac: "52:54:00:70:01:10", ips: [10.70.1.10]}}]
    filters: [clean-traffic]
  app1:
    host: node2
    zone: app
    nics: [{{network: front, mac: "52:54:00:70:01:20", ips: [10.70.1.20]}}]
  late1:
    host: node1
    zone: late
    nics: [{{network: front, mac: "52:54:00:70:01:30", ips: [10.70.1.30]}}]
"""
PORTS = [80, 7000, 8080, 9000]
LISTENER = r"""
import select, socket, sys, time
socks = []
for port in (5001, 5002):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", port)); s.listen(64); socks.append(s)
print("listening", flush=True)
while True:
    for s in select.select(socks, [], [], 0.5)[0]:
        c, peer = s.accept(); c.close()
        print(s.getsockname()[1], peer[0], time.time(), flush=True)
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestLab]:
    policy = write_policy(tmp_path_factory.mktemp("libvirt"), POLICY)
    guests = GuestLab(policy, unique_lab_name(), PORTS)
    try:
        guests.start(boot=["web1", "app1"])
        assert guests.state is not None
        ensure_outside_address(guests.state, OUTSIDE)
        guests.wait_taps(["web1", "app1"])
        print(f"\nguests booted in {', '.join(f'{vm} {s:.0f} s' for vm, s in sorted(guests.boot_seconds.items()))}")
        yield guests
    finally:
        guests.stop()


def agent_log(lab: GuestLab, node: str) -> str:
    return (lab.hypervisors[node].agent_state / "agent.log").read_text(errors="replace")


def test_agents_find_the_guests_ports_without_hints(lab: GuestLab) -> None:
    assert lab.policy is not None and all(nic.tap is None for vm in lab.policy.doc.vms.values() for nic in vm.nics)
    taps = lab.wait_taps(["web1", "app1"])
    for vm in ("web1", "app1"):
        assert re.fullmatch(r"vnet\d+ \((mac|libvirt)\)", taps[f"{vm}/0"]), taps  # by its MAC, or by virsh domiflist
        listed = lab.host_of(vm).virsh("domiflist", vm).stdout
        assert taps[f"{vm}/0"].split()[0] in listed  # the port libvirt made, by libvirt's own account


def test_hook_fires_on_start(lab: GuestLab) -> None:
    for node, vm in (("node1", "web1"), ("node2", "app1")):
        text = agent_log(lab, node)
        for event in ("prepare begin", "started begin"):
            assert f"hypervisor event: qemu {vm} {event}" in text, (node, event)


def test_policy_on_real_guest_traffic(lab: GuestLab) -> None:
    assert lab.state is not None
    outside = lab.state.outside
    assert tcp_echo(outside, "10.70.1.10", 80) == "delivered"  # dmz: http from anywhere
    assert tcp_echo(outside, "10.70.1.10", 9000) == "blocked"  # the guest listens, the policy drops
    assert tcp_echo(outside, "10.70.1.20", 8080) == "blocked"  # app: 8080 from the dmz only
    web1 = lab.consoles["web1"]
    code, out = web1.run("echo zw-across | nc -w 3 10.70.1.20 8080", timeout=30)  # node1 -> node2
    assert out.strip() == "zw-across", (code, out)
    code, out = web1.run("echo zw-closed | nc -w 3 10.70.1.20 9000", timeout=30)
    assert "zw-closed" not in out, (code, out)
    code, out = lab.consoles["app1"].run("echo zw-back | nc -w 3 10.70.1.10 8080", timeout=30)  # app -> web: not opened
    assert "zw-back" not in out, (code, out)


def test_anti_spoofing_inside_a_real_guest(lab: GuestLab) -> None:
    """web1 has clean-traffic: its forged source gets nothing back; app1 (no filters) does."""
    for vm, own, forged, guarded in (("web1", "10.70.1.10", "10.70.1.99", True), ("app1", "10.70.1.20", "10.70.1.98", False)):
        console = lab.consoles[vm]
        code, _ = console.run(f"ping -c 2 -W 2 -I {own} {OUTSIDE}", timeout=30)
        assert code == 0, f"{vm}: its own address must work (the control of the forged one)"
        console.run(f"ip addr add {forged}/32 dev eth0")
        try:
            code, out = console.run(f"ping -c 3 -W 2 -I {forged} {OUTSIDE}", timeout=30)
        finally:
            console.run(f"ip addr del {forged}/32 dev eth0")
        assert (code != 0) == guarded, (vm, out)


def test_late_guest_is_filtered_from_its_first_packet_and_leaves_nothing(lab: GuestLab) -> None:
    assert lab.state is not None
    listener = subprocess.Popen(["ip", "netns", "exec", lab.state.outside, sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "listening"
        threading.Thread(target=lambda: [lines.append(line) for line in listener.stdout], daemon=True).start()  # type: ignore[union-attr]
        lab.specs["late1"].connect = [f"{OUTSIDE}:5001", f"{OUTSIDE}:5002"]  # from boot on, every 0.2 s
        created = time.time()
        lab.boot(["late1"])
        deadline = time.monotonic() + 30
        while not any(line.startswith("5001 ") for line in lines) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # more attempts at both ports
    finally:
        listener.kill()
        listener.wait()
    accepted = [line.split() for line in lines]
    assert [a for a in accepted if a[0] == "5002"] == [], "a connection the late guest's policy drops got through"
    first = [float(a[2]) for a in accepted if a[0] == "5001" and a[1] == "10.70.1.30"]
    assert first, "the late guest's allowed connections never arrived"
    print(f"\nlate1: first allowed connection {min(first) - created:.1f} s after virsh create (boot included)")
    taps = lab.wait_taps(["late1"])
    port = taps["late1/0"].split()[0]
    node1 = lab.state.nodes["node1"]
    assert port in netns.exec_in_netns(node1, ["nft", "list", "map", "bridge", "zonewall", "nic-src"]).stdout
    lab.destroy("late1")
    deadline = time.monotonic() + 15
    while port in netns.exec_in_netns(node1, ["nft", "list", "ruleset"]).stdout:
        assert time.monotonic() < deadline, f"{port} is still in node1's ruleset after late1 was destroyed"
        time.sleep(0.1)
    text = agent_log(lab, "node1")
    assert "hypervisor event: qemu late1 stopped end" in text and "hypervisor event: qemu late1 release end" in text


def test_demo_matrix_on_real_guests(lab: GuestLab) -> None:
    """What `zonewall demo --libvirt` measures (lab/guestdemo.py), on this module's guests."""
    from zonewall.lab.guestdemo import guest_matrix

    assert lab.policy is not None
    matrix = guest_matrix(lab, lab.policy, "ipv4")
    assert matrix["internet"]["vm:web1"] == ["tcp/80"]  # 7000 is for one address only, 8080 for the dmz
    assert matrix["vm:web1"]["vm:app1"] == ["tcp/8080"]
    assert matrix["vm:app1"]["vm:web1"] == ["tcp/80"]
    assert matrix["internet"]["vm:app1"] == []
    assert "vm:late1" not in matrix and "vm:late1" not in matrix["internet"]  # destroyed: not probed


class Stream:
    """A TCP connection from the outside to a guest's echo server: a line every 50 ms,
    each answered; `silence()` is the longest wait for an answer, `broken` says it stopped."""

    def __init__(self, ns: str, address: str, port: int) -> None:
        self.sock = netns.netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((OUTSIDE, 0))  # the address the policy opens tcp/7000 to
        self.sock.settimeout(5)
        self.sock.connect((address, port))
        self.sock.settimeout(0.05)
        self.longest = 0.0
        self.answered = 0
        self.broken: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        seq = 0
        pending = b""
        while not self._stop.is_set():
            try:
                self.sock.sendall(f"{seq}\n".encode())
                seq += 1
            except OSError as exc:
                self.broken = f"send: {exc}"
                return
            deadline = time.monotonic() + 0.05
            while time.monotonic() < deadline:
                try:
                    data = self.sock.recv(4096)
                except TimeoutError:
                    continue
                except OSError as exc:
                    self.broken = f"recv: {exc}"
                    return
                if not data:
                    self.broken = "closed"
                    return
                pending += data
                if b"\n" in pending:
                    self.answered += pending.count(b"\n")
                    pending = pending.rsplit(b"\n", 1)[1]
                    last = time.monotonic()
            self.longest = max(self.longest, time.monotonic() - last)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def migrate(lab: GuestLab, vm: str, source: str, target: str, *, state: bool) -> dict[str, object]:
    """The controller's migration (POST /vms/VM/migrate) with libvirt moving the guest."""
    assert lab.managed is not None and lab.state is not None
    result: dict[str, object] = {}
    api = threading.Thread(target=lambda: result.update(response=lab.managed.api("POST", f"/vms/{vm}/migrate", json={"to": target, "state": state, "switch_timeout": 600})))  # type: ignore[union-attr]
    api.start()
    deadline = time.monotonic() + 120
    while not any(m.get("vm") == vm and m.get("phase") == "switch" for m in lab.managed.api("GET", "/migrations").json().get("running", [])):
        assert time.monotonic() < deadline and api.is_alive(), f"the migration never reached its switch: {result}"
        time.sleep(0.1)
    src, dst = lab.hypervisors[source], lab.hypervisors[target]
    xml = src.virsh("dumpxml", "--migratable", vm).stdout.replace(str(src.directory / "run"), str(dst.directory / "run"))
    (dst.directory / f"{vm}.migrate.xml").write_text(xml)
    address = lab.policy.doc.hosts[target].address[0]  # type: ignore[union-attr]
    started = time.monotonic()
    moved = src.virsh("migrate", "--live", vm, dst.uri, "--migrateuri", f"tcp://{address}", "--xml", str(dst.directory / f"{vm}.migrate.xml"),
                      check=False, timeout=600)
    result["virsh_seconds"] = time.monotonic() - started
    assert moved.returncode == 0, moved.stderr
    api.join(600)
    response = result["response"]
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    lab.consoles[vm].close()
    lab.consoles[vm] = type(lab.consoles[vm])(dst.directory / "run" / f"{vm}.console")
    return result


def test_live_migration_keeps_tcp_alive_with_the_conntrack_transfer_only(lab: GuestLab) -> None:
    assert lab.state is not None and lab.managed is not None
    for node in ("node1", "node2"):  # a mid-stream packet without an entry is invalid, not a new connection
        netns.set_sysctl(lab.state.nodes[node], "net.netfilter.nf_conntrack_tcp_loose", 0)
    stream = Stream(lab.state.outside, "10.70.1.10", 7000)
    try:
        time.sleep(2.0)
        assert stream.answered > 10 and stream.broken is None
        result = migrate(lab, "web1", "node1", "node2", state=True)
        before = stream.answered
        time.sleep(3.0)
        assert stream.broken is None and stream.answered > before + 20, f"the stream stopped after the migration with the transfer ({stream.broken})"
        assert "web1" in lab.hypervisors["node2"].virsh("list", "--name").stdout.split()
        print(f"\nmigration node1 -> node2 with the transfer: libvirt {result['virsh_seconds']:.1f} s, "
              f"longest silence of the stream {1000 * stream.longest:.0f} ms")
        text = agent_log(lab, "node2")
        assert "hypervisor event: qemu web1 migrate begin" in text and "hypervisor event: qemu web1 started begin" in text
        nodes = {n["name"]: n for n in lab.managed.api("GET", "/nodes").json()}
        assert re.fullmatch(r"vnet\d+ \((mac|libvirt)\)", nodes["node2"]["taps"].get("web1/0", "")), nodes["node2"]["taps"]
    finally:
        stream.stop()
    # the same run back to node1 without the transfer: the stream breaks
    stream = Stream(lab.state.outside, "10.70.1.10", 7000)
    try:
        time.sleep(2.0)
        assert stream.answered > 10 and stream.broken is None
        migrate(lab, "web1", "node2", "node1", state=False)
        before = stream.answered
        time.sleep(5.0)
        assert stream.answered <= before + 2, "without the transfer the stream must not survive (tcp_loose=0)"
    finally:
        stream.stop()
