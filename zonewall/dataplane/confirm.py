"""`zonewall apply --confirm SECONDS`: undo an apply unless someone confirms it.

A firewall change can cut off the very ssh session that made it. So after applying,
the CLI arms a revert: the pre-apply snapshot and a deadline are written to the state
dir, and a detached reverter process restores the snapshot at the deadline unless
`confirm_pending` removed the record first.

The reverter must outlive the session that started it: it is double-forked around a
setsid (no controlling terminal, not a session leader, so it can never get one back),
ignores SIGHUP, and keeps nothing open from its parent. Its state lives in files, not
in memory, so confirming needs no IPC: confirm deletes the record, the reverter sees
that and exits. A per-node lock file makes "confirm" and "revert" mutually exclusive
right at the deadline.

Re-arming while a revert is pending keeps the *earlier* snapshot: the state before
the first unconfirmed apply is the last one a human vouched for.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zonewall.dataplane.apply import Snapshot, restore_snapshot
from zonewall.dataplane.backend import Backend, LibNftBackend

DEFAULT_STATE_DIR = "/var/lib/zonewall"
STATE_DIR_ENV = "ZONEWALL_STATE_DIR"
_POLL_SECONDS = 0.25  # how late after the deadline (or a confirm) the reverter reacts
_RESTORE_ATTEMPTS = 3
_NODE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class PendingRevert:
    node: str
    token: str  # identifies one arming; a reverter acts only on its own token
    deadline: float  # epoch seconds
    armed_at: float
    netns: str | None
    pid: int | None  # the reverter daemon, once started
    snapshot: Snapshot

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.time())

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "node": self.node,
            "token": self.token,
            "deadline": self.deadline,
            "armed_at": self.armed_at,
            "netns": self.netns,
            "pid": self.pid,
            "snapshot": self.snapshot.to_json(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PendingRevert:
        return cls(
            doc["node"], doc["token"], doc["deadline"], doc["armed_at"], doc["netns"], doc["pid"],
            Snapshot.from_json(doc["snapshot"]),
        )


def resolve_state_dir(state_dir: str | os.PathLike[str] | None = None) -> Path:
    """Explicit argument, else $ZONEWALL_STATE_DIR, else /var/lib/zonewall."""
    return Path(state_dir or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def _paths(state_dir: str | os.PathLike[str] | None, node: str) -> tuple[Path, Path, Path, Path]:
    if not _NODE_RE.match(node):
        raise ValueError(f"invalid node name for a state file: {node!r}")
    base = resolve_state_dir(state_dir)
    return (
        base / f"{node}.pending.json",
        base / f"{node}.lock",
        base / f"{node}.reverted.json",
        base / f"{node}.revert.log",
    )


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # released when the file is closed


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    # write-then-rename: a crash never leaves a half-written record behind.
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(doc, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_pending(path: Path) -> PendingRevert | None:
    try:
        return PendingRevert.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None


def pending(node: str, *, state_dir: str | os.PathLike[str] | None = None) -> PendingRevert | None:
    """The armed, unconfirmed revert for `node`, if any."""
    return _read_pending(_paths(state_dir, node)[0])


def last_revert(node: str, *, state_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """Outcome of the last revert the reverter carried out: {"time", "token", "ok", "error"}."""
    try:
        return json.loads(_paths(state_dir, node)[2].read_text())
    except FileNotFoundError:
        return None


def confirm_pending(node: str, *, state_dir: str | os.PathLike[str] | None = None) -> bool:
    """Keep the applied ruleset: cancel the pending revert. False if none was pending
    (never armed, already confirmed, or already reverted: see last_revert)."""
    record, lock, _, _ = _paths(state_dir, node)
    with _locked(lock):
        try:
            record.unlink()
        except FileNotFoundError:
            return False
    return True


def arm_revert(
    snapshot: Snapshot,
    *,
    node: str,
    timeout: float,
    state_dir: str | os.PathLike[str] | None = None,
    netns: str | None = None,
) -> PendingRevert:
    """Persist a revert to `snapshot` due in `timeout` seconds and start its reverter."""
    record, lock, _, log = _paths(state_dir, node)
    base = record.parent
    with _locked(lock):
        earlier = _read_pending(record)
        now = time.time()
        armed = PendingRevert(
            node=node,
            token=secrets.token_hex(8),
            deadline=now + timeout,
            armed_at=now,
            netns=netns,
            pid=None,
            snapshot=earlier.snapshot if earlier is not None else snapshot,
        )
        # Written before the reverter starts so it can never see a missing record.
        _write_json(record, armed.to_json())
        try:
            pid = _spawn_reverter(base, node, armed.token, netns, log)
        except (OSError, subprocess.SubprocessError, ValueError) as exc:
            # Leave no record that nothing will ever act on (or put the earlier one back).
            if earlier is not None:
                _write_json(record, earlier.to_json())
            else:
                record.unlink(missing_ok=True)
            raise RuntimeError(f"could not start the reverter (see {log}): {exc}") from exc
        armed = dataclasses.replace(armed, pid=pid)
        _write_json(record, armed.to_json())
    return armed


def _spawn_reverter(base: Path, node: str, token: str, netns: str | None, log: Path) -> int:
    command = [sys.executable, "-m", "zonewall.dataplane.confirm", "revert",
               "--state-dir", str(base), "--node", node, "--token", token]
    if netns is not None:
        command += ["--netns", netns]
    env = dict(os.environ)
    # The daemon must import zonewall even when it is not installed (a source tree).
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with open(log, "a") as log_file:
        launcher = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file,
            start_new_session=True, close_fds=True, cwd="/", env=env, check=True, timeout=60, text=True,
        )
    return int(launcher.stdout.strip())


# ---------------------------------------------------------------------------
# the reverter


def revert_now(
    node: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    backend_factory: Callable[[str | None], Backend] = LibNftBackend,
) -> bool:
    """Restore the pending snapshot now (if it is still pending and, when given, still
    the arming `token`). True if a restore happened. Raises what the restore raised,
    after recording it; the record stays so the failure is visible in pending()."""
    record, lock, outcome, _ = _paths(state_dir, node)
    with _locked(lock):
        armed = _read_pending(record)
        if armed is None or (token is not None and armed.token != token):
            return False
        try:
            backend = backend_factory(armed.netns)
            try:
                restore_snapshot(backend, armed.snapshot)
            finally:
                close = getattr(backend, "close", None)
                if close is not None:
                    close()
        except Exception as exc:
            _write_json(outcome, {"time": time.time(), "token": armed.token, "ok": False, "error": str(exc)})
            raise
        _write_json(outcome, {"time": time.time(), "token": armed.token, "ok": True, "error": None})
        record.unlink()
    return True


def run_reverter(state_dir: str | os.PathLike[str], node: str, token: str | None, netns: str | None) -> int:
    """Wait for the deadline, then revert unless confirmed or re-armed meanwhile."""
    record = _paths(state_dir, node)[0]
    armed = _read_pending(record)
    if armed is None:
        return 0
    token = token or armed.token
    while True:
        armed = _read_pending(record)
        if armed is None or armed.token != token:
            _log(f"{node}: confirmed or re-armed; exiting")
            return 0
        remaining = armed.deadline - time.time()
        if remaining <= 0:
            break
        time.sleep(min(remaining, _POLL_SECONDS))

    def factory(recorded: str | None) -> Backend:
        return LibNftBackend(netns if netns is not None else recorded)

    for attempt in range(1, _RESTORE_ATTEMPTS + 1):
        try:
            done = revert_now(node, state_dir=state_dir, token=token, backend_factory=factory)
        except Exception as exc:  # noqa: BLE001 - logged, retried, then reported via exit code
            _log(f"{node}: restore attempt {attempt} failed: {exc}")
            time.sleep(1.0)
            continue
        _log(f"{node}: {'reverted to the snapshot' if done else 'confirmed at the deadline; nothing to do'}")
        return 0
    return 1


def _log(message: str) -> None:
    with contextlib.suppress(OSError):  # a vanished terminal must not stop a revert
        print(time.strftime("%Y-%m-%dT%H:%M:%S"), message, file=sys.stderr, flush=True)


def _daemonize() -> None:
    """Second fork: the launcher prints the daemon's pid and exits; we go on as the daemon."""
    with contextlib.suppress(OSError):  # already a session leader when spawned by arm_revert
        os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the ssh session dying must not kill us
    sys.stdout.flush()
    child = os.fork()
    if child:
        os.write(1, f"{child}\n".encode())
        os._exit(0)
    # Let go of the launcher's stdout pipe (the caller waits for EOF on it) and stdin.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if os.isatty(2):  # started by hand from a terminal that may go away
        os.dup2(devnull, 2)
    os.close(devnull)
    os.chdir("/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zonewall.dataplane.confirm")
    sub = parser.add_subparsers(dest="command", required=True)
    revert = sub.add_parser("revert", help="wait for the deadline and restore the snapshot")
    revert.add_argument("--state-dir", required=True)
    revert.add_argument("--node", required=True)
    revert.add_argument("--netns", default=None)
    revert.add_argument("--token", default=None, help="act only on this arming")
    revert.add_argument("--foreground", action="store_true", help="do not daemonize (debugging)")
    args = parser.parse_args(argv)
    if not args.foreground:
        _daemonize()
    return run_reverter(args.state_dir, args.node, args.token, args.netns)


if __name__ == "__main__":
    sys.exit(main())
