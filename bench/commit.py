#!/usr/bin/env python3
"""Commit latency at the controller (issue 14): upload -> revision stored, with its
validation, its node states and its semantic diff, through the real API (in-process
FastAPI client, SQLite), for one-rule changes of six kinds on a synthetic cluster
(bench/synth.py: --vms VMs x 20 rules on --nodes hosts):

* vm:        one rule of a VM edited in place (its port; `from: group:admins`):
             policy/incremental.py's case;
* vm-any:    a VM rule open to everyone (no `from`) edited in place, what
             bench/cluster.py edits: its peers are every VM of the cluster;
* vm-add:    a rule line added at the top of a VM's rules (the later rules' derived
             ids and every later line move);
* vm-remove: a VM's first rule line removed;
* zone:      one rule of a zone edited in place;
* group:     one member of a group replaced.

Each kind --changes times; p50/p99 of wall time and of the controller's CPU time
(the client runs in the same process: its request is encoded before the clock starts,
its reading of the answer is counted), and the bytes of documents the database
gained per change (chunks and layouts, store/chunks.py; whole documents before).
With --baseline, the same changes again with every commit loading the whole policy
(the path before policy/incremental.py), side by side in the same run.

  .venv/bin/python bench/commit.py --vms 10000 --nodes 100 --changes 30 --baseline
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient
from sqlalchemy import inspect
from sqlalchemy import text as sql

from bench.synth import policy_text
from zonewall.controller.app import create_app
from zonewall.controller.replica import Controller, build_controller
from zonewall.controller.store import revisions
from zonewall.controller.store.db import default_url
from zonewall.controller.store.tokens import create_token
from zonewall.policy.documents import load_documents

Edit = Callable[[list[str], int], None]


def _line(lines: list[str], pattern: str, after: str) -> int:
    start = lines.index(after)
    return next(n for n in range(start, len(lines)) if re.search(pattern, lines[n]))


def edits() -> dict[str, Edit]:
    """Each kind's k-th change; lines are found anew each time (an added or removed line moves the rest)."""
    vm = r"^      - \{direction: in, action: accept, from: group:admins, tcp: \d+\}"
    vm_any = r"^      - \{direction: in, action: \w+, tcp: \d+\}"
    zone = r"^      - \{.*tcp: \d+"
    group = r"^  g\d+: \["

    def vm_edit(out: list[str], k: int) -> None:
        at = _line(out, vm, "vms:")
        out[at] = re.sub(r"tcp: \d+", f"tcp: {20000 + k}", out[at], count=1)

    def vm_any_edit(out: list[str], k: int) -> None:
        at = _line(out, vm_any, "vms:")
        out[at] = re.sub(r"action: \w+, tcp: \d+", f"action: accept, tcp: {21000 + k}", out[at], count=1)

    def zone_edit(out: list[str], k: int) -> None:
        at = _line(out, zone, "zones:")
        out[at] = re.sub(r"tcp: \d+", f"tcp: {30000 + k}", out[at], count=1)

    def group_edit(out: list[str], k: int) -> None:
        at = _line(out, group, "groups:")
        out[at] = re.sub(r"\[", f"[203.0.113.{k % 250 + 1}, ", out[at], count=1) if k == 0 else re.sub(r"203\.0\.113\.\d+", f"203.0.113.{k % 250 + 1}", out[at], count=1)

    def vm_add(out: list[str], k: int) -> None:  # a different VM each time (vm1, vm3, ...)
        out.insert(_rules_of(out, 2 * k + 1), f"      - {{direction: in, action: accept, from: group:admins, tcp: {40000 + k}}}")

    def vm_remove(out: list[str], k: int) -> None:  # vm2, vm4, ...
        del out[_rules_of(out, 2 * k + 2)]

    return {"vm": vm_edit, "vm-any": vm_any_edit, "vm-add": vm_add, "vm-remove": vm_remove, "zone": zone_edit, "group": group_edit}


def _rules_of(lines: list[str], vm: int) -> int:
    """The line of VM `vm`'s first rule."""
    return lines.index("    rules:", lines.index(f"  vm{vm}:")) + 1


