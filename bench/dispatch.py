#!/usr/bin/env python3
"""Dispatch benchmark: forwarded 64-byte UDP packets/s through one node namespace.

Topology (all namespaces named zwb-<pid>-*, removed on exit, Ctrl-C or error):

    tx (guest vmS, eth0) --veth-- [ node: vmbr0..3, 2,000 guest ports, br_netfilter ] --veth-- rx (guest vmR, eth0)

The node holds one bridge per network of a synthetic policy (bench/synth.py) and one
veth port per guest NIC, named as the compiler names taps (`tap_name(vm, 0)`). Only
the sender's and the receiver's ports lead to guest namespaces; the other ports' peers
stay in the node namespace (up, never carrying traffic). Static FDB and neighbour
entries mean no ARP and no flooding; IPv6 is off everywhere (no ND/MLD noise); the
guests drop everything that reaches them at netdev ingress, after the receiver's
veth has counted it.

Layouts, each loaded alone in the node namespace:
  none       no table at all (no conntrack either)
  minimal    inet forward: ct state established,related accept; accept
  zonewall   compile_node() of the policy (no guard filters), via apply_ruleset()
  zonewall+guards   the same policy with filters: [clean-traffic] on every VM
  linear     zonewall's ruleset with both dispatch maps replaced by 2,000 linear
             rules each: `meta mark & MASK == N jump vm-X-out|in` (libvirt/Proxmox
             shape, by marks because the inet hook only sees the bridge's name)

Cases:
  (a) established: one flow; the receiver answers once first, so conntrack has seen a
      reply and every measured packet is ct state established (dispatch skipped)
  (b) new:  every packet a new flow (source port x destination port cycle over ~1M
      tuples, nf_conntrack_udp_timeout=1 in the node) so conntrack creates an entry
      and the sender's out chain and the receiver's in chain run for every packet

Traffic: one generator process per CPU in the sender namespace, each calling
sendmmsg(2) (through ctypes) on an AF_PACKET socket with 1,024 prebuilt frames per
call (PACKET_QDISC_BYPASS). Forwarding runs in the senders' softirq context, so the
delivered rate is the forwarding capacity of the node with all CPUs busy.
Measured: the receiver's eth0 rx_packets over the window (after a warm-up).
Runs are interleaved (round 1: every layout, round 2: every layout, ...); the table
shows the median of the rounds and its ratio to `minimal` of the same case.

Usage:  .venv/bin/python bench/dispatch.py           # 2,000 guests, 3 rounds x 4 s
        .venv/bin/python bench/dispatch.py --quick   # 200 guests, 3 rounds x 2 s
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
LAYOUTS = ("none", "minimal", "zonewall", "zonewall+guards", "linear")
CASES = ("established", "new")


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
# the lab (parent process)


def run(argv: list[str], *, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({proc.returncode}): {proc.stderr.strip()[:2000]}")
    return proc.stdout


def nft(ns: str, text: str) -> None:
    run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text)


@dataclasses.dataclass
class Guest:
    index: int
    name: str
    tap: str
    mac: str
    ip: str
    ns: str


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.prefix = f"{NS_PREFIX}{os.getpid()}-"
        self.node = self.prefix + "node"
        self.children: list[subprocess.Popen] = []
        self.namespaces: list[str] = []

    # -- cleanup --------------------------------------------------------------------

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

    # -- policy -----------------------------------------------------------------------

    def choose_guests(self) -> tuple[int, int]:
        """Sender and receiver: same network, zones without a drop default, and in no
        group (a group could put them behind one of the generated drop rules)."""
        import synth

        n = self.args.guests
        taken = set()
        text = synth.policy_text(n, filters=False)
        for line in text.splitlines():
            if line.startswith("  g") or line.startswith("  admins") or line.startswith("  ntp") or line.startswith("  monitoring"):
                for part in line.replace("[", " ").replace("]", " ").replace(",", " ").split():
                    if part.startswith("vm:"):
                        taken.add(part[3:])
        candidates = [i for i in range(n // 2, n) if (i % synth.ZONES) % 4 != 1 and synth.vm_network(i) == "net0" and synth.vm_name(i) not in taken]
        sender = candidates[0]
        receiver = next(i for i in candidates[1:] if (i % synth.ZONES) != (sender % synth.ZONES))
        return sender, receiver

    def policies(self, sender: int, receiver: int):
        import synth
        from zonewall.policy.loader import load_policy_text

        allow = (f"{{direction: in, action: accept, from: vm:{synth.vm_name(sender)}, "
                 f"udp: \"{DPORT_BASE}-{DPORT_BASE + DPORTS - 1}\"}}")
        # the flow's accept rule is the receiver's last rule: its 19 others are tried first
        overrides = {receiver: {synth.RULES_PER_VM - 1: allow}}
        out = {}
        for key, filters in (("zonewall", False), ("zonewall+guards", True)):
            out[key] = load_policy_text(synth.policy_text(self.args.guests, filters=filters, overrides=overrides))
        return out

    # -- topology ---------------------------------------------------------------------

    def build(self, sender: int, receiver: int) -> tuple[Guest, Guest]:
        import synth
        from zonewall.compiler.naming import tap_name
        from zonewall.lab import netns

        def guest(i: int, role: str) -> Guest:
            name = synth.vm_name(i)
            return Guest(i, name, tap_name(name, 0), synth.vm_mac(i), synth.vm_ipv4(i), self.prefix + role)

        tx, rx = guest(sender, "tx"), guest(receiver, "rx")
        no_ipv6 = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
        for ns in (self.node, tx.ns, rx.ns):
            netns.create_netns(ns, tune=False)
            self.namespaces.append(ns)
            netns.set_sysctls(ns, no_ipv6)
        netns.enable_bridge_netfilter(self.node)
        lines = [f"link add vmbr{n} type bridge stp_state 0 mcast_snooping 0" for n in range(synth.NETWORKS)]
        lines += [f"link set vmbr{n} up" for n in range(synth.NETWORKS)]
        for i in range(self.args.guests):
            name = synth.vm_name(i)
            tap = tap_name(name, 0)
            bridge = f"vmbr{i % synth.NETWORKS}"
            if i in (sender, receiver):
                g = tx if i == sender else rx
                lines.append(f"link add {tap} type veth peer name eth0 address {g.mac} netns {g.ns}")
            else:
                lines.append(f"link add {tap} type veth peer name p{i}")
                lines.append(f"link set p{i} up")
            lines.append(f"link set {tap} master {bridge} up")
        t0 = time.perf_counter()
        netns.ip_batch(lines, ns=self.node)
        self.build_seconds = time.perf_counter() - t0
        for g, peer in ((tx, rx), (rx, tx)):
            netns.ip_batch([
                f"addr add {g.ip}/16 dev eth0",
                "link set eth0 up",
                f"neigh replace {peer.ip} lladdr {peer.mac} dev eth0 nud permanent",
            ], ns=g.ns)
            # everything reaching a guest is counted by its veth, then dropped
            nft(g.ns, 'table netdev sink { chain in { type filter hook ingress device "eth0" priority 0; policy drop; }; }')
        run(["bridge", "-n", self.node, "fdb", "replace", rx.mac, "dev", rx.tap, "master", "static"])
        run(["bridge", "-n", self.node, "fdb", "replace", tx.mac, "dev", tx.tap, "master", "static"])
        return tx, rx

    # -- layouts ----------------------------------------------------------------------

    def clear(self) -> None:
        run(["ip", "netns", "exec", self.node, "nft", "flush", "ruleset"])

    def load(self, layout: str, rulesets: dict) -> float:
        from zonewall.dataplane.apply import apply_ruleset
        from zonewall.dataplane.backend import LibNftBackend

        t0 = time.perf_counter()
        self.clear()
        if layout == "minimal":
            nft(self.node, "table inet minimal { chain forward { type filter hook forward priority 0; policy accept; "
                           "ct state established,related accept; accept; }; }")
        elif layout in ("zonewall", "zonewall+guards", "linear"):
            with LibNftBackend(netns=self.node) as backend:
                if layout == "linear":
                    backend.run(replace_commands(rulesets["linear"]))
                else:
                    apply_ruleset(backend, rulesets[layout])
        return time.perf_counter() - t0

    # -- measuring --------------------------------------------------------------------

    def rx_packets(self, g: Guest) -> int:
        out = json.loads(run(["ip", "-n", g.ns, "-s", "-j", "link", "show", "dev", "eth0"]))
        return int(out[0]["stats64"]["rx"]["packets"])

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

    def send_frames(self, tx: Guest, rx: Guest, count: int, sport: int = FIXED_SPORT) -> None:
        from zonewall.lab.netns import netns_socket

        frame = frame_template(tx.mac, rx.mac, tx.ip, rx.ip)
        frame[34:36] = struct.pack("!H", sport)
        sock = netns_socket(tx.ns, socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            sock.bind(("eth0", 0))
            for _ in range(count):
                sock.send(frame)
        finally:
            sock.close()

    def reply(self, tx: Guest, rx: Guest) -> None:
        """The receiver answers the fixed flow once: conntrack then sees a reply."""
        from zonewall.lab.netns import netns_socket

        sock = netns_socket(rx.ns, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((rx.ip, FIXED_DPORT))
            sock.sendto(b"reply", (tx.ip, FIXED_SPORT))
        finally:
            sock.close()

    def conntrack_state(self) -> str:
        out = run(["ip", "netns", "exec", self.node, "conntrack", "-L", "-p", "udp", "--sport", str(FIXED_SPORT)], check=False)
        return out.strip()

    def check_forwarding(self, layout: str, tx: Guest, rx: Guest) -> None:
        """Before measuring a layout: the flow must really be forwarded."""
        before = self.rx_packets(rx)
        self.send_frames(tx, rx, 100, sport=FIXED_SPORT + 1)
        time.sleep(0.2)
        got = self.rx_packets(rx) - before
        if got < 100:
            raise RuntimeError(f"layout {layout}: only {got} of 100 test packets reached the receiver")

    def prepare_case(self, case: str, layout: str, tx: Guest, rx: Guest) -> None:
        from zonewall.lab import netns

        # new flows: unreplied entries expire after 1 s, so the ~1M-tuple cycle never
        # meets a live entry (each packet creates one) and the table stays under
        # nf_conntrack_max; established: the default 30 s keeps the flow's entry
        # alive until the stream timeout takes over.
        netns.set_sysctls(self.node, {"net.netfilter.nf_conntrack_udp_timeout": 1 if case == "new" else 30})
        self.flush_conntrack()
        if case == "established":
            self.send_frames(tx, rx, 1)
            time.sleep(0.05)
            self.reply(tx, rx)
            time.sleep(0.05)
            if layout != "none":
                state = self.conntrack_state()
                if "UNREPLIED" in state or f"sport={FIXED_SPORT}" not in state:
                    raise RuntimeError(f"layout {layout}: the flow is not established in conntrack: {state!r}")

    def measure(self, case: str, tx: Guest, rx: Guest) -> dict:
        spec_base = {"src_mac": tx.mac, "dst_mac": rx.mac, "src_ip": tx.ip, "dst_ip": rx.ip, "ifname": "eth0", "case": case,
                     "workers": self.args.workers}
        procs = []
        for w in range(self.args.workers):
            spec = dict(spec_base, worker=w)
            proc = subprocess.Popen(
                ["ip", "netns", "exec", tx.ns, sys.executable, str(Path(__file__).resolve()), "--generator", json.dumps(spec)],
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
        ct0 = self.conntrack_stats()
        c0, t0 = self.rx_packets(rx), time.monotonic()
        time.sleep(self.args.seconds)
        c1, t1 = self.rx_packets(rx), time.monotonic()
        ct1 = self.conntrack_stats()
        load = Path("/proc/loadavg").read_text().split()[0]
        sent = errors = 0
        for proc in procs:
            out, _ = proc.communicate(timeout=duration + 30)
            report = json.loads(out.strip().splitlines()[-1])
            sent += report["sent"]
            errors += report["errors"]
            self.children.remove(proc)
        ct = {k: ct1.get(k, 0) - ct0.get(k, 0) for k in ("drop", "early_drop", "insert_failed", "invalid")}
        return {"pps": (c1 - c0) / (t1 - t0), "sent_pps": sent / duration, "send_errors": errors,
                "conntrack_entries_end": ct1.get("count", -1), "conntrack": ct, "loadavg1": load}


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


# ----------------------------------------------------------------------------------
# the linear layout


def linear_ruleset(ruleset):
    """zonewall's ruleset with `meta mark & M vmap @out-dispatch|@in-dispatch` replaced
    by one rule per guest NIC: `meta mark & M == N jump vm-X-out|in`. Same VM chains,
    same bridge classification, same rules: only the dispatch differs."""
    from zonewall.compiler import nftexpr as x
    from zonewall.compiler.ir import Chain, Rule

    inet = ruleset.table("inet", "zonewall")
    maps = {"out-dispatch": x.SRC_NIC_MASK, "in-dispatch": x.DST_NIC_MASK}
    forward = inet.chain("forward")
    rules = []
    for rule in forward.rules:
        statement = rule.statements[0]
        target = statement.get("vmap", {}).get("data", "")[1:] if "vmap" in statement else None
        if target in maps:
            for key, verdict in inet.set(target).elements:
                rules.append(Rule((x.match(x.masked(x.meta("mark"), maps[target]), key), verdict), rule.comment))
        else:
            rules.append(rule)
    chains = tuple(dataclasses.replace(c, rules=tuple(rules)) if c.name == "forward" else c for c in inet.chains)
    tables = tuple(dataclasses.replace(t, chains=chains) if t is inet else t for t in ruleset.tables)
    return dataclasses.replace(ruleset, tables=tables)


def replace_commands(ruleset):
    from zonewall.compiler.ir import replace_commands as commands

    return commands(ruleset)


# ----------------------------------------------------------------------------------


def print_table(results: dict, layouts: list[str], args: argparse.Namespace) -> None:
    print("| layout | case (a) established: pps (median) | ratio to minimal | case (b) new flow per packet: pps (median) | ratio to minimal |")
    print("|---|---|---|---|---|")
    base = {case: statistics.median(results[("minimal", case)]) if results.get(("minimal", case)) else None for case in CASES}
    for layout in layouts:
        cells = [layout]
        for case in CASES:
            runs = results.get((layout, case), [])
            if not runs:
                cells += ["-", "-"]
                continue
            median = statistics.median(runs)
            cells.append(f"{median:,.0f}")
            cells.append(f"{median / base[case]:.3f}" if base[case] else "-")
        print("| " + " | ".join(cells) + " |")
    print()
    for case in CASES:
        parts = []
        for layout in layouts:
            runs = results.get((layout, case), [])
            parts.append(f"{layout}: " + ", ".join(f"{r:,.0f}" for r in runs))
        print(f"runs, {case}: " + "; ".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generator", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="200 guests, 2 s windows")
    parser.add_argument("--guests", type=int, default=None, help="guest NICs on the node (default 2000, --quick 200)")
    parser.add_argument("--seconds", type=float, default=None, help="measured window per run (default 4, --quick 2)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of traffic before the window (default 1, --quick 0.5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="generator processes (default: one per CPU)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated subset of {','.join(LAYOUTS)}")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    if args.generator:
        return generator_main(json.loads(args.generator))
    if os.geteuid() != 0:
        print("dispatch.py needs root (network namespaces)", file=sys.stderr)
        return 2
    args.guests = args.guests or (200 if args.quick else 2000)
    args.seconds = args.seconds or (2.0 if args.quick else 4.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    layouts = [l for l in args.layouts.split(",") if l]
    unknown = [l for l in layouts if l not in LAYOUTS]
    if unknown or "minimal" not in layouts:
        parser.error(f"layouts must include minimal and be among {', '.join(LAYOUTS)}")

    bench = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    Bench.remove_stale()
    started = time.perf_counter()
    results: dict[tuple[str, str], list[float]] = {}
    details: list[dict] = []
    try:
        from zonewall.compiler.node import compile_node

        print(f"# zonewall dispatch benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  kernel {platform.release()}  "
              f"cpus {os.cpu_count()}  guests {args.guests} x 20 rules  window {args.seconds}s (+{args.warmup}s warm-up)  "
              f"rounds {args.rounds}  generators {args.workers}", flush=True)
        sender, receiver = bench.choose_guests()
        t0 = time.perf_counter()
        policies = bench.policies(sender, receiver)
        rulesets = {k: compile_node(p, "node1") for k, p in policies.items()}
        rulesets["linear"] = linear_ruleset(rulesets["zonewall"])
        n_rules = {k: sum(len(c.rules) for t in r.tables for c in t.chains) for k, r in rulesets.items()}
        print(f"# policies loaded and compiled in {time.perf_counter() - t0:.1f}s; nft rules: "
              + ", ".join(f"{k} {v:,}" for k, v in n_rules.items()), flush=True)
        tx, rx = bench.build(sender, receiver)
        print(f"# topology: {args.guests} guest ports built in {bench.build_seconds:.1f}s; sender {tx.name} ({tx.tap}, {tx.ip}) "
              f"-> receiver {rx.name} ({rx.tap}, {rx.ip}) on vmbr0", flush=True)
        for round_no in range(1, args.rounds + 1):
            order = layouts if round_no % 2 else list(reversed(layouts))  # alternate to spread drift
            for layout in order:
                load_s = bench.load(layout, rulesets)
                bench.check_forwarding(layout, tx, rx)
                for case in CASES:
                    bench.prepare_case(case, layout, tx, rx)
                    m = bench.measure(case, tx, rx)
                    results.setdefault((layout, case), []).append(m["pps"])
                    details.append({"round": round_no, "layout": layout, "case": case, "load_s": load_s, **m})
                    ct = m["conntrack"]
                    print(f"#  round {round_no} {layout:>15} {case:>11}: {m['pps']:>10,.0f} pps delivered "
                          f"({m['sent_pps']:,.0f} offered; ruleset load {load_s:.1f}s; conntrack entries "
                          f"{m['conntrack_entries_end']:,}, early_drop {ct['early_drop']:,}, drop {ct['drop']:,}; "
                          f"loadavg {m['loadavg1']})", flush=True)
        bench.clear()
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); cleaning up", file=sys.stderr)
        return 130
    finally:
        bench.cleanup()
    print()
    print_table(results, layouts, args)
    print(f"\ntotal {time.perf_counter() - started:.0f}s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": {f"{l}/{c}": v for (l, c), v in results.items()},
                                               "runs": details}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
