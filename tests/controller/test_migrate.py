"""The migration orchestrator without a kernel: order of steps, aborts, the edit."""

from __future__ import annotations

from typing import Any

import pytest

from zonewall.controller.migrate import Migration, MigrationError, plan
from zonewall.policy.edits import ChangeError, set_host

POLICY = """\
version: 1
hosts:
  node1: {address: [192.168.81.11]}
  node2: {address: [192.168.81.12]}
networks:
  lan: {bridge: vmbr1, subnets: [10.81.1.0/24]}
vms:
  mover: {host: node1, nics: [{network: lan, ips: [10.81.1.10]}]}
  stay: {host: node1, nics: [{network: lan, ips: [10.81.1.11]}]}
"""


class FakeChannel:
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fail = fail

    def step(self, node: str, step: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((node, step))
        if step == self.fail:
            raise RuntimeError("boom")
        return {"data": "", "entries": 0} if step == "export" else {}


def test_plan_moves_the_host_and_keeps_staying_guests() -> None:
    p = plan({"p.yaml": POLICY}, "mover", "node2")
    assert (p.source, p.target, p.addresses, p.keep) == ("node1", "node2", ["10.81.1.10"], ["10.81.1.11"])
    assert "host: node2" in p.after.documents["p.yaml"].split("stay:")[0]
    assert p.after.summary == {"op": "migrate", "target": "vms.mover", "from": "node1", "to": "node2"}
    with pytest.raises(ChangeError):
        plan({"p.yaml": POLICY}, "mover", "node9")
    with pytest.raises(ChangeError):
        set_host({"p.yaml": POLICY}, "mover", "node1")


def test_sequence_target_first_source_cleaned_last() -> None:
    channel, events = FakeChannel(), []
    migration = Migration(plan({"p.yaml": POLICY}, "mover", "node2"), channel, lambda: events.append("switch"),
                          lambda edited: events.append("commit") or 7)
    report = migration.run()
    assert channel.calls == [("node2", "prepare"), ("node1", "export"), ("node2", "import"), ("node1", "export"),
                             ("node2", "import"), ("node1", "cleanup")]
    assert events == ["switch", "commit"] and report["revision"] == 7


@pytest.mark.parametrize("failing", ["prepare", "import"])
def test_failure_before_the_switch_aborts_on_the_target(failing: str) -> None:
    channel, events = FakeChannel(fail=failing), []
    migration = Migration(plan({"p.yaml": POLICY}, "mover", "node2"), channel, lambda: events.append("switch"), lambda e: 1)
    with pytest.raises(MigrationError):
        migration.run()
    assert events == []  # the guest never moved, nothing committed
    assert channel.calls[-1] == ("node2", "abort") and ("node1", "cleanup") not in channel.calls


def test_without_state_transfer_nothing_is_exported() -> None:
    channel = FakeChannel()
    Migration(plan({"p.yaml": POLICY}, "mover", "node2"), channel, lambda: None, lambda e: 1, transfer_state=False).run()
    assert [step for _, step in channel.calls] == ["prepare", "cleanup"]
