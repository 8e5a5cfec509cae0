#!/usr/bin/env python3
"""Packet-log store benchmark: ingest rate and search latency (embedded SQLite).

* ingest: --records (default 1,000,000) synthetic NFLOG records, the way agents send
  them: batches of --batch (default 500) records, each one `LogStore.ingest` call (one
  transaction with its batch id, every index maintained). Reported: records/s over
  the whole load, and of the first 100,000 (an empty database).
* search: over the full table, --runs (default 30) searches of each common filter
  (VM, zone, node, address, CIDR, destination port, verdict, rule, a time range, VM
  + port, VM + time range, free text), first page of 100, newest first, each with
  values drawn at random; p50/p95/max in ms.

Records: 200 VMs in 10 zones on 20 nodes, sources from 5,000 outside addresses and
the VMs, 30 destination ports, four verdict/rule kinds, spread over 7 days **in time
order**, as they arrive: an agent ships what the kernel logged in the last 0.25 s, so
a batch's records are in order and batches arrive in order up to a few seconds of
network/agent delay (each batch here lags by up to 2 s at random, so consecutive
batches overlap and the time-ordered indexes still see some out-of-order inserts).
`--random-times` draws every record's time at random over the week instead (the
first version of this benchmark: every index insert lands on a random page).
Results as JSON on stdout; progress on stderr.
Run: .venv/bin/python bench/logs.py [--records 1000000] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zonewall.controller.store.db import open_database
from zonewall.controller.store.logs import LogQuery, LogStore, Retention

VMS = [f"vm{i:03d}" for i in range(200)]
ZONE = {vm: f"zone{i % 10}" for i, vm in enumerate(VMS)}
NODE = {vm: f"node{i % 20:02d}" for i, vm in enumerate(VMS)}
VM_ADDR = {vm: f"10.{i // 250}.{i % 250}.{10 + i % 200}" for i, vm in enumerate(VMS)}
OUTSIDE = [f"203.{i // 250 % 250}.{i % 250}.{(i * 7) % 250 + 1}" for i in range(5000)]
PORTS = [22, 25, 53, 80, 123, 135, 139, 161, 389, 443, 445, 1433, 1521, 2049, 2375, 3306, 3389, 5060, 5432, 5900,
         6379, 8080, 8443, 9000, 9090, 9200, 11211, 27017, 50000, 60000]
RULES = [("default-in", "default", "drop"), ("default-out", "default", "drop"), ("block-smb", "zone", "drop"), ("no-telnet", "global", "reject")]
WEEK = 7 * 86400


def batch_times(rng: random.Random, now: float, done: int, total: int, n: int, random_times: bool) -> list[float]:
    """The records' times: the run covers the week before `now` in order (see above)."""
    if random_times:
        return [now - rng.random() * WEEK for _ in range(n)]
    start = now - WEEK + WEEK * done / total
    span = WEEK * n / total
    lag = rng.random() * 2.0
    return sorted(start - lag + rng.random() * span for _ in range(n))


def synth(rng: random.Random, times: list[float]) -> list[dict]:
    out = []
    for moment in times:
        vm = rng.choice(VMS)
        rule, level, verdict = rng.choice(RULES)
        inbound = rule != "default-out"
        peer = rng.choice(OUTSIDE) if rng.random() < 0.8 else VM_ADDR[rng.choice(VMS)]
        src, dst = (peer, VM_ADDR[vm]) if inbound else (VM_ADDR[vm], peer)
        out.append({"time": moment, "vm": vm, "zone": ZONE[vm], "nic": f"{vm}/0", "direction": "in" if inbound else "out",
                    "family": "ipv4", "src": src, "dst": dst, "proto": "tcp" if rng.random() < 0.8 else "udp",
                    "sport": rng.randrange(1024, 65536), "dport": rng.choice(PORTS), "icmp_type": None, "verdict": verdict,
                    "rule": rule, "scope": vm if level == "default" else ("global" if level == "global" else f"zone:{ZONE[vm]}"),
                    "level": level, "iface": f"{vm}i0"})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--random-times", action="store_true", help="record times at random over the week, not in order")
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (default: a temporary one, removed)")
    args = parser.parse_args()
    rng = random.Random(6)
    tmp = tempfile.TemporaryDirectory(prefix="zonewall-bench-logs-")
    path = args.db or Path(tmp.name) / "logs.db"
    store = LogStore(open_database(f"sqlite:///{path}"), Retention(max_age_days=3650, max_records=10**9))
    load_start = os.getloadavg()[0]
    now = time.time()
    by_node: dict[str, list[dict]] = {}
    ingest_seconds, first_rate, done = 0.0, None, 0
    while done < args.records:
        size = min(args.batch, args.records - done)
        batch = synth(rng, batch_times(rng, now, done, args.records, size, args.random_times))
        by_node.clear()
        for r in batch:
            by_node.setdefault(NODE[r["vm"]], []).append(r)
        node = rng.choice(sorted(by_node))  # one agent's batch (records of any VM: the store does not care)
        started = time.perf_counter()
        store.ingest(node, uuid.uuid4().hex, batch)
        ingest_seconds += time.perf_counter() - started
        done += len(batch)
        if first_rate is None and done >= 100_000:
            first_rate = done / ingest_seconds
        if done % 100_000 < args.batch:
            print(f"ingested {done:,} records, {done / ingest_seconds:,.0f}/s", file=sys.stderr)
    assert store.count() == args.records

    def pick_cidr() -> str:
        a = rng.choice(OUTSIDE).split(".")
        return f"{a[0]}.{a[1]}.{a[2]}.0/24"

    filters = {
        "vm": lambda: LogQuery(vm=rng.choice(VMS)),
        "zone": lambda: LogQuery(zone=f"zone{rng.randrange(10)}"),
        "node": lambda: LogQuery(node=f"node{rng.randrange(20):02d}"),
        "address": lambda: LogQuery(address=rng.choice(OUTSIDE)),
        "cidr /24": lambda: LogQuery(address=pick_cidr()),
        "port": lambda: LogQuery(port=rng.choice(PORTS)),
        "verdict": lambda: LogQuery(verdict=rng.choice(["drop", "reject"])),
        "rule": lambda: LogQuery(rule=rng.choice(RULES)[0]),
        "last hour": lambda: LogQuery(since=now - 3600),
        "vm + port": lambda: LogQuery(vm=rng.choice(VMS), port=rng.choice(PORTS)),
        "vm + last day": lambda: LogQuery(vm=rng.choice(VMS), since=now - 86400),
        "free text": lambda: LogQuery(text=rng.choice(VMS)),
    }
    searches = {}
    for name, make in filters.items():
        times = []
        for _ in range(args.runs):
            query = make()
            started = time.perf_counter()
            rows, _ = store.search(query)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        searches[name] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1),
                          "max_ms": round(times[-1], 1)}
        print(f"{name:14} p50 {searches[name]['p50_ms']:7.1f} ms  p95 {searches[name]['p95_ms']:7.1f} ms", file=sys.stderr)
    print(json.dumps({
        "records": args.records, "batch": args.batch, "times": "random" if args.random_times else "in order",
        "ingest_records_per_s": round(args.records / ingest_seconds),
        "ingest_first_100k_per_s": round(first_rate or 0),
        "db_bytes": path.stat().st_size,
        "load_average": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "search": searches,
    }, indent=1))
    tmp.cleanup()


if __name__ == "__main__":
    main()
