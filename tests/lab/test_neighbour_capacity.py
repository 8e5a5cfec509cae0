"""lab up sizes the kernel's shared neighbour tables for the lab (never lowering them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonewall.lab import netns


def test_thresholds_are_raised_to_fit_and_never_lowered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for family in ("ipv4", "ipv6"):
        base = tmp_path / family / "neigh" / "default"
        base.mkdir(parents=True)
        for name, value in (("gc_thresh1", 128), ("gc_thresh2", 512), ("gc_thresh3", 1024)):
            (base / name).write_text(f"{value}\n")
    real = Path

    def fake(text: str) -> Path:
        return real(text.replace("/proc/sys/net", str(tmp_path)))

    monkeypatch.setattr(netns, "Path", fake)
    assert netns.ensure_neighbour_capacity(500) is False  # fits: untouched
    assert netns.ensure_neighbour_capacity(4232) is True  # a 40-VM lab's matrix
    base = tmp_path / "ipv4" / "neigh" / "default"
    assert [int((base / n).read_text()) for n in ("gc_thresh1", "gc_thresh2", "gc_thresh3")] == [1024, 4096, 8192]
    (base / "gc_thresh2").write_text("20000\n")  # someone set more: kept
    netns.ensure_neighbour_capacity(9000)
    assert [int((base / n).read_text()) for n in ("gc_thresh1", "gc_thresh2", "gc_thresh3")] == [2048, 20000, 16384]
