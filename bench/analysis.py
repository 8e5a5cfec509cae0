#!/usr/bin/env python3
"""Analyzer benchmark: trace, reach, diff and lint on a synthetic policy.

The policy is bench/synth.py's with --vms VMs (default 10,000) in --zones zones
(default 50) over --nodes hosts (default 2), 20 rules per VM. Measured, each in one
run of this script:

* load    - `load_policy_text(text)` of the base policy (not an analyzer target, but
            it is what every CLI call pays first), and of the three edited copies
            the diff needs;
* analyzer - `Analyzer(policy)` construction;
* trace   - `trace(analyzer, src, dst, flow)`:
            cold: the first trace on a fresh policy (`fresh()`) + `Analyzer` (what
            one `zonewall trace` call does after loading), median of --repeat fresh
            analyzers; for vm:A -> vm:B tcp/443, outside -> vm:A tcp/22 (dropped) and
            an admin address -> vm:A tcp/22 (accepted);
            warm: the same trace repeated on that analyzer (chains memoised);
            new Analyzer, Policy caches warm: a fresh Analyzer on a Policy that has
            served before (separates the Policy's own caches from the analyzer's);
            other flows: --flows random VM pairs/services on the warm analyzer, each
            touching VMs whose chains are not built yet, then all of them again;
* reach   - `reach(analyzer, "vm:A", "to"|"from")`, cold (fresh Policy + Analyzer
            per run), new Analyzer on a used Policy, and warm (repeated on one
            analyzer); the peers' own rules are found through the policy's index
            (policy/ownrules.py), which the load builds (its cost is printed with
            the load); `--reach-scan`: cold again with every VM's rules scanned
            instead (`reach(..., indexed=False)`, the way before 2026-12-05);
* lint    - `lint(Analyzer(policy))` on a fresh Policy (`fresh()`, outside the timing as
            for trace and reach: before 2026-12-04 night it was inside, ~3-4 s of the
            figure), when zonewall.analysis.lint is importable (else "not available");
            with the default processes (one per CPU, analysis/lint/shards.py) and with
            one (`jobs=1`), alternately; the two must find the same;
* diff    - `diff_policies(old, new)` on fresh `Policy(doc, source)` objects, for
            (a) one VM rule changed (VM A's rule 17, accepting tcp PORT from an IPv6
            prefix outside the cluster: PORT + 1), (b) one zone rule changed (the
            ports of rule 2 of VM A's zone; every VM of the zone is affected),
            (c) identical policies (loaded twice from the same text), (d) VM A's
            rule 4 (tcp PORT from vm:PEER) on PORT + 1: visible only if PEER's own
            out chain lets the flow out (at 10,000 VMs it does, at 500 it does not);
            (e) a rule added at the top of VM A's rules (a line inserted: every later
            rule's derived id moves); checked: (a), (b) and (e) report differences,
            (c) reports identical, (d) is reported either way. (a), (b), (d), (e) are
            edits of VM or zone rules alone, the shape of a commit: `rule_edits`;
* memory  - peak RSS (ru_maxrss) and current RSS after each phase.

VM A is vm17, VM B vm4242 (both modulo --vms). Python's cyclic garbage collector
stays on (as in the CLI); `gc.collect()` runs before every timed call.

Usage:  .venv/bin/python bench/analysis.py              # 10,000 VMs, 50 zones; a few minutes
        .venv/bin/python bench/analysis.py --vms 500    # smoke test, ~45 s
        .venv/bin/python bench/analysis.py --profile reach-to,diff-zone   # + cProfile of those
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
import random
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import synth

from zonewall.analysis.diff import diff_policies
from zonewall.analysis.engine import Analyzer
from zonewall.analysis.reach import reach
from zonewall.analysis.trace import FlowSpec, trace
from zonewall.policy.loader import load_policy_text
from zonewall.policy.ownrules import build_own_rule_indexes
from zonewall.policy.resolve import Checker, Policy

try:  # being written concurrently; measured when it exists
    from zonewall.analysis.lint import lint  # type: ignore[attr-defined]
    from zonewall.analysis.lint.linter import default_jobs
    from zonewall.analysis.lint.shards import plan_shards
except ImportError as exc:  # pragma: no cover - depends on the tree
    lint = None  # type: ignore[assignment]
    LINT_MISSING = str(exc)
else:
    LINT_MISSING = ""

TARGETS = {"trace": 0.010, "reach": 0.500, "diff": 1.0, "lint": 5.0}  # seconds, from issue 13
VM_A, VM_B = 17, 4242
CHANGED_VM_RULE = 17  # `{direction: in, action: accept, from: "fd00:99:XX::/48", tcp: PORT}`: from outside
PEER_VM_RULE = 4  # `{direction: in, action: accept, from: vm:PEER, tcp: PORT}`: the peer's out chain decides first
ADDED_RULE = "{direction: in, action: accept, from: group:monitoring, tcp: 9443}"  # (e): what a commit through the API adds
CHANGED_ZONE_RULE = 2  # `{direction: in, action: accept, from: group:..., tcp: [1000+k, 2000+k]}`
PROFILE_PHASES = ("trace", "reach-to", "reach-from", "lint", "diff-vm", "diff-zone", "diff-identical", "diff-peer", "diff-add")


# -- helpers ----------------------------------------------------------------------


class Seconds(float):
    """Wall-clock seconds of one call; `.cpu`: the process CPU seconds it used
    (time.process_time; in the Firecracker test VM it sometimes reported more CPU
    than wall-clock time for this single-threaded process, but on a machine loaded
    by other work it is the steadier figure, so the table shows its median too)."""

    cpu: float


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Seconds, Any]:
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    value = fn(*args, **kwargs)
    wall = Seconds(time.perf_counter() - t0)
    wall.cpu = time.process_time() - c0
    return wall, value


def fresh(policy: Policy) -> Policy:
    """The same document exactly as `load_policy` returns it (its checks run again,
    ~4 s at 10,000 VMs, outside every timing): the whole-policy indexes and what the
    checks resolved are built, every analyzer cache is cold."""
    checker = Checker(policy.doc, policy.source)
    assert not checker.run()
    copy = checker.policy
    copy.build_indexes()
    return copy


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) in MB."""
    current = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
    return current, max(current, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


class Results:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.memory: list[tuple[str, float, float]] = []
        self.notes: list[str] = []

    def add(self, phase: str, case: str, runs: list[Seconds], target: float | None, detail: str = "") -> None:
        cpu = [getattr(r, "cpu", r) for r in runs]
        row = {"phase": phase, "case": case, "runs": runs, "median": statistics.median(runs), "max": max(runs),
               "cpu_runs": cpu, "cpu_median": statistics.median(cpu), "target": target, "detail": detail}
        self.rows.append(row)
        verdict = "" if target is None else ("  ok" if row["median"] <= target else "  MISSES")
        print(f"#  {phase:<8} {case:<48} median {ms(row['median']):>10}  max {ms(row['max']):>10}{verdict}  {detail}", flush=True)

    def mem(self, after: str) -> None:
        current, peak = rss_mb()
        self.memory.append((after, current, peak))
        print(f"#  memory after {after}: RSS {current:,.0f} MB, peak {peak:,.0f} MB", flush=True)


# -- the policies -----------------------------------------------------------------


def vm_rule_line(text: str, vm: str, position: int) -> str:
    lines = text.splitlines()
    start = lines.index(f"  {vm}:")
    rules = lines.index("    rules:", start) + 1
    return lines[rules + position].removeprefix("      - ")


def vm_rule_edit(args: argparse.Namespace, text: str, position: int) -> tuple[str, str]:
    """The policy with VM A's rule `position` on tcp port + 1, and what changed."""
    vm_a = VM_A % args.vms
    old_rule = vm_rule_line(text, synth.vm_name(vm_a), position)
    match = re.fullmatch(r"(.*tcp: )(\d+)(\})", old_rule)
    assert match, f"unexpected rule {position} of vm{vm_a}: {old_rule}"
    new_rule = f"{match[1]}{int(match[2]) + 1}{match[3]}"
    vm_text = synth.policy_text(args.vms, nodes=args.nodes, zones=args.zones, seed=args.seed,
                                overrides={vm_a: {position: new_rule}})
    assert vm_text.count("\n") == text.count("\n") and vm_text != text
    return vm_text, f"vm{vm_a} rule {position}: `{old_rule}` -> tcp {int(match[2]) + 1}"


def vm_rule_insert(args: argparse.Namespace, text: str) -> tuple[str, str]:
    """The policy with a rule added at the top of VM A's rules (every later line,
    so every later rule's derived id, moves down one)."""
    vm = synth.vm_name(VM_A % args.vms)
    lines = text.splitlines(keepends=True)
    at = lines.index("    rules:\n", lines.index(f"  {vm}:\n")) + 1
    lines.insert(at, f"      - {ADDED_RULE}\n")
    return "".join(lines), f"{vm}: `{ADDED_RULE}` added before its rule 0"


def zone_rule_edit(args: argparse.Namespace, text: str) -> tuple[str, str]:
    """The policy with rule 2 of VM A's zone on other ports, and what changed."""
    vm_a = VM_A % args.vms
    zone = vm_a % args.zones
    old_ports, new_ports = f"tcp: [{1000 + zone}, {2000 + zone}]", f"tcp: [{1000 + zone}, {2500 + zone}]"
    assert text.count(old_ports) == 1, old_ports
    zone_text = text.replace(old_ports, new_ports)
    return zone_text, f"zone z{zone} rule {CHANGED_ZONE_RULE}: `{old_ports}` -> `{new_ports}` ({args.vms // args.zones} VMs in the zone)"


# -- phases -----------------------------------------------------------------------


def bench_trace(base: Policy, args: argparse.Namespace, res: Results) -> None:
    a, b = f"vm:vm{VM_A % args.vms}", f"vm:vm{VM_B % args.vms}"
    flows = [
        (f"{a} -> {b} tcp/443", a, b, FlowSpec(proto="tcp", port=443)),
        (f"outside:203.0.113.10 -> {a} tcp/22", "outside:203.0.113.10", a, FlowSpec(proto="tcp", port=22, family=4)),
        (f"outside:192.168.100.50 -> {a} tcp/22", "outside:192.168.100.50", a, FlowSpec(proto="tcp", port=22, family=4)),
    ]
    for label, src, dst, flow in flows:
        cold, warm, verdict = [], [], ""
        analyzer = None
        for _ in range(args.repeat):
            analyzer = Analyzer(fresh(base))
            seconds, result = timed(trace, analyzer, src, dst, flow)
            cold.append(seconds)
            verdict = result.verdict
        for _ in range(args.repeat):
            seconds, _r = timed(trace, analyzer, src, dst, flow)
            warm.append(seconds)
        res.add("trace", f"cold: {label}", cold, TARGETS["trace"], f"verdict {verdict}")
        res.add("trace", f"warm: {label}", warm, TARGETS["trace"])
        if label == flows[0][0]:
            # a fresh Analyzer on a Policy whose own caches (rules with ids and
            # positions, zone/group address sets) are already filled: the analyzer's part
            trace(Analyzer(base), src, dst, flow)  # fills base's caches
            runs = [timed(trace, Analyzer(base), src, dst, flow)[0] for _ in range(args.repeat)]
            res.add("trace", f"new Analyzer, Policy caches warm: {label}", runs, TARGETS["trace"])
    # other flows on the (now warm) analyzer: new VM pairs, their chains not built yet
    rng = random.Random(args.seed)
    services = [FlowSpec(proto="tcp", port=443), FlowSpec(proto="tcp", port=22), FlowSpec(proto="tcp", port=5432),
                FlowSpec(proto="udp", port=53), FlowSpec(proto="tcp", port=8080), FlowSpec(proto="icmp")]
    pairs = [(f"vm:vm{rng.randrange(args.vms)}", f"vm:vm{rng.randrange(args.vms)}", rng.choice(services)) for _ in range(args.flows)]
    first, again, verdicts = [], [], {}
    for src, dst, flow in pairs:
        seconds, result = timed(trace, analyzer, src, dst, flow)
        first.append(seconds)
        verdicts[result.verdict] = verdicts.get(result.verdict, 0) + 1
    for src, dst, flow in pairs:
        seconds, _r = timed(trace, analyzer, src, dst, flow)
        again.append(seconds)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(verdicts.items()))
    res.add("trace", f"{args.flows} other VM pairs, first time", first, TARGETS["trace"], summary)
    res.add("trace", f"{args.flows} other VM pairs, again", again, TARGETS["trace"])


