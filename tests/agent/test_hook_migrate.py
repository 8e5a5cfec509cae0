"""The libvirt hook's migration events: which event asks the agent what, which
answer lets libvirt go on, and the agent's answers (docs/migration.md)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.controller.test_migrate import POLICY
from zonewall.agent.migrate_steps import HookRequests
from zonewall.agent.notify import NotifyListener, request
from zonewall.policy.documents import load_documents

HOOK = Path(__file__).resolve().parents[2] / "zonewall" / "agent" / "hooks" / "qemu"


def hook_module() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("zonewall_qemu_hook", str(HOOK))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(("argv", "expected"), [
    (["qemu", "vm1", "migrate", "begin", "-"], ("qemu vm1 migrate begin", 30.0, True)),   # target: prepare, wait, must succeed
    (["qemu", "vm1", "prepare", "begin", "-"], ("qemu vm1 prepare begin", 30.0, True)),
    (["qemu", "vm1", "started", "begin", "-"], ("qemu vm1 started begin", 10.0, False)),  # target: arrived, re-copy
    (["qemu", "vm1", "release", "end", "-"], ("qemu vm1 release end", 10.0, False)),      # source: clean up
    (["qemu", "vm1", "stopped", "end", "-"], ("qemu vm1 stopped end", None, False)),      # a datagram only
    (["qemu", "vm1", "reconnect", "begin", "-"], ("qemu vm1 reconnect begin", None, False)),
    (["qemu", "vm1", "start", "begin", "-"], None),
    (["qemu", "vm1", "prepare", "end", "-"], None),
    (["qemu"], None),
])
def test_event_to_request_mapping(argv: list[str], expected: Any) -> None:
    assert hook_module().plan(argv, env={}) == expected


def test_timeout_and_fail_open_from_the_environment() -> None:
    hook = hook_module()
    assert hook.plan(["qemu", "vm1", "migrate", "begin"], env={"ZONEWALL_HOOK_TIMEOUT": "5"}) == ("qemu vm1 migrate begin", 5.0, True)
    assert hook.plan(["qemu", "vm1", "migrate", "begin"], env={"ZONEWALL_HOOK_FAIL_OPEN": "1"})[2] is False


def run_hook(socket_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, ZONEWALL_AGENT_SOCKET=str(socket_path), **env)
    return subprocess.run([sys.executable, str(HOOK), *args], input="<domain/>", env=environment, capture_output=True, text=True, timeout=20)


def test_migrate_begin_waits_for_the_agent_and_fails_the_migration_on_error(tmp_path: Path) -> None:
    answers = {"qemu web1 migrate begin": "ok web1's rules installed", "qemu db1 migrate begin": "error apply failed"}
    asked: list[str] = []

    def on_request(text: str) -> str:
        asked.append(text)
        time.sleep(0.3)  # the hook waits for the apply
        return answers.get(text, "ok")

    listener = NotifyListener(tmp_path / "agent.sock", lambda text: None, on_request=on_request).start()
    try:
        assert run_hook(tmp_path / "agent.sock", "web1", "migrate", "begin", "-").returncode == 0
        refused = run_hook(tmp_path / "agent.sock", "db1", "migrate", "begin", "-")
        assert refused.returncode == 1 and "apply failed" in refused.stderr
        assert request(tmp_path / "agent.sock", "qemu web1 started begin", 5) == "ok"
    finally:
        listener.stop()
    assert asked == ["qemu web1 migrate begin", "qemu db1 migrate begin", "qemu web1 started begin"]


def test_migrate_begin_without_an_agent_refuses_unless_fail_open(tmp_path: Path) -> None:
    refused = run_hook(tmp_path / "nobody.sock", "web1", "migrate", "begin", "-", ZONEWALL_HOOK_TIMEOUT="1")
    assert refused.returncode == 1 and "no answer" in refused.stderr
    assert run_hook(tmp_path / "nobody.sock", "web1", "migrate", "begin", "-", ZONEWALL_HOOK_FAIL_OPEN="1", ZONEWALL_HOOK_TIMEOUT="1").returncode == 0
    assert run_hook(tmp_path / "nobody.sock", "web1", "started", "begin", "-").returncode == 0  # never fails libvirt
    assert run_hook(tmp_path / "nobody.sock", "web1", "release", "end", "-").returncode == 0


class FakeEnforcer:
    def __init__(self, documents: dict[str, str]) -> None:
        self.state = type("State", (), {"documents": documents, "revision": 1})()

    def policy_of(self, documents: dict[str, str]):  # type: ignore[no-untyped-def]
        return load_documents(documents)


def test_prepare_request_installs_the_vm_on_this_node() -> None:
    applied: list[dict[str, str]] = []
    rediscovered: list[str] = []
    handler = HookRequests("node2", FakeEnforcer({"p.yaml": POLICY}), applied.append, rediscovered.append, lambda: None)  # type: ignore[arg-type]
    assert handler("qemu mover migrate begin -").startswith("ok mover's rules installed")
    assert load_documents(applied[0]).doc.vms["mover"].host == "node2"
    assert handler("qemu ghost prepare begin -").startswith("ok ghost is not managed")
    on_source = HookRequests("node1", FakeEnforcer({"p.yaml": POLICY}), applied.append, rediscovered.append, lambda: None)  # type: ignore[arg-type]
    assert on_source("qemu mover prepare begin -").startswith("ok mover's rules are in place") and len(applied) == 1
    assert on_source("qemu mover release end -").startswith("ok nothing to clean")  # still its VM in the policy
    assert rediscovered == ["qemu mover release end -"]
