"""`apply --confirm`: the detached reverter, in a real namespace with a real daemon."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zonewall.dataplane import confirm
from zonewall.dataplane.apply import apply_ruleset
from zonewall.dataplane.backend import LibNftBackend
from zonewall.dataplane.readback import listing_hash, readback_hash

from .kernel_helpers import foreign_listing, load_foreign, tables
from .samples import TABLE, node_ruleset

pytestmark = pytest.mark.kernel


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a non-reaping init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Reverter pids started by a test; any still running at teardown are stopped."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def backend(netns_name: str) -> Iterator[LibNftBackend]:
    with LibNftBackend(netns_name) as b:
        yield b


def test_unconfirmed_apply_is_reverted(backend: LibNftBackend, netns_name: str, tmp_path: Path,
                                       daemons: list[int]) -> None:
    docker = load_foreign(netns_name)
    old = node_ruleset()
    apply_ruleset(backend, old)
    content = listing_hash(backend, old)
    result = apply_ruleset(backend, node_ruleset({"tap7": 7}, policy="accept", bridge_table=False), previous=old)
    armed = confirm.arm_revert(result.snapshot, node="node1", timeout=1.0, state_dir=tmp_path, netns=netns_name)
    assert armed.pid is not None
    daemons.append(armed.pid)
    assert alive(armed.pid)
    # A real daemon: its own session, not the session leader, no controlling terminal.
    stat = Path(f"/proc/{armed.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat[3]) != armed.pid and int(stat[4]) == 0  # session id, tty_nr
    assert os.getsid(armed.pid) != os.getsid(0)
    assert wait_until(lambda: confirm.pending("node1", state_dir=tmp_path) is None)
    assert listing_hash(backend, old) == content
    assert foreign_listing(netns_name) == docker
    outcome = confirm.last_revert("node1", state_dir=tmp_path)
    assert outcome is not None and outcome["ok"] is True
    assert wait_until(lambda: not alive(armed.pid))
    assert time.time() >= armed.deadline


def test_confirmed_apply_stays(backend: LibNftBackend, netns_name: str, tmp_path: Path, daemons: list[int]) -> None:
    old = node_ruleset()
    apply_ruleset(backend, old)
    new = node_ruleset({"tap7": 7})
    result = apply_ruleset(backend, new, previous=old)
    armed = confirm.arm_revert(result.snapshot, node="node1", timeout=1.5, state_dir=tmp_path, netns=netns_name)
    assert armed.pid is not None
    daemons.append(armed.pid)
    assert confirm.confirm_pending("node1", state_dir=tmp_path)
    assert wait_until(lambda: not alive(armed.pid), timeout=5)  # exits soon after the confirm
    time.sleep(max(0.0, armed.deadline - time.time()) + 0.3)
    assert readback_hash(backend, new) == result.readback_hash
    assert confirm.last_revert("node1", state_dir=tmp_path) is None


def test_reverter_survives_sighup_and_its_session_dying(backend: LibNftBackend, netns_name: str, tmp_path: Path,
                                                        daemons: list[int]) -> None:
    """Like `ssh node zonewall apply --confirm 2` where the ssh session then dies."""
    old = node_ruleset()
    apply_ruleset(backend, old)
    content = listing_hash(backend, old)
    result = apply_ruleset(backend, node_ruleset({"tap8": 8}), previous=old)
    snapshot_file = tmp_path / "snap.json"
    snapshot_file.write_text(json.dumps(result.snapshot.to_json()))
    script = (
        "import json, signal, sys, time\n"
        "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"  # a login shell's default, even when the suite runs under nohup
        "from zonewall.dataplane import confirm\n"
        "from zonewall.dataplane.apply import Snapshot\n"
        "s = Snapshot.from_json(json.load(open(sys.argv[1])))\n"
        "a = confirm.arm_revert(s, node='node1', timeout=2.0, state_dir=sys.argv[2], netns=sys.argv[3])\n"
        "print(a.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    # The "ssh session": its own session and process group, like a login shell.
    session = subprocess.Popen(
        [sys.executable, "-c", script, str(snapshot_file), str(tmp_path), netns_name],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        assert session.stdout is not None
        pid = int(session.stdout.readline())
        daemons.append(pid)
        os.kill(pid, signal.SIGHUP)  # hangup reaches the daemon directly: ignored
        os.killpg(session.pid, signal.SIGHUP)  # the session's process group hangs up ...
        session.wait(timeout=10)
        time.sleep(0.2)
        assert alive(pid)  # ... and the daemon is in neither
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
    assert wait_until(lambda: confirm.pending("node1", state_dir=tmp_path) is None)
    assert listing_hash(backend, old) == content


def test_rearm_replaces_the_reverter_and_keeps_the_first_snapshot(backend: LibNftBackend, netns_name: str,
                                                                  tmp_path: Path, daemons: list[int]) -> None:
    first_rs = node_ruleset()
    apply_ruleset(backend, first_rs)
    content = listing_hash(backend, first_rs)
    r2 = apply_ruleset(backend, node_ruleset({"tap2": 2}), previous=first_rs)
    a = confirm.arm_revert(r2.snapshot, node="node1", timeout=30, state_dir=tmp_path, netns=netns_name)
    r3 = apply_ruleset(backend, node_ruleset({"tap3": 3}), previous=node_ruleset({"tap2": 2}))
    b = confirm.arm_revert(r3.snapshot, node="node1", timeout=1.0, state_dir=tmp_path, netns=netns_name)
    assert a.pid is not None and b.pid is not None
    daemons += [a.pid, b.pid]
    assert wait_until(lambda: not alive(a.pid), timeout=5)  # superseded
    assert wait_until(lambda: confirm.pending("node1", state_dir=tmp_path) is None)
    assert listing_hash(backend, first_rs) == content  # back to the last confirmed state
    assert sorted(tables(netns_name)) == [("bridge", "zonewall_br"), ("inet", TABLE)]


def test_reverter_entry_point_in_foreground(backend: LibNftBackend, netns_name: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m zonewall.dataplane.confirm revert --foreground` for debugging."""
    old = node_ruleset()
    apply_ruleset(backend, old)
    content = listing_hash(backend, old)
    result = apply_ruleset(backend, node_ruleset({"tap4": 4}), previous=old)
    monkeypatch.setattr(confirm, "_spawn_reverter", lambda *a: 0)  # record only, no daemon
    confirm.arm_revert(result.snapshot, node="node1", timeout=0.2, state_dir=tmp_path, netns=netns_name)
    done = subprocess.run(
        [sys.executable, "-m", "zonewall.dataplane.confirm", "revert", "--state-dir", str(tmp_path),
         "--node", "node1", "--netns", netns_name, "--foreground"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "reverted" in done.stderr
    assert listing_hash(backend, old) == content