def bench_reach(base: Policy, args: argparse.Namespace, res: Results) -> None:
    a = f"vm:vm{VM_A % args.vms}"
    for direction in ("to", "from"):
        cold, warm, rows = [], [], 0
        analyzer = None
        for _ in range(args.repeat):
            analyzer = Analyzer(fresh(base))
            seconds, result = timed(reach, analyzer, a, direction)
            cold.append(seconds)
            rows = sum(len(r.rows) for r in result)
        for _ in range(args.repeat):
            seconds, _r = timed(reach, analyzer, a, direction)
            warm.append(seconds)
        res.add("reach", f"cold: {a} {direction}", cold, TARGETS["reach"], f"{rows} rows")
        if args.reach_scan:  # every VM's rules scanned instead of the index
            scanned = [timed(reach, Analyzer(fresh(base)), a, direction, indexed=False)[0] for _ in range(args.repeat)]
            res.add("reach", f"cold, rules scanned: {a} {direction}", scanned, TARGETS["reach"])
        reach(Analyzer(base), a, direction)  # fills base's caches
        runs = [timed(reach, Analyzer(base), a, direction)[0] for _ in range(args.repeat)]
        res.add("reach", f"new Analyzer, Policy caches warm: {a} {direction}", runs, TARGETS["reach"])
        res.add("reach", f"warm: {a} {direction}", warm, TARGETS["reach"])


