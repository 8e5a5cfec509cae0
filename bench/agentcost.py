#!/usr/bin/env python3
"""What one change costs an agent: its node's documents against the whole policy.

For each size (synthetic policies of bench/synth.py), the documents of node1 as the
controller scopes them (policy/scope.py) and the whole policy are each loaded
and compiled for node1 in a fresh interpreter, side by side in one run: CPU
seconds, its peak RSS (what an agent holding that state needs, with the interpreter), and the bytes of
the documents. The two rulesets are checked equal. Run:
  .venv/bin/python bench/agentcost.py --sizes 1000:20,10000:100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synth import policy_text
from zonewall.compiler.ir import fingerprint
from zonewall.compiler.node import compile_node
from zonewall.policy.documents import load_documents
from zonewall.policy.scope import Scoper


def in_child(documents: dict[str, str], node: str) -> dict[str, float | str]:
    """Load and compile in a fresh interpreter: CPU seconds, peak RSS MiB, ruleset fingerprint."""
    process = subprocess.Popen([sys.executable, __file__, "--child", node], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = process.communicate(json.dumps(documents).encode())
    return json.loads(out)


def child(node: str) -> None:
    documents = json.loads(sys.stdin.read())
    started = time.process_time()
    ruleset = compile_node(load_documents(documents), node)
    cpu = time.process_time() - started
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked parent
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    peak = int(status["VmHWM"].split()[0]) / 1024
    print(json.dumps({"cpu_s": round(cpu, 2), "peak_rss_mib": round(peak, 1), "fingerprint": fingerprint(ruleset)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000:20,10000:100", help="VMs:nodes, comma separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    print("| VMs / nodes | documents | bytes | load + compile CPU s | child peak RSS MiB |")
    print("|---|---|---|---|---|")
    for size in args.sizes.split(","):
        vms, nodes = (int(part) for part in size.split(":"))
        whole = {"policy.yaml": policy_text(vms, nodes=nodes)}
        policy = load_documents(whole)
        scoped = Scoper(whole, {name: vm.host for name, vm in policy.doc.vms.items()}).scoped("node1")
        del policy
        results = {"node's own": in_child(scoped, "node1"), "whole policy": in_child(whole, "node1")}
        assert results["node's own"]["fingerprint"] == results["whole policy"]["fingerprint"], "the node's documents compile to another ruleset"
        for what, documents in (("node's own", scoped), ("whole policy", whole)):
            r = results[what]
            print(f"| {vms:,} / {nodes} | {what} | {sum(len(t) for t in documents.values()):,} | {r['cpu_s']} | {r['peak_rss_mib']} |", flush=True)
    print(f"(parent peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
