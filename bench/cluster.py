#!/usr/bin/env python3
"""Cluster benchmark: one-rule changes in a synthetic cluster, controller to kernels.

A synthetic policy (bench/synth.py: --vms VMs x 20 rules on --nodes hosts) runs
under a `zonewall serve` controller on SQLite. The first --real nodes (default 5)
are lab node namespaces (zonewall.lab, no guests: the kernel holds the node's whole
ruleset just the same) with a real `zonewall agent` each; every other node is a
poller thread that speaks the agent protocol (long-poll with `after` and `have`,
applies the delta or takes the documents, checks the content hash, reports its
status), so the controller serves every node as it would in production.

Four kinds of change, --changes each, round robin over the real nodes:
* vm: one rule of a VM of a real node edited in place (its port);
* vm-add: a rule line added to such a VM (every later line, and every later rule's
  default id, moves: every node's documents change, the others' by an empty line);
* zone: one rule of a zone whose VMs live on a real node edited in place;
* group: the member of a group used by such a zone rule replaced (the group is
  named by that zone's rule alone: the nodes not keeping it get the revision number).
Each edit puts a port or address into the kernel that was never there; an
`nft monitor` per real node sees the moment it arrives. Measured per change:
commit latency (PUT /policy sent, its body encoded before, -> answered: validation, the stored revision and
its semantic diff), change -> enforced in the kernel of the real node it affects
(from the PUT being sent; and from the moment the controller published the revision
to that node, as a reader following the node's desired state saw it, i.e. the agent's
share once the controller published it), the bytes each node's answer carried (unaffected
nodes: the revision number alone), and the CPU the change cost the controller and
each real agent (until every node reports it applied: on a shared machine the
CPU seconds hold where wall times do not). At the end: every agent's RSS (and peak).

Results: a table on stdout (and on stderr after each kind, so a run cut short still
reports), JSON with --json FILE. Needs root. The machine is shared: absolute times
are pessimistic; the CPU columns hold. Run (docs/performance.md):
  .venv/bin/python bench/cluster.py --vms 1000 --nodes 20 --changes 30
  .venv/bin/python bench/cluster.py --vms 10000 --nodes 100 --changes 30 --zone-changes 10
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.propagation import KernelWatch, percentiles
from bench.synth import policy_text
from zonewall.agent.client import PROTOCOL
from zonewall.controller.store.db import default_url, open_database
from zonewall.controller.store.tokens import create_token
from zonewall.dataplane.backend import LibNftBackend
from zonewall.lab.cluster import lab_down, lab_up
from zonewall.lab.managed import ManagedLab
from zonewall.policy.delta import apply_delta
from zonewall.policy.documents import content_hash

KINDS = ("vm", "vm-add", "zone", "group")


class NodeWatch(KernelWatch):
    def wait_node(self, node: str, marker: str, timeout: float) -> float | None:
        """When `node`'s kernel first showed `marker` (None: not within `timeout`)."""
        with self._done:
            self._done.wait_for(lambda: (node, marker) in self._seen, timeout=timeout)
            return self._seen.get((node, marker))


