"""Denied packets aggregated per minute at ingest: the dashboard's graphs and top lists."""

from __future__ import annotations

import uuid

from zonewall.controller.replica import Controller
from zonewall.controller.store.logs import Retention
from zonewall.controller.store.rollup import Rollup

T0 = 1_800_000_000.0  # a minute boundary


def record(t: float, src: str, dst: str, port: int, verdict: str = "drop", vm: str = "db1") -> dict:
    return {"time": t, "vm": vm, "src": src, "dst": dst, "proto": "tcp", "dport": port, "verdict": verdict}


def test_counts_per_minute_and_top_lists(controller: Controller) -> None:
    controller.logs.retention = Retention(max_age_days=100_000)
    batch = [record(T0 + i, "10.0.1.10", "10.0.2.30", 5432) for i in range(30)]  # minute 0
    batch += [record(T0 + 60 + i, "203.0.113.9", "10.0.2.30", 22) for i in range(5)]  # minute 1
    batch += [record(T0 + 61, "10.0.1.10", "10.0.2.20", 9999, vm="app1")]
    batch += [record(T0 + 62, "10.0.1.10", "10.0.2.20", 8080, verdict="accept", vm="app1")]  # a logged accept: not denied
    controller.logs.ingest("node2", uuid.uuid4().hex, batch[:20])
    controller.logs.ingest("node2", uuid.uuid4().hex, batch[20:])  # a second batch adds to the same minute
    rollup = Rollup(controller.sessions)
    assert rollup.series(T0, T0 + 180, buckets=3) == [(T0, 30), (T0 + 60, 6), (T0 + 120, 0)]
    assert rollup.series(T0, T0 + 180, buckets=1) == [(T0, 36)]
    assert rollup.top("src", T0, T0 + 180) == [("10.0.1.10", 31), ("203.0.113.9", 5)]
    assert rollup.top("port", T0, T0 + 180, limit=2) == [("tcp/5432", 30), ("tcp/22", 5)]
    assert rollup.top("vm", T0 + 60, T0 + 120) == [("db1", 5), ("app1", 1)]
    assert rollup.series(T0, T0 + 120, node="node2", buckets=2) == [(T0, 30), (T0 + 60, 6)]
    assert rollup.series(T0, T0 + 120, node="node1", buckets=2) == [(T0, 0), (T0 + 60, 0)]


def test_a_duplicate_batch_counts_once_and_retention_prunes(controller: Controller) -> None:
    controller.logs.retention = Retention(max_age_days=100_000)
    batch_id = uuid.uuid4().hex
    controller.logs.ingest("node1", batch_id, [record(T0, "10.0.1.10", "10.0.2.30", 5432)])
    controller.logs.ingest("node1", batch_id, [record(T0, "10.0.1.10", "10.0.2.30", 5432)])
    rollup = Rollup(controller.sessions)
    assert rollup.series(T0, T0 + 60, buckets=1) == [(T0, 1)]
    controller.logs.retention = Retention(max_age_days=1)
    controller.logs.prune(now=T0 + 2 * 86400)
    assert rollup.series(T0, T0 + 60, buckets=1) == [(T0, 0)]
