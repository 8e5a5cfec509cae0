#!/usr/bin/env python3
"""Dispatch benchmark: forwarded 64-byte UDP packets/s through one node namespace.

Two identical topologies are built (namespaces zwb-<pid>-*, all removed on exit, on
Ctrl-C, SIGTERM or any error; stale ones of killed runs are removed at start):

    tx (guest vmS: eth0) --veth-- [ node: vmbr0..3, N guest ports, br_netfilter ] --veth-- rx (guest vmR: eth0)

* `m` holds the layouts that load in seconds (none, minimal, minimal+classify,
  zonewall-norules);
* `z` holds zonewall's compiled ruleset, loaded once (a 2,000-guest ruleset takes a
  minute or more to load); its variants are switched by rewriting only what differs:
  the inet `forward` chain (linear) or the bridge table (guards).

Each node has one bridge per network of a synthetic policy (bench/synth.py: N VMs x 20
rules, zones, groups) and one veth port per guest NIC, named as the compiler names
taps (`tap_name(vm, 0)`). Only the sender's and the receiver's ports lead to guest
namespaces (with the policy's MAC and IPv4 address); the other ports' peers stay in
the node namespace, up. Static FDB and neighbour entries: no ARP, no flooding. IPv6
is off everywhere (no ND/MLD noise). Guests drop everything at netdev ingress, after
the receiving veth has counted it.

Layouts:
  none             no table at all (so no conntrack either)
  minimal          inet forward: ct state established,related accept; accept
  minimal+classify diagnostic: minimal plus zonewall's bridge table (the per-port
                   vmaps writing the NIC index into the mark; no guard filters), i.e.
                   what zonewall costs before its inet table does anything
  zonewall-norules diagnostic: zonewall's ruleset with every vm-* chain emptied:
                   classification + state + dispatch (two map lookups) but no rules
  zonewall         compile_node() of the policy (VMs without guard filters)
  zonewall-open    zonewall with `settings.guest_ports: []`: without the two bridge rules
                   that drop frames of guest-named ports no NIC is known on (what failing
                   closed costs the ports that are known: one failed mark comparison each)
  zonewall+guards  the same with filters: [clean-traffic] on every VM (bridge table)
  linear           zonewall's ruleset with its two dispatch maps replaced by one rule
                   per guest NIC each: `meta mark & MASK == N jump vm-X-out|in`
                   (libvirt/Proxmox shape; by marks, since with br_netfilter the inet
                   hook's iifname is the bridge, not the tap)

Cases:
  established  one flow; the receiver answers it once first, so conntrack has seen a
               reply and every measured packet is ct state established
  new          every packet a new flow: source x destination port cycle over ~1M
               tuples with nf_conntrack_udp_timeout=1, so conntrack creates an entry
               and the sender's out chain and receiver's in chain run for every packet

Traffic: one generator process per CPU in the sender namespace, each calling
sendmmsg(2) through ctypes on an AF_PACKET socket, 1,024 prebuilt frames per call.
The whole forwarding path runs in the generators' softirq context, so the delivered
rate is the node's forwarding capacity with every CPU busy. Counted: the receiver's
eth0 rx_packets over the window. Also recorded: the CPU time the generators and
ksoftirqd used in the window, giving packets per CPU-second: less sensitive to other
work on the machine than packets/s. Runs are interleaved (each round measures every
layout, the order alternates); tables show the median over rounds and the ratio to
`minimal` of the same case.

Usage:  .venv/bin/python bench/dispatch.py           # 2,000 guests, 3 rounds x 3 s
        .venv/bin/python bench/dispatch.py --quick   # 200 guests, 3 rounds x 1.5 s
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import platform
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

NS_PREFIX = "zwb-"
FRAME_LEN = 60  # 14 ethernet + 20 IPv4 + 8 UDP + 18 payload: a 64-byte frame with FCS
DPORT_BASE, DPORTS = 9000, 16  # the receiver allows udp 9000-9015 from the sender
SPORT_LOW, SPORT_HIGH = 1024, 65535
FIXED_SPORT, FIXED_DPORT = 40000, 9000
BATCH = 1024  # UIO_MAXIOV: sendmmsg's vlen cap
LAYOUTS = ("none", "minimal", "minimal+classify", "zonewall-norules", "zonewall", "zonewall-open", "zonewall+guards", "linear")
M_LAYOUTS = ("none", "minimal", "minimal+classify", "zonewall-norules")  # on the `m` node; the others on `z`
MINIMAL = ("table inet minimal { chain forward { type filter hook forward priority 0; policy accept; "
           "ct state established,related accept; accept; }; }")
CASES = ("established", "new")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------
# frames and the generator (runs in its own process inside the sender namespace)


def ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame_template(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytearray:
    payload = b"zonewall-bench...."[:18].ljust(18, b".")
    udp = struct.pack("!HHHH", FIXED_SPORT, FIXED_DPORT, 8 + len(payload), 0)  # checksum 0: none (IPv4)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp) + len(payload), 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    header = header[:10] + struct.pack("!H", ipv4_checksum(header)) + header[12:]
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    frame = bytearray(eth + header + udp + payload)
    assert len(frame) == FRAME_LEN
    return frame


def build_ring(template: bytearray, case: str, worker: int, workers: int) -> tuple[bytearray, int]:
    """All frames one generator cycles through: one frame (established) or one per
    (sport, dport) of this worker's share of the destination ports (new)."""
    if case == "established":
        return bytearray(template), 1
    dports = [DPORT_BASE + d for d in range(DPORTS) if d % workers == worker]
    sports = range(SPORT_LOW, SPORT_HIGH + 1)
    count = len(dports) * len(sports)
    ring = bytearray(template) * count
    sport_hi = bytes(p >> 8 for p in sports) * len(dports)
    sport_lo = bytes(p & 0xFF for p in sports) * len(dports)
    dport_hi = b"".join(bytes([d >> 8]) * len(sports) for d in dports)
    dport_lo = b"".join(bytes([d & 0xFF]) * len(sports) for d in dports)
    ring[34::FRAME_LEN], ring[35::FRAME_LEN] = sport_hi, sport_lo
    ring[36::FRAME_LEN], ring[37::FRAME_LEN] = dport_hi, dport_lo
    return ring, count


