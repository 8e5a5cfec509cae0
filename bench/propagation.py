#!/usr/bin/env python3
"""Propagation and drift-repair benchmark: a controller and --nodes agents in the lab.

A policy with --nodes hosts (default 20), one VM of zone `web` on each, is brought
up in the lab with no rules; a controller process and one agent per node namespace
start (zonewall.lab.managed), the policy is uploaded through the API and every
agent applies it. Then:

* propagation: --changes times (default 50), one zone rule is added through the API
  (`POST /api/v1/zones/web/rules`, id bench-N). Every node hosts a web VM, so every
  node's ruleset changes. The time from sending the request to the moment the rule
  is in the kernel of the LAST node is measured; "in the kernel" is seen by an
  `nft monitor` per node namespace (the kernel announces the committed rule, so
  this includes the monitor's own small delay), and
  after each change the ruleset of every node is read back to confirm the rule is
  there. The API's own response time is reported beside it.
* drift repair: --drifts times (default 50), in one node namespace after another,
  a zonewall base chain is deleted (`nft delete chain inet zonewall forward`; every
  second time `nft flush ruleset` instead); the time from the kernel's announcement
  of the deletion to its announcement of the agent's re-created chain (both from
  the same monitor) is measured, and the node's tables are then checked to read
  back exactly as before.

Results as JSON on stdout (p50/p90/p99/max in milliseconds); progress on stderr.
Needs root. Run: .venv/bin/python bench/propagation.py [--nodes 20] [--changes 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import readback_hash
from zonewall.lab.cluster import lab_down, lab_up
from zonewall.lab.managed import ManagedLab

OURS = [("inet", "zonewall"), ("bridge", "zonewall")]


def policy_text(nodes: int) -> str:
    lines = [
        "version: 1",
        "settings: {default: {in: drop, out: accept}, host_default: {in: drop}, management: [192.168.100.0/24]}",
        "networks: {lan: {bridge: vmbr1, subnets: [10.10.0.0/16]}}",
        "zones:",
        "  web:",
        "    rules:",
        "      - {id: web-https, direction: in, action: accept, service: https}",
        "hosts:",
    ]
    lines += [f"  node{i:02d}: {{address: 192.168.100.{10 + i}, uplink: eth0}}" for i in range(1, nodes + 1)]
    lines.append("vms:")
    lines += [
        f'  vm{i:02d}: {{host: node{i:02d}, zone: web, nics: [{{network: lan, mac: "52:54:00:00:10:{i:02x}", ips: [10.10.0.{10 + i}]}}]}}'
        for i in range(1, nodes + 1)
    ]
    return "\n".join(lines) + "\n"


class KernelWatch:
    """One `nft monitor` per node namespace. After `arm(markers)`, the first time each
    node printed a line containing each marker is recorded; `wait` returns them."""

    def __init__(self, namespaces: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self._markers: tuple[str, ...] = ()
        self._seen: dict[tuple[str, str], float] = {}
        self._done = threading.Condition(self._lock)
        self._processes = []
        for node, ns in namespaces.items():
            process = subprocess.Popen(["ip", "netns", "exec", ns, "nft", "monitor"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
            self._processes.append(process)
            threading.Thread(target=self._read, args=(node, process), daemon=True).start()
        time.sleep(1.0)  # let every monitor subscribe

    def _read(self, node: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            now = time.monotonic()
            with self._lock:
                for marker in self._markers:
                    if marker in line and (node, marker) not in self._seen:
                        self._seen[(node, marker)] = now
                        self._done.notify_all()

    def arm(self, *markers: str) -> None:
        with self._lock:
            self._markers, self._seen = markers, {}

    def wait(self, count: int, timeout: float) -> dict[tuple[str, str], float]:
        """Until `count` (node, marker) sightings, or `timeout`."""
        with self._done:
            self._done.wait_for(lambda: len(self._seen) >= count, timeout=timeout)
            self._markers = ()
            return dict(self._seen)

    def close(self) -> None:
        for process in self._processes:
            process.terminate()


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def rank(p: float) -> float:  # nearest rank
        return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]

    return {"n": len(ordered), "p50": round(rank(50), 1), "p90": round(rank(90), 1), "p99": round(rank(99), 1), "max": round(ordered[-1], 1)}


def kernel_hash(ns: str) -> str:
    with LibNftBackend(netns=ns) as backend:
        return readback_hash(backend, OURS)


def has_rule(ns: str, rule_id: str) -> bool:
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "zonewall"], capture_output=True, text=True).stdout
    return f'comment "{rule_id}"' in out


def log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--drifts", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        log("needs root (network namespaces)")
        return 2

    work = Path(tempfile.mkdtemp(prefix="zonewall-bench-"))
    policy_dir = work / "policy"
    policy_dir.mkdir()
    (policy_dir / "policy.yaml").write_text(policy_text(args.nodes))
    name = f"bp{os.getpid() % 100000}"
    lab_down(name)
    started = time.monotonic()
    state = lab_up(str(policy_dir), name, apply=False)
    log(f"lab up: {len(state.nodes)} nodes in {time.monotonic() - started:.1f}s")
    managed = ManagedLab(state, work / "controller")
    watch: KernelWatch | None = None
    results: dict[str, Any] = {"nodes": args.nodes}
    try:
        managed.start()
        started = time.monotonic()
        first = managed.upload(policy_dir, "bench initial")["revision"]["number"]
        managed.wait_converged(first, timeout=120)
        results["initial_apply_all_nodes_s"] = round(time.monotonic() - started, 2)
        log(f"{args.nodes} agents applied revision {first} in {results['initial_apply_all_nodes_s']}s")
        watch = KernelWatch(state.nodes)

        propagation, responses = [], []
        for n in range(1, args.changes + 1):
            rule_id = f"bench-{n}"
            marker = f'comment "{rule_id}"'
            watch.arm(marker)
            sent = time.monotonic()
            response = managed.api("POST", "/zones/web/rules", json={"rule": {"id": rule_id, "direction": "in", "action": "accept", "tcp": 10000 + n}, "message": rule_id})
            answered = time.monotonic()
            if response.status_code != 201:
                raise RuntimeError(f"change {n} refused: {response.text}")
            seen = watch.wait(args.nodes, timeout=30)
            if len(seen) < args.nodes:
                raise RuntimeError(f"change {n}: only {len(seen)} of {args.nodes} nodes enforced it within 30s")
            last = max(seen.values())  # the slowest node
            propagation.append((last - sent) * 1000)
            responses.append((answered - sent) * 1000)
            missing = [node for node, ns in state.nodes.items() if not has_rule(ns, rule_id)]
            if missing:
                raise RuntimeError(f"change {n}: the kernel of {missing} does not hold {rule_id}")
            log(f"change {n}: all {args.nodes} nodes in {propagation[-1]:.0f} ms (API answered in {responses[-1]:.0f} ms)")
        results["propagation_ms"] = percentiles(propagation)
        results["api_response_ms"] = percentiles(responses)

        repairs = []
        nodes = sorted(state.nodes)
        expected = {node: kernel_hash(state.nodes[node]) for node in nodes}
        for n in range(args.drifts):
            node = nodes[n % len(nodes)]
            ns = state.nodes[node]
            # both times as the node's monitor saw them: the kernel's own order and clock
            gone, back = "delete chain inet zonewall forward", "add chain inet zonewall forward"
            watch.arm(gone, back)
            command = ["nft", "flush", "ruleset"] if n % 2 else ["nft", "delete", "chain", "inet", "zonewall", "forward"]
            subprocess.run(["ip", "netns", "exec", ns, *command], check=True)
            seen = watch.wait(2, timeout=10)
            if (node, back) not in seen or (node, gone) not in seen:
                raise RuntimeError(f"drift {n} on {node} ({' '.join(command)}) was not repaired within 10s")
            repairs.append((seen[(node, back)] - seen[(node, gone)]) * 1000)
            deadline = time.monotonic() + 5
            while kernel_hash(ns) != expected[node]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"drift {n} on {node}: tables do not read back as before")
                time.sleep(0.01)
            log(f"drift {n} on {node} ({' '.join(command[1:])}): repaired in {repairs[-1]:.0f} ms")
        results["drift_repair_ms"] = percentiles(repairs)
    finally:
        if watch is not None:
            watch.close()
        managed.stop()
        lab_down(name)
    sys.stdout.write(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
