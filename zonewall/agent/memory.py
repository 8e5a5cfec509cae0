"""Giving the memory a compile and an apply freed back to the system.

A compile and an apply allocate tens of megabytes for a moment (the policy's
model, the plan, the JSON libnftables parses on its own thread) and free them
again. glibc keeps what was freed in its arenas, in pieces the next compile
rarely fits exactly, so a long-running agent's RSS stays at its peak: at 1,000
VMs about 30 MiB of a running agent's 130 MiB was freed memory glibc held
(bench/cluster.py, docs/performance.md). `malloc_trim` hands the free pages of
every arena back; it costs a few milliseconds, once per compile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None on a C library without it (musl)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return freed heap pages to the system; False where the C library cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