def generator_main(spec: dict) -> int:
    """--generator mode: build frames, say `ready`, wait for `go`, flood, report."""
    from array import array

    libc = ctypes.CDLL(None, use_errno=True)
    libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    libc.sendmmsg.restype = ctypes.c_int
    template = frame_template(spec["src_mac"], spec["dst_mac"], spec["src_ip"], spec["dst_ip"])
    ring, count = build_ring(template, spec["case"], spec["worker"], spec["workers"])
    frames = (ctypes.c_char * len(ring)).from_buffer(ring)
    frames_addr = ctypes.addressof(frames)
    messages = max(count, BATCH)  # established: BATCH messages, all the same frame
    iov = array("Q", bytes(16 * messages))
    iov[0::2] = array("Q", (frames_addr + FRAME_LEN * (i % count) for i in range(messages)))
    iov[1::2] = array("Q", [FRAME_LEN]) * messages
    iov_addr = iov.buffer_info()[0]
    mmsg = array("Q", bytes(64 * messages))  # struct mmsghdr is 8 x 64-bit words
    mmsg[2::8] = array("Q", range(iov_addr, iov_addr + 16 * messages, 16))  # msg_iov
    mmsg[3::8] = array("Q", [1]) * messages  # msg_iovlen
    mmsg_addr = mmsg.buffer_info()[0]

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((spec["ifname"], 0))
    sock.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    fd = sock.fileno()
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        return 1
    seconds = float(line[1])
    sent = errors = 0
    offset = 0
    end = time.monotonic() + seconds
    while True:
        for _ in range(16):
            n = libc.sendmmsg(fd, mmsg_addr + 64 * offset, min(BATCH, messages - offset), 0)
            if n < 0:
                errors += 1
                n = 0
            sent += n
            offset = (offset + (n or 1)) % messages
        if time.monotonic() >= end:
            break
    print(json.dumps({"sent": sent, "errors": errors}), flush=True)
    return 0

