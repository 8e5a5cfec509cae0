"""Notice changes to nftables as the kernel makes them: `nft monitor` over netlink.

`nft monitor` subscribes to nf_tables' netlink notifications and prints each change
of a transaction, then a trailer naming the process that committed it:

    delete rule inet zonewall vm-web1-in handle 12
    delete table inet zonewall
    # new generation 41 by process 3171 (nft)

Events are grouped by that trailer into one `Generation`, so a caller can tell its
own transactions (its pid) from anyone else's and ignore changes to other tables.
Text output is used rather than `-j`: JSON monitoring does not print the trailer.
If the monitor process dies it is restarted, and `on_gap` says that changes in
between may have been missed (the caller should verify).
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("zonewall.dataplane.monitor")

FAMILIES = frozenset({"ip", "ip6", "inet", "arp", "bridge", "netdev"})
_TRAILER = re.compile(r"^# new generation (\d+) by process (\d+) \((.*)\)\s*$")
TableKey = tuple[str, str]


@dataclass(frozen=True)
class Generation:
    number: int
    pid: int
    command: str
    tables: frozenset[TableKey] = field(default_factory=frozenset)  # tables the events touched


def event_table(line: str) -> TableKey | None:
    """(family, table) of one event line: `add rule inet zonewall c ...`,
    `delete table bridge zonewall`, `add ct helper inet t h ...`; None if not one."""
    words = line.split()
    if len(words) < 3 or words[0] not in ("add", "delete", "destroy", "flush", "replace", "insert", "update", "reset"):
        return None
    for index in range(1, min(len(words) - 1, 4)):  # the kind is 1-2 words ("ct helper")
        if words[index] in FAMILIES:
            return (words[index], words[index + 1])
    return None


class GenerationParser:
    """Feed monitor output line by line; complete generations come out."""

    def __init__(self) -> None:
        self._tables: set[TableKey] = set()

    def feed(self, line: str) -> Generation | None:
        match = _TRAILER.match(line)
        if match:
            generation = Generation(int(match.group(1)), int(match.group(2)), match.group(3), frozenset(self._tables))
            self._tables = set()
            return generation
        table = event_table(line)
        if table is not None:
            self._tables.add(table)
        return None


class NftMonitor:
    """Runs `nft monitor` (inside `netns` if given) and hands every generation to
    `on_generation` from a reader thread; `on_gap` is called when the monitor had to
    be restarted (and once it first runs)."""

    def __init__(
        self,
        on_generation: Callable[[Generation], None],
        *,
        netns: str | None = None,
        on_gap: Callable[[], None] = lambda: None,
        nft: str = "nft",
    ) -> None:
        self._on_generation = on_generation
        self._on_gap = on_gap
        self._argv = (["ip", "netns", "exec", netns] if netns else []) + [nft, "monitor"]
        self._stopping = threading.Event()
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="zonewall-nft-monitor", daemon=True)

    def start(self) -> NftMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                # stderr is dropped, not piped: nft warns there about events it cannot
                # decode ("unknown set"), and an unread pipe would fill and block it
                process = subprocess.Popen(self._argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
            except OSError as exc:
                log.error("cannot run %s: %s", " ".join(self._argv), exc)
                process = None
            if process is not None:
                with self._lock:
                    self._process = process
                self._on_gap()  # anything before the subscription was not seen
                self._read(process)
                if self._stopping.is_set():
                    return
                log.warning("nft monitor exited (%s); restarting", process.wait())
            backoff = 0.1 if time.monotonic() - started > 10 else min(backoff * 2, 5.0)
            self._stopping.wait(backoff)

    def _read(self, process: subprocess.Popen[str]) -> None:
        parser = GenerationParser()
        assert process.stdout is not None
        for line in process.stdout:
            generation = parser.feed(line.rstrip("\n"))
            if generation is not None:
                try:
                    self._on_generation(generation)
                except Exception:
                    log.exception("nft monitor callback failed")