def bench_lint(base: Policy, args: argparse.Namespace, res: Results) -> None:
    if lint is None:
        print(f"#  lint     not available ({LINT_MISSING})", flush=True)
        res.notes.append(f"lint: not available ({LINT_MISSING})")
        return
    # the default (one process per CPU: analysis/lint/shards.py) and one process,
    # alternately; both must find the same
    runs: dict[int | None, list[Seconds]] = {None: [], 1: []}
    found: dict[int | None, list[tuple[str, str, str]]] = {}
    findings: list[Any] = []
    for _ in range(args.lint_repeat):
        for jobs in (None, 1):
            policy = fresh(base)
            seconds, report = timed(lambda p, j: lint(Analyzer(p), jobs=j), policy, jobs)
            runs[jobs].append(seconds)
            findings = list(report.findings)
            found[jobs] = [(f.kind, f.rule or f.object or "", f.message) for f in findings]
    if found[None] != found[1]:
        raise SystemExit("lint: the sharded run and the one-process run differ")
    kinds: dict[str, int] = {}
    for finding in findings:
        kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
    detail = f"{len(findings)} findings ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))})"
    shards = len(plan_shards(base, default_jobs()))
    res.add("lint", f"fresh analyzer, whole policy, {shards} processes (the default here)", runs[None], TARGETS["lint"], detail + "; the same as one process's")
    res.add("lint", "fresh analyzer, whole policy, one process (--jobs 1)", runs[1], None)  # reported beside it: the target is the default's
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    res.notes.append(f"lint: peak RSS of a shard's process {child:,.0f} MB (forked from this one, sharing its pages until written)")


