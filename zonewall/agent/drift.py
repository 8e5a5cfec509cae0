"""Drift detection: someone else changed zonewall's tables.

Generations committed by this process are our own applies and are ignored; so are
changes to other tables (Docker's, libvirt's...), which the agent never touches.
Anything else wakes the enforcer, which reads back and repairs if needed. A
periodic verification in the daemon covers what the monitor cannot see (it was
restarting, or it is not installed).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..compiler.naming import TABLE
from ..dataplane.monitor import Generation, NftMonitor


def touches_ours(generation: Generation, own_pid: int) -> bool:
    return generation.pid != own_pid and any(name == TABLE for _family, name in generation.tables)


class DriftWatch:
    def __init__(self, on_drift: Callable[[str], None], *, netns: str | None = None) -> None:
        self._on_drift = on_drift
        self._pid = os.getpid()
        self._monitor = NftMonitor(self._generation, netns=netns, on_gap=lambda: on_drift("nft monitor (re)started"))

    def _generation(self, generation: Generation) -> None:
        if touches_ours(generation, self._pid):
            tables = ", ".join(f"{f} {n}" for f, n in sorted(generation.tables))
            self._on_drift(f"generation {generation.number} by {generation.command} (pid {generation.pid}) changed {tables}")

    def start(self) -> DriftWatch:
        self._monitor.start()
        return self

    def stop(self) -> None:
        self._monitor.stop()
