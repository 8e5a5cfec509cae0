#!/usr/bin/env python3
"""What a node's counter report costs the controller's store (issue 14): every agent
reports its rules' kernel counters every 5 s (2,100 at 100 guests x 21 rules).

`CounterStore.report` on SQLite, per report of --counters counters, CPU ms p50/max:

* steady: a whole reading where one counter in 50 moved (what most reports were
  before agents sent only what moved);
* partial: only the counters that moved (what an agent sends now: agent/counter_reports.py);
* all moved: a whole reading where every counter moved;
* renumbered: a whole reading after a rule line was added above every VM's rules
  (every id moved by one, every kernel rule new), the renames not told (an older
  agent: the ids that left are folded into their VMs' removed rules);
* renumbered, told: the same with each counter telling the id it had (`was`, as the
  agent's reader does: dataplane/renames.py), so each row moves to its rule's new id.
The table's last column counts the node's rows after the case's reports.

  .venv/bin/python bench/counters.py --counters 2100 --reports 20
  PYTHONPATH=OTHER_TREE .venv/bin/python bench/counters.py   # the same against another checkout
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from zonewall.controller.store.db import default_url, open_database

try:
    from zonewall.controller.store.counters import CounterStore
except ImportError:  # a tree from before store/counters.py (side by side)
    from zonewall.controller.store.logs import CounterStore  # type: ignore[no-redef]


def reading(counters: int, step: int, moved_every: int, shift: int = 0, told: bool = False) -> list[dict[str, Any]]:
    """`shift`: every id moved down by that many lines, every kernel rule new;
    `told`: each counter says the id it had before the last line was added."""
    out = []
    for n in range(counters):
        packets = step * 3 if n % moved_every == 0 else 7
        handle = n + shift * counters
        counter = {"level": "vm", "scope": f"vm{n // 21}", "direction": "in", "rule": f"r{n % 21 + shift}", "verdict": "accept",
                   "packets": packets, "bytes": packets * 60, "instances": [[f"inet:{handle}", packets, packets * 60]]}
        if told:
            counter["was"] = f"r{n % 21 + shift - 1}"
        out.append(counter)
    return out


def rows_of(store: CounterStore, node: str) -> int:
    return sum(1 for row in store.per_node() if row.node == node)


def measure(store: CounterStore, node: str, readings: list[tuple[list[dict[str, Any]], bool]]) -> list[float]:
    times = []
    for counters, complete in readings:
        started = time.process_time()
        store.report(node, counters) if complete else store.report(node, counters, complete=False)
        times.append((time.process_time() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counters", type=int, default=2100)
    parser.add_argument("--reports", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zw-bench-counters-") as tmp:
        store = CounterStore(open_database(default_url(Path(tmp))))
        cases = {
            "steady": [(reading(args.counters, step, 50), True) for step in range(2, args.reports + 2)],
            "partial": [([c for c in reading(args.counters, step, 50) if c["packets"] != 7], False) for step in range(2, args.reports + 2)],
            "all moved": [(reading(args.counters, step, 1), True) for step in range(2, args.reports + 2)],
            "renumbered": [(reading(args.counters, 1, 50, shift), True) for shift in range(1, args.reports + 1)],
            "renumbered, told": [(reading(args.counters, 1, 50, shift, told=True), True) for shift in range(1, args.reports + 1)],
        }
        print(f"| report ({args.counters} counters on the node) | counters sent | CPU ms p50 | max | rows after |")
        print("|---|---|---|---|---|")
        for name, readings in cases.items():
            if name == "partial" and "complete" not in CounterStore.report.__code__.co_varnames:
                continue  # a tree from before partial reports (run side by side: --help)
            node = f"node-{name.replace(' ', '-')}"
            store.report(node, reading(args.counters, 1, 50))  # the node's first whole reading
            times = measure(store, node, readings)
            print(f"| {name} | {len(readings[0][0])} | {statistics.median(times):.1f} | {max(times):.1f} | {rows_of(store, node)} |")


if __name__ == "__main__":
    main()