def bench_diff(old: Policy, others: dict[str, Policy], what: dict[str, str], args: argparse.Namespace, res: Results) -> None:
    # expected: True = identical, False = differences, None = either (reported only)
    cases = [("vm", "(a) one VM rule changed", False),
             ("zone", "(b) one zone rule changed", False),
             ("same", "(c) identical policies", True),
             ("peer", "(d) one VM rule changed, from a VM peer", None),
             ("add", "(e) one VM rule added", False)]
    for key, label, expect_identical in cases:
        runs, result = [], None
        for _ in range(args.repeat):
            seconds, result = timed(diff_policies, fresh(old), fresh(others[key]))
            runs.append(seconds)
        ok = expect_identical is None or result.identical == expect_identical
        detail = f"{len(result.rows)} rows, identical={result.identical}" + ("" if ok else "  UNEXPECTED")
        if not ok:
            res.notes.append(f"diff {label}: identical={result.identical}, expected {expect_identical}")
        res.add("diff", label, runs, TARGETS["diff"], detail)
        res.notes.append(f"diff {label}: {what[key]}; {len(result.rows)} rows" + "".join(
            f"\n      {r.change}: {', '.join(sorted(r.src))[:70]} -> {', '.join(sorted(r.dst))[:70]} {', '.join(r.services)[:40]} ({r.when})"
            for r in result.rows[:4]))


