"""The agent gives the memory a compile freed back to the system."""

from __future__ import annotations

import ctypes.util
import gc
import weakref
from pathlib import Path

import pytest

from zonewall.agent import memory


def rss_kib() -> int:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0])


def test_freed_heap_goes_back_to_the_system() -> None:
    # many small objects, then a few survivors among them: glibc cannot shrink its
    # heap past a live chunk, so without a trim the freed pages stay resident
    objects = [bytearray(1000) for _ in range(60_000)]  # over 512 bytes: glibc malloc, not pymalloc
    survivors = objects[::1000]
    del objects
    gc.collect()
    held = rss_kib()
    assert memory.release_freed_memory()
    assert rss_kib() < held - 30_000, "freed memory stayed resident"
    assert len(survivors) == 60


def test_without_malloc_trim_nothing_happens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    memory._malloc_trim.cache_clear()
    try:
        assert memory.release_freed_memory() is False
    finally:
        memory._malloc_trim.cache_clear()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_cyclic_garbage_is_collected_and_survivors_are_set_aside() -> None:
    try:
        gone = weakref.ref(Cycle())  # garbage only a collection frees
        kept = Cycle()
        memory.release_freed_memory()
        assert gone() is None and gc.get_freeze_count() > 0  # survivors (kept) frozen: later collections skip them
        frozen = weakref.ref(kept)
        del kept
        memory.release_freed_memory()
        assert frozen() is not None  # a frozen cycle waits for the next full release
        memory.release_freed_memory(everything=True)
        assert frozen() is None
    finally:
        gc.unfreeze()


def test_a_kept_policy_drops_what_no_edit_reads_and_compiles_the_same() -> None:
    from bench.synth import policy_text
    from zonewall.compiler.node import compile_node
    from zonewall.policy.documents import load_documents

    documents = {"policy.yaml": policy_text(12, nodes=2)}
    loaded, kept = load_documents(documents), load_documents(documents)
    memory.keep_what_edits_read(kept)
    assert "nics" in loaded.source["vms"]["vm0"] and "groups" in loaded.source
    assert set(kept.source) == {"vms", "zones", "groups"} and set(kept.source["vms"]["vm0"]) == {"rules"}  # NICs, hosts...: gone
    assert kept.source["vms"]["vm0"]["rules"].value_locs == loaded.source["vms"]["vm0"]["rules"].value_locs  # where edits are found
    assert [(r.id, r.loc) for r in kept.rules] == [(r.id, r.loc) for r in loaded.rules]  # ids derived from positions: kept
    assert compile_node(kept, "node1", timezone="UTC") == compile_node(loaded, "node1", timezone="UTC")