@contextmanager
def whole_loads(enabled: bool) -> Iterator[None]:
    """The baseline: every commit loads the whole policy."""
    original = revisions.load_edited
    if enabled:
        revisions.load_edited = lambda documents, previous: load_documents(documents)
    try:
        yield
    finally:
        revisions.load_edited = original


Result = tuple[list[float], list[float], float]  # wall times, CPU times, bytes stored per change


def stored_bytes(controller: Controller) -> int:
    """What the revisions' documents take in the database: their chunks and layouts
    (store/chunks.py), or the documents of rows stored whole (before schema 0007)."""
    with controller.sessions() as session:
        whole = session.scalar(sql("SELECT coalesce(sum(length(documents)), 0) FROM revisions")) or 0
        if not inspect(session.connection()).has_table("document_chunks"):
            return int(whole)
        chunks = session.scalar(sql("SELECT coalesce(sum(length(text)), 0) FROM document_chunks")) or 0
        layouts = session.scalar(sql("SELECT coalesce(sum(length(layout)), 0) FROM revisions")) or 0
        return int(whole) + int(chunks) + int(layouts)


def run(text: str, changes: int, baseline: bool, kinds: list[str]) -> Iterator[tuple[str, Result]]:
    """(kind, its commits' results), as each kind is done."""
    with tempfile.TemporaryDirectory(prefix="zw-bench-commit-") as data:  # its database goes with the run
        yield from _run(Path(data), text, changes, baseline, kinds)


def _run(data: Path, text: str, changes: int, baseline: bool, kinds: list[str]) -> Iterator[tuple[str, Result]]:
    controller = build_controller(default_url(data))
    token = create_token(controller.sessions, "admin")[1]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lines = text.split("\n")
    with TestClient(create_app(controller)) as client, whole_loads(baseline):
        assert client.put("/api/v1/policy", json={"documents": {"policy.yaml": text}}, headers=headers).status_code == 201
        for kind, edit in edits().items():
            if kind not in kinds:
                continue
            walls, cpus = [], []
            stored = stored_bytes(controller)
            for k in range(changes):
                edit(lines, k)
                # the request encoded before the clock starts: a client's JSON encoding
                # of 16 MB (~40 ms) is its own machine's work, not the controller's
                body = json.dumps({"documents": {"policy.yaml": "\n".join(lines)}, "message": f"{kind} {k}"}).encode()
                wall, cpu = time.perf_counter(), time.process_time()
                response = client.put("/api/v1/policy", content=body, headers=headers)
                walls.append(time.perf_counter() - wall)
                cpus.append(time.process_time() - cpu)
                assert response.status_code == 201, response.text[:300]
            yield kind, (walls, cpus, (stored_bytes(controller) - stored) / changes)


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]  # nearest rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--baseline", action="store_true", help="also every commit as a whole load, side by side")
    parser.add_argument("--baseline-changes", type=int, default=None, help="changes per kind of the baseline (default --changes: a whole load is ~10 s at 10,000 VMs)")
    parser.add_argument("--kinds", default="vm,vm-any,vm-add,vm-remove,zone,group", help="which changes (a zone edit's diff grows with the zone's VMs x the cluster)")
    args = parser.parse_args()
    text = policy_text(args.vms, nodes=args.nodes)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"\ncommit latency, {args.vms} VMs / {args.nodes} nodes, {args.changes} changes per kind (load average {load} at the start)")
    print(f"{'path':<12} {'change':<9} {'p50 wall':>9} {'p99 wall':>9} {'p50 cpu':>8} {'p99 cpu':>8} {'stored/change':>14}", flush=True)
    for path, baseline in (("incremental", False), ("whole load", True)):
        if baseline and not args.baseline:
            continue
        changes = args.baseline_changes if baseline and args.baseline_changes else args.changes
        for kind, (walls, cpus, stored) in run(text, changes, baseline, args.kinds.split(",")):
            cells = [percentile(walls, 50), percentile(walls, 99), percentile(cpus, 50), percentile(cpus, 99)]
            print(f"{path:<12} {kind:<9} " + " ".join(f"{v * 1000:>7.0f}ms" for v in cells) + f" {stored / 1e6:>11.3f} MB", flush=True)
    with open("/proc/loadavg") as f:
        print(f"load average at the end: {f.read().split()[0]}")

if __name__ == "__main__":
    main()
