#!/usr/bin/env python3
"""Live-migration benchmark: conntrack transfer time, and the traffic gap a stream sees.

* transfer: two namespaces (source and target node) with conntrack active; N
  synthetic established TCP entries of one VM address (window scaling on, as a real
  stream has) are created in the source; then, timed separately: the export (one
  ctnetlink dump, selected by the VM's address, re-encoded as creation messages),
  packing (zlib level 1 + base64, what crosses the controller), unpacking, and the
  import (batched CT_NEW messages, zonewall/dataplane/conntrack.py). Each N (default
  1,000, 10,000 and 50,000) --repeat times (default 3), median reported, every entry
  checked to be present on the target afterwards.
* gap: the lab migration of tests/kernel/test_migration.py (two nodes, the VM
  migrated from node1 to node2 with `nf_conntrack_tcp_loose=0` on node2, a policy that
  refuses new connections to it) with a TCP stream from the outside and one from a
  guest staying on node1, each sending 1 kB every 10 ms: the longest silence each
  receiver saw around the migration, --gap-runs times (default 3).

Results as JSON on stdout; progress on stderr. Needs root.
Run: .venv/bin/python bench/migration.py [--sizes 1000,10000,50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zonewall.agent.migration import pack_export, unpack_export
from zonewall.dataplane.conntrack import ConntrackSocket, Entry, Tuple
from zonewall.lab import netns

VM = "10.1.0.5"


def synthetic(n: int) -> list[Entry]:
    return [
        Entry(socket.AF_INET, Tuple(VM, f"198.{18 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}", 6, 20000 + i % 40000, 443),
              Tuple(f"198.{18 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}", VM, 6, 443, 20000 + i % 40000),
              status=0x6, timeout=3600, tcp=(3, 7, 7, 0x23, 0x23))
        for i in range(n)
    ]


def transfer(n: int, repeat: int) -> dict[str, object]:
    prefix = f"zwb{os.getpid()}-"
    source, target = prefix + "src", prefix + "dst"
    runs: list[dict[str, float]] = []
    try:
        for ns in (source, target):
            netns.create_netns(ns)
            # conntrack is only active in a namespace where something uses it
            netns.exec_in_netns(ns, ["nft", "add table inet b; add chain inet b c { type filter hook forward priority 0; ct state established accept; }"])
        with ConntrackSocket(source) as sock:
            seeded = sock.create(synthetic(n))
        assert seeded.created == n, seeded
        for _ in range(repeat):
            with ConntrackSocket(target) as sock:
                sock.delete(sock.export([VM]))
            t0 = time.perf_counter()
            with ConntrackSocket(source) as sock:
                export = sock.export_raw([VM])
            t1 = time.perf_counter()
            packed = pack_export(export)
            t2 = time.perf_counter()
            unpacked = unpack_export(packed)
            t3 = time.perf_counter()
            with ConntrackSocket(target) as sock:
                result = sock.create_raw(unpacked)
            t4 = time.perf_counter()
            assert result.created == n and result.failed == 0, result
            with ConntrackSocket(target) as sock:
                assert len(sock.export([VM])) == n
            runs.append({"export": t1 - t0, "pack": t2 - t1, "unpack": t3 - t2, "import": t4 - t3, "total": t4 - t0,
                         "without_packing": (t1 - t0) + (t4 - t3), "bytes": len(packed)})
            print(f"  {n}: {runs[-1]['total'] * 1000:.0f} ms", file=sys.stderr)
    finally:
        for ns in (source, target):
            netns.delete_netns(ns)
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def gap(runs: int) -> list[dict[str, float]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.kernel import test_migration as scenario  # the kernel test's lab and streams
    from zonewall.lab.cluster import ensure_outside_address, lab_down, lab_up

    out = []
    for k in range(runs):
        policy = Path(tempfile.mkdtemp(prefix="zonewall-bench-")) / "policy"
        policy.mkdir()
        scenario.write(policy, scenario.OPEN)
        name = f"b{os.getpid() % 100000}g{k}"
        try:
            state = lab_up(str(policy), name)
            ensure_outside_address(state, scenario.OUTSIDE)
            netns.set_sysctl(state.nodes["node2"], "net.netfilter.nf_conntrack_tcp_loose", 0)
            flowing, report = scenario.run_migration(state, transfer=True)
            assert all(tcp and udp for _, tcp, udp in flowing), flowing
            out.append({**{f"gap {label}": value for label, value in report["gaps"].items()}, "migration": report["seconds"], "switch": report["switch_seconds"]})
            print(f"  gap run {k}: {out[-1]}", file=sys.stderr)
        finally:
            lab_down(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gap-runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, object] = {"transfer_seconds": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        results["transfer_seconds"][n] = transfer(n, args.repeat)  # type: ignore[index]
    results["gap"] = gap(args.gap_runs)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
