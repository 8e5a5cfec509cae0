"""The libvirt qemu hook tells the agent, and never fails libvirt."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from zonewall.agent.notify import NotifyListener

HOOK = Path(__file__).resolve().parents[2] / "zonewall" / "agent" / "hooks" / "qemu"


def run_hook(socket_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ZONEWALL_AGENT_SOCKET=str(socket_path))
    return subprocess.run([sys.executable, str(HOOK), *args], input="<domain/>", env=env, capture_output=True, text=True, timeout=10)


def test_hook_is_executable() -> None:
    assert os.access(HOOK, os.X_OK)


def test_notifications_reach_the_agent_others_do_not(tmp_path: Path) -> None:
    received: list[str] = []
    arrived = threading.Event()

    def on_message(text: str) -> None:
        received.append(text)
        arrived.set()

    listener = NotifyListener(tmp_path / "agent.sock", on_message).start()
    try:
        assert run_hook(tmp_path / "agent.sock", "web1", "start", "begin", "-").returncode == 0  # not an event of ours
        assert run_hook(tmp_path / "agent.sock", "web1", "stopped", "end", "-").returncode == 0
        assert arrived.wait(5)
        arrived.clear()
        assert run_hook(tmp_path / "agent.sock", "db1", "reconnect", "begin", "-").returncode == 0
        assert arrived.wait(5)
    finally:
        listener.stop()
    assert received == ["qemu web1 stopped end", "qemu db1 reconnect begin"]
    assert not (tmp_path / "agent.sock").exists()


def test_hook_succeeds_without_an_agent(tmp_path: Path) -> None:
    assert run_hook(tmp_path / "nobody.sock", "web1", "started", "begin", "-").returncode == 0
