"""Giving the memory a compile and an apply freed back to the system.

A compile and an apply allocate tens of megabytes for a moment (the policy's
model, the plan, the JSON libnftables parses on its own thread) and free them
again. glibc keeps what was freed in its arenas, in pieces the next compile
rarely fits exactly, so a long-running agent's RSS stays at its peak: at 1,000
VMs about 30 MiB of a running agent's 130 MiB was freed memory glibc held
(bench/cluster.py, docs/performance.md). `malloc_trim` hands the free pages of
every arena back; it costs a few milliseconds, once per compile.

Before that, cyclic garbage is collected: a parsed policy holds reference cycles,
so a policy the agent no longer needs is freed only when the collector's oldest
generation runs, which is rare. An agent that loaded its 10,000-VM node's documents
whole on every change held several at once: 776 MiB after 10 changes, 173 MiB
with a collection after each (bench/agentcost.py). A full collection over what the
agent keeps (its policy: ~300,000 objects at 10,000 VMs) costs ~170 ms, so what
survives a collection is frozen (`gc.freeze`: later collections skip it) and only
after a whole load, when the previous policy became garbage, is everything
collected again; after a one-rule change a collection costs ~10 ms. (What a
one-rule change leaves of the frozen policy in cycles, a handful of objects, waits
for the next whole load.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from functools import cache
from typing import Any

from ..policy.incremental import SECTIONS
from ..policy.resolve import Policy
from ..policy.source import LDict


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


def release_freed_memory(*, everything: bool = False) -> bool:
    """Free cyclic garbage, return freed heap pages to the system; False where the C
    library cannot. `everything`: collect what earlier calls froze too (after a whole
    policy load: the previous policy is garbage now)."""
    if everything:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def keep_what_edits_read(policy: Policy) -> None:
    """Drop the parts of a whole load's positioned YAML tree (`policy.source`) that no
    later step of the agent reads.

    The tree is most of what a parsed policy costs the agent (~30 of ~50 MiB at
    10,000 VMs: every VM's NICs and addresses, each with its positions), and after the
    load only two things read it: the rule table (each rule's position, whence the ids
    of rules without one), built here first, and an edit read in place
    (policy/incremental.py), which walks `vms`/`zones` -> owner -> `rules` and the
    `groups` entries (a member line edited; small beside the VMs) only. A
    problem found in an edit is never reported from this tree: the edit is refused and
    the whole load reports it from the documents, with its own positions.

    The dropped tree holds reference cycles: it is collected here, so that the
    compile and the apply that follow reuse its memory instead of growing the heap
    (peak of a 10,000-VM node's first apply 195 -> 183 MiB, RSS after it 128 -> 120;
    a full collection, ~0.2 s, only after a whole load)."""
    policy.build_indexes()
    policy.keep_compile_memos()  # the next compile, of this policy or an edit of it, starts from this one's
    if isinstance(policy.source, LDict):
        policy.source = _rules_only(policy.source)
    gc.collect()


def _rules_only(root: LDict) -> LDict:
    kept: dict[str, LDict] = {}
    for section, _level in SECTIONS:
        specs = root.get(section)
        if isinstance(specs, LDict):
            owners = {name: _shell(spec, ("rules",)) for name, spec in specs.items() if isinstance(spec, LDict) and "rules" in spec}
            kept[section] = _shell(specs, tuple(owners), owners)
    groups = root.get("groups")
    if isinstance(groups, LDict):  # a group's member line edited is read against it (policy/incremental.py)
        kept["groups"] = groups
    return _shell(root, tuple(kept), kept)


def _shell(node: LDict, keys: tuple[str, ...], values: dict[str, Any] | None = None) -> LDict:
    """A positioned dict of `node`'s `keys` only (the values are `values`' or node's own)."""
    out = LDict({key: node[key] if values is None else values[key] for key in keys})
    out.loc = node.loc
    out.key_locs = {key: node.key_locs[key] for key in keys}
    out.value_locs = {key: node.value_locs[key] for key in keys}
    return out
