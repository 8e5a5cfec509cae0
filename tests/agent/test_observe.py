"""The agent's log spool (bounded, oldest dropped and counted, restart-safe), the
suppressed count, and the parsing of kernel counters."""

from __future__ import annotations

from pathlib import Path

from zonewall.agent.observe import SuppressedCount, log_statements, record_json
from zonewall.agent.spool import Spool
from zonewall.compiler.naming import level_of
from zonewall.compiler.node import compile_node
from zonewall.dataplane.counters import counters_of
from zonewall.dataplane.nflog import LogRecord
from zonewall.policy.loader import load_policy

THREE_TIER = Path(__file__).resolve().parents[2] / "examples" / "three-tier" / "policy"


def recs(n: int, start: int = 0) -> list[dict]:
    return [{"time": float(i), "dport": i} for i in range(start, start + n)]


def test_spool_keeps_batches_across_restarts_with_their_ids(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=100)
    spool.put(recs(3))
    spool.put(recs(2, 3))
    first = spool.next(0)
    assert first is not None and len(first.records) == 3
    spool.release(first)
    reopened = Spool(tmp_path, max_records=100)  # an agent restart: same batches, same ids
    again = reopened.next(0)
    assert again is not None and again.batch_id == first.batch_id
    reopened.done(again)
    assert reopened.records == 2 and len(reopened) == 1
    assert reopened.put([]) is None  # nothing to say


def test_spool_drops_oldest_first_and_counts_it_on_the_next_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=10)
    spool.add_suppressed(4)
    spool.put(recs(4))  # carries suppressed=4
    spool.put(recs(4, 4))
    spool.put(recs(4, 8))  # 12 > 10: the first batch goes; this one carries the drop and its suppressed count
    assert spool.dropped_total == 4 and spool.records == 8
    spool.put(recs(1, 12))  # 9 records: fits
    batches = []
    while (batch := spool.next(0)) is not None:
        batches.append(batch)
        spool.done(batch)
    assert [b.records[0]["dport"] for b in batches] == [4, 8, 12]
    assert [(b.suppressed, b.dropped) for b in batches] == [(0, 0), (4, 4), (0, 0)]


def test_spool_never_drops_the_batch_being_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=5)
    spool.put(recs(5))
    sending = spool.next(0)
    spool.put(recs(3, 5))  # no room, but the oldest is in flight: the next oldest would go (none)
    assert sending is not None and (tmp_path / sending.name).exists()
    spool.done(sending)


def test_suppressed_is_counter_growth_minus_records_per_logged_rule() -> None:
    count = SuppressedCount()
    key = ("db1", "in", "default-in")
    assert count.counters({key: 100}, {key}) == 0  # the first reading is the baseline
    for _ in range(50):
        count.record(key)
    assert count.counters({key: 700}, {key}) == 550
    assert count.counters({key: 700}, {key}) == 0  # never twice
    assert count.counters({key: 30}, {key}) == 30  # the rule was re-created: its counter restarted
    assert count.counters({}, set()) == 0 and count.reported == 580


def test_log_statements_and_counters_of_a_compiled_ruleset() -> None:
    ruleset = compile_node(load_policy(THREE_TIER), "node2")
    group, keys = log_statements(ruleset)
    assert group == 1 and ("db1", "in", "default-in") in keys
    listing = [
        {"rule": {"chain": "vm-db1-in", "handle": 7, "comment": "default-in", "expr": [{"counter": {"packets": 9, "bytes": 540}}, {"drop": None}]}},
        {"rule": {"chain": "vm-db1-in", "handle": 8, "comment": "db-from-app: x", "expr": [{"counter": {"packets": 1, "bytes": 60}}, {"return": None}]}},
        {"rule": {"chain": "zone-db-in", "handle": 9, "comment": "db-from-app", "expr": [{"counter": {"packets": 2, "bytes": 120}}, {"goto": {"target": "log-abc"}}]}},
        {"rule": {"chain": "zone-db-in", "handle": 10, "comment": "db-from-app", "expr": [{"counter": {"packets": 3, "bytes": 180}}, {"goto": {"target": "log-abc"}}]}},
        {"rule": {"chain": "log-abc", "handle": 11, "comment": "db-from-app", "expr": [{"jump": {"target": "rejected"}}]}},
        {"rule": {"chain": "global-in", "handle": 12, "comment": "ssh-admins", "expr": [{"counter": {"packets": 4, "bytes": 240}}, {"return": None}]}},
        {"rule": {"chain": "forward", "handle": 13, "comment": "established", "expr": [{"counter": {"packets": 5, "bytes": 300}}, {"accept": None}]}},
        {"rule": {"chain": "vm-db1-in", "handle": 14, "comment": "no counter", "expr": [{"jump": {"target": "global-in"}}]}},
    ]
    found = {(c.level, c.scope, c.direction, c.rule): (c.packets, c.bytes, c.verdict) for c in counters_of(listing, "inet")}
    assert found == {
        ("default", "db1", "in", "default-in"): (9, 540, "drop"),
        ("vm", "db1", "in", "db-from-app"): (1, 60, "accept"),
        ("zone", "zone:db", "in", "db-from-app"): (5, 300, "reject"),  # two kernel rules, one policy rule
        ("global", "global", "in", "ssh-admins"): (4, 240, "accept"),
        ("base", "forward", "", "established"): (5, 300, "accept"),
    }
    assert level_of("guard:clean-traffic", "clean-traffic") == "guard" and level_of("host", "host-default-in") == "default"


def test_record_json_names_vm_nic_and_level() -> None:
    record = LogRecord(time=1.0, prefix="zw|node2|db1|in|default-in|drop", node="node2", scope="db1", direction="in", rule_id="default-in",
                       verdict="drop", mark=3 << 16, src_nic=0, dst_nic=3, indev="vmbr2", outdev="vmbr2", physindev="eth0", physoutdev="db1i0",
                       family="ipv4", src="10.0.1.10", dst="10.0.2.30", proto="tcp", sport=1, dport=5432, icmp_type=None)
    out = record_json(record, {3: {"vm": "db1", "nic": 0, "tap": "db1i0", "network": "back"}})
    assert (out["vm"], out["nic"], out["level"], out["rule"], out["verdict"], out["iface"]) == ("db1", "db1/0", "default", "default-in", "drop", "eth0")


def test_an_apply_waits_for_the_log_reader_but_not_for_a_group_it_cannot_open(tmp_path: Path) -> None:
    import threading
    import time

    from zonewall.agent.observe import Observer

    ruleset = compile_node(load_policy(THREE_TIER), "node2")
    group, _ = log_statements(ruleset)
    observer = Observer("node2", lambda: None, threading.Event(), tmp_path / "logs", lambda: ruleset)  # type: ignore[arg-type, return-value]
    started = time.monotonic()
    assert not observer.wait_bound(ruleset, 0.2)  # nobody listens yet: waits, then says so
    assert time.monotonic() - started >= 0.2
    threading.Timer(0.05, lambda: observer._set_bound(group)).start()
    assert observer.wait_bound(ruleset, 5.0)  # released as soon as the reader is bound
    observer._set_bound(None, unavailable=group)
    started = time.monotonic()
    assert not observer.wait_bound(ruleset, 5.0)
    assert time.monotonic() - started < 1.0  # a group that cannot be opened is not waited for
