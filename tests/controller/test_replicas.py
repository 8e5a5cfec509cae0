"""Several controllers on one database (issue 15): each test runs on SQLite and PostgreSQL.

Two (or more) real HTTP controllers share one database here, as replicas do in
production; what one commits, the others serve at once and never older.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.controller.live import LiveController, live_controller, three_tier_documents
from zonewall.controller import background
from zonewall.controller.store.revisions import Proposal
from zonewall.controller.watch import RevisionWatch

RULE = {"direction": "in", "action": "accept", "from": "vm:web1", "tcp": 5432}  # no id: added twice it would be two rules


@contextmanager
def replicas(tmp_path: Path, db_url: str, count: int = 2, **options: float) -> Iterator[list[LiveController]]:
    with ExitStack() as stack:
        first = stack.enter_context(live_controller(tmp_path / "c0", db_url, **options))
        others = [stack.enter_context(live_controller(tmp_path / f"c{i}", db_url, tokens=first.tokens, **options)) for i in range(1, count)]
        yield [first, *others]


def upload(live: LiveController) -> dict[str, Any]:
    response = httpx.put(live.url + "/api/v1/policy", json={"documents": three_tier_documents()}, headers=live.tokens.header("admin"), timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def add_rule(live: LiveController, rule: dict[str, Any] = RULE, key: str | None = None, **body: Any) -> httpx.Response:
    headers = live.tokens.header("admin") | ({"Idempotency-Key": key} if key else {})
    return httpx.post(live.url + "/api/v1/vms/db1/rules", json={"rule": rule, **body}, headers=headers, timeout=30)


def long_poll(live: LiveController, after: int, wait: float, node: str = "node1") -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    response = httpx.get(live.url + f"/api/v1/nodes/{node}/desired", params={"after": after, "wait": wait},
                         headers=live.tokens.header(node), timeout=wait + 10)
    assert response.status_code == 200, response.text
    return response.json(), time.monotonic() - started


def test_a_commit_through_one_controller_wakes_the_agents_of_another(tmp_path: Path, db_url: str) -> None:
    # PostgreSQL wakes the other controller by NOTIFY: its periodic re-check is set past
    # the long poll's end, so only the notification can answer the waiting agent in time.
    # SQLite has no NOTIFY: its one-second re-check is what wakes it (one controller is its use).
    recheck = 60.0 if "postgresql" in db_url else 1.0
    with replicas(tmp_path, db_url, recheck=recheck) as (a, b):
        upload(a)
        box: dict[str, Any] = {}
        waiter = threading.Thread(target=lambda: box.update(answer=long_poll(b, 1, 20)))
        waiter.start()
        time.sleep(0.5)
        assert add_rule(a).status_code == 201
        waiter.join(timeout=25)
        answer, took = box["answer"]
        # a long poll that ran out would answer "unchanged" after its 20 s
        assert answer["changed"] is True and answer["revision"] == 2, answer
        assert "5432" in answer["documents"]["policy.yaml"]
        assert took < 19, took


def test_no_controller_hands_out_a_revision_older_than_the_agents(tmp_path: Path, db_url: str) -> None:
    with replicas(tmp_path, db_url) as (a, b):
        upload(a)
        assert add_rule(a).status_code == 201  # revision 2
        # an agent that applied revision 2 (through a) asks b: b has nothing newer: it waits, never answers 1
        answer, took = long_poll(b, 2, 1.0)
        assert answer["changed"] is False and took >= 0.9
        # an agent ahead of the database (revision 5: the database lost revisions 3-5) waits too...
        answer, took = long_poll(b, 5, 1.0)
        assert answer["changed"] is False and answer["documents"] is None and took >= 0.9
        # ...and the next revision is numbered above what it applied, so it takes it
        box: dict[str, Any] = {}
        waiter = threading.Thread(target=lambda: box.update(answer=long_poll(b, 5, 20)))
        waiter.start()
        time.sleep(0.3)
        response = add_rule(a, {**RULE, "tcp": 5433})
        waiter.join(timeout=25)
        assert response.status_code == 201 and response.json()["revision"]["number"] == 6
        assert box["answer"][0]["changed"] is True and box["answer"][0]["revision"] == 6


def test_a_status_report_above_the_stored_revisions_raises_the_numbering(tmp_path: Path, db_url: str) -> None:
    with replicas(tmp_path, db_url, count=1) as (a,):
        upload(a)
        status = {"applied_revision": 9, "state": "ok"}
        assert httpx.put(a.url + "/api/v1/nodes/node2/status", json=status, headers=a.tokens.header("node2")).status_code == 200
        assert add_rule(a).json()["revision"]["number"] == 10
        revisions = httpx.get(a.url + "/api/v1/revisions", headers=a.tokens.header("admin")).json()
        assert [r["number"] for r in revisions] == [10, 1]
        assert httpx.get(a.url + "/api/v1/revisions/10", headers=a.tokens.header("admin")).json()["diff"]["flows"]  # against revision 1


def test_concurrent_writers_through_two_controllers_get_one_201_and_one_409(tmp_path: Path, db_url: str) -> None:
    with replicas(tmp_path, db_url) as (a, b):
        upload(a)
        for attempt in range(6):
            base = attempt + 1
            answers: dict[str, httpx.Response] = {}
            barrier = threading.Barrier(2)

            def write(live: LiveController, name: str, port: int) -> None:
                barrier.wait()
                answers[name] = add_rule(live, {**RULE, "tcp": port}, base_revision=base)

            threads = [threading.Thread(target=write, args=(a, "a", 6000 + attempt)), threading.Thread(target=write, args=(b, "b", 7000 + attempt))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            codes = sorted(response.status_code for response in answers.values())
            assert codes == [201, 409], {name: r.text for name, r in answers.items()}
            loser = next(r for r in answers.values() if r.status_code == 409)
            assert loser.json()["detail"]["current_revision"] == base + 1
        revisions = httpx.get(a.url + "/api/v1/revisions", headers=a.tokens.header("admin")).json()
        assert [r["number"] for r in revisions] == list(range(7, 0, -1))  # contiguous, none lost, none twice


def test_a_retried_rule_addition_is_applied_once_through_any_controller(tmp_path: Path, db_url: str) -> None:
    with replicas(tmp_path, db_url) as (a, b):
        upload(a)
        first = add_rule(a, key="add-db-rule-1")
        assert first.status_code == 201 and first.json()["revision"]["number"] == 2
        again = add_rule(b, key="add-db-rule-1")  # the answer was lost; the client retries elsewhere
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["revision"]["number"] == 2
        policy = httpx.get(a.url + "/api/v1/policy", headers=a.tokens.header("admin")).json()
        assert policy["revision"] == 2 and policy["documents"]["policy.yaml"].count("tcp: 5432") == 1  # the rule once (the header comment names 5432 too: comments are kept)
        # without a key, a second addition is a second rule (the client did mean it twice)
        assert add_rule(b).json()["revision"]["number"] == 3
        # the same key for another request is refused, and changes nothing
        reused = add_rule(a, {**RULE, "tcp": 1234}, key="add-db-rule-1")
        assert reused.status_code == 422 and "different request" in reused.text
        assert httpx.get(a.url + "/api/v1/policy", headers=a.tokens.header("admin")).json()["revision"] == 3


def test_a_retried_upload_after_another_change_does_not_undo_it(tmp_path: Path, db_url: str) -> None:
    with replicas(tmp_path, db_url) as (a, b):
        body = {"documents": three_tier_documents(), "message": "initial"}
        headers = a.tokens.header("admin") | {"Idempotency-Key": "upload-1"}
        assert httpx.put(a.url + "/api/v1/policy", json=body, headers=headers).status_code == 201
        assert add_rule(b).status_code == 201  # someone else's change
        retried = httpx.put(b.url + "/api/v1/policy", json=body, headers=headers)
        assert retried.status_code == 201 and retried.json()["revision"]["number"] == 1
        assert httpx.get(a.url + "/api/v1/policy", headers=a.tokens.header("admin")).json()["revision"] == 2


def test_the_diff_of_a_controller_that_died_is_finished_by_another(tmp_path: Path, db_url: str) -> None:
    with replicas(tmp_path, db_url, diff_lease=0.6) as (a, b):
        upload(a)
        documents = three_tier_documents()
        documents["policy.yaml"] = documents["policy.yaml"].replace("action: accept, service: https}", "action: accept, tcp: 8443}")
        assert documents != three_tier_documents()
        # a's request commits and dies before it computes the diff: its lease is not renewed
        committed = a.controller.revisions.commit(Proposal(documents, "admin", "crash", "upload"))
        number = committed.row.number
        assert a.controller.revisions.diffs.pending() == [number]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            shown = httpx.get(b.url + f"/api/v1/revisions/{number}", headers=b.tokens.header("admin")).json()
            if shown["diff"] is not None:
                break
            time.sleep(0.1)
        assert shown["diff"] is not None and shown["diff"]["flows"], shown
        assert any("8443" in " ".join(flow["services"]) for flow in shown["diff"]["flows"])
        assert a.controller.revisions.diffs.pending() == []


def test_diffs_lost_before_this_version_are_computed(tmp_path: Path, db_url: str) -> None:
    """Issue 17 item 7 for existing databases: a revision stored without diff by an older
    controller (killed mid-diff) gets a job from the migration and then its diff."""
    from sqlalchemy import text

    from tests.controller.schema import at_schema

    with at_schema(db_url, "0002") as connection:
        connection.execute(text("INSERT INTO revisions (number, created_at, author, message, kind, change, documents, content_hash) "
                                "VALUES (1, :t, 'admin', 'old', 'upload', '{}', :d, 'x')"),
                           {"t": "2026-01-01 00:00:00", "d": json.dumps(three_tier_documents())})
    with replicas(tmp_path, db_url, count=1, diff_lease=0.6) as (a,):
        deadline = time.monotonic() + 15
        while a.controller.revisions.diffs.pending() and time.monotonic() < deadline:
            time.sleep(0.1)
        shown = httpx.get(a.url + "/api/v1/revisions/1", headers=a.tokens.header("admin")).json()
        assert shown["diff"] is not None and shown["diff"]["endpoints"]  # against nothing: every endpoint is new


def test_controllers_starting_together_on_an_empty_database_all_start(tmp_path: Path, db_url: str) -> None:
    starts = [subprocess.Popen([sys.executable, "-c", "import sys; from zonewall.controller.store.db import open_database; open_database(sys.argv[1])", db_url],
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [process.communicate(timeout=120)[1] for process in starts]
    assert [process.returncode for process in starts] == [0, 0, 0, 0], errors


def test_waiting_agents_cost_no_database_writes_and_a_replica_parses_a_revision_once(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The housekeeping thread writes the contacts it gathered in one batch every few
    # seconds; on a slow machine that moment can fall among the polls below, and it is
    # not a write made by a waiting agent: kept out of this window.
    monkeypatch.setattr(background, "CONTACT_FLUSH_SECONDS", 3600.0)
    with replicas(tmp_path, db_url) as (a, b):
        upload(a)
        long_poll(b, 0, 1)  # first contact: the node's row is written once
        writes: list[str] = []
        engine = b.controller.sessions.kw["bind"]

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE"):
                writes.append(statement)

        event.listen(engine, "before_cursor_execute", count)
        try:
            for _ in range(10):
                answer, _took = long_poll(b, 1, 0.05)
                assert answer["changed"] is False
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert writes == []
        nodes = httpx.get(b.url + "/api/v1/nodes/node1", headers=b.tokens.header("admin")).json()
        assert nodes["last_contact"] is not None
        # b did not make revision 2; whatever asks for it, b parses it once
        assert add_rule(a).status_code == 201
        parsed = b.controller.revisions.cache.parses
        for node in ("node1", "node2"):
            answer, _took = long_poll(b, 1, 5, node)
            assert answer["revision"] == 2
        for _ in range(10):
            status = {"applied_revision": 2, "state": "ok"}
            assert httpx.put(b.url + "/api/v1/nodes/node2/status", json=status, headers=b.tokens.header("node2")).json()["in_sync"] is True
        assert b.controller.revisions.cache.parses - parsed <= 1


def test_the_watch_never_goes_back() -> None:
    watch = RevisionWatch()
    watch.notify(5)
    watch.notify(3)
    assert watch.current == 5


@pytest.mark.parametrize("key", ["", "x" * 129, "with space"])
def test_bad_idempotency_keys_are_refused(client: Any, tokens: Any, uploaded: dict, key: str) -> None:
    headers = tokens.header("admin") | {"Idempotency-Key": key}
    response = client.post("/api/v1/vms/db1/rules", json={"rule": RULE}, headers=headers)
    assert response.status_code == 400
    assert client.get("/api/v1/policy", headers=tokens.header("admin")).json()["revision"] == 1
