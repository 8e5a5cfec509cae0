"""What an agent sends of each counter reading: only what moved.

Every `counter_interval` seconds the agent reads every rule's kernel counter (2,000
and more at 100 guests). Sending the whole reading each time cost the controller
parsing and storing 100 readings every few seconds at 100 nodes, though most rules
see no traffic between two readings. So a reading is sent

* whole (`partial: false`) the first time, when the node's rules changed (a rule
  added or removed: the controller marks what is gone; or renamed, `was`: the
  controller moves rows only with a whole reading), and every `full_every`
  seconds (a controller that lost its store, a replica that missed a report);
* otherwise only the counters that differ from the last reading the controller
  accepted (`partial: true`: the others are as they were);
* not at all when nothing moved.

A reading that was not delivered changes nothing here: the next one is compared
with the last the controller has, so nothing is lost (kernel counters are
cumulative).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..dataplane.counters import RuleCounter

FULL_EVERY = 60.0  # seconds between whole readings


class CounterReports:
    def __init__(self, full_every: float = FULL_EVERY, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every = full_every
        self._clock = clock
        self._delivered: dict[tuple[str, str, str, str], RuleCounter] | None = None  # the controller's view
        self._full_at = 0.0

    def report(self, counters: list[RuleCounter]) -> tuple[list[RuleCounter], bool] | None:
        """(the counters to send, whether partial), or None: nothing to send."""
        current: dict[tuple[str, str, str, str], RuleCounter] = {}
        for counter in counters:
            current.setdefault(counter.key, counter)  # as the controller: the first of a key counts
        known = self._delivered
        if known is None or current.keys() != known.keys() or self._clock() - self._full_at >= self.full_every:
            return counters, False
        if any(counter.was is not None and counter.was != known[key].was for key, counter in current.items()):
            return counters, False  # a rename not yet told (rules reordered: the same ids): the controller takes renames from whole readings
        # (a rename no longer told is no reason to send)
        changed = [counter for key, counter in current.items() if _reading(counter) != _reading(known[key])]
        return (changed, True) if changed else None

    def delivered(self, counters: list[RuleCounter], partial: bool) -> None:
        """The controller accepted this report."""
        if partial and self._delivered is not None:
            self._delivered.update((counter.key, counter) for counter in counters)
            return
        self._delivered, self._full_at = {}, self._clock()
        for counter in counters:
            self._delivered.setdefault(counter.key, counter)


def _reading(counter: RuleCounter) -> tuple[object, ...]:
    return (counter.verdict, counter.packets, counter.bytes, counter.instances)