# ----------------------------------------------------------------------------------
# helpers


def run(argv: list[str], *, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({proc.returncode}): {proc.stderr.strip()[:2000]}")
    return proc.stdout


def nft(ns: str, text: str) -> None:
    run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def ksoftirqd_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("ksoftirqd/"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def wait_line(proc: subprocess.Popen, expected: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if not line:
                return False
            if line.strip() == expected:
                return True
        if proc.poll() is not None:
            return False
    return False


@dataclasses.dataclass
class Guest:
    index: int
    name: str
    tap: str
    mac: str
    ip: str
    ns: str


# ----------------------------------------------------------------------------------
# one node with its sender and receiver


class Topology:
    def __init__(self, prefix: str, tag: str, guests: int, sender: int, receiver: int):
        import synth

        from zonewall.compiler.naming import tap_name

        self.node = f"{prefix}{tag}-node"
        self.guests, self.sender, self.receiver = guests, sender, receiver

        def guest(i: int, role: str) -> Guest:
            name = synth.vm_name(i)
            return Guest(i, name, tap_name(name, 0), synth.vm_mac(i), synth.vm_ipv4(i), f"{prefix}{tag}-{role}")

        self.tx, self.rx = guest(sender, "tx"), guest(receiver, "rx")
        self.build_seconds = 0.0

    def build(self) -> None:
        import synth

        from zonewall.compiler.naming import tap_name
        from zonewall.lab import netns

        tx, rx = self.tx, self.rx
        no_ipv6 = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
        t0 = time.perf_counter()
        for ns in (self.node, tx.ns, rx.ns):
            netns.create_netns(ns, tune=False)
            netns.set_sysctls(ns, no_ipv6)
        netns.enable_bridge_netfilter(self.node)
        lines = [f"link add vmbr{n} type bridge stp_state 0 mcast_snooping 0" for n in range(synth.NETWORKS)]
        lines += [f"link set vmbr{n} up" for n in range(synth.NETWORKS)]
        for i in range(self.guests):
            tap = tap_name(synth.vm_name(i), 0)
            if i in (self.sender, self.receiver):
                g = tx if i == self.sender else rx
                lines.append(f"link add {tap} type veth peer name eth0 address {g.mac} netns {g.ns}")
            else:
                lines.append(f"link add {tap} type veth peer name p{i}")
                lines.append(f"link set p{i} up")
            lines.append(f"link set {tap} master vmbr{i % synth.NETWORKS} up")
        netns.ip_batch(lines, ns=self.node)
        for g, peer in ((tx, rx), (rx, tx)):
            netns.ip_batch([
                f"addr add {g.ip}/16 dev eth0",
                "link set eth0 up",
                f"neigh replace {peer.ip} lladdr {peer.mac} dev eth0 nud permanent",
            ], ns=g.ns)
            # everything reaching a guest is counted by its veth, then dropped
            nft(g.ns, 'table netdev sink { chain in { type filter hook ingress device "eth0" priority 0; policy drop; }; }')
        for g in (tx, rx):
            run(["bridge", "-n", self.node, "fdb", "replace", g.mac, "dev", g.tap, "master", "static"])
        self.build_seconds = time.perf_counter() - t0

    # -- conntrack ---------------------------------------------------------------------

    def conntrack_stats(self) -> dict[str, int]:
        """Per-namespace conntrack counters summed over CPUs, plus the entry count."""
        out = run(["ip", "netns", "exec", self.node, "conntrack", "-S"], check=False)
        totals: dict[str, int] = {}
        for line in out.splitlines():
            for field in line.split()[1:]:
                key, _, value = field.partition("=")
                if value.isdigit():
                    totals[key] = totals.get(key, 0) + int(value)
        count = run(["ip", "netns", "exec", self.node, "cat", "/proc/sys/net/netfilter/nf_conntrack_count"], check=False).strip()
        totals["count"] = int(count) if count.isdigit() else -1
        return totals

    def flush_conntrack(self) -> None:
        run(["ip", "netns", "exec", self.node, "conntrack", "-F"], check=False)

    def conntrack_state(self) -> str:
        return run(["ip", "netns", "exec", self.node, "conntrack", "-L", "-p", "udp", "--sport", str(FIXED_SPORT)], check=False).strip()

    # -- traffic -----------------------------------------------------------------------

    def rx_packets(self) -> int:
        out = json.loads(run(["ip", "-n", self.rx.ns, "-s", "-j", "link", "show", "dev", "eth0"]))
        return int(out[0]["stats64"]["rx"]["packets"])

    def send_frames(self, count: int, sport: int) -> None:
        from zonewall.lab.netns import netns_socket

        frame = frame_template(self.tx.mac, self.rx.mac, self.tx.ip, self.rx.ip)
        frame[34:36] = struct.pack("!H", sport)
        sock = netns_socket(self.tx.ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind(("eth0", 0))
            for _ in range(count):
                sock.send(frame)
        finally:
            sock.close()

    def reply(self) -> None:
        """The receiver answers the fixed flow once: conntrack then has seen a reply."""
        from zonewall.lab.netns import netns_socket

        sock = netns_socket(self.rx.ns, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.rx.ip, FIXED_DPORT))
            sock.sendto(b"reply", (self.tx.ip, FIXED_SPORT))
        finally:
            sock.close()

    def check_forwarding(self, layout: str) -> None:
        """Before measuring a layout: the flow must really be forwarded."""
        self.flush_conntrack()
        before = self.rx_packets()
        self.send_frames(100, sport=FIXED_SPORT + 1)
        time.sleep(0.2)
        got = self.rx_packets() - before
        if got < 100:
            raise RuntimeError(f"layout {layout}: only {got} of 100 test packets reached the receiver")

    def prepare_case(self, case: str, layout: str) -> None:
        from zonewall.lab import netns

        # new: unreplied entries expire after 1 s, so the ~1M-tuple cycle never meets a
        # live entry (every packet creates one); established: the default 30 s keeps
        # the flow's entry alive until UDP's stream timeout takes over.
        netns.set_sysctls(self.node, {"net.netfilter.nf_conntrack_udp_timeout": 1 if case == "new" else 30})
        self.flush_conntrack()
        if case == "established":
            self.send_frames(1, sport=FIXED_SPORT)
            time.sleep(0.05)
            self.reply()
            time.sleep(0.05)
            if layout != "none":
                state = self.conntrack_state()
                if "UNREPLIED" in state or f"sport={FIXED_SPORT}" not in state:
                    raise RuntimeError(f"layout {layout}: the flow is not established in conntrack: {state!r}")


# ----------------------------------------------------------------------------------
# the linear layout


def linear_ruleset(ruleset):
    """zonewall's ruleset with `meta mark & M vmap @out-dispatch|@in-dispatch` replaced
    by one rule per guest NIC: `meta mark & M == N jump vm-X-out|in`. Same VM chains,
    same bridge classification, same rules: only the dispatch differs."""
    from zonewall.compiler import nftexpr as x
    from zonewall.compiler.ir import Rule
    from zonewall.compiler.stmt import VMap

    inet = ruleset.table("inet", "zonewall")
    masks = {"out-dispatch": x.SRC_NIC_MASK, "in-dispatch": x.DST_NIC_MASK}
    rules = []
    for rule in inet.chain("forward").rules:
        statement = rule.statements[0]
        target = statement.map if isinstance(statement, VMap) else None
        if target in masks:
            for key, verdict in inet.set(target).elements:  # verdict: {"jump": {"target": chain}}
                rules.append(Rule((x.match(x.masked(x.meta("mark"), masks[target]), key), x.jump(verdict["jump"]["target"])), rule.comment))
        else:
            rules.append(rule)
    chains = tuple(dataclasses.replace(c, rules=tuple(rules)) if c.name == "forward" else c for c in inet.chains)
    tables = tuple(dataclasses.replace(t, chains=chains) if t is inet else t for t in ruleset.tables)
    return dataclasses.replace(ruleset, tables=tables)


def norules_ruleset(ruleset):
    """zonewall's ruleset with every per-VM chain emptied (an empty chain returns):
    what is left per new packet is classification, conntrack and the dispatch maps."""
    inet = ruleset.table("inet", "zonewall")
    chains = tuple(dataclasses.replace(c, rules=()) if c.name.startswith("vm-") else c for c in inet.chains)
    tables = tuple(dataclasses.replace(t, chains=chains) if t is inet else t for t in ruleset.tables)
    return dataclasses.replace(ruleset, tables=tables)


class ZonewallNode:
    """The `z` node: zonewall's tables loaded once; variants switch only what differs."""

    def __init__(self, topology: Topology, rulesets: dict):
        from zonewall.dataplane.backend import LibNftBackend

        self.topology, self.rulesets = topology, rulesets
        self.backend = LibNftBackend(netns=topology.node)
        self.forward: str | None = None  # which ruleset's inet forward chain is loaded
        self.bridge: str | None = None  # which ruleset's bridge table is loaded

    def close(self) -> None:
        self.backend.close()

    def load_all(self) -> float:
        from zonewall.compiler.ir import replace_commands

        t0 = time.perf_counter()
        self.backend.run(replace_commands(self.rulesets["zonewall"]))
        self.forward = self.bridge = "zonewall"
        return time.perf_counter() - t0

    def switch(self, layout: str) -> float:
        from zonewall.compiler.ir import rule_object, table_body_commands, table_object

        forward = "linear" if layout == "linear" else "zonewall"
        bridge = layout if layout in ("zonewall+guards", "zonewall-open") else "zonewall"
        commands: list[dict] = []
        if forward != self.forward:
            inet = self.rulesets[forward].table("inet", "zonewall")
            chain = inet.chain("forward")
            commands.append({"flush": {"chain": {"family": "inet", "table": "zonewall", "name": "forward"}}})
            commands += [{"add": rule_object(inet, chain, rule)} for rule in chain.rules]
        if bridge != self.bridge:
            table = self.rulesets[bridge].table("bridge", "zonewall")
            commands += [{"add": table_object(table)}, {"delete": table_object(table)}, {"add": table_object(table)}]
            commands += table_body_commands(table)
        t0 = time.perf_counter()
        self.backend.run(commands)
        self.forward, self.bridge = forward, bridge
        return time.perf_counter() - t0


# ----------------------------------------------------------------------------------
# the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prefix = f"{NS_PREFIX}{os.getpid()}-"
        self.children: list[subprocess.Popen] = []
        self.znode: ZonewallNode | None = None
        self.mbackend = None  # libnftables in the `m` node, for minimal+classify
        self.ksoftirqd = ksoftirqd_pids()

    def cleanup(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.kill()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.children.clear()
        if self.znode is not None:
            self.znode.close()
            self.znode = None
        if self.mbackend is not None:
            self.mbackend.close()
            self.mbackend = None
        from zonewall.lab import netns

        netns.delete_all(self.prefix)

    @staticmethod
    def remove_stale() -> None:
        """Namespaces of earlier runs whose process is gone (killed with -9)."""
        from zonewall.lab import netns

        for name in netns.list_netns(NS_PREFIX):
            pid = name[len(NS_PREFIX):].split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                netns.delete_netns(name)

    def choose_guests(self, policy) -> tuple[int, int]:
        """Sender and receiver: both on net0, in zones without a drop default, and in
        no group (a group could put them behind one of the generated drop rules)."""
        import synth

        in_groups = [policy.address_set([f"group:{g}"]) for g in policy.doc.groups]

        def usable(i: int) -> bool:
            ip = synth.vm_ipv4(i)
            return (synth.vm_network(i) == "net0" and (i % synth.ZONES) % 4 != 1
                    and not any(s.contains(ip) for s in in_groups))

        n = self.args.guests
        candidates = [i for i in range(n // 2, n) if usable(i)]
        sender = candidates[0]
        receiver = next(i for i in candidates[1:] if i % synth.ZONES != sender % synth.ZONES)
        return sender, receiver

    def rulesets(self) -> tuple[dict, int, int]:
        """Compile the synthetic policy (with and without guard filters) + linear."""
        import synth

        from zonewall.compiler.node import compile_node
        from zonewall.policy.loader import load_policy_text
        from zonewall.policy.resolve import Policy

        n = self.args.guests
        extras = self.args.extras
        probe = load_policy_text(synth.policy_text(n, filters=False, dataplane_extras=extras))
        sender, receiver = self.choose_guests(probe)
        allow = (f"{{direction: in, action: accept, from: vm:{synth.vm_name(sender)}, "
                 f"udp: \"{DPORT_BASE}-{DPORT_BASE + DPORTS - 1}\"}}")
        # the flow's accept rule is the receiver's last rule: its 19 others are tried first
        guarded = load_policy_text(synth.policy_text(n, filters=True, overrides={receiver: {synth.RULES_PER_VM - 1: allow}}, dataplane_extras=extras))
        doc = guarded.doc
        plain_doc = doc.model_copy(update={"vms": {k: v.model_copy(update={"filters": []}) for k, v in doc.vms.items()}})
        plain = Policy(plain_doc, guarded.source)
        out = {"zonewall": compile_node(plain, "node1"), "zonewall+guards": compile_node(guarded, "node1")}
        if out["zonewall"].table("inet", "zonewall") != out["zonewall+guards"].table("inet", "zonewall"):
            raise RuntimeError("guard filters changed the inet table; the benchmark only swaps the bridge table")
        open_doc = plain_doc.model_copy(update={"settings": plain_doc.settings.model_copy(update={"guest_ports": []})})
        out["zonewall-open"] = compile_node(Policy(open_doc, guarded.source), "node1")
        if out["zonewall-open"].table("inet", "zonewall") != out["zonewall"].table("inet", "zonewall"):
            raise RuntimeError("guest_ports changed the inet table; the benchmark only swaps the bridge table")
        out["linear"] = linear_ruleset(out["zonewall"])
        out["zonewall-norules"] = norules_ruleset(out["zonewall"])
        return out, sender, receiver

    def load_m(self, topo: Topology, layout: str, rulesets: dict) -> float:
        """none / minimal / minimal+classify on the `m` node (from an empty ruleset)."""
        from zonewall.compiler.ir import replace_commands, table_body_commands, table_object
        from zonewall.dataplane.backend import LibNftBackend

        t0 = time.perf_counter()
        run(["ip", "netns", "exec", topo.node, "nft", "flush", "ruleset"])
        if layout != "none":
            nft(topo.node, MINIMAL)
        if layout == "zonewall-norules":
            run(["ip", "netns", "exec", topo.node, "nft", "flush", "ruleset"])
            if self.mbackend is None:
                self.mbackend = LibNftBackend(netns=topo.node)
            self.mbackend.run(replace_commands(rulesets["zonewall-norules"]))
        if layout == "minimal+classify":
            if self.mbackend is None:
                self.mbackend = LibNftBackend(netns=topo.node)
            table = rulesets["zonewall"].table("bridge", "zonewall")
            self.mbackend.run([{"add": table_object(table)}] + table_body_commands(table))
        return time.perf_counter() - t0

    def measure(self, topo: Topology, case: str) -> dict:
        tx, rx = topo.tx, topo.rx
        spec_base = {"src_mac": tx.mac, "dst_mac": rx.mac, "src_ip": tx.ip, "dst_ip": rx.ip, "ifname": "eth0", "case": case,
                     "workers": self.args.workers}
        procs = []
        for w in range(self.args.workers):
            proc = subprocess.Popen(
                ["ip", "netns", "exec", tx.ns, sys.executable, str(Path(__file__).resolve()), "--generator",
                 json.dumps(dict(spec_base, worker=w))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )
            self.children.append(proc)
            procs.append(proc)
        for proc in procs:
            if not wait_line(proc, "ready", 60):
                raise RuntimeError("a traffic generator did not start")
        duration = self.args.warmup + self.args.seconds + 0.3
        for proc in procs:
            proc.stdin.write(f"go {duration}\n")
            proc.stdin.flush()
        time.sleep(self.args.warmup)
        ct0 = topo.conntrack_stats()
        ours = [p.pid for p in procs] + self.ksoftirqd
        cpu0 = sum(cpu_ticks(pid) for pid in ours)
        c0, t0 = topo.rx_packets(), time.monotonic()
        time.sleep(self.args.seconds)
        c1, t1 = topo.rx_packets(), time.monotonic()
        cpu1 = sum(cpu_ticks(pid) for pid in ours)
        ct1 = topo.conntrack_stats()
        load = Path("/proc/loadavg").read_text().split()[0]
        sent = errors = 0
        for proc in procs:
            out, _ = proc.communicate(timeout=duration + 30)
            report = json.loads(out.strip().splitlines()[-1])
            sent += report["sent"]
            errors += report["errors"]
            self.children.remove(proc)
        cpu_seconds = (cpu1 - cpu0) / CLK_TCK
        delivered = c1 - c0
        return {
            "pps": delivered / (t1 - t0),
            "pkts_per_cpu_s": delivered / cpu_seconds if cpu_seconds > 0 else 0.0,
            "cpu_share": cpu_seconds / ((t1 - t0) * (os.cpu_count() or 1)),
            "offered_pps": sent / duration,
            "send_errors": errors,
            "conntrack_entries_end": ct1.get("count", -1),
            "conntrack": {k: ct1.get(k, 0) - ct0.get(k, 0) for k in ("drop", "early_drop", "insert_failed", "invalid")},
            "loadavg1": load,
        }


def print_tables(results: dict, layouts: list[str]) -> None:
    def median(layout: str, case: str, key: str) -> float | None:
        runs = [r[key] for r in results.get((layout, case), [])]
        return statistics.median(runs) if runs else None

    for key, title in (("pps", "packets/s delivered"), ("pkts_per_cpu_s", "packets per CPU-second (generators + ksoftirqd)")):
        print(f"{title}, median of rounds; ratio = layout / minimal, same case")
        print()
        print("| layout | (a) established | ratio | (b) new flow per packet | ratio |")
        print("|---|---|---|---|---|")
        for layout in layouts:
            cells = [layout]
            for case in CASES:
                value, base = median(layout, case, key), median("minimal", case, key)
                cells.append(f"{value:,.0f}" if value is not None else "-")
                cells.append(f"{value / base:.3f}" if value is not None and base else "-")
            print("| " + " | ".join(cells) + " |")
        print()
    for case in CASES:
        value, base = median("zonewall", case, "pps"), median("minimal", case, "pps")
        if value is not None and base:
            verdict = "meets" if value / base >= 0.95 else "MISSES"
            print(f"Target zonewall >= 0.95 x minimal, case {case}: {verdict} ({value / base:.3f})")
    print()
    print("Per run (pps / packets per CPU-s / CPU share of the bench's processes):")
    for case in CASES:
        for layout in layouts:
            runs = results.get((layout, case), [])
            print(f"  {case:>11} {layout:>15}: " + "; ".join(
                f"{r['pps']:,.0f} / {r['pkts_per_cpu_s']:,.0f} / {r['cpu_share']:.2f}" for r in runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="200 guests, 1.5 s windows")
    parser.add_argument("--guests", type=int, default=None, help="guest NICs per node (default 2000, --quick 200)")
    parser.add_argument("--seconds", type=float, default=None, help="measured window per run (default 3, --quick 1.5)")
    parser.add_argument("--warmup", type=float, default=None, help="traffic before the window (default 1, --quick 0.5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="generator processes (default: one per CPU)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {','.join(LAYOUTS)}")
    parser.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    parser.add_argument("--extras", action="store_true", help="schedules, conntrack helpers and nat in the policy too (bench/synth.py dataplane_extras)")
    args = parser.parse_args()
    if args.generator:
        return generator_main(json.loads(args.generator))
    if os.geteuid() != 0:
        print("dispatch.py needs root (network namespaces)", file=sys.stderr)
        return 2
    args.guests = args.guests or (200 if args.quick else 2000)
    args.seconds = args.seconds or (1.5 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    layouts = [layout for layout in args.layouts.split(",") if layout]
    if any(layout not in LAYOUTS for layout in layouts) or "minimal" not in layouts:
        parser.error(f"--layouts: a subset of {','.join(LAYOUTS)} that includes minimal")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    Bench.remove_stale()
    bench = Bench(args)
    started = time.perf_counter()
    results: dict[tuple[str, str], list[dict]] = {}
    details: list[dict] = []
    try:
        print(f"# zonewall dispatch benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  kernel {platform.release()}  "
              f"cpus {os.cpu_count()}  guests {args.guests} x 20 rules  window {args.seconds}s (+{args.warmup}s warm-up)  "
              f"rounds {args.rounds}  generators {args.workers}  loadavg {Path('/proc/loadavg').read_text().split()[0]}", flush=True)
        t0 = time.perf_counter()
        rulesets, sender, receiver = bench.rulesets()
        counts = {k: sum(len(c.rules) for t in r.tables for c in t.chains) for k, r in rulesets.items()}
        print(f"# policy loaded and compiled in {time.perf_counter() - t0:.1f}s; nft rules: "
              + ", ".join(f"{k} {v:,}" for k, v in counts.items()), flush=True)
        need_z = any(layout in ("zonewall", "zonewall-open", "zonewall+guards", "linear") for layout in layouts)
        topos = {"m": Topology(bench.prefix, "m", args.guests, sender, receiver)}
        if need_z:
            topos["z"] = Topology(bench.prefix, "z", args.guests, sender, receiver)
        for topo in topos.values():
            topo.build()
            print(f"# node {topo.node}: {args.guests} guest ports built in {topo.build_seconds:.1f}s; sender {topo.tx.name} "
                  f"({topo.tx.tap}, {topo.tx.ip}) -> receiver {topo.rx.name} ({topo.rx.tap}, {topo.rx.ip}) on vmbr0", flush=True)
        if need_z:
            bench.znode = ZonewallNode(topos["z"], rulesets)
            seconds = bench.znode.load_all()
            print(f"# zonewall ruleset ({counts['zonewall']:,} rules) loaded in one transaction in {seconds:.1f}s", flush=True)
        for round_no in range(1, args.rounds + 1):
            order = layouts if round_no % 2 else list(reversed(layouts))
            for layout in order:
                if layout in M_LAYOUTS:
                    topo = topos["m"]
                    switch_s = bench.load_m(topo, layout, rulesets)
                else:
                    topo = topos["z"]
                    switch_s = bench.znode.switch(layout)
                topo.check_forwarding(layout)
                for case in CASES:
                    topo.prepare_case(case, layout)
                    m = bench.measure(topo, case)
                    results.setdefault((layout, case), []).append(m)
                    details.append({"round": round_no, "layout": layout, "case": case, "switch_s": switch_s, **m})
                    ct = m["conntrack"]
                    print(f"#  round {round_no} {layout:>15} {case:>11}: {m['pps']:>9,.0f} pps, {m['pkts_per_cpu_s']:>9,.0f} per CPU-s "
                          f"(CPU share {m['cpu_share']:.2f}, offered {m['offered_pps']:,.0f}; conntrack entries "
                          f"{m['conntrack_entries_end']:,}, early_drop {ct['early_drop']:,}, drop {ct['drop']:,}; "
                          f"switch {switch_s:.1f}s; loadavg {m['loadavg1']})", flush=True)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.cleanup()
    print()
    print_tables(results, layouts)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": details}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
