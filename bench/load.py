#!/usr/bin/env python3
"""Policy load benchmark: synthetic policies of 1,000 / 5,000 / 10,000 VMs x 20 rules.

Each load runs in a fresh process (so the memory figures are that load's alone):

* load s   - wall time of `load_policy(file)`: YAML with positions, pydantic, every
             cross-reference check, the rule index (everything `zonewall check` does);
* CPU s    - the process's CPU time for the same call (other work on the machine
             inflates wall time, not this);
* RSS      - resident memory after the load, the policy still referenced, after a
             collection; and the process's peak;
* before   - the same load the way it was before this benchmark's changes: the full
             YAML reader (libyaml's composer and a Python builder) and the cyclic
             garbage collector running (`--before`; the other changes of the same
             commit, the memoised address parsing, stay in; so do the later ones, each
             rule line validated once among them). (From 2026-12-04 to 2026-12-07 it
             patched a name the reader no longer had, and measured the fast reader
             with the collector running.)

--distinct makes every rule line of the synthetic policy different (a `comment: cN`
added to each): the policy a cluster without shared rule templates writes. The
synthetic one repeats 80 % of its rule lines, and the loader reads, validates and
checks a line met again once (docs/performance.md).

Usage:  .venv/bin/python bench/load.py                # 1,000, 5,000, 10,000 VMs; ~3 min
        .venv/bin/python bench/load.py --quick        # 1,000 VMs
        .venv/bin/python bench/load.py --no-before    # only the current loader
        .venv/bin/python bench/load.py --profile      # + cProfile of the largest load
        .venv/bin/python bench/load.py --distinct     # every rule line different
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import synth

TARGET_VMS, TARGET_SECONDS = 10_000, 5.0


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(path: str, before: bool, profile: bool) -> dict:
    """One load in this (fresh) process."""
    from zonewall.policy import source
    from zonewall.policy.loader import load_policy

    if before:
        source.read_plain = lambda text, display: None  # the full reader, as before
        import zonewall.policy.loader as loader

        loader.load_policy = loader.load_policy.__wrapped__  # type: ignore[attr-defined]  # the collector runs
        load_policy = loader.load_policy
    rss_before = rss_mb()
    profiler = cProfile.Profile() if profile else None
    started, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    policy = load_policy(path)
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    gc.collect()
    out = {
        "load_s": wall,
        "cpu_s": cpu,
        "rss_mb": rss_mb(),
        "rss_before_mb": rss_before,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vms": len(policy.doc.vms),
        "rules": len(policy.rules),
    }
    if profiler:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(25)
        out["profile"] = text.getvalue()
    return out


def run_child(path: Path, before: bool, profile: bool = False) -> dict:
    argv = [sys.executable, __file__, "--child", str(path)] + (["--before"] if before else []) + (["--profile"] if profile else [])
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def distinct_rule_lines(text: str) -> str:
    """Each one-line rule (`- {...}`) given a comment of its own."""
    lines = text.split("\n")
    count = 0
    for index, line in enumerate(lines):
        if line.lstrip(" ").startswith("- {") and line.endswith("}"):
            lines[index] = f"{line[:-1]}, comment: c{count}}}"
            count += 1
    return "\n".join(lines)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 VMs only")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--repeats", type=int, default=3, help="loads per size (median reported)")
    parser.add_argument("--no-before", action="store_true", help="skip the loads the way they were before")
    parser.add_argument("--profile", action="store_true", help="cProfile one load of the largest size")
    parser.add_argument("--distinct", action="store_true", help="every rule line different (a comment added to each)")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--before", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.before, args.profile)))
        return 0
    sizes = args.sizes or ([1000] if args.quick else [1000, 5000, 10000])
    print(f"# zonewall policy load benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  python {platform.python_version()}  "
          f"cpus {os.cpu_count()}  load average {loadavg()}" + ("  (every rule line distinct)" if args.distinct else ""), flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zw-bench-load-") as tmp:
        for n in sizes:
            path = Path(tmp) / f"policy-{n}.yaml"
            text = synth.policy_text(n)
            path.write_text(distinct_rule_lines(text) if args.distinct else text)
            runs = [run_child(path, before=False) for _ in range(args.repeats)]
            before = [] if args.no_before else [run_child(path, before=True)]
            row = {"vms": n, "bytes": path.stat().st_size, "runs": runs, "before": before}
            rows.append(row)
            median = sorted(runs, key=lambda r: r["load_s"])[len(runs) // 2]
            loads = ", ".join(f"{r['load_s']:.2f}" for r in runs)
            print(f"#  {n:>6} VMs: load {loads} s (CPU {median['cpu_s']:.2f} s), "
                  f"RSS {median['rss_mb']:.0f} MB"
                  + (f"; before: {before[0]['load_s']:.2f} s, RSS {before[0]['rss_mb']:.0f} MB" if before else "")
                  + f"  load average {loadavg()}", flush=True)
            if args.profile and n == max(sizes):
                row["profile"] = run_child(path, before=False, profile=True)["profile"]
    print()
    head = ["VMs", "policy", "rules", "load s (median)", "CPU s", "RSS after load", "peak RSS", "before: load s", "before: RSS", "speed-up"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        runs = sorted(row["runs"], key=lambda r: r["load_s"])
        m = runs[len(runs) // 2]
        b = row["before"][0] if row["before"] else None
        cells = [
            f"{row['vms']:,}", f"{row['bytes'] / 2**20:.1f} MB", f"{m['rules']:,}", f"{m['load_s']:.2f}", f"{m['cpu_s']:.2f}",
            f"{m['rss_mb']:.0f} MB", f"{m['peak_mb']:.0f} MB",
            f"{b['load_s']:.2f}" if b else "-", f"{b['rss_mb']:.0f} MB" if b else "-", f"{b['load_s'] / m['load_s']:.1f}x" if b else "-",
        ]
        print("| " + " | ".join(cells) + " |")
    big = [r for r in rows if r["vms"] == TARGET_VMS]
    if big:
        m = sorted(big[0]["runs"], key=lambda r: r["load_s"])[len(big[0]["runs"]) // 2]
        print(f"\nTarget: {TARGET_VMS:,} VMs load <= {TARGET_SECONDS} s: {'MET' if m['load_s'] <= TARGET_SECONDS else 'MISSED'} "
              f"({m['load_s']:.2f} s wall, {m['cpu_s']:.2f} s CPU)")
    print(f"load average at the end {loadavg()}")
    for row in rows:
        if "profile" in row:
            print(f"\n## cProfile of one load, {row['vms']:,} VMs\n\n{row['profile']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
