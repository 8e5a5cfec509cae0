"""Packet logs and rule counters, from the kernel to the controller.

Two threads, neither on the enforcement path:

* the **collector** reads zonewall's NFLOG group over netlink (the group of the
  applied ruleset's `log` statements) in the node's namespace, decodes each record
  (VM and NIC from the packet mark, rule and level from the prefix), groups them
  into batches (at most 500 records or 0.25 s) and writes each batch to the disk
  spool; every `counter_interval` seconds it also reads the per-rule kernel counters
  (over netlink: dataplane/rulecounters.py) and sends them.
* the **sender** sends the spool's oldest batch and deletes it once the controller
  has it; while the controller is away the batches wait on disk (bounded, the oldest
  dropped first and counted; spool.py).

The log rate of `settings.log` is enforced by the kernel (a named `limit` before each
`log` statement), so a flood never reaches the agent. What it suppressed is counted
exactly from the counters: each logged rule's counter counts every packet that
reached its `log` statement, and the kernel queues a packet's log record before the
counter rule after it counts it; so right after a counter read, once the records
already queued are read, `packets - records` for that rule is what the limit
suppressed. That difference (cumulative, per rule, from the first reading on) is
what the batches carry as `suppressed`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from ..compiler.ir import NicMeta, Ruleset
from ..compiler.logprefix import parse as parse_prefix
from ..compiler.naming import level_of
from ..compiler.stmt import Log
from ..dataplane.backend import Backend
from ..dataplane.counters import RuleCounter, read_counters
from ..dataplane.nflog import LogRecord, NflogError, NflogReader, resolve_vm
from ..dataplane.rulecounters import CounterReader
from .backoff import Backoff
from .client import ControllerClient, ControllerRefused, ControllerUnavailable
from .counter_reports import CounterReports
from .spool import Spool
from .supervise import Health, supervised

log = logging.getLogger("zonewall.agent.observe")
BATCH_RECORDS = 500
BATCH_SECONDS = 0.25
Key = tuple[str, str, str]  # scope, direction, rule id (as in the NFLOG prefix)


class _Reader(Protocol):
    def read(self) -> list[RuleCounter]: ...

    def close(self) -> None: ...


class _ListingReader:
    """Counters from a backend's listing (`read_counters`): the fake kernel's way."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def read(self) -> list[RuleCounter]:
        return read_counters(self.backend)

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


def log_statements(ruleset: Ruleset) -> tuple[int | None, set[Key]]:
    """The NFLOG group of a ruleset and the (scope, direction, rule) of each logging rule."""
    group: int | None = None
    keys: set[Key] = set()
    for table in ruleset.tables:
        for chain in table.chains:
            for rule in chain.rules:
                for statement in rule.statements:
                    if not isinstance(statement, Log):
                        continue
                    group = statement.group if group is None else group
                    _node, scope, direction, rule_id, _verdict, _level = parse_prefix(statement.prefix)
                    if scope is not None and direction is not None and rule_id is not None:
                        keys.add((scope, direction, rule_id))
    return group, keys


def record_json(record: LogRecord, nics: Mapping[int, NicMeta]) -> dict[str, Any]:
    """What the controller stores of one NFLOG record."""
    vm = resolve_vm(record, nics) if nics else None
    nic = None
    for index in ((record.dst_nic, record.src_nic) if record.direction == "in" else (record.src_nic, record.dst_nic)):
        entry = nics.get(index) if index else None
        if entry is not None and entry["vm"] == vm:
            nic = f"{entry['vm']}/{entry['nic']}"
            break
    if nic is None and vm is not None:
        port = record.physoutdev if record.direction == "in" else record.physindev
        entry = next((e for e in nics.values() if e["tap"] == port), None)
        nic = f"{entry['vm']}/{entry['nic']}" if entry is not None else None
    return {
        "time": record.time, "vm": vm, "nic": nic, "direction": record.direction, "family": record.family,
        "src": record.src, "dst": record.dst, "proto": record.proto, "sport": record.sport, "dport": record.dport,
        "icmp_type": record.icmp_type, "verdict": record.verdict, "rule": record.rule_id, "scope": record.scope,
        "level": level_of(record.scope, record.rule_id), "iface": record.physindev or record.indev,
        "log_level": record.log_level,
    }


