#!/usr/bin/env python3
"""This tree against another git revision, side by side in one run: compile and encode.

For a change to the IR (typed statements, encoding), the numbers that matter are the
10,000-VM compile and the apply path's encoding, before and after. Absolute times
on a shared machine are noisy; a ratio of the two trees measured alternately, each
round in a fresh process, is not. Reported per tree (median of the rounds, CPU time):

* compile  - `compile_node(policy, "node1")` (the policy loaded before the clock starts);
* encode   - `ir.encoded_items(ir.table_body_commands(t))` for every table plus
             `ir.fingerprint` with those bodies: what `dataplane.apply` does to a fresh
             ruleset before libnftables sees it;
* retained - bytes the compiled Ruleset holds (tracemalloc, a separate pass).

Usage:  .venv/bin/python bench/versus.py --base main [--vms 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import gc, json, sys, time, tracemalloc
sys.path.insert(0, sys.argv[1])
from zonewall.compiler import ir
from zonewall.compiler.node import compile_node
from zonewall.policy.loader import load_policy
from zonewall.policy.resolve import Policy
policy = load_policy(sys.argv[2])
gc.collect()
start = time.process_time()
ruleset = compile_node(Policy(policy.doc, policy.source), "node1")
compile_s = time.process_time() - start
start = time.process_time()
bodies = {(t.family, t.name): ir.encoded_items(ir.table_body_commands(t)) for t in ruleset.tables}
digest = ir.fingerprint(ruleset, bodies)
encode_s = time.process_time() - start
del ruleset, bodies
gc.collect()
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
ruleset = compile_node(Policy(policy.doc, policy.source), "node1")
gc.collect()
retained = tracemalloc.get_traced_memory()[0] - before
print(json.dumps({"compile": compile_s, "encode": encode_s, "retained": retained, "fingerprint": digest}))
"""


def extract(revision: str, into: Path) -> Path:
    archive = into / "base.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "base", filter="data")
    return into / "base"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    import synth

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trees = {args.base: extract(args.base, work), "this tree": ROOT}
        policy = work / "policy.yaml"
        policy.write_text(synth.policy_text(args.vms))
        runs: dict[str, list[dict]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():  # alternate, so load changes hit both alike
                out = subprocess.run([sys.executable, "-c", CHILD, str(tree), str(policy)], capture_output=True, text=True,
                                     check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
                runs[name].append(json.loads(out.stdout))
    fingerprints = {name: {r["fingerprint"] for r in rows} for name, rows in runs.items()}
    print(f"# {args.vms} VMs on node1, {args.rounds} rounds, CPU seconds (median); load average {os.getloadavg()[0]:.1f}")
    print(f"{'':>12} {'compile s':>10} {'encode s':>10} {'retained MB':>12}")
    medians = {name: {k: statistics.median(r[k] for r in rows) for k in ("compile", "encode", "retained")} for name, rows in runs.items()}
    for name, m in medians.items():
        print(f"{name:>12} {m['compile']:>10.2f} {m['encode']:>10.2f} {m['retained'] / 1e6:>12.1f}")
    base, new = medians[args.base], medians["this tree"]
    print(f"{'ratio':>12} {new['compile'] / base['compile']:>10.2f} {new['encode'] / base['encode']:>10.2f} "
          f"{new['retained'] / base['retained']:>12.2f}")
    same = fingerprints[args.base] == fingerprints["this tree"] and len(fingerprints["this tree"]) == 1
    print("same ruleset fingerprint in both trees:", "yes" if same else "NO")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
