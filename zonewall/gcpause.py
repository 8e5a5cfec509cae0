"""Pausing Python's cyclic garbage collector around bulk work that builds no cycles.

Loading a policy, compiling a node and applying its ruleset each allocate hundreds of
thousands of small dicts, tuples and strings that only reference downwards. Every
full collection walks all of them (and everything else alive) without freeing any:
measured, it took half or more of those steps at 2,000-10,000 guests
(docs/performance.md). Reference counting still frees everything as usual.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused(*, long_lived: bool = False) -> Iterator[None]:
    """The collector is off inside (nesting is fine); its previous state is restored.

    `long_lived`: what was built inside stays (a loaded policy): everything alive is
    moved to the oldest generation on the way out (gc.freeze + unfreeze, no walk).
    Otherwise the first collection after the pause walks every object the work left
    alive, once, to promote it: 1.5 s after loading a 10,000-VM policy (measured).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if long_lived:
            gc.freeze()
            gc.unfreeze()
        if was_enabled:
            gc.enable()
