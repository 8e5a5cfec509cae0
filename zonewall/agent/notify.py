"""Hypervisor events for the agent: a datagram socket in the state directory.

libvirt runs /etc/libvirt/hooks/qemu synchronously and a hook must neither block
nor call back into libvirt, so the hook (hooks/qemu) only sends one line here and
exits; the agent re-discovers taps and re-applies on its own time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("zonewall.agent.notify")
SOCKET_NAME = "agent.sock"
MAX_MESSAGE = 4096


def send(path: Path, message: str) -> bool:
    """Best effort: False if no agent listens."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode()[:MAX_MESSAGE], str(path))
        return True
    except OSError:
        return False


class NotifyListener:
    """Calls `on_message(text)` for every datagram sent to `path`."""

    def __init__(self, path: Path, on_message: Callable[[str], None]) -> None:
        self.path = path
        self._on_message = on_message
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()  # a stale socket of an earlier run
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        os.chmod(path, 0o600)  # only root (libvirt's hooks run as root) may poke the agent
        self._thread = threading.Thread(target=self._run, name="zonewall-notify", daemon=True)

    def start(self) -> NotifyListener:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except OSError:
                return  # closed
            text = data.decode(errors="replace").strip()
            if text:
                log.info("hypervisor event: %s", text)
                self._on_message(text)

    def stop(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)
