#!/usr/bin/env python3
"""Apply benchmark: a node's first full apply against `nft -f` of the same ruleset, and
the incremental apply of a one-VM change.

For each size (guests on one node, 20 rules each, bench/synth.py), in rounds that
alternate which of the two goes first:

* nft -f  - `ip netns exec NS nft -f FILE` of the ruleset rendered as nft text
            (compiler/render.py), into a fresh namespace: what an operator would time;
* apply   - `apply_ruleset(LibNftBackend(NS), ruleset)` into another fresh namespace:
            snapshot, the one JSON transaction, readback and verification, digest,
            fingerprint (the ruleset is compiled beforehand, not timed);
* ratio   - apply / nft -f of the same round; the table gives the median.

The two namespaces then hold the same ruleset (checked: the same libnftables listing,
handles and counters aside). On the largest node, one VM's rule is changed (`vm7`,
`tcp: 25` -> `26` and back) and applied incrementally: with `seen` (the view the
previous apply returned, as the agent passes it) and without it (the kernel's
structure is read and compared with `previous`); the fingerprint, which apply makes
only when asked for, is timed on its own (with `seen`, the last apply's encodings are
passed too, as the agent does: only what changed is encoded again).

Needs root (network namespaces `zwa-<pid>-*`, removed on exit, Ctrl-C, SIGTERM or an
error; those of a run killed with -9 are removed by the next run).

Usage:  .venv/bin/python bench/apply.py              # 100, 500, 2,000 guests; ~8 min
        .venv/bin/python bench/apply.py --quick      # 100, 500 guests; ~1 min
        .venv/bin/python bench/apply.py --sizes 200 --rounds 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import synth

from zonewall.compiler.ir import Ruleset, fingerprint
from zonewall.compiler.node import compile_node
from zonewall.compiler.render import render_nft
from zonewall.dataplane.apply import ApplyResult, apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import listing_hash
from zonewall.lab import netns
from zonewall.policy.loader import load_policy_text

NODE = "node1"
NS_PREFIX = "zwa-"
TARGET_RATIO = 1.3
CHANGED_VM, CHANGED_RULE = "vm7", ("action: reject, tcp: 25}", "action: reject, tcp: 26}")


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def counts(ruleset: Ruleset) -> dict[str, int]:
    return {
        "rules": sum(len(c.rules) for t in ruleset.tables for c in t.chains),
        "chains": sum(len(t.chains) for t in ruleset.tables),
        "sets": sum(len(t.sets) for t in ruleset.tables),
        "elements": sum(len(s.elements) for t in ruleset.tables for s in t.sets),
    }


class Timed:
    """Wraps a backend's kernel calls to split the applying thread's time into waiting
    for transactions / readback / listing / ours; "transactions" is the sum of each
    transaction's time from its start to its end (a staged creation encodes and reads
    back while a transaction runs: waited + readback + listing + ours = apply)."""

    def __init__(self, backend: LibNftBackend) -> None:
        self.spent: dict[str, float] = {}
        for name, label in (("run_as_text", "waited"), ("read_state", "readback"), ("generation", "readback"), ("list_table", "listing")):
            setattr(backend, name, self._wrap(label, getattr(backend, name)))
        if hasattr(backend, "start"):
            backend.start = self._start(backend.start)  # type: ignore[method-assign]  # run() goes through it too
        else:  # code from before 2026-12-05 evening (side-by-side runs): every transaction waited for
            backend.run = self._wrap("transactions", self._wrap("waited", backend.run))  # type: ignore[method-assign]

    def _add(self, label: str, seconds: float) -> None:
        self.spent[label] = self.spent.get(label, 0.0) + seconds

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(label, time.perf_counter() - started)

        return timed

    def _start(self, start: Callable[..., Any]) -> Callable[..., Any]:
        timed = self

        class Waited:
            def __init__(self, pending: Any, started: float) -> None:
                self.pending, self.started = pending, started

            def wait(self) -> None:
                waiting = time.perf_counter()
                try:
                    self.pending.wait()
                finally:
                    ended = time.perf_counter()
                    timed._add("waited", ended - waiting)
                    timed._add("transactions", ended - self.started)

        def started(*args: Any, **kwargs: Any) -> Waited:
            at = time.perf_counter()
            return Waited(start(*args, **kwargs), at)

        return started


class Bench:
    def __init__(self) -> None:
        self.prefix = f"{NS_PREFIX}{os.getpid()}-"
        self.serial = 0

    def namespace(self) -> str:
        self.serial += 1
        name = f"{self.prefix}{self.serial}"
        netns.create_netns(name)
        return name

    def cleanup(self) -> None:
        netns.delete_all(self.prefix)

    @staticmethod
    def remove_stale() -> None:
        for name in netns.list_netns(NS_PREFIX):
            pid = name[len(NS_PREFIX):].split("-")[0]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                netns.delete_netns(name)

    def nft_f(self, path: Path) -> tuple[float, str]:
        ns = self.namespace()
        started = time.perf_counter()
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", str(path)], check=True, capture_output=True, text=True)
        return time.perf_counter() - started, ns

    def apply(self, ruleset: Ruleset) -> tuple[float, dict[str, float], str, LibNftBackend, ApplyResult]:
        ns = self.namespace()
        backend = LibNftBackend(ns)
        timed = Timed(backend)
        started = time.perf_counter()
        result = apply_ruleset(backend, ruleset)
        _ = result.fingerprint  # what the CLI and the agent report: part of the apply
        seconds = time.perf_counter() - started
        return seconds, dict(timed.spent), ns, backend, result

    def drop(self, ns: str) -> None:
        netns.delete_netns(ns)


def bench_size(bench: Bench, n: int, rounds: int, workdir: Path, incremental: bool, changes: int) -> dict:
    text = synth.policy_text(n)
    ruleset = compile_node(load_policy_text(text), NODE)
    nft_file = workdir / f"node-{n}.nft"
    nft_file.write_text(render_nft(ruleset))
    runs = []
    for round_number in range(rounds):
        nft_first = round_number % 2 == 0
        if nft_first:
            nft_s, nft_ns = bench.nft_f(nft_file)
        apply_s, phases, apply_ns, backend, result = bench.apply(ruleset)
        if not nft_first:
            nft_s, nft_ns = bench.nft_f(nft_file)
        with LibNftBackend(nft_ns) as reference:
            same = listing_hash(reference, ruleset) == listing_hash(backend, ruleset)
        if not same:
            raise RuntimeError(f"{n} guests: nft -f and apply_ruleset loaded different rulesets")
        runs.append({"nft_s": nft_s, "apply_s": apply_s, "ratio": apply_s / nft_s, "phases": phases, "commands": result.commands, "order": "nft first" if nft_first else "apply first"})
        print(f"#   {n} guests round {round_number + 1}: nft -f {nft_s:.3f}s  apply {apply_s:.3f}s  ratio {apply_s / nft_s:.2f}  "
              + "  ".join(f"{k} {v:.3f}s" for k, v in phases.items()) + f"  load {loadavg()}", flush=True)
        bench.drop(nft_ns)
        if incremental and round_number == rounds - 1:
            row_incremental = bench_incremental(text, ruleset, backend, result, changes)
        backend.close()
        bench.drop(apply_ns)
    row = {
        "guests": n,
        **counts(ruleset),
        "nft_s": statistics.median(r["nft_s"] for r in runs),
        "apply_s": statistics.median(r["apply_s"] for r in runs),
        "ratio": statistics.median(r["ratio"] for r in runs),
        "runs": runs,
    }
    if incremental:
        row["incremental"] = row_incremental
    return row


def bench_incremental(text: str, ruleset: Ruleset, backend: LibNftBackend, first: ApplyResult, changes: int) -> dict:
    lines = text.split("\n")
    start = lines.index(f"  {CHANGED_VM}:")
    at = next(i for i in range(start, start + 40) if CHANGED_RULE[0] in lines[i])
    lines[at] = lines[at].replace(*CHANGED_RULE)
    changed = compile_node(load_policy_text("\n".join(lines)), NODE)
    rulesets = [ruleset, changed]
    timed = Timed(backend)
    out: dict[str, list] = {"seen": [], "no_seen": [], "fingerprint": [], "fingerprint_reused": [], "phases": [], "commands": []}
    view, encodings = first.view, first.encodings
    for step in range(changes):
        previous, new = rulesets[step % 2], rulesets[(step + 1) % 2]
        use_seen = step % 4 < 2  # pairs with and without `seen` (and the last apply's encodings, as the agent passes them)
        timed.spent.clear()
        started = time.perf_counter()
        result = apply_ruleset(backend, new, previous=previous, seen=view if use_seen else None, encodings=encodings if use_seen else None)
        seconds = time.perf_counter() - started
        if result.mode != "incremental":
            raise RuntimeError(f"the one-VM change was applied as {result.mode}: {result.notes}")
        out["seen" if use_seen else "no_seen"].append(seconds)
        if use_seen:
            out["phases"].append(dict(timed.spent))
        out["commands"].append(result.commands)
        started = time.perf_counter()
        _ = result.fingerprint
        out["fingerprint_reused" if use_seen else "fingerprint"].append(time.perf_counter() - started)
        view, encodings = result.view, result.encodings
    started = time.perf_counter()
    fingerprint(changed)
    out["fingerprint_direct"] = [time.perf_counter() - started]
    print(f"#   one-VM change: with seen {statistics.median(out['seen']):.3f}s, without {statistics.median(out['no_seen']):.3f}s, "
          f"fingerprint {statistics.median(out['fingerprint_reused']):.3f}s with encodings, {statistics.median(out['fingerprint']):.3f}s without, "
          f"{out['commands'][0]} commands", flush=True)
    return out


def print_tables(rows: list[dict]) -> None:
    head = ["guests", "nft rules", "chains", "sets+maps", "set elements", "nft -f s (median)", "apply s (median)", "apply / nft -f (median)", "ratios per round", "target <= 1.3"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        ratios = ", ".join(f"{run['ratio']:.2f}" for run in r["runs"])
        met = "met" if r["ratio"] <= TARGET_RATIO else "**missed**"
        print(f"| {r['guests']:,} | {r['rules']:,} | {r['chains']:,} | {r['sets']:,} | {r['elements']:,} | {r['nft_s']:.3f} | {r['apply_s']:.3f} | {r['ratio']:.2f} | {ratios} | {met} |")
    print()
    head = ["guests", "transactions s (start to end)", "waited for them s", "readback s", "listing s", "ours (Python) s", "apply s"]
    print("Where the apply's time went (median round):")
    print()
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        run = sorted(r["runs"], key=lambda x: x["apply_s"])[len(r["runs"]) // 2]
        p = run["phases"]
        ours = run["apply_s"] - p.get("waited", 0) - p.get("readback", 0) - p.get("listing", 0)
        print(f"| {r['guests']:,} | {p.get('transactions', 0):.3f} | {p.get('waited', 0):.3f} | {p.get('readback', 0):.3f} | {p.get('listing', 0):.3f} | {ours:.3f} | {run['apply_s']:.3f} |")
    for r in rows:
        inc = r.get("incremental")
        if not inc:
            continue
        print()
        print(f"Incremental apply of a one-VM change ({CHANGED_VM}: one rule's port), {r['guests']:,}-guest node, {len(inc['seen']) + len(inc['no_seen'])} changes:")
        print()
        phases = inc["phases"][len(inc["phases"]) // 2] if inc["phases"] else {}
        print("| | median s | min s | max s |")
        print("|---|---|---|---|")
        for key, label in (("seen", "apply, with `seen` (the agent's case)"), ("no_seen", "apply, without `seen` (structure read and compared)"),
                           ("fingerprint_reused", "fingerprint afterwards, the last apply's encodings given (the agent's case)"),
                           ("fingerprint", "fingerprint afterwards, every rule encoded (ApplyResult.fingerprint)")):
            values = inc[key]
            print(f"| {label} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
        print()
        print(f"Commands in the transaction: {inc['commands'][0]}; with `seen`, kernel time: "
              + ", ".join(f"{k} {v:.3f}s" for k, v in phases.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 and 500 guests")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=None, help="comma-separated guest counts")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per size (default 5, 3 from 1,000 guests up)")
    parser.add_argument("--changes", type=int, default=8, help="incremental one-VM changes on the largest node")
    parser.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("apply.py needs root (network namespaces)", file=sys.stderr)
        return 2
    sizes = args.sizes or ([100, 500] if args.quick else [100, 500, 2000])

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    Bench.remove_stale()
    bench = Bench()
    rows = []
    print(f"# zonewall apply benchmark  {time.strftime('%Y-%m-%d %H:%M:%S')}  kernel {platform.release()}  "
          f"python {platform.python_version()}  cpus {os.cpu_count()}  load average {loadavg()}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="zw-bench-apply-") as tmp:
            for n in sizes:
                rounds = args.rounds or (5 if n < 1000 else 3)
                rows.append(bench_size(bench, n, rounds, Path(tmp), incremental=n == max(sizes) and args.changes > 0, changes=args.changes))
    finally:
        bench.cleanup()
    print()
    print_tables(rows)
    print()
    print(f"load average at the end {loadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["ratio"] <= TARGET_RATIO for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
