"""confirm.py bookkeeping with FakeBackend (the daemon itself is a kernel test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zonewall.dataplane import confirm
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import NftError
from zonewall.dataplane.fake import FakeBackend
from zonewall.dataplane.readback import listing_hash

from .samples import node_ruleset


@pytest.fixture
def no_daemon(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    spawned: list[tuple] = []

    def fake_spawn(*args: object) -> int:
        spawned.append(args)
        return 4242

    monkeypatch.setattr(confirm, "_spawn_reverter", fake_spawn)
    return spawned


def test_state_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(confirm.STATE_DIR_ENV, raising=False)
    assert confirm.resolve_state_dir() == Path("/var/lib/zonewall")
    monkeypatch.setenv(confirm.STATE_DIR_ENV, str(tmp_path / "env"))
    assert confirm.resolve_state_dir() == tmp_path / "env"
    assert confirm.resolve_state_dir(tmp_path / "arg") == tmp_path / "arg"


def test_arm_confirm_pending(tmp_path: Path, no_daemon: list[tuple]) -> None:
    fake = FakeBackend()
    result = apply_ruleset(fake, node_ruleset())
    armed = confirm.arm_revert(result.snapshot, node="node1", timeout=30, state_dir=tmp_path, netns="ns1")
    assert armed.pid == 4242 and 29 < armed.remaining() <= 30
    assert no_daemon[0][1:4] == ("node1", armed.token, "ns1")
    assert confirm.pending("node1", state_dir=tmp_path) == armed
    assert (tmp_path / "node1.pending.json").stat().st_mode & 0o777 == 0o600
    assert confirm.confirm_pending("node1", state_dir=tmp_path) is True
    assert confirm.pending("node1", state_dir=tmp_path) is None
    assert confirm.confirm_pending("node1", state_dir=tmp_path) is False
    # The reverter finds nothing to do once confirmed.
    assert confirm.revert_now("node1", state_dir=tmp_path, token=armed.token,
                              backend_factory=lambda ns: fake) is False


def test_revert_now_restores_and_records(tmp_path: Path, no_daemon: list[tuple]) -> None:
    fake = FakeBackend()
    old = node_ruleset()
    apply_ruleset(fake, old)
    content = listing_hash(fake, old)
    result = apply_ruleset(fake, node_ruleset({"tap3": 3}), previous=old)
    armed = confirm.arm_revert(result.snapshot, node="node1", timeout=0, state_dir=tmp_path)
    seen: list[str | None] = []

    def factory(ns: str | None) -> FakeBackend:
        seen.append(ns)
        return fake

    assert confirm.revert_now("node1", state_dir=tmp_path, token="other", backend_factory=factory) is False
    assert confirm.revert_now("node1", state_dir=tmp_path, token=armed.token, backend_factory=factory) is True
    assert seen == [None]
    assert listing_hash(fake, old) == content
    assert confirm.pending("node1", state_dir=tmp_path) is None
    outcome = confirm.last_revert("node1", state_dir=tmp_path)
    assert outcome is not None and outcome["ok"] and outcome["token"] == armed.token


def test_failed_revert_is_recorded_and_stays_pending(tmp_path: Path, no_daemon: list[tuple]) -> None:
    fake = FakeBackend()
    result = apply_ruleset(fake, node_ruleset())
    confirm.arm_revert(result.snapshot, node="node1", timeout=0, state_dir=tmp_path)
    fake.fail_next("Error: boom")
    with pytest.raises(NftError):
        confirm.revert_now("node1", state_dir=tmp_path, backend_factory=lambda ns: fake)
    assert confirm.pending("node1", state_dir=tmp_path) is not None
    outcome = confirm.last_revert("node1", state_dir=tmp_path)
    assert outcome is not None and outcome["ok"] is False and outcome["error"] == "Error: boom"


def test_rearm_keeps_the_earlier_snapshot(tmp_path: Path, no_daemon: list[tuple]) -> None:
    fake = FakeBackend()
    a = apply_ruleset(fake, node_ruleset())
    b = apply_ruleset(fake, node_ruleset({"tap3": 3}))
    first = confirm.arm_revert(a.snapshot, node="node1", timeout=30, state_dir=tmp_path)
    second = confirm.arm_revert(b.snapshot, node="node1", timeout=60, state_dir=tmp_path)
    assert second.token != first.token and second.deadline > first.deadline
    assert second.snapshot == a.snapshot


def test_spawn_failure_leaves_no_orphan_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> int:
        raise OSError("no python")

    monkeypatch.setattr(confirm, "_spawn_reverter", broken)
    with pytest.raises(RuntimeError, match="could not start the reverter"):
        confirm.arm_revert(apply_ruleset(FakeBackend(), node_ruleset()).snapshot, node="n", timeout=5,
                           state_dir=tmp_path)
    assert confirm.pending("n", state_dir=tmp_path) is None


@pytest.mark.parametrize("node", ["", "../etc", ".hidden", "a/b"])
def test_node_names_cannot_escape_the_state_dir(tmp_path: Path, node: str) -> None:
    with pytest.raises(ValueError):
        confirm.pending(node, state_dir=tmp_path)
