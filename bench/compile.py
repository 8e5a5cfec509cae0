#!/usr/bin/env python3
"""Compile-time benchmark: synthetic policies of 100 / 1,000 / 10,000 VMs x 20 rules.

For each size (all VMs on one node, `node1`, so the node compiled holds every VM):

* load    - `load_policy(file)`: YAML with positions, pydantic, cross-reference checks
            (measured once per size unless --load-repeats);
* compile - `compile_node(policy, "node1")`, median of --repeats runs, each on a fresh
            `Policy(doc, source)` so no cache survives from the previous run;
* compile, gc off - the same with Python's cyclic GC disabled during the call, to show
            how much of the time is garbage-collector passes over the growing IR;
* json    - `to_json(ruleset)` (IR -> libnftables JSON objects), `ir.dumps` of it (the
            indented text `fingerprint` hashes) and a compact `json.dumps` of it (about
            what goes to libnftables), times and sizes;
* counts  - rules, chains, sets+maps and set/map elements over both tables.

Usage:  .venv/bin/python bench/compile.py            # 100, 1000, 10000
        .venv/bin/python bench/compile.py --quick    # 100, 1000; 1 GC-off run
        .venv/bin/python bench/compile.py --profile  # + cProfile of the largest compile
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import synth

from zonewall.compiler.ir import dumps, to_json
from zonewall.compiler.node import compile_node
from zonewall.policy.loader import load_policy
from zonewall.policy.resolve import Policy

NODE = "node1"
TARGET_VMS, TARGET_SECONDS = 10_000, 2.0


def ruleset_counts(ruleset) -> dict[str, int]:
    rules = chains = sets = elements = 0
    for table in ruleset.tables:
        chains += len(table.chains)
        rules += sum(len(c.rules) for c in table.chains)
        sets += len(table.sets)
        elements += sum(len(s.elements) for s in table.sets)
    return {"rules": rules, "chains": chains, "sets": sets, "elements": elements}


def timed(fn, *args):
    t0 = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - t0, value


def clear_module_caches() -> None:
    """Empty module-level memo caches so every run starts cold."""
    from zonewall.compiler import matches
    from zonewall.policy import resolve

    for module in (matches, resolve):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


def compile_once(policy: Policy, gc_off: bool) -> tuple[float, object]:
    fresh = Policy(policy.doc, policy.source)  # cold caches, as after a reload
    clear_module_caches()
    gc.collect()
    if gc_off:
        gc.disable()
    try:
        return timed(compile_node, fresh, NODE)
    finally:
        gc.enable()


def bench_size(n_vms: int, args: argparse.Namespace, workdir: Path) -> dict:
    text = synth.policy_text(n_vms, nodes=args.nodes)
    path = workdir / f"policy-{n_vms}.yaml"
    path.write_text(text)
    loads = []
    policy = None
    for _ in range(args.load_repeats):
        policy = None
        gc.collect()
        seconds, policy = timed(load_policy, path)
        loads.append(seconds)
    assert policy is not None
    compiles, compiles_gc_off = [], []
    ruleset = None
    for _ in range(args.repeats):
        ruleset = None
        seconds, ruleset = compile_once(policy, False)
        compiles.append(seconds)
    for _ in range(args.gc_off_repeats):
        seconds, _unused = compile_once(policy, True)
        compiles_gc_off.append(seconds)
        del _unused
    to_json_s, document = timed(to_json, ruleset)
    dumps_s, text_json = timed(dumps, document)
    compact_s, compact_text = timed(lambda d: json.dumps(d, separators=(",", ":")), document)
    row = {
        "vms": n_vms,
        "policy_rules": n_vms * synth.RULES_PER_VM,
        "policy_bytes": len(text),
        "load_s": statistics.median(loads),
        "compile_s": statistics.median(compiles),
        "compile_runs": compiles,
        "compile_gc_off_s": statistics.median(compiles_gc_off) if compiles_gc_off else None,
        "compile_gc_off_runs": compiles_gc_off,
        "to_json_s": to_json_s,
        "json_s": dumps_s,
        "json_bytes": len(text_json.encode()),
        "json_compact_s": compact_s,
        "json_compact_bytes": len(compact_text.encode()),
        **ruleset_counts(ruleset),
    }
    if args.profile and n_vms == max(args.sizes):
        row["profile"] = profile(policy, args.profile_lines)
    return row


def profile(policy: Policy, lines: int) -> str:
    fresh = Policy(policy.doc, policy.source)
    prof = cProfile.Profile()
    clear_module_caches()
    gc.collect()
    # GC off: with it on, each collection's cost lands on whatever function happened
    # to allocate at that moment (e.g. `all()`), which hides the real hot spots.
    gc.disable()
    try:
        prof.enable()
        compile_node(fresh, NODE)
        prof.disable()
    finally:
        gc.enable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    return out.getvalue()


def loadavg() -> str:
    """1/5/15-minute load averages: other work on the machine skews timings."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_tables(rows: list[dict]) -> None:
    head = ["VMs", "policy rules", "load s", "compile s (median)", "compile s gc off", "to_json s", "dumps s", "dumps bytes", "compact JSON bytes", "nft rules", "chains", "sets+maps", "set elements"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        gc_off = f"{r['compile_gc_off_s']:.3f}" if r["compile_gc_off_s"] is not None else "-"
        cells = [
            f"{r['vms']:,}",
            f"{r['policy_rules']:,}",
            f"{r['load_s']:.2f}",
            f"{r['compile_s']:.3f}",
            gc_off,
            f"{r['to_json_s']:.2f}",
            f"{r['json_s']:.2f}",
            f"{r['json_bytes']:,} ({human_bytes(r['json_bytes'])})",
            f"{r['json_compact_bytes']:,} ({human_bytes(r['json_compact_bytes'])})",
            f"{r['rules']:,}",
            f"{r['chains']:,}",
            f"{r['sets']:,}",
            f"{r['elements']:,}",
        ]
        print("| " + " | ".join(cells) + " |")
    if len(rows) > 1:
        print()
        head = ["step", "VMs x", "load x", "compile x", "compile gc off x", "JSON bytes x", "nft rules x", "set elements x"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for a, b in zip(rows, rows[1:]):
            def ratio(key: str) -> str:
                if a.get(key) in (None, 0) or b.get(key) is None:
                    return "-"
                return f"{b[key] / a[key]:.1f}"

            print(f"| {a['vms']:,} -> {b['vms']:,} | {b['vms'] / a['vms']:.0f} | {ratio('load_s')} | {ratio('compile_s')} | {ratio('compile_gc_off_s')} | {ratio('json_bytes')} | {ratio('rules')} | {ratio('elements')} |")
    print()
    print("Compile runs (s): " + "; ".join(f"{r['vms']:,}: " + ", ".join(f"{s:.3f}" for s in r["compile_runs"]) for r in rows))
    big = [r for r in rows if r["vms"] == TARGET_VMS]
    if big:
        r = big[0]
        verdict = "MEETS" if r["compile_s"] < TARGET_SECONDS else "MISSES"
        print(f"Target: {TARGET_VMS:,} VMs x 20 rules compile < {TARGET_SECONDS} s: {verdict} ({r['compile_s']:.2f} s median)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="sizes 100 and 1000, one GC-off run")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None, help="comma-separated VM counts")
    parser.add_argument("--repeats", type=int, default=3, help="compile runs per size (median reported)")
    parser.add_argument("--gc-off-repeats", type=int, default=None, help="compile runs with GC disabled (default 3, --quick 1)")
    parser.add_argument("--load-repeats", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=1, help="hosts to spread VMs over (node1 is compiled)")
    parser.add_argument("--profile", action="store_true", help="cProfile one compile of the largest size")
    parser.add_argument("--profile-lines", type=int, default=25)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [100, 1000] if args.quick else [100, 1000, 10000]
    if args.gc_off_repeats is None:
        args.gc_off_repeats = 1 if args.quick else 3

    print(f"# zonewall compile benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  "
          f"kernel {platform.release()}  python {platform.python_version()}  cpus {os.cpu_count()}")
    print(f"# synthetic policy: {synth.RULES_PER_VM} rules per VM, {synth.ZONES} zones x 10 rules, {synth.GROUPS} groups, "
          f"{synth.NETWORKS} dual-stack networks, all VMs on {NODE} (of {args.nodes} host(s))")
    rows = []
    started = time.perf_counter()
    load_at_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="zw-bench-compile-") as tmp:
        for n in args.sizes:
            row = bench_size(n, args, Path(tmp))
            rows.append(row)
            print(f"#  {n:>6} VMs: load {row['load_s']:.2f}s  compile {row['compile_s']:.3f}s  to_json {row['to_json_s']:.2f}s  "
                  f"dumps {row['json_s']:.2f}s ({human_bytes(row['json_bytes'])})  compact json.dumps {row['json_compact_s']:.2f}s "
                  f"({human_bytes(row['json_compact_bytes'])})", flush=True)
            gc.collect()
    print()
    print_tables(rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"Peak RSS {peak_mb:.0f} MB; total {time.perf_counter() - started:.0f} s; "
          f"load average at start {load_at_start}, at end {loadavg()}")
    for r in rows:
        if "profile" in r:
            print(f"\n## cProfile of one compile, {r['vms']:,} VMs (cyclic GC disabled during the profile)\n")
            print(r["profile"])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