# -- profiling --------------------------------------------------------------------


def profile(phase: str, base: Policy, others: dict[str, Policy], args: argparse.Namespace, lines: int) -> str:
    a, b = f"vm:vm{VM_A % args.vms}", f"vm:vm{VM_B % args.vms}"
    calls: dict[str, Callable[[], Any]] = {
        "trace": lambda: trace(Analyzer(fresh(base)), a, b, FlowSpec(proto="tcp", port=443)),
        "reach-to": lambda: reach(Analyzer(fresh(base)), a, "to"),
        "reach-from": lambda: reach(Analyzer(fresh(base)), a, "from"),
        "lint": lambda: lint(Analyzer(fresh(base))) if lint is not None else None,
        "diff-vm": lambda: diff_policies(fresh(base), fresh(others["vm"])),
        "diff-zone": lambda: diff_policies(fresh(base), fresh(others["zone"])),
        "diff-identical": lambda: diff_policies(fresh(base), fresh(others["same"])),
        "diff-peer": lambda: diff_policies(fresh(base), fresh(others["peer"])),
        "diff-add": lambda: diff_policies(fresh(base), fresh(others["add"])),
    }
    prof = cProfile.Profile()
    gc.collect()
    prof.enable()
    calls[phase]()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(lines)
    stats.sort_stats("tottime").print_stats(lines)
    return out.getvalue()


# -- output -----------------------------------------------------------------------