class SuppressedCount:
    """Per logged rule: packets counted minus records received, from the first reading on."""

    def __init__(self) -> None:
        self._last: dict[Key, int] = {}
        self._hits: dict[Key, int] = {}
        self._logged: dict[Key, int] = {}
        self._gone = 0
        self.reported = 0

    def record(self, key: Key) -> None:
        if key in self._last:  # before its first counter reading a record has no baseline
            self._logged[key] = self._logged.get(key, 0) + 1

    def counters(self, readings: dict[Key, int], logged_keys: set[Key]) -> int:
        """Take a counter reading (records queued before it already counted); the
        newly suppressed records since the last call."""
        for key in logged_keys:
            value = readings.get(key)
            if value is None:
                continue
            if key not in self._last:
                self._last[key], self._hits[key], self._logged[key] = value, 0, 0
                continue
            last = self._last[key]
            self._hits[key] += value - last if value >= last else value  # a re-created rule starts at 0
            self._last[key] = value
        for key in list(self._last):
            if key not in logged_keys:  # the rule is gone: keep what it suppressed, forget it
                self._gone += max(0, self._hits.pop(key, 0) - self._logged.pop(key, 0))
                del self._last[key]
        total = self._gone + sum(max(0, self._hits[k] - self._logged.get(k, 0)) for k in self._last)
        new = max(0, total - self.reported)  # never reported twice
        self.reported += new
        return new


