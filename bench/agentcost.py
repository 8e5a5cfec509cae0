#!/usr/bin/env python3
"""What one change costs an agent: its node's documents against the whole policy,
and a running agent taking one-rule changes as deltas.

For each size (synthetic policies of bench/synth.py):

* documents - the documents of node1 as the controller scopes them (policy/scope.py)
  and the whole policy are each loaded and compiled for node1 in a fresh
  interpreter, side by side: CPU seconds, peak RSS, the bytes of the documents. The
  two rulesets are checked equal.
* agent (as root, `--agent`) - an agent's Enforcer (zonewall/agent/enforcer.py) with
  a real libnftables backend in a fresh namespace, in a fresh interpreter that
  imports what `zonewall agent` imports: the first apply of node1's documents, then
  `--changes` one-rule changes (a port of a node1 VM's rule, in place; with `--kind
  group`, a member added to one of the groups its rules name, in turn) received as
  the controller's line delta and handled as the agent's watcher and main loop do
  (delta applied, content hash checked, enforced, libnftables' cache released, garbage collected and trimmed). Each change
  is timed from the delta's arrival to the rule read back from the kernel: wall and
  CPU seconds. Two agents side by side: `incremental` (this code: the change is
  validated from the policy parsed last) and `whole` (the documents loaded whole on
  every change, as before issue 14's agent work). The kernel of each then holds the
  ruleset a whole compile of the final documents gives (checked). RSS is the
  agent's only process (libnftables runs in it); VmRSS after the first apply and
  after the last change, VmHWM the peak. Then a minute of an idle agent's periodic
  work: 12 drift checks and 12 counter readings (`incremental`: over netlink, `whole`:
  libnftables' listing as before), CPU, and the RSS after it (the observer's reading
  lives in the agent's process too).

Run:
  .venv/bin/python bench/agentcost.py --sizes 1000:20,10000:100
  .venv/bin/python bench/agentcost.py --sizes 10000:100 --agent --changes 30 --no-documents
  .venv/bin/python bench/agentcost.py --sizes 10000:100 --agent --changes 30 --no-documents --kind group
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.synth import policy_text
from zonewall.compiler.ir import fingerprint
from zonewall.compiler.node import compile_node
from zonewall.policy.documents import load_documents
from zonewall.policy.scope import Scoper

NODE = "node1"
NS_PREFIX = "zwac-"


def status() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MiB (VmHWM, not ru_maxrss: Linux carries
    ru_maxrss over exec from the forked parent)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {key: round(int(fields[key].split()[0]) / 1024, 1) for key in ("VmRSS", "VmHWM")}


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_child(argv: list[str], stdin: bytes) -> dict[str, Any]:
    process = subprocess.Popen([sys.executable, __file__, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = process.communicate(stdin)
    if process.returncode != 0:
        raise RuntimeError(f"child {argv} failed ({process.returncode})")
    return json.loads(out)


# ---------------------------------------------------------------- documents


def documents_child(node: str) -> None:
    documents = json.loads(sys.stdin.read())
    started = time.process_time()
    ruleset = compile_node(load_documents(documents), node)
    cpu = time.process_time() - started
    print(json.dumps({"cpu_s": round(cpu, 2), "peak_rss_mib": status()["VmHWM"], "fingerprint": fingerprint(ruleset)}))


def bench_documents(vms: int, nodes: int, whole: dict[str, str], scoped: dict[str, str]) -> None:
    results = {what: run_child(["--child", NODE], json.dumps(documents).encode()) for what, documents in (("node's own", scoped), ("whole policy", whole))}
    assert results["node's own"]["fingerprint"] == results["whole policy"]["fingerprint"], "the node's documents compile to another ruleset"
    for what, documents in (("node's own", scoped), ("whole policy", whole)):
        r = results[what]
        print(f"| {vms:,} / {nodes} | {what} | {sum(len(t) for t in documents.values()):,} | {r['cpu_s']} | {r['peak_rss_mib']} |", flush=True)


# ---------------------------------------------------------------- a running agent


def edited(documents: dict[str, str], vms: list[str], step: int) -> dict[str, str]:
    """One rule of one of `vms` (in turn) edited in place: the first `tcp: N}` port
    of its rules becomes another (the line count stays, as an operator's port edit)."""
    name, text = next(iter(documents.items()))
    vm = vms[step % len(vms)]
    at = text.index(f"\n  {vm}:\n")
    end = text.find("\n  vm", at + 3)
    match = re.compile(r"tcp: (\d+)\}").search(text, at, end if end > 0 else len(text))
    assert match is not None, f"{vm} has no `tcp: N}}` rule"
    port = 20000 + (int(match.group(1)) + step + 1) % 20000
    return {**documents, name: text[: match.start(1)] + str(port) + text[match.end(1) :]}


GROUP_LINE = re.compile(r"^  (g\d+): \[(.*)\]$", re.M)


def regrouped(base: dict[str, str], documents: dict[str, str], step: int) -> dict[str, str]:
    """One group's member line (of the synthetic groups `g<k>`, which node1's rules
    name, in turn) written as in `base` with one more member: a change of that one
    line, as an operator's edit of a group (the agent's documents hold every group)."""
    name, text = next(iter(documents.items()))
    lines = GROUP_LINE.findall(base[name])
    group, members = lines[step % len(lines)]
    start = text.index(f"\n  {group}: [") + 1
    end = text.index("\n", start)
    return {**documents, name: text[:start] + f"  {group}: [{members}, 198.51.100.{step % 250 + 1}]" + text[end:]}


def agent_child(mode: str, netns: str) -> None:
    import zonewall.cli  # noqa: F401 - what `zonewall agent` has imported when it runs
    from zonewall.agent import daemon  # noqa: F401
    from zonewall.agent.enforcer import Desired, Enforcer
    from zonewall.agent.memory import release_freed_memory
    from zonewall.agent.state import StateStore
    from zonewall.dataplane.backend import LibNftBackend
    from zonewall.policy.delta import apply_delta
    from zonewall.policy.documents import content_hash

    imported = status()["VmRSS"]
    given = json.loads(sys.stdin.read())  # what the controller sends: the node's documents, then deltas
    documents: dict[str, str] = given["documents"]
    deltas, hashes = given["deltas"], given["hashes"]
    del given
    if mode == "whole":  # every change loaded whole, as before the agent kept its parsed policy
        Enforcer.policy_of = lambda self, documents: load_documents(documents)  # type: ignore[method-assign]
    out: dict[str, Any] = {"imported_rss": imported, "wall": [], "cpu": [], "modes": []}
    with tempfile.TemporaryDirectory(prefix="zw-agentcost-") as tmp, LibNftBackend(netns) as backend:
        enforcer = Enforcer(backend, NODE, StateStore(Path(tmp)), discover=lambda policy, node: {}, timezone=lambda: "UTC")
        wall, cpu = time.perf_counter(), time.process_time()
        enforcer.enforce(Desired(1, documents, hashes[0]))
        backend.release_cache()
        release_freed_memory(everything=True)
        out["first"] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        out["first_rss"] = status()["VmRSS"]
        del documents  # the agent holds only what it applied
        for step, delta in enumerate(deltas, start=1):
            wall, cpu = time.perf_counter(), time.process_time()
            assert enforcer.state is not None
            new = apply_delta(enforcer.state.documents, delta)  # the watcher
            if content_hash(new) != hashes[step]:
                raise RuntimeError("the delta does not give the new documents")
            whole = enforcer.loads["whole"]
            result = enforcer.enforce(Desired(step + 1, new, hashes[step]))  # the main loop
            backend.release_cache()
            release_freed_memory(everything=mode == "whole" or enforcer.loads["whole"] != whole)  # as the daemon does
            out["wall"].append(time.perf_counter() - wall)
            out["cpu"].append(time.process_time() - cpu)
            out["modes"].append(result.mode)
        out["rss"] = status()
        out["loads"] = dict(enforcer.loads)
        out["idle"] = idle_minute(enforcer, netns, mode)
        out["idle_rss"] = status()
        assert enforcer.state is not None and enforcer.ruleset is not None
        expected = compile_node(load_documents(enforcer.state.documents), NODE, timezone="UTC")
        out["equal"] = enforcer.ruleset == expected and result.fingerprint == fingerprint(expected)
    print(json.dumps(out))


def idle_minute(enforcer: Any, netns: str, mode: str) -> dict[str, float]:
    """CPU seconds of a minute of an idle agent's periodic work: 12 drift checks and 12
    counter readings (every 5 s each, agent/daemon.py and agent/observe.py). `incremental`
    reads counters over netlink (dataplane/rulecounters.py), `whole` as before, through
    a second libnftables context's listing of both tables."""
    from zonewall.dataplane.backend import LibNftBackend
    from zonewall.dataplane.counters import read_counters
    from zonewall.dataplane.rulecounters import CounterReader

    started = time.process_time()
    for _ in range(12):
        assert enforcer.verify()
    verify = time.process_time() - started
    if mode == "incremental":
        reader = CounterReader(netns)
        started = time.process_time()
        for _ in range(12):
            reader.read()
        reader.close()
    else:
        with LibNftBackend(netns) as backend:
            started = time.process_time()
            for _ in range(12):
                read_counters(backend)
    return {"verify": verify, "counters": time.process_time() - started}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def controller_side(scoped: dict[str, str], changes: int, kind: str = "vm") -> bytes:
    """The node's documents and `changes` one-rule edits (`kind` vm) or group member
    changes (`kind` group) as the controller sends them (line deltas, with the content
    hash of each new set), made before the agents run."""
    from zonewall.policy.delta import make_delta
    from zonewall.policy.documents import content_hash

    vms = [vm for vm, spec in load_documents(scoped).doc.vms.items() if spec.host == NODE and spec.rules]
    texts = [scoped]
    for step in range(changes):
        texts.append(edited(texts[-1], vms, step) if kind == "vm" else regrouped(scoped, texts[-1], step))
    deltas = [make_delta(a, b) for a, b in zip(texts, texts[1:], strict=False)]
    return json.dumps({"documents": scoped, "deltas": deltas, "hashes": [content_hash(t) for t in texts]}).encode()


def bench_agent(vms: int, nodes: int, scoped: dict[str, str], changes: int, kind: str = "vm") -> None:
    from zonewall.lab import netns

    given = controller_side(scoped, changes, kind)

    prefix = f"{NS_PREFIX}{os.getpid()}-"
    results: dict[str, dict[str, Any]] = {}
    try:
        for mode in ("incremental", "whole"):
            name = f"{prefix}{mode[:3]}"
            netns.create_netns(name)
            started = loadavg()
            results[mode] = run_child(["--agent-child", mode, name], given)
            results[mode]["load"] = f"{started} -> {loadavg()}"
            netns.delete_netns(name)
    finally:
        netns.delete_all(prefix)
    for mode, r in results.items():
        if not r["equal"] or set(r["modes"]) != {"incremental"}:
            raise RuntimeError(f"{mode}: the agent's kernel does not hold the whole compile's ruleset ({set(r['modes'])})")
        ms = {key: [1000 * v for v in r[key]] for key in ("wall", "cpu")}
        print(f"| {vms:,} / {nodes} | {mode} | {len(r['wall'])} | {statistics.median(ms['wall']):.0f} / {percentile(ms['wall'], 0.99):.0f} | "
              f"{statistics.median(ms['cpu']):.0f} / {percentile(ms['cpu'], 0.99):.0f} | {1000 * r['first']['wall']:.0f} / {1000 * r['first']['cpu']:.0f} | "
              f"{r['imported_rss']:.0f} | {r['first_rss']:.0f} | {r['rss']['VmRSS']:.0f} | {r['rss']['VmHWM']:.0f} | "
              f"{', '.join(f'{k} {v}' for k, v in sorted(r['loads'].items()))} | {1000 * r['idle']['verify']:.0f} + {1000 * r['idle']['counters']:.0f} | "
              f"{r['idle_rss']['VmRSS']:.0f} | {r['load']} |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000:20,10000:100", help="VMs:nodes, comma separated")
    parser.add_argument("--agent", action="store_true", help="also run agents taking one-rule deltas (root: network namespaces)")
    parser.add_argument("--changes", type=int, default=30, help="one-rule changes per agent")
    parser.add_argument("--no-documents", action="store_true", help="skip the documents table")
    parser.add_argument("--kind", choices=["vm", "group"], default="vm", help="the agents' changes: a VM rule's port, or a group's member line")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--agent-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        documents_child(args.child)
        return 0
    if args.agent_child:
        mode, name = args.agent_child
        agent_child(mode, name)
        return 0
    sizes = [tuple(int(part) for part in size.split(":")) for size in args.sizes.split(",")]
    print(f"# agentcost {time.strftime('%Y-%m-%d %H:%M:%S')}  load average {loadavg()}", flush=True)
    scoped_by_size = {}
    for vms, nodes in sizes:
        whole = {"policy.yaml": policy_text(vms, nodes=nodes)}
        policy = load_documents(whole)
        scoped_by_size[(vms, nodes)] = (whole, Scoper(whole, {name: vm.host for name, vm in policy.doc.vms.items()}).scoped(NODE))
        del policy
    if not args.no_documents:
        print()
        print("| VMs / nodes | documents | bytes | load + compile CPU s | child peak RSS MiB |")
        print("|---|---|---|---|---|")
        for (vms, nodes), (whole, scoped) in scoped_by_size.items():
            bench_documents(vms, nodes, whole, scoped)
    if args.agent:
        print()
        what = "One-rule changes" if args.kind == "vm" else "Group member changes"
        print(f"{what} received as deltas by an agent (delta arrived -> rule read back from the kernel):")
        print()
        print("| VMs / nodes | agent | changes | wall ms p50 / p99 | CPU ms p50 / p99 | first apply wall / CPU ms | RSS MiB imported | after first apply | after the changes | peak | policies loaded | idle minute CPU ms: drift checks + counter readings | RSS MiB after it | load average |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for (vms, nodes), (_whole, scoped) in scoped_by_size.items():
            bench_agent(vms, nodes, scoped, args.changes, args.kind)
    print(f"(parent peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; load average {loadavg()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
