"""Jittered exponential back-off for the agent's calls to its controllers.

After every controller failed, a thread waits before it tries again: 0.2 s doubling
up to 5 s, each wait drawn between half and all of that ("equal jitter"). A
thousand agents cut off together (a controller restarting, a network blip) then
come back spread over the interval instead of all in the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable

FIRST = 0.2
CAP = 5.0


class Backoff:
    def __init__(self, first: float = FIRST, cap: float = CAP, draw: Callable[[], float] = random.random) -> None:
        self._first, self._cap, self._draw = first, cap, draw
        self._failures = 0

    def next(self) -> float:
        """The wait after one more failure."""
        ceiling = min(self._cap, self._first * (2 ** min(self._failures, 32)))
        self._failures += 1
        return ceiling / 2 + self._draw() * ceiling / 2

    def reset(self) -> None:
        """A call succeeded: the next failure waits the shortest again."""
        self._failures = 0
