"""Hypervisor events for the agent: a datagram socket in the state directory.

libvirt runs /etc/libvirt/hooks/qemu synchronously and a hook must neither block
nor call back into libvirt, so the hook (hooks/qemu) only sends one line here and
exits; the agent re-discovers taps and re-applies on its own time.

A few events need an answer (a migration's `migrate`/`prepare` on the target: the
VM's rules must be in place before the guest arrives). For those the hook binds its
own socket and waits: a datagram from a bound sender is a request, handed to
`on_request`, whose return text ("ok ..." or "error ...") goes back to the sender.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
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


def request(path: Path, message: str, timeout: float) -> str | None:
    """Send `message` and wait for the answer (None: no agent, or no answer in time)."""
    with tempfile.TemporaryDirectory(prefix="zonewall-hook-") as directory:
        reply = str(Path(directory) / "reply.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(reply)
            sock.settimeout(timeout)
            try:
                sock.sendto(message.encode()[:MAX_MESSAGE], str(path))
                return sock.recv(MAX_MESSAGE).decode(errors="replace")
            except OSError:
                return None


class NotifyListener:
    """Calls `on_message(text)` for every datagram sent to `path`; a datagram from a
    bound sender goes to `on_request(text)` instead, and its return text is the answer."""

    def __init__(self, path: Path, on_message: Callable[[str], None], on_request: Callable[[str], str] | None = None) -> None:
        self.path = path
        self._on_message = on_message
        self._on_request = on_request
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
                data, sender = self._sock.recvfrom(MAX_MESSAGE)
            except OSError:
                return  # closed
            text = data.decode(errors="replace").strip()
            if not text:
                continue
            log.info("hypervisor event: %s", text)
            if sender and self._on_request is not None:
                threading.Thread(target=self._answer, args=(text, sender), name="zonewall-hook-request", daemon=True).start()
            else:
                self._on_message(text)

    def _answer(self, text: str, sender: str) -> None:
        assert self._on_request is not None
        try:
            answer = self._on_request(text)
        except Exception as exc:  # noqa: BLE001 - the hook must get an answer
            answer = f"error {exc}"
        log.info("hook request %r: %s", text, answer)
        try:
            self._sock.sendto(answer.encode()[:MAX_MESSAGE], sender)
        except OSError as exc:  # the hook gave up waiting
            log.warning("could not answer the hook (%s): %s", text, exc)

    def stop(self) -> None:
        self._sock.close()
        self.path.unlink(missing_ok=True)