def print_tables(res: Results, loads: dict[str, float], args: argparse.Namespace) -> None:
    head = ["phase", "case", "median", "min", "max", "cpu median", "runs", "target", "met", "detail"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in res.rows:
        met = "-" if r["target"] is None else ("yes" if r["median"] <= r["target"] else "**no**")
        print(f"| {r['phase']} | {r['case']} | {ms(r['median'])} | {ms(min(r['runs']))} | {ms(r['max'])} | {ms(r['cpu_median'])} | {len(r['runs'])} | "
              f"{'-' if r['target'] is None else '<= ' + ms(r['target'])} | {met} | {r['detail']} |")
    print()
    print("| memory after | RSS MB | peak RSS MB |")
    print("|---|---|---|")
    for after, current, peak in res.memory:
        print(f"| {after} | {current:,.0f} | {peak:,.0f} |")
    print()
    print("Load (s): " + ", ".join(f"{k} {v:.1f}" for k, v in loads.items()))
    print()
    print(f"Targets (set for 10,000 VMs in 50 zones; here {args.vms:,} VMs in {args.zones} zones; the median wall-clock time is compared):")
    for phase, target in TARGETS.items():
        rows = [r for r in res.rows if r["phase"] == phase and r["target"] is not None]  # (rows reported beside the judged ones have none)
        if not rows:
            print(f"  {phase:<6} <= {ms(target)}: not measured")
            continue
        worst = max(rows, key=lambda r: r["median"])
        verdict = "MEETS" if worst["median"] <= target else "MISSES"
        print(f"  {phase:<6} <= {ms(target)}: {verdict} (slowest: {worst['case']}, {ms(worst['median'])} median)")
    for note in res.notes:
        print(f"  note: {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--zones", type=int, default=50)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5, help="runs per cold/warm timing (median reported)")
    parser.add_argument("--lint-repeat", type=int, default=1)
    parser.add_argument("--flows", type=int, default=20, help="other random VM pairs traced on the warm analyzer")
    parser.add_argument("--reach-scan", action="store_true", help="also time cold reach with every VM's rules scanned (no index)")
    parser.add_argument("--skip", default="", help="comma-separated phases to skip: trace,reach,lint,diff")
    parser.add_argument("--profile", default="", help=f"comma-separated phases to cProfile once (cold): {','.join(PROFILE_PHASES)}")
    parser.add_argument("--profile-lines", type=int, default=30)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    skip = {p for p in args.skip.split(",") if p}
    profiles = [p for p in args.profile.split(",") if p]
    for p in profiles:
        if p not in PROFILE_PHASES:
            parser.error(f"--profile: unknown phase {p!r}")

    print(f"# zonewall analyzer benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  "
          f"kernel {platform.release()}  python {platform.python_version()}  cpus {os.cpu_count()}")
    print(f"# synthetic policy: {args.vms:,} VMs x {synth.RULES_PER_VM} rules, {args.zones} zones x 10 rules, "
          f"{synth.GROUPS} groups, {synth.NETWORKS} dual-stack networks, {args.nodes} hosts; repeat {args.repeat}")
    started, load_at_start = time.perf_counter(), loadavg()
    res = Results()
    res.mem("start")
    text = synth.policy_text(args.vms, nodes=args.nodes, zones=args.zones, seed=args.seed)
    loads: dict[str, float] = {}
    loads["base"], base = timed(load_policy_text, text)
    print(f"#  load     base policy ({len(text):,} bytes): {loads['base']:.1f} s", flush=True)
    index_seconds, _index = timed(build_own_rule_indexes, base)  # again, on its own: what the load spent on it
    print(f"#  of which the index of own rules (both directions): {index_seconds * 1000:.0f} ms ({index_seconds.cpu * 1000:.0f} ms CPU)", flush=True)
    del _index
    res.mem("load")
    seconds, _an = timed(Analyzer, fresh(base))
    res.add("analyzer", "Analyzer(policy) construction", [seconds], None)
    del _an

    if "trace" not in skip:
        bench_trace(base, args, res)
        res.mem("trace")
    if "reach" not in skip:
        bench_reach(base, args, res)
        res.mem("reach")
    if "lint" not in skip:
        bench_lint(base, args, res)
        res.mem("lint")
    others: dict[str, Policy] = {}
    if "diff" not in skip or any(p.startswith("diff") for p in profiles):
        edits = {"vm": vm_rule_edit(args, text, CHANGED_VM_RULE), "zone": zone_rule_edit(args, text),
                 "same": (text, "loaded twice from the same text"), "peer": vm_rule_edit(args, text, PEER_VM_RULE),
                 "add": vm_rule_insert(args, text)}
        what = {key: change for key, (_text, change) in edits.items()}
        for key, (edited, _change) in edits.items():
            loads[key], others[key] = timed(load_policy_text, edited)
        del edits
        print(f"#  load     {len(others)} more policies: {sum(v for k, v in loads.items() if k != 'base'):.1f} s", flush=True)
        res.mem(f"loading {len(others) + 1} policies")
        if "diff" not in skip:
            bench_diff(base, others, what, args, res)
            res.mem("diff")

    print()
    print_tables(res, loads, args)
    print(f"Total {time.perf_counter() - started:.0f} s; load average at start {load_at_start}, at end {loadavg()}")
    for phase in profiles:
        print(f"\n## cProfile: {phase} (cold, {args.vms:,} VMs)\n")
        print(profile(phase, base, others, args, args.profile_lines))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": res.rows, "memory": res.memory, "loads": loads,
                                               "notes": res.notes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