class Observer:
    def __init__(
        self,
        node: str,
        make_client: Callable[[], ControllerClient],
        stop: threading.Event,
        spool_dir: Path,
        ruleset: Callable[[], Ruleset | None],
        *,
        netns: str | None = None,
        counter_interval: float = 5.0,
        max_records: int = 100_000,
        make_backend: Callable[[], Backend] | None = None,
        health: Health | None = None,
    ) -> None:
        self.node = node
        self.health = health if health is not None else Health()
        self._make_client = make_client
        self._stop = stop
        self._ruleset = ruleset
        self._netns = netns
        self.counter_interval = counter_interval
        self.counter_reports = CounterReports()
        # Counters are read over netlink (dataplane/rulecounters.py: ~15x cheaper than
        # libnftables' listing, and no second libnftables context and its cache in the
        # agent); a backend given (tests: the fake kernel) is read through its listing.
        self._make_reader: Callable[[], _Reader] = (lambda: _ListingReader(make_backend())) if make_backend is not None else (lambda: CounterReader(netns))
        self.spool = Spool(spool_dir, max_records)
        self.suppressed = SuppressedCount()
        self.received = 0  # records read from the kernel (tests)
        self.sent_batches = 0
        self._threads: list[threading.Thread] = []
        self._latest_counters: list[RuleCounter] = []
        self._bound_group: int | None = None  # the NFLOG group the collector listens to
        self._unavailable: int | None = None  # the group it last failed to open
        self._bound = threading.Condition()

    def start(self) -> Observer:
        for target, name in ((self._collect, "packet log collector"), (self._send, "packet log sender")):
            self._threads.append(supervised(name, target, self._stop, self.health))
        return self

    def _spool_health(self) -> None:
        if self.spool.disk_error is None:
            self.health.clear("packet log buffer")
        else:
            self.health.fail("packet log buffer", f"{self.spool.disk_error}; {self.spool.in_memory} records held in memory", sticky=True)

    def wake(self) -> None:
        self.spool.wake()

    def wait_bound(self, ruleset: Ruleset | None, timeout: float) -> bool:
        """Wait until the collector listens to the ruleset's NFLOG group. The agent
        calls it after an apply and before reporting it, so a packet denied right
        after the controller sees the revision applied is not lost (the kernel
        drops NFLOG messages nobody listens to)."""
        group = log_statements(ruleset)[0] if ruleset is not None else None
        if group is None:
            return True
        with self._bound:
            # a group the collector could not open (another listener has it) is not
            # waited for: every apply would be held up for nothing
            return self._bound.wait_for(lambda: self._bound_group == group or self._unavailable == group, timeout) and self._bound_group == group

    def _set_bound(self, group: int | None, *, unavailable: int | None = None) -> None:
        with self._bound:
            self._bound_group = group
            self._unavailable = unavailable
            self._bound.notify_all()

    # -- collector --------------------------------------------------------------------

    def _collect(self) -> None:
        reader: NflogReader | None = None
        group: int | None = None
        seen: Ruleset | None = None
        keys: set[Key] = set()
        nics: dict[int, NicMeta] = {}
        batch: list[dict[str, Any]] = []
        first = 0.0
        next_counters = time.monotonic() + self.counter_interval
        reader_of_counters: _Reader | None = None
        client = self._make_client()
        try:
            while not self._stop.is_set():
                ruleset = self._ruleset()
                if ruleset is not None and ruleset is not seen:
                    seen = ruleset
                    wanted, keys = log_statements(ruleset)
                    nics = dict(ruleset.meta.get("nics", {}))
                    if wanted != group and reader is not None:
                        reader.close()
                        reader = None
                        self._set_bound(None)
                    group = wanted
                if reader is None and group is not None:
                    try:
                        reader = NflogReader(group, netns=self._netns)
                        self._set_bound(group)
                        self.health.clear("packet log")
                        log.info("reading NFLOG group %d", group)
                    except (NflogError, OSError) as exc:
                        self._set_bound(None, unavailable=group)
                        self.health.fail("packet log", f"cannot read NFLOG group {group}: {exc}", sticky=True)
                        log.warning("cannot read NFLOG group %s (%s); retrying", group, exc)
                        self._stop.wait(2.0)
                        continue
                records = reader.read(timeout=0.1) if reader is not None else []
                if reader is None:
                    self._stop.wait(0.1)
                for record in records:
                    self._take(record, nics, batch)
                if batch and not first:
                    first = time.monotonic()
                if time.monotonic() >= next_counters and seen is not None:
                    next_counters = time.monotonic() + self.counter_interval
                    reader_of_counters = reader_of_counters or self._make_reader()
                    counters = self._read_counters(reader_of_counters)
                    if counters is not None:
                        for record in (reader.read(timeout=0) if reader is not None else []):  # queued before the reading
                            self._take(record, nics, batch)
                        readings = {(c.scope, c.direction, c.rule): c.packets for c in counters}
                        new = self.suppressed.counters(readings, keys)
                        if new:
                            self.spool.add_suppressed(new)
                        self._send_counters(client, counters)
                full = len(batch) >= BATCH_RECORDS
                if full or (batch and time.monotonic() - first >= BATCH_SECONDS) or (not batch and self.spool.pending_suppressed):
                    self.spool.put(batch)
                    batch, first = [], 0.0
                    self._spool_health()
        finally:
            if batch:
                self.spool.put(batch)
            if reader is not None:
                reader.close()
            if reader_of_counters is not None:
                reader_of_counters.close()
            client.close()

    def _take(self, record: LogRecord, nics: Mapping[int, NicMeta], batch: list[dict[str, Any]]) -> None:
        if not record.is_zonewall:
            return
        self.received += 1
        if record.scope is not None and record.direction is not None and record.rule_id is not None:
            self.suppressed.record((record.scope, record.direction, record.rule_id))
        batch.append(record_json(record, nics))

    def _read_counters(self, reader: _Reader) -> list[RuleCounter] | None:
        try:
            counters = reader.read()
        except Exception as exc:  # noqa: BLE001 - a failed reading is retried at the next interval
            log.warning("reading counters failed: %s", exc)
            return None
        self._latest_counters = counters
        return counters

    def _send_counters(self, client: ControllerClient, counters: list[RuleCounter]) -> None:
        report = self.counter_reports.report(counters)
        if report is None:
            return  # nothing moved since the controller's reading
        body, partial = report
        try:
            client.counters([c.to_json() for c in body], partial=partial)
        except (ControllerUnavailable, ControllerRefused) as exc:
            log.debug("counters not sent (%s); the next reading will be", exc)
            return
        self.counter_reports.delivered(body, partial)

    # -- sender ---------------------------------------------------------------------------

    def _send(self) -> None:
        client = self._make_client()
        backoff = Backoff()
        try:
            while not self._stop.is_set():
                batch = self.spool.next(timeout=1.0)
                if batch is None:
                    continue
                try:
                    client.records(batch.body())
                except ControllerUnavailable as exc:
                    self.spool.release(batch)
                    wait = backoff.next()
                    log.debug("log batch not delivered (%s); retrying in %.1fs", exc, wait)
                    self._stop.wait(wait)
                    continue
                except ControllerRefused as exc:
                    self.spool.release(batch)
                    if exc.status in (413, 422):  # this batch will never be taken: count it as dropped
                        self.spool.done(batch)
                        self.spool.pending_dropped += len(batch.records) + batch.dropped
                        log.error("log batch refused for good (%s): %d records dropped", exc, len(batch.records))
                    else:
                        log.error("log batch refused (%s); retrying in 10 s", exc)
                        self._stop.wait(10.0)
                    continue
                backoff.reset()
                self.spool.done(batch)
                self.sent_batches += 1
        finally:
            client.close()
