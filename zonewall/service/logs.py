"""Logging for the daemons: plain lines for a terminal, priorities for journald.

Under systemd, stderr goes to the journal and `$JOURNAL_STREAM` names it (device and
inode). Lines then start with a syslog priority (`<3>` error, `<4>` warning, `<6>`
info, `<7>` debug: sd-daemon(3)), which journald stores as the entry's PRIORITY
(`journalctl -p warning` works), and carry no timestamp of their own (journald adds
one). Elsewhere every line has its time.
"""

from __future__ import annotations

import logging
import os
import sys

PRIORITIES = ((logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def priority(levelno: int) -> int:
    return next((value for level, value in PRIORITIES if levelno >= level), 7)


class JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.splitlines())  # a traceback keeps its priority


def to_journal(stream: object = None) -> bool:
    """True when `stream` (stderr) is the journal stream systemd gave us."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        stat = os.fstat((stream or sys.stderr).fileno())  # type: ignore[union-attr]
        return bool(value) and (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


class StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record comes (a command run in-process by
    a test swaps it and closes its own afterwards)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(name: str, verbose: bool = False) -> None:
    """Root logging for a daemon called `name` (e.g. "agent[node1]", "controller"):
    one handler of ours on stderr (an earlier one of ours is replaced, others stay)."""
    handler = StderrHandler()
    if to_journal(sys.stderr):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, StderrHandler)] + [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for chatty in ("httpx", "httpcore"):  # one line per long-poll otherwise
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
