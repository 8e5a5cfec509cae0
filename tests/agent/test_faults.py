"""The agent's own faults: none stops enforcement or logging silently, none steps back.

Each case was reproduced against the agent before this was built (issue 17):
a full or read-only log buffer killed the collector for good while the node said
`ok`; a kill -9 between the kernel commit and the saved state brought the older
revision back at the next start; a state file of the wrong shape stopped the agent
at every start; a refused ruleset's error (the whole ruleset) made the controller
refuse the report, so the node kept showing `ok`.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.agent.test_enforcer import desired, enforcer
from tests.controller.live import three_tier_documents
from zonewall.agent import enforcer as enforcer_module
from zonewall.agent.client import ControllerRefused
from zonewall.agent.reporter import MAX_ERROR, Reporter
from zonewall.agent.spool import Spool
from zonewall.agent.state import StateStore
from zonewall.agent.supervise import QUIET_SECONDS, Health, supervised
from zonewall.dataplane.backend import NftError
from zonewall.dataplane.fake import FakeBackend
from zonewall.dataplane.readback import listing_hash


def changed_documents() -> dict[str, str]:
    """The three-tier policy with one port changed: another revision."""
    documents = three_tier_documents()
    documents["policy.yaml"] = documents["policy.yaml"].replace("service: https}", "service: https, log: true}")
    return documents


# -------------------------------------------------------------------- supervision


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_job_that_raises_is_restarted_and_its_failure_shown_until_it_recovers() -> None:
    clock = Clock()
    health = Health(clock)
    stop = threading.Event()
    runs: list[int] = []
    finished = threading.Event()

    def job() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise OSError(28, "No space left on device")
        finished.set()
        stop.wait()

    thread = supervised("packet log collector", job, stop, health)
    assert finished.wait(10), "the job was not restarted"
    assert len(runs) == 3
    problems = health.problems()
    assert len(problems) == 1 and problems[0].startswith("packet log collector: OSError: [Errno 28] No space left on device")
    clock.now += QUIET_SECONDS + 1  # ran a minute without failing: recovered
    assert health.problems() == []
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_a_job_that_ends_by_itself_is_a_failure_too() -> None:
    health, stop, ran = Health(), threading.Event(), threading.Event()
    calls: list[int] = []

    def job() -> None:
        calls.append(1)
        if len(calls) > 1:
            ran.set()
            stop.wait()

    supervised("controller watcher", job, stop, health)
    assert ran.wait(10)
    assert health.problems() and "stopped by itself" in health.problems()[0]
    stop.set()


def test_sticky_problems_stay_until_cleared() -> None:
    clock = Clock()
    health = Health(clock)
    health.fail("packet log buffer", "cannot write /var/lib/zonewall/agent/logs: Read-only file system", sticky=True)
    clock.now += 10 * QUIET_SECONDS
    assert health.problems() == ["packet log buffer: cannot write /var/lib/zonewall/agent/logs: Read-only file system"]
    health.clear("packet log buffer")
    assert health.problems() == []


# -------------------------------------------------------------------- the log buffer


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"n": i} for i in range(start, start + n)]


def test_a_spool_that_cannot_write_keeps_batches_in_memory_and_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "logs", max_records=1000)
    spool.put(records(3))
    (tmp_path / "logs").chmod(0o500)  # read-only (root ignores modes: make writes fail for real)
    original = spool._write
    spool._write = lambda name, body: (_ for _ in ()).throw(OSError(30, "Read-only file system"))  # type: ignore[method-assign]
    try:
        spool.put(records(2, 3))
        assert spool.disk_error is not None and "Read-only file system" in spool.disk_error
        assert spool.in_memory == 2 and spool.records == 5
        first = spool.next(0.1)
        assert first is not None and [r["n"] for r in first.records] == [0, 1, 2]
        spool.done(first)
        second = spool.next(0.1)
        assert second is not None and [r["n"] for r in second.records] == [3, 4]  # sent from memory
        spool.done(second)
        assert spool.in_memory == 0
    finally:
        spool._write = original  # type: ignore[method-assign]
        (tmp_path / "logs").chmod(0o700)
    spool.put(records(1, 5))
    assert spool.disk_error is None  # the disk took it again
    assert sorted(p.name for p in (tmp_path / "logs").glob("*.json")) == [f"{3:016d}.json"]


def test_memory_batches_count_against_the_bound_and_are_dropped_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "logs", max_records=4)
    spool._write = lambda name, body: (_ for _ in ()).throw(OSError(28, "No space left on device"))  # type: ignore[method-assign]
    spool.put(records(3))
    spool.put(records(3, 3))
    assert spool.records == 3 and spool.dropped_total == 3  # the oldest batch made room
    batch = spool.next(0.1)
    assert batch is not None and batch.dropped == 3


# -------------------------------------------------------------------- state on disk


class Killed(BaseException):
    """Stands for kill -9: nothing after the crash point runs."""


def test_a_crash_after_the_commit_never_brings_the_older_revision_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = FakeBackend()
    first = enforcer(kernel, tmp_path)
    first.enforce(desired(1))
    documents = changed_documents()
    two = desired(2, documents)

    def killed(revision: int) -> None:
        raise Killed

    monkeypatch.setattr(enforcer_module, "_crash_point_for_tests", killed)
    with pytest.raises(Killed):
        first.enforce(two)
    monkeypatch.undo()
    in_kernel = listing_hash(kernel, [("inet", "zonewall"), ("bridge", "zonewall")])
    assert StateStore(tmp_path).load("node1").revision == 1  # type: ignore[union-attr]  # the crash came before the record

    restarted = enforcer(kernel, tmp_path)
    said = restarted.restore()
    assert "revision 2 restored" in said, said
    assert restarted.state is not None and restarted.state.revision == 2
    assert listing_hash(kernel, [("inet", "zonewall"), ("bridge", "zonewall")]) == in_kernel  # revision 2 stayed
    assert StateStore(tmp_path).load_pending("node1") is None


def test_a_refused_apply_leaves_the_applied_state_as_it_was(tmp_path: Path) -> None:
    kernel = FakeBackend()
    agent = enforcer(kernel, tmp_path)
    agent.enforce(desired(1))
    def refuse(commands: Any, **_: Any) -> None:
        raise NftError("Operation not permitted")

    kernel.run = refuse  # type: ignore[method-assign]  # the kernel refuses every transaction now
    documents = changed_documents()
    with pytest.raises(NftError):
        agent.enforce(desired(2, documents))
    assert StateStore(tmp_path).load_pending("node1") is None
    saved = StateStore(tmp_path).load("node1")
    assert saved is not None and saved.revision == 1


def test_only_the_documents_a_state_names_are_kept(tmp_path: Path) -> None:
    agent = enforcer(FakeBackend(), tmp_path)
    agent.enforce(desired(1))
    documents = changed_documents()
    agent.enforce(desired(2, documents))
    assert len(list(tmp_path.glob("desired-*.json"))) == 1


@pytest.mark.parametrize("content", [
    "[1, 2, 3]", '{"format": 2, "state": [1]}', '{"format": 2, "state": {"node": "node1"}}',
    '{"format": 1, "state": {"node": "node1", "revision": "x", "documents": 5}}', "null", '"text"', "{not json",
])
def test_a_state_file_of_the_wrong_shape_is_ignored_not_fatal(tmp_path: Path, content: str) -> None:
    (tmp_path / "applied.json").write_text(content)
    (tmp_path / "pending.json").write_text(content)
    assert "no saved state" in enforcer(FakeBackend(), tmp_path).restore()


def test_a_state_of_the_previous_format_is_still_restored(tmp_path: Path) -> None:
    agent = enforcer(FakeBackend(), tmp_path)
    agent.enforce(desired(1))
    state = agent.state
    assert state is not None
    (tmp_path / "applied.json").write_text(json.dumps({"format": 1, "state": {**state.__dict__}}))
    for path in tmp_path.glob("desired-*.json"):
        path.unlink()
    assert "revision 1" in enforcer(FakeBackend(), tmp_path).restore()


# -------------------------------------------------------------------- the status report


class RefusingClient:
    def __init__(self, refuse_when: Any) -> None:
        self.refuse_when = refuse_when
        self.reports: list[dict[str, Any]] = []

    def report(self, body: dict[str, Any]) -> None:
        if self.refuse_when(body):
            raise ControllerRefused(422, "unprocessable")
        self.reports.append(body)

    def logs(self, lines: list[dict[str, str]]) -> None:
        pass

    def close(self) -> None:
        pass


def first_report(client: RefusingClient, stop: threading.Event) -> None:
    """Wait (5 s at most) for the reporter to deliver something, then stop it."""
    for _ in range(100):
        if client.reports:
            break
        stop.wait(0.05)
    stop.set()


def test_a_huge_error_is_reported_bounded() -> None:
    client = RefusingClient(lambda body: len(body.get("last_error") or "") > MAX_ERROR + 100)
    stop = threading.Event()
    reporter = Reporter(lambda: client, stop).start()  # type: ignore[arg-type,return-value]
    reporter.status({"state": "error", "last_error": "nft refused: " + "add rule inet zonewall x; " * 2000, "taps": {}})
    first_report(client, stop)
    assert client.reports and client.reports[0]["state"] == "error"
    assert len(client.reports[0]["last_error"]) < MAX_ERROR + 100 and "more characters" in client.reports[0]["last_error"]


def test_a_refused_report_still_shows_the_node_in_error() -> None:
    client = RefusingClient(lambda body: bool(body.get("taps")))  # e.g. a field the controller bounds
    stop, health = threading.Event(), Health()
    reporter = Reporter(lambda: client, stop, health).start()  # type: ignore[arg-type,return-value]
    reporter.status({"state": "ok", "last_error": None, "taps": {"x" * 20: "y"}})
    first_report(client, stop)
    assert client.reports and client.reports[0]["state"] == "error"
    assert "status report refused" in client.reports[0]["last_error"]
    assert any(p.startswith("status reporter: the controller refused") for p in health.problems())
