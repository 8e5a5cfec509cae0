"""Progress of long operations on stderr: a bar at a terminal, a line every 10% elsewhere
(CI logs), nothing for operations that finish before it would matter."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

Tick = Callable[[int, int], None]  # (done, total)


@contextmanager
def progress(err: Console, label: str, *, quiet_seconds: float = 1.0) -> Iterator[Tick]:
    """A `tick(done, total)` callback that shows `label`'s progress; safe from any thread."""
    lock = threading.Lock()
    started = time.monotonic()
    if err.is_terminal:
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                       console=err, transient=True)
        task = bar.add_task(label, total=None)
        with bar:
            def advance(done: int, total: int) -> None:
                with lock:
                    bar.update(task, completed=done, total=total)
            yield advance
        return
    reported = [-1]

    def tick(done: int, total: int) -> None:
        step = done * 10 // max(total, 1)
        with lock:
            if step > reported[0] and (time.monotonic() - started >= quiet_seconds or (done == total and reported[0] >= 0)):
                reported[0] = step
                sys.stderr.write(f"{label}: {done}/{total} ({done * 100 // max(total, 1)}%, {time.monotonic() - started:.0f} s)\n")
                sys.stderr.flush()
    yield tick


@contextmanager
def phase(err: Console, text: str, *, every: float = 10.0) -> Iterator[None]:
    """An operation without a count (loading a large policy, compiling, translating):
    a spinner with the elapsed time at a terminal; elsewhere a line every `every`
    seconds while it lasts (none if it is quick)."""
    if err.is_terminal:
        with err.status(f"{text}...", spinner="dots"):
            yield
        return
    done = threading.Event()
    started = time.monotonic()

    def remind() -> None:
        while not done.wait(every):
            sys.stderr.write(f"{text}... ({time.monotonic() - started:.0f} s)\n")
            sys.stderr.flush()

    thread = threading.Thread(target=remind, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
