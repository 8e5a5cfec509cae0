"""Progress of long operations on stderr without a terminal (CI logs): a line every 10%
for counted work, a reminder every few seconds for a phase; nothing for quick work."""

from __future__ import annotations

import time

import pytest
from rich.console import Console

from zonewall.cli.progress import phase, progress


def test_counted_work_prints_every_tenth_and_the_end(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(Console(stderr=True, force_terminal=False), "probing", quiet_seconds=0) as tick:
        for done in range(1, 201):
            tick(done, 200)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("probing: 1/200") and lines[-1].startswith("probing: 200/200 (100%")
    assert 10 <= len(lines) <= 12


def test_quick_work_prints_nothing_and_a_long_phase_reminds(capsys: pytest.CaptureFixture[str]) -> None:
    with progress(Console(stderr=True, force_terminal=False), "quick") as tick:
        tick(1, 1)
    with phase(Console(stderr=True, force_terminal=False), "loading big.yaml", every=0.05):
        time.sleep(0.18)
    err = capsys.readouterr().err
    assert "quick" not in err
    assert err.count("loading big.yaml... (") >= 2
