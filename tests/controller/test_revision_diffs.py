"""A revision's semantic diff lives in its own table (schema 0006): storing it never
rewrites the revision's row (its documents), and diffs stored before are still read."""

from __future__ import annotations

import json
import sys

import pytest
from sqlalchemy import event, text

from tests.controller.live import three_tier_documents
from tests.controller.schema import at_schema
from zonewall.controller.replica import build_controller
from zonewall.controller.store.revisions import Proposal


def _propose(documents: dict[str, str], message: str) -> Proposal:
    return Proposal(documents=documents, author="admin", message=message, kind="upload")


def test_storing_a_diff_writes_its_own_row_and_never_the_revisions(db_url: str) -> None:
    ctl = build_controller(db_url)
    first = ctl.revisions.commit(_propose(three_tier_documents(), "one"))
    ctl.revisions.attach_diff(first)
    documents = three_tier_documents()
    documents["policy.yaml"] = documents["policy.yaml"].replace("service: https}", "service: https, log: true}")
    second = ctl.revisions.commit(_propose(documents, "two"))
    written: list[str] = []

    def watch(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().split()[0].upper() in ("INSERT", "UPDATE"):
            written.append(statement)

    engine = ctl.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", watch)
    try:
        row = ctl.revisions.attach_diff(second)
    finally:
        event.remove(engine, "before_cursor_execute", watch)
    assert row.diff is not None and "flows" in json.loads(row.diff)  # the diff is shown
    assert any("revision_diffs" in statement for statement in written)
    assert not any("revisions " in statement.lower().replace("revision_diffs", "") for statement in written if statement.upper().lstrip().startswith("UPDATE")), written
    with engine.connect() as connection:
        assert connection.execute(text("SELECT diff FROM revisions WHERE number = :n"), {"n": second.row.number}).scalar() is None
    again = ctl.revisions.get(second.row.number)
    assert again is not None and again.diff == row.diff  # read back through the new table
    ctl.revisions.diffs._finish(second.row.number, None, "late second computation")  # stored once: a late one changes nothing
    kept = ctl.revisions.get(second.row.number)
    assert kept is not None and kept.diff == row.diff and kept.diff_error is None


def test_diffs_stored_before_the_migration_are_still_read(db_url: str) -> None:
    old_diff = json.dumps({"identical": True, "flows": [], "endpoints": [], "notes": ["stored by 0005"]})
    with at_schema(db_url, "0005_17_hardening") as connection:
        connection.execute(text("INSERT INTO revisions (number, created_at, author, message, kind, change, documents, content_hash, diff) "
                                "VALUES (1, :t, 'admin', 'old', 'upload', '{}', :d, 'x', :diff)"),
                           {"t": "2026-01-01 00:00:00", "d": json.dumps(three_tier_documents()), "diff": old_diff})
    ctl = build_controller(db_url)  # upgrades to the newest schema
    row = ctl.revisions.get(1)
    assert row is not None and row.diff == old_diff and row.diff_error is None
    with ctl.sessions.kw["bind"].connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM revision_diffs")).scalar() == 0  # nothing copied, nothing lost


@pytest.mark.parametrize("fails", [False, True], ids=["diff", "failing diff"])
def test_a_commits_diff_hands_the_interpreter_over_often_and_restores_it(db_url: str, monkeypatch: pytest.MonkeyPatch, fails: bool) -> None:
    """The event loop answers agents while the commit validates and diffs (zonewall/handover.py)."""
    from zonewall.controller.store import diffs
    from zonewall.handover import QUICK_INTERVAL

    seen: list[float] = []
    real = diffs.diff_policies

    def watched(*args: object, **kwargs: object) -> object:
        seen.append(sys.getswitchinterval())
        if fails:
            raise ValueError("boom")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    from zonewall.controller.store import revisions

    loading = revisions.load_edited

    def validated(*args: object, **kwargs: object) -> object:
        seen.append(sys.getswitchinterval())
        return loading(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(diffs, "diff_policies", watched)
    monkeypatch.setattr(revisions, "load_edited", validated)
    before = sys.getswitchinterval()
    ctl = build_controller(db_url)
    row = ctl.revisions.attach_diff(ctl.revisions.commit(_propose(three_tier_documents(), "one")))
    assert seen == [pytest.approx(QUICK_INTERVAL)] * 2 and before > QUICK_INTERVAL  # the validation, the diff
    assert sys.getswitchinterval() == before  # restored, whatever the diff's outcome
    assert (row.diff_error is not None) == fails
