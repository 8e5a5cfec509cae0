"""sd_notify over the socket and journald-friendly log lines."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

from zonewall.service.logs import JournalFormatter, priority
from zonewall.service.sdnotify import ServiceNotifier, notify, watchdog_interval


def test_notify_datagram_and_abstract_socket(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    assert notify("READY=1", "STATUS=hi", env={"NOTIFY_SOCKET": str(path)})
    assert sock.recv(100) == b"READY=1\nSTATUS=hi"
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(f"\0zonewall-test-{os.getpid()}")
    assert notify("WATCHDOG=1", env={"NOTIFY_SOCKET": f"@zonewall-test-{os.getpid()}"})
    assert abstract.recv(100) == b"WATCHDOG=1"
    assert not notify("READY=1", env={})  # not under systemd: nothing, no error


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None  # another process's
    assert watchdog_interval({}) is None


def test_ready_once_and_watchdog_only_while_alive(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    state = {"ready": False, "alive": True}
    notifier = ServiceNotifier(lambda: state["ready"], lambda: state["alive"], lambda: "status", poll=0.02,
                               env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "100000"}).start()

    def drain(seconds: float) -> list[bytes]:
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                out.append(sock.recv(100))
            except TimeoutError:
                break
        return out

    first = drain(0.3)
    assert b"WATCHDOG=1" in first and not any(b"READY=1" in m for m in first)
    state["ready"] = True
    assert any(m.startswith(b"READY=1") for m in drain(0.3))
    state["alive"] = False
    drain(0.15)
    assert drain(0.4) == []  # a stuck loop feeds no watchdog: systemd restarts the service
    notifier.stop()
    assert b"STOPPING=1" in sock.recv(100)


def test_journal_lines_carry_priorities() -> None:
    formatter = JournalFormatter("%(name)s: %(message)s")
    record = logging.LogRecord("zonewall.agent", logging.WARNING, __file__, 1, "drift repaired\nsecond line", None, None)
    assert formatter.format(record) == "<4>zonewall.agent: drift repaired\n<4>second line"
    assert [priority(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)] == [7, 6, 4, 3, 3]
