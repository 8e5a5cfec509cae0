"""Handing the interpreter over often while a long computation shares it with a server.

A thread that computes for seconds (a commit's semantic diff: ~5 s at 10,000 VMs for
a zone rule open to everyone) keeps the GIL until the interpreter asks it to let go,
every switch interval (5 ms by default). The event loop beside it gives the GIL back
at every socket operation and waits up to a whole interval to take it again: answering
100 agents after a commit took ~6 s that way, measured (bench/cluster.py, zone kind;
docs/performance.md), though the answers are milliseconds of work. While such a
computation runs the interval is 100 us: the loop answers within a fraction of a
second; the computation pays only while the loop wants the interpreter too.

The interval is the process's: the first computation in sets it, the last one out
restores the interval it found.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

QUICK_INTERVAL = 1e-4  # seconds; measured: 5.9 s -> 0.6-1.2 s p50 from publication to a zone change enforced (10,000 VMs)

_lock = threading.Lock()
_inside = 0
_found = 0.0


@contextmanager
def handing_over_often() -> Iterator[None]:
    """Inside, the interpreter's switch interval is QUICK_INTERVAL (nesting and
    threads are fine); the interval found is restored when the last one leaves."""
    global _inside, _found
    with _lock:
        if _inside == 0:
            _found = sys.getswitchinterval()
            sys.setswitchinterval(QUICK_INTERVAL)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                sys.setswitchinterval(_found)
