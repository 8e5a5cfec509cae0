"""Work done aside: in a forked child process while this one goes on.

The lint's checks of definitions (empty references, unused definitions) read the
policy and nothing the chain analysis makes, and give back a few findings: on a
machine with a second CPU they run there while the chains are analysed (~0.9 s of
the ~13 s at 10,000 VMs). Only a small result crosses back (pickled through a pipe);
what the child builds on the way dies with it.

Forking is safe only in a process with one thread (a lock another thread holds would
stay held in the child for ever), so with more threads, or without `os.fork`, or
when asked not to, the work runs here, at once: the result is the same either way.
A child that fails gives no result; the work then runs here too (its error, if it
has one, is raised here).
"""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Aside(Generic[T]):
    """`work()`'s result, computed in a forked child when possible; `result()` waits."""

    def __init__(self, work: Callable[[], T], *, fork: bool = True):
        self._work = work
        self._done = False
        self._value: T | None = None
        self._pid = 0
        self._read = -1
        if fork and hasattr(os, "fork") and threading.active_count() == 1:
            self._start()
        else:
            self._finish(work())

    def _start(self) -> None:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: compute, send, leave without running any cleanup of the parent's
            code = 1
            try:
                os.close(read)
                data = pickle.dumps(self._work(), protocol=pickle.HIGHEST_PROTOCOL)
                with os.fdopen(write, "wb") as out:
                    out.write(data)
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        self._pid, self._read = pid, read

    def _finish(self, value: T) -> None:
        self._value, self._done = value, True

    def result(self) -> T:
        if not self._done:
            with os.fdopen(self._read, "rb") as pipe:
                data = pipe.read()
            _, status = os.waitpid(self._pid, 0)
            if os.waitstatus_to_exitcode(status) == 0 and data:
                self._finish(pickle.loads(data))
            else:
                self._finish(self._work())
        return self._value  # type: ignore[return-value]
