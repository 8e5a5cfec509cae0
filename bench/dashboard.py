#!/usr/bin/env python3
"""The operator's console at the size users run: ingest with the per-minute roll-up,
and the dashboard's pages at 10,000 VMs (embedded SQLite, in-process HTTP).

* ingest: --records synthetic denied-packet records (bench/logs.py's shape: 200 VMs,
  5,000 outside sources, 30 ports, in time order) in batches of 500, into two stores
  side by side in one run, alternating batch by batch: one with the roll-up of
  store/rollup.py, one with it switched off. Reported: records/s of each and the ratio.
* pages: a synthetic policy of --vms VMs in 50 zones on 10 nodes (bench/synth.py)
  uploaded as revision 1, the ingested records in the log, then --runs requests of
  each page (median and max in ms): the overview (graphs and top lists over 24 h),
  the VM list (first page, page 50, one zone, a name search), one VM, the node list,
  one node, the revisions, the zones page and the zone matrix (both answer while the
  matrix is computed in the background above 200 VMs).
Absolute times measured while other work runs on the machine are pessimistic.
Run: .venv/bin/python bench/dashboard.py [--records 200000] [--vms 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.logs import batch_times, synth
from bench.synth import policy_text
from zonewall.controller.store import logs as log_store
from zonewall.controller.store import rollup


def ingest(records: int, directory: Path) -> dict[str, float]:
    from zonewall.controller.store.db import open_database

    stores = {name: log_store.LogStore(open_database(f"sqlite:///{directory / name}.db"), log_store.Retention(max_age_days=100_000))
              for name in ("with", "without")}
    seconds = dict.fromkeys(stores, 0.0)
    rng = random.Random(7)
    now = time.time()
    real_add = rollup.add
    done = 0
    while done < records:
        batch = synth(rng, batch_times(rng, now, done, records, 500, False))
        for name, store in stores.items():
            rollup.add = real_add if name == "with" else (lambda session, rows: None)  # type: ignore[assignment]
            started = time.perf_counter()
            store.ingest(f"node{done % 20}", uuid.uuid4().hex, batch)
            seconds[name] += time.perf_counter() - started
        done += len(batch)
        if done % 50_000 < 500:
            sys.stderr.write(f"ingest: {done}/{records}\n")
    rollup.add = real_add  # type: ignore[assignment]
    rates = {name: records / s for name, s in seconds.items()}
    return {"records": records, "with_rollup_per_s": round(rates["with"]), "without_rollup_per_s": round(rates["without"]),
            "ratio": round(rates["with"] / rates["without"], 3)}


def pages(vms: int, records: int, runs: int, directory: Path) -> dict[str, dict[str, float]]:
    from fastapi.testclient import TestClient

    from tests.controller.live import make_tokens
    from zonewall.controller.app import create_app
    from zonewall.controller.replica import build_controller

    controller = build_controller(f"sqlite:///{directory / 'pages.db'}")
    tokens = make_tokens(controller)
    text = policy_text(vms, zones=50, nodes=10)
    out: dict[str, dict[str, float]] = {}
    with TestClient(create_app(controller)) as client:
        started = time.perf_counter()
        answer = client.put("/api/v1/policy", json={"documents": {"policy.yaml": text}, "message": "bench"}, headers=tokens.header("admin"), timeout=3600)
        assert answer.status_code == 201, answer.text[:300]
        out["upload (load, commit, diff)"] = {"median_ms": round((time.perf_counter() - started) * 1000), "max_ms": 0}
        rng = random.Random(3)
        now = time.time()
        for done in range(0, records, 500):
            batch = synth(rng, batch_times(rng, now, done, records, 500, False))
            # straight into the store: bench/logs.py's VMs are not those of this policy's nodes,
            # and the agents' route takes records about their own node's VMs only
            controller.logs.ingest(f"node{done // 500 % 2 + 1}", uuid.uuid4().hex, batch)
        from tests.controller.test_web import login

        login(client, tokens.admin)
        for label, path in (("overview", "/ui/"), ("VMs, first page", "/ui/vms"), ("VMs, page 50", "/ui/vms?page_number=50"),
                            ("VMs of one zone", "/ui/vms?zone=z7"), ("VMs by name", "/ui/vms?q=vm123"), ("one VM", f"/ui/vms/vm{vms // 2}"),
                            ("nodes", "/ui/nodes"), ("one node", "/ui/nodes/node1"), ("revisions", "/ui/revisions"),
                            ("zones (matrix pending)", "/ui/zones"), ("zone matrix (pending)", "/ui/matrix"), ("denied packets", "/ui/logs")):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            out[label] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}
            sys.stderr.write(f"{label}: {out[label]}\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zw-bench-dashboard-") as tmp:
        result = {"ingest": ingest(args.records, Path(tmp)), "pages": pages(args.vms, min(args.records, 50_000), args.runs, Path(tmp))}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
