"""The agent's on-disk buffer of packet-log batches waiting for the controller.

Each batch is one file `SEQ.json` (written atomically: temporary file, fsync,
rename) holding its id, its records and the counts it carries (records suppressed
by the log rate, records dropped from this buffer). The id is chosen once, when the
batch is made, so a batch sent again after a lost answer or an agent restart is
recognised by the controller and stored once.

The buffer is bounded by a number of records. When a new batch would pass the
bound, the oldest batches are deleted first (never the one being sent); their
records are counted as dropped and that count, with whatever counts they carried,
rides on the next batch, so the controller learns exactly how many were lost.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("zonewall.agent.spool")
DEFAULT_MAX_RECORDS = 100_000


@dataclass(frozen=True)
class Batch:
    name: str
    batch_id: str
    records: list[dict[str, Any]]
    suppressed: int
    dropped: int

    def body(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "records": self.records, "suppressed": self.suppressed, "dropped": self.dropped}


class Spool:
    def __init__(self, directory: Path, max_records: int = DEFAULT_MAX_RECORDS) -> None:
        self.directory = directory
        self.max_records = max(1, max_records)
        self._lock = threading.Condition()
        self._index: dict[str, tuple[int, int, int]] = {}  # file -> (records, suppressed, dropped)
        # Batches the disk would not take (full, read-only, gone): held here, in the
        # same order and under the same bound, and sent from here. Nothing is lost
        # while the controller answers; the fault shows in the node's status.
        self._memory: dict[str, dict[str, Any]] = {}
        self.disk_error: str | None = None
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.disk_error = f"cannot create {directory}: {exc.strerror or exc}"
        self._sending: str | None = None
        self.pending_suppressed = 0  # to ride on the next batch
        self.pending_dropped = 0
        self.dropped_total = 0  # records this buffer dropped since the start (tests, status)
        for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
            try:
                body = json.loads(path.read_text())
                self._index[path.name] = (len(body["records"]), int(body.get("suppressed", 0)), int(body.get("dropped", 0)))
            except (OSError, ValueError, KeyError):
                log.warning("unreadable log batch %s removed", path)
                path.unlink(missing_ok=True)
        for stale in directory.glob("*.tmp") if directory.is_dir() else ():
            stale.unlink(missing_ok=True)
        self._seq = max((int(name.split(".")[0]) for name in self._index), default=0)

    @property
    def records(self) -> int:
        with self._lock:
            return sum(n for n, _, _ in self._index.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def add_suppressed(self, count: int) -> None:
        with self._lock:
            self.pending_suppressed += count

    def put(self, records: list[dict[str, Any]]) -> str | None:
        """Write a batch of `records` with the pending counts; None if there is nothing to say."""
        with self._lock:
            if not records and not self.pending_suppressed and not self.pending_dropped:
                return None
            if len(records) > self.max_records:  # larger than the whole bound: keep its newest part
                self.pending_dropped += len(records) - self.max_records
                self.dropped_total += len(records) - self.max_records
                records = records[-self.max_records:]
            self._make_room(len(records))
            suppressed, dropped = self.pending_suppressed, self.pending_dropped
            self._seq += 1
            name = f"{self._seq:016d}.json"
            body = {"batch_id": uuid.uuid4().hex, "records": records, "suppressed": suppressed, "dropped": dropped}
            try:
                self._write(name, body)
                self.disk_error = None
            except OSError as exc:
                self._memory[name] = body
                if self.disk_error is None:
                    log.error("cannot write the log buffer in %s (%s): batches are held in memory", self.directory, exc)
                self.disk_error = f"cannot write {self.directory}: {exc.strerror or exc}"
            self._index[name] = (len(records), suppressed, dropped)
            self.pending_suppressed = self.pending_dropped = 0
            self._lock.notify_all()
            return name

    def _write(self, name: str, body: dict[str, Any]) -> None:
        tmp = self.directory / (name + ".tmp")
        try:
            with open(tmp, "w") as handle:
                json.dump(body, handle, separators=(",", ":"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.directory / name)
        except OSError:
            tmp.unlink(missing_ok=True)  # a half-written file would be read as a batch
            raise

    @property
    def in_memory(self) -> int:
        """Records held in memory because the disk would not take them."""
        with self._lock:
            return sum(self._index[name][0] for name in self._memory)

    def _forget(self, name: str) -> None:
        if self._memory.pop(name, None) is None:
            try:
                (self.directory / name).unlink(missing_ok=True)
            except OSError as exc:  # read-only: sent again after a restart, stored once (batch id)
                log.warning("cannot delete log batch %s: %s", name, exc)

    def _make_room(self, incoming: int) -> None:
        total = sum(n for n, _, _ in self._index.values())
        for name in sorted(self._index):
            if total + incoming <= self.max_records:
                break
            if name == self._sending:
                continue
            count, suppressed, dropped = self._index.pop(name)
            self._forget(name)
            total -= count
            self.dropped_total += count
            self.pending_dropped += count + dropped
            self.pending_suppressed += suppressed
            log.warning("log buffer full (%d records): oldest batch of %d records dropped", self.max_records, count)

    def next(self, timeout: float) -> Batch | None:
        """The oldest batch, marked as being sent (not dropped meanwhile); None after `timeout`."""
        with self._lock:
            if not self._index:
                self._lock.wait(timeout)
            if not self._index:
                return None
            name = min(self._index)
            self._sending = name
            body = self._memory.get(name)
        if body is None:
            try:
                body = json.loads((self.directory / name).read_text())
            except (OSError, ValueError) as exc:  # the disk lost it: its records are gone
                log.error("log batch %s unreadable (%s): dropped", name, exc)
                with self._lock:
                    count, suppressed, dropped = self._index.pop(name, (0, 0, 0))
                    self.dropped_total += count
                    self.pending_dropped += count + dropped
                    self.pending_suppressed += suppressed
                    self._sending = None
                return None
        return Batch(name, body["batch_id"], body["records"], int(body.get("suppressed", 0)), int(body.get("dropped", 0)))

    def done(self, batch: Batch) -> None:
        """The controller has it: delete it."""
        with self._lock:
            self._index.pop(batch.name, None)
            self._forget(batch.name)
            self._sending = None

    def release(self, batch: Batch) -> None:
        """Not sent (controller away): keep it, it may be dropped for room again."""
        with self._lock:
            if self._sending == batch.name:
                self._sending = None

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()
