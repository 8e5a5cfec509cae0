"""A revision's documents are stored as content-defined chunks, each once (schema 0007,
store/chunks.py): a one-line change stores a chunk or two instead of the whole
documents, every revision reads back exactly as committed, and revisions stored
whole before the upgrade are still read, rolled back to and compared."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, func, select, text

from bench.synth import policy_text
from tests.controller.live import three_tier_documents
from tests.controller.schema import at_schema
from zonewall.controller.replica import Controller, build_controller
from zonewall.controller.store.chunks import MAX_CHUNK, MIN_CHUNK, Chunked, ChunkedText
from zonewall.controller.store.models import DocumentChunkRow
from zonewall.controller.store.revisions import Proposal
from zonewall.policy.documents import content_hash


def _lines(seed: int, count: int) -> list[str]:
    """YAML-like lines: some repeated word for word (as `rules:` is), most not."""
    rnd = random.Random(seed)
    common = ["    rules:", "      - {direction: in, action: accept, service: ssh}", ""]
    return [rnd.choice(common) if rnd.random() < 0.3 else f"  key{rnd.randrange(10**6)}: {'v' * rnd.randrange(90)}" for _ in range(count)]


def _edited(lines: list[str], rnd: random.Random, edits: int) -> list[str]:
    edited = list(lines)
    for _ in range(edits):
        at = rnd.randrange(len(edited) + 1)
        kind = rnd.choice(["replace", "insert", "delete", "insert-block", "delete-block"])
        if kind == "replace" and at < len(edited):
            edited[at] = edited[at] + " changed"
        elif kind == "insert":
            edited.insert(at, f"  new{rnd.randrange(10**6)}: x")
        elif kind == "delete" and at < len(edited):
            del edited[at]
        elif kind == "insert-block":
            edited[at:at] = _lines(rnd.randrange(10**6), rnd.randrange(1, 3000))
        else:
            del edited[at:at + rnd.randrange(1, 3000)]
    return edited


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), count=st.sampled_from([0, 1, 200, 2_000, 12_000]), edits=st.integers(1, 4), trailing=st.booleans())
def test_a_text_cut_from_its_previous_version_is_cut_as_if_whole(seed: int, count: int, edits: int, trailing: bool) -> None:
    rnd = random.Random(seed)
    end = "\n" if trailing else ""
    old = "\n".join(_lines(seed, count)) + end
    new = "\n".join(_edited(old.split("\n"), rnd, edits))
    whole = ChunkedText.of(new)
    assert ChunkedText.of(new, ChunkedText.of(old)) == whole
    pieces = [new[start:end] for start, end in zip(whole.starts(), whole.ends, strict=True)]
    assert "".join(pieces) == new
    assert all(MIN_CHUNK < len(piece) <= MAX_CHUNK for piece in pieces[:-1])
    assert not pieces or 0 < len(pieces[-1]) <= MAX_CHUNK


def test_cut_points_come_from_the_text_so_an_edit_changes_a_chunk_or_two() -> None:
    text = policy_text(1500, nodes=10)  # ~2.4 MB
    before = ChunkedText.of(text)
    assert len(before.ends) > 20
    lines = text.split("\n")
    rnd = random.Random(7)
    for n in range(30):
        edited = _edited(lines, rnd, 1) if n % 2 else [*lines[: (at := rnd.randrange(len(lines)))], "      # a comment", *lines[at:]]
        after = ChunkedText.of("\n".join(edited))
        assert len(set(after.digests) - set(before.digests)) <= 2
    # the negative: cut every MIN_CHUNK characters, a line added at the top changes every chunk
    fixed = [text[at:at + MIN_CHUNK] for at in range(0, len(text), MIN_CHUNK)]
    moved = "# top\n" + text
    assert not set(fixed) & {moved[at:at + MIN_CHUNK] for at in range(0, len(moved), MIN_CHUNK)}
    assert len(set(ChunkedText.of(moved).digests) - set(before.digests)) == 1


def _stored_chunks(controller: Controller) -> tuple[int, int]:
    with controller.sessions() as session:
        count, size = session.execute(select(func.count(), func.coalesce(func.sum(func.length(DocumentChunkRow.text)), 0))).one()
    return int(count), int(size)


def test_a_one_line_change_stores_one_chunk_and_every_revision_reads_back_whole(db_url: str) -> None:
    controller = build_controller(db_url)
    documents = {"cluster.yaml": policy_text(1000, nodes=10), "extra.yaml": "version: 1\n"}
    first = controller.revisions.commit(Proposal(documents, "admin", "first", "upload"))
    count, size = _stored_chunks(controller)
    assert count > 10 and size == sum(len(text) for text in documents.values())
    edited = dict(documents)
    edited["cluster.yaml"] = edited["cluster.yaml"].replace("tcp: 443}", "tcp: 8443}", 1)
    second = controller.revisions.commit(Proposal(edited, "admin", "second", "upload"))
    assert second.created and second.row.content_hash != first.row.content_hash
    count2, size2 = _stored_chunks(controller)
    assert count2 == count + 1 and size2 - size <= MAX_CHUNK  # the document is 1.6 MB
    fresh = build_controller(db_url)  # nothing parsed: read from the database
    assert fresh.revisions.documents_of(first.row) == documents
    assert fresh.revisions.documents_of(second.row) == edited
    assert fresh.revisions.view(second.row.number).chunked is not None  # type: ignore[union-attr]
    again = fresh.revisions.commit(Proposal(dict(edited), "admin", "same", "upload"))
    assert not again.created and again.row.number == second.row.number  # the same documents: nothing new
    rollback = fresh.revisions.commit(Proposal(fresh.revisions.documents_of(first.row), "admin", "back", "rollback", rollback_of=1))
    assert rollback.row.content_hash == first.row.content_hash and _stored_chunks(fresh) == (count2, size2)


def test_listing_revisions_reads_no_documents(db_url: str) -> None:
    controller = build_controller(db_url)
    documents = three_tier_documents()
    for port in range(3):
        documents["policy.yaml"] += f"# {port}\n"
        controller.revisions.commit(Proposal(dict(documents), "admin", f"r{port}", "upload"))
    statements: list[str] = []

    def watch(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    engine = controller.sessions.kw["bind"]
    event.listen(engine, "before_cursor_execute", watch)
    try:
        rows = controller.revisions.history()
    finally:
        event.remove(engine, "before_cursor_execute", watch)
    assert [row.number for row in rows] == [3, 2, 1]
    assert statements and not any("document_chunks" in s or "revisions.documents" in s or "layout" in s for s in statements), statements


def test_a_missing_chunk_is_a_clear_error_naming_the_revision(db_url: str) -> None:
    controller = build_controller(db_url)
    committed = controller.revisions.commit(Proposal(three_tier_documents(), "admin", "one", "upload"))
    with controller.sessions() as session, session.begin():
        session.execute(text("DELETE FROM document_chunks"))
    with pytest.raises(LookupError, match=r"revision 1: \d+ chunk\(s\) of its documents are missing"):
        build_controller(db_url).revisions.documents_of(committed.row)


def test_a_commit_stores_the_chunks_it_keeps_when_the_database_lost_them(db_url: str) -> None:
    controller = build_controller(db_url)
    documents = {"cluster.yaml": policy_text(300, nodes=3)}
    controller.revisions.commit(Proposal(documents, "admin", "one", "upload"))
    with controller.sessions() as session, session.begin():  # e.g. an older backup restored under it
        session.execute(text("DELETE FROM document_chunks"))
    edited = {"cluster.yaml": documents["cluster.yaml"].replace("tcp: 22}", "tcp: 2222}", 1)}
    second = controller.revisions.commit(Proposal(edited, "admin", "two", "upload"))  # cut from the revision it holds parsed
    assert build_controller(db_url).revisions.documents_of(second.row) == edited


def _legacy_database(db_url: str, documents: dict[str, str]) -> None:
    """A database at schema 0006 holding revision 1 stored whole, as that schema did."""
    with at_schema(db_url, "0006_revision_diffs") as connection:
        connection.execute(text("INSERT INTO revisions (number, created_at, author, message, kind, change, documents, content_hash) "
                                "VALUES (1, :t, 'admin', 'old', 'upload', '{}', :d, :h)"),
                           {"t": "2026-01-01 00:00:00", "d": json.dumps(documents, sort_keys=True, separators=(",", ":")), "h": content_hash(documents)})


def test_revisions_stored_whole_before_the_upgrade_are_read_compared_and_rolled_back_to(db_url: str) -> None:
    documents = three_tier_documents()
    _legacy_database(db_url, documents)
    controller = build_controller(db_url)  # upgrades to the newest schema, rewriting nothing
    legacy = controller.revisions.get(1)
    assert legacy is not None and controller.revisions.documents_of(legacy) == documents
    same = controller.revisions.commit(Proposal(dict(documents), "admin", "same", "upload"))
    assert not same.created and same.row.number == 1  # compared by the hash that row was stored with
    edited = {**documents, "policy.yaml": documents["policy.yaml"] + "# edited\n"}
    second = controller.revisions.commit(Proposal(edited, "admin", "edit", "upload"))
    assert second.created and build_controller(db_url).revisions.documents_of(second.row) == edited
    back = controller.revisions.commit(Proposal(controller.revisions.documents_of(legacy), "admin", "back", "rollback", rollback_of=1))
    assert back.created and build_controller(db_url).revisions.documents_of(back.row) == documents


def test_a_downgrade_puts_the_documents_back_in_the_revisions_rows(db_url: str) -> None:
    controller = build_controller(db_url)
    documents = {"cluster.yaml": policy_text(200, nodes=2)}
    controller.revisions.commit(Proposal(documents, "admin", "one", "upload"))
    controller.sessions.kw["bind"].dispose()
    with at_schema(db_url, "0006_revision_diffs", downgrade=True) as connection:
        assert json.loads(connection.execute(text("SELECT documents FROM revisions WHERE number = 1")).scalar_one()) == documents


def test_the_layout_a_commit_cuts_from_the_previous_revision_is_the_whole_cut() -> None:
    documents = {"a.yaml": policy_text(300, nodes=3), "b.yaml": "version: 1\n"}
    previous = Chunked.of(documents)
    edited = {"a.yaml": documents["a.yaml"].replace("tcp: 22}", "tcp: 2222}"), "b.yaml": "version: 1\n", "c.yaml": "x\n"}
    assert Chunked.of(edited, previous.documents) == Chunked.of(edited)
    assert Chunked.of(edited).content_hash != previous.content_hash
    assert Chunked.of(dict(documents)).content_hash == previous.content_hash