def log(text: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def bench_policy(vms: int, nodes: int, real: int) -> str:
    """The synthetic policy plus, for each real node k, a rule `bench-vm` on VM k,
    rules `bench-zone`/`bench-group` in zone zk (whose VMs live on node k+1) and
    the group `benchg{k}` that the latter names; edits change them in place."""
    overrides = {k: {0: f"{{id: bench-vm{k}, direction: in, action: accept, tcp: 20000}}"} for k in range(real)}
    text = policy_text(vms, nodes=nodes, overrides=overrides)
    for k in range(real):
        head = f"  z{k}:\n"
        at = text.index(head) + len(head)
        rules = text.index("    rules:\n", at) + len("    rules:\n")
        text = (text[:rules] + f"      - {{id: bench-zone{k}, direction: in, action: accept, tcp: 30000}}\n"
                f"      - {{id: bench-group{k}, direction: in, action: accept, from: group:benchg{k}, tcp: 40000}}\n" + text[rules:])
        text = text.replace("groups:\n", f"groups:\n  benchg{k}: [198.51.100.1]\n", 1)
    return text


def edit(text: str, kind: str, k: int, n: int) -> tuple[str, str]:
    """The policy with change n of `kind` on real node k, and the kernel's text of it."""
    if kind == "vm":
        pattern, new, marker = rf"(id: bench-vm{k}, direction: in, action: accept, tcp: )\d+", rf"\g<1>{20000 + n}", f"dport {20000 + n} "
    elif kind == "vm-add":  # a rule line added above VM k's bench rule: every later line (and default rule id) moves
        pattern, new, marker = rf"(      - \{{id: bench-vm{k}, )", rf"      - {{direction: in, action: accept, tcp: {50000 + n}}}\n\g<1>", f"dport {50000 + n} "
    elif kind == "zone":
        pattern, new, marker = rf"(id: bench-zone{k}, direction: in, action: accept, tcp: )\d+", rf"\g<1>{30000 + n}", f"dport {30000 + n} "
    else:
        address = f"198.51.100.{n % 250 + 2}" if n % 2 else f"203.0.113.{n % 250 + 2}"
        pattern, new, marker = rf"(  benchg{k}: \[)[0-9.]+\]", rf"\g<1>{address}]", address
    changed, count = re.subn(pattern, new, text)
    assert count == 1, f"{kind} edit of node {k}"
    return changed, marker


@dataclass
class Poller:
    """A simulated node: the agent protocol without a kernel."""

    node: str
    url: str
    token: str
    stop: threading.Event
    revision: int | None = None
    documents: dict[str, str] | None = None
    hash: str | None = None
    answers: list[tuple[int, int, str, float]] = field(default_factory=list)  # (revision, bytes, kind, monotonic)
    errors: list[str] = field(default_factory=list)
    reports: bool = True  # False: a reader following a real node's desired state (when it is published to it)

    def run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {self.token}", "User-Agent": "zonewall-agent/bench"}, timeout=60) as http:
            base = f"{self.url}/api/v1/nodes/{self.node}"
            while not self.stop.is_set():
                params: dict[str, Any] = {"protocol": PROTOCOL, "wait": 5}
                if self.revision is not None:
                    params["after"] = self.revision
                if self.hash is not None:
                    params["have"] = self.hash
                try:
                    response = http.get(base + "/desired", params=params)
                    response.raise_for_status()
                except httpx.HTTPError as exc:
                    self.errors.append(str(exc))
                    self.stop.wait(0.5)
                    continue
                body = response.json()
                if not body["changed"]:
                    continue
                kind = "same" if body.get("same") else "delta" if body.get("delta") else "documents"
                if kind == "delta":
                    assert self.documents is not None
                    documents = apply_delta(self.documents, body["delta"])
                else:
                    documents = self.documents if kind == "same" else body["documents"]
                # `same`: the documents it has, known by their hash, as an agent does
                # (agent/daemon.py); hashing them again cost every poller ~7 ms of this
                # machine's CPU per change at 10,000 VMs, which real nodes spend on their own
                known = kind == "same" and body["content_hash"] == self.hash
                if documents is None or not (known or content_hash(documents) == body["content_hash"]):
                    self.errors.append(f"revision {body['revision']}: documents do not match their hash")
                    self.hash = None
                    continue
                self.answers.append((body["revision"], len(response.content), kind, time.monotonic()))
                self.revision, self.documents, self.hash = body["revision"], documents, body["content_hash"]
                while self.reports and not self.stop.is_set():  # a busy controller may time out: an agent reports again, so does the poller
                    try:
                        http.put(base + "/status", json={"applied_revision": self.revision, "state": "ok"}, headers={"Prefer": "return=minimal"}).raise_for_status()
                        break
                    except httpx.HTTPError as exc:
                        self.errors.append(f"status: {exc}")
                        self.stop.wait(0.5)


class SetWatch:
    """When a node's set first holds an element: a thread reading the set every 10 ms
    from before the change is sent (`nft monitor` does not show the agent's element
    updates). Started before the PUT, so an element enforced while the commit is still
    being answered is seen then, not after the answer (before 2026-12-06 evening the
    set was read only after the answer: a group change's enforcement could never be
    measured as earlier than its commit)."""

    def __init__(self, ns: str, name: str, element: str, timeout: float) -> None:
        self._ns, self._element, self._deadline = ns, element, time.monotonic() + timeout
        self._command = {"nftables": [{"list": {"set": {"family": "inet", "table": "zonewall", "name": name}}}]}
        self._ready, self.seen = threading.Event(), None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        with LibNftBackend(netns=self._ns) as backend:
            self._ready.set()
            while time.monotonic() < self._deadline:
                # one set listed (libnftables fetches only that set), not the whole table
                rc, out, _ = backend._json_cmd(self._command)
                if rc == 0 and self._element in json.dumps(out):
                    self.seen = time.monotonic()
                    return
                time.sleep(0.01)

    def wait(self) -> float | None:
        """When the element was first seen (None: not within the timeout)."""
        self._thread.join()
        return self.seen


def converged(managed: ManagedLab, revision: int, timeout: float) -> None:
    """Until every node reports `revision`, asking twice a second (asking costs the controller CPU too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = managed.api("GET", "/nodes").json()
        if all(n["applied_revision"] == revision for n in nodes if n["in_policy"]):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the nodes did not all apply revision {revision} within {timeout:g}s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--real", type=int, default=5, help="nodes with a real agent in a lab namespace")
    parser.add_argument("--changes", type=int, default=30, help="changes of each kind")
    parser.add_argument("--zone-changes", type=int, help="zone changes, if not --changes: each costs the controller a whole-policy diff")
    parser.add_argument("--kinds", default="vm,zone,group", help="which changes (comma list of vm, vm-add, zone, group)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        log("needs root (network namespaces)")
        return 2
    assert 1 <= args.real <= min(args.nodes, 20), "each real node needs a zone of its own (bench/synth.py has 20)"
    # a `kill` ends the run through the cleanup below (namespaces, controller, agents)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="zonewall-cluster-"))
    text = bench_policy(args.vms, args.nodes, args.real)
    skeleton = work / "skeleton"  # the real nodes without guests: what the lab builds
    skeleton.mkdir()
    host_lines = [line for line in text.splitlines() if re.match(r"  node\d+: ", line)][: args.real]
    (skeleton / "policy.yaml").write_text("version: 1\nhosts:\n" + "\n".join(host_lines) + "\n")
    name = f"bc{os.getpid() % 100000}"
    lab_down(name)
    state = lab_up(str(skeleton), name, apply=False)
    real = sorted(state.nodes)
    managed = ManagedLab(state, work / "controller")
    stop = threading.Event()
    watch: NodeWatch | None = None
    results: dict[str, Any] = {"load_average_start": [round(v, 1) for v in os.getloadavg()], "vms": args.vms, "nodes": args.nodes, "real_agents": len(real), "policy_bytes": len(text)}
    try:
        managed.start()
        sessions = open_database(default_url(managed.data_dir))
        simulated = [f"node{i}" for i in range(1, args.nodes + 1) if f"node{i}" not in state.nodes]
        tokens = {node: create_token(sessions, "agent", node=node)[1] for node in simulated}
        sessions.kw["bind"].dispose()  # type: ignore[union-attr]
        assert managed.controller is not None
        pollers = [Poller(node, managed.controller.url, tokens[node], stop) for node in simulated]
        # each real node followed by a reader too: when the controller published a
        # revision to that node (it is published to the nodes a change touches first)
        shadows = {node: Poller(node, managed.controller.url, managed.admin_token, stop, reports=False) for node in real}
        for poller in [*pollers, *shadows.values()]:
            threading.Thread(target=poller.run, daemon=True).start()
        started = time.monotonic()
        # the first upload validates the whole policy beside every node's first poll: a
        # minute or more at 10,000 VMs on a slow machine (not a measured figure)
        response = managed.api("PUT", "/policy", json={"documents": {"policy.yaml": text}, "message": "bench initial"}, timeout=900.0)
        assert response.status_code == 201, response.text
        results["initial_commit_s"] = round(time.monotonic() - started, 2)
        first = response.json()["revision"]["number"]
        managed.wait_converged(first, timeout=600)
        results["initial_all_nodes_s"] = round(time.monotonic() - started, 2)
        log(f"{args.nodes} nodes ({len(real)} real) applied revision {first} in {results['initial_all_nodes_s']}s")
        watch = NodeWatch(state.nodes)
        admin = {"Authorization": f"Bearer {managed.admin_token}"}
        controller_pid = managed.controller.process.pid
        agent_pids = {node: agent.process.pid for node, agent in managed.agents.items()}
        for kind in args.kinds.split(","):
            commits, enforced, published, controller_cpu, affected_cpu, unaffected_cpu = [], [], [], [], [], []
            before = {p.node: len(p.answers) for p in pollers}
            count = args.zone_changes if kind == "zone" and args.zone_changes is not None else args.changes
            for n in range(1, count + 1):
                k = n % len(real)
                text, marker = edit(text, kind, k, n)
                node = f"node{k + 1}"
                watch.arm(marker)
                # a set element: read from before the change is sent (SetWatch)
                set_watch = SetWatch(state.nodes[node], f"g-benchg{k}-v4", marker, timeout=60) if kind == "group" else None
                cpu_before = {node_: cpu_seconds(pid) for node_, pid in agent_pids.items()}
                controller_before = cpu_seconds(controller_pid)
                # encoded before the clock starts (as bench/commit.py does): 16 MB of JSON
                # is the client's own work, ~0.1 s here, more beside this process's pollers
                body = json.dumps({"documents": {"policy.yaml": text}, "message": f"bench {kind} {n}"}).encode()
                sent = time.monotonic()
                # the machine is shared: a commit may take long in wall time, so no short timeout
                response = httpx.put(managed.controller.url + "/api/v1/policy", content=body,
                                     headers={**admin, "Content-Type": "application/json"}, timeout=900)
                answered = time.monotonic()
                if response.status_code != 201:
                    raise RuntimeError(f"{kind} change {n} refused: {response.text}")
                if set_watch is not None:
                    seen = set_watch.wait()
                else:
                    seen = watch.wait_node(node, marker, timeout=60)
                if seen is None:
                    log((managed.agents[node].state_dir / "agent.log").read_text()[-3000:])
                    raise RuntimeError(f"{kind} change {n}: {node} did not enforce {marker!r} within 60s")
                commits.append((answered - sent) * 1000)
                enforced.append((seen - sent) * 1000)
                revision = response.json()["revision"]["number"]
                converged(managed, revision, timeout=900)  # every node has it: the CPU it cost is spent
                # the measured node's reader's answer: when the controller published the revision to it
                first_out = min((at for rev, _, _, at in shadows[node].answers if rev == revision), default=None)
                if first_out is not None:
                    published.append((seen - first_out) * 1000)
                controller_cpu.append((cpu_seconds(controller_pid) - controller_before) * 1000)
                for node_, pid in agent_pids.items():
                    (affected_cpu if node_ == node else unaffected_cpu).append((cpu_seconds(pid) - cpu_before[node_]) * 1000)
                log(f"{kind} {n}: commit {commits[-1]:.0f} ms, enforced on {node} {enforced[-1]:.0f} ms")
            sizes: dict[str, list[int]] = {"same": [], "delta": [], "documents": []}
            for poller in pollers:
                for _, size, what, _ in poller.answers[before[poller.node]:]:
                    sizes[what].append(size)
            results[kind] = {
                "changes": len(commits), "commit_ms": percentiles(commits), "enforced_ms": percentiles(enforced),
                "enforced_after_publication_ms": percentiles(published) if published else None,
                "controller_cpu_ms": percentiles(controller_cpu), "agent_cpu_ms": {"measured node": percentiles(affected_cpu), "other real nodes": percentiles(unaffected_cpu)},
                "answers": {what: {"n": len(values), "max_bytes": max(values) if values else None,
                                   "mean_bytes": round(sum(values) / len(values)) if values else None} for what, values in sizes.items()},
            }
            # after every kind, so that a run cut short still reports what it measured
            results["agent_rss_mib"] = {node: [round(v, 1) for v in rss_mib(agent.process.pid)] for node, agent in managed.agents.items()}
            results["poller_errors"] = sum(len(p.errors) for p in pollers)
            results["load_average"] = [round(v, 1) for v in os.getloadavg()]
            log("\n" + table(results))
            if args.json:
                args.json.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        stop.set()
        if watch is not None:
            watch.close()
        managed.stop()
        lab_down(name)
        shutil.rmtree(work, ignore_errors=True)
    print(table(results))
    return 0


def _p50_p99(stats: dict[str, float] | None) -> str:
    return "-" if stats is None else f"{stats['p50']} / {stats['p99']}"


def table(results: dict[str, Any]) -> str:
    rows = [f"cluster: {results['vms']} VMs / {results['nodes']} nodes ({results['real_agents']} real agents), "
            f"policy {results['policy_bytes'] / 1e6:.1f} MB; first revision on every node in {results['initial_all_nodes_s']} s",
            "| change (n) | commit p50 / p99 ms | enforced p50 / p99 ms | of which after publication p50 / p99 ms | unaffected answer bytes (max) | affected answers: delta / documents (max bytes) |",
            "|---|---|---|---|---|---|"]
    for kind in KINDS:
        if kind not in results:
            continue
        r = results[kind]
        a = r["answers"]
        rows.append(f"| {kind} ({r['changes']}) | {r['commit_ms']['p50']} / {r['commit_ms']['p99']} | {r['enforced_ms']['p50']} / {r['enforced_ms']['p99']} | "
                    f"{_p50_p99(r.get('enforced_after_publication_ms'))} | "
                    f"{a['same']['max_bytes']} ({a['same']['n']} answers) | {a['delta']['n']} ({a['delta']['max_bytes']}) / "
                    f"{a['documents']['n']} ({a['documents']['max_bytes']}) |")
    rows.append("| change | controller CPU ms per change p50 / max | agent CPU ms: the node measured p50 / max | other real nodes p50 / max |")
    rows.append("|---|---|---|---|")
    for kind in KINDS:
        if kind in results:
            r = results[kind]
            c, a, u = r["controller_cpu_ms"], r["agent_cpu_ms"]["measured node"], r["agent_cpu_ms"]["other real nodes"]
            rows.append(f"| {kind} | {c['p50']} / {c['max']} | {a['p50']} / {a['max']} | {u['p50']} / {u['max']} |")
    rss = results["agent_rss_mib"]
    rows.append("agent RSS MiB (now, peak): " + ", ".join(f"{node} {now}/{peak}" for node, (now, peak) in sorted(rss.items())))
    rows.append(f"poller errors: {results['poller_errors']}; load average (1, 5, 15 min) at the end: {results['load_average']}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
