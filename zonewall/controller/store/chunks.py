"""A revision's documents stored as content-defined chunks, each chunk stored once.

At 10,000 VMs a revision's documents are 16 MB of YAML, and a one-rule change alters
one line of them. Stored whole (schema 0001-0006), every revision cost 16 MB of
database (1,000 changes: 16 GB) and a tenth of a second of its commit (the JSON
encoding, its hash and the row's write), and every read of a revision (the current
documents of a targeted change, a rollback) read and decoded all of it.

Here each document is cut into chunks at points the text itself chooses: a chunk
holds at least `MIN_CHUNK` characters and ends after the first line whose CRC-32,
taken with the line before it, has its low bits clear (`CUT_MASK`: about one line in
a thousand), or at `MAX_CHUNK` characters. Where a chunk ends depends only on its own
text, so an edit changes the chunk it falls in, and the chunks after it are cut at
the same lines as before (those cut points lie far apart compared with `MIN_CHUNK`,
so a moved cut meets the old ones again at the next one): the same texts, stored
once under their SHA-256 and shared by every revision that holds them. A revision
stores its layout, each document's chunk digests in order (~15 KB at 10,000 VMs), and
its content hash is the SHA-256 of that layout.

A commit cuts only what changed: the documents are compared with the previous
revision's chunks (`Chunked.of(documents, previous)`), the chunks before the edit are
kept, and the new text is cut from there until a cut falls where one of the old
chunks after the edit begins. That gives the same chunks as cutting the whole text
(tests/controller/test_document_chunks.py holds it to that).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...policy.documents import Documents
from .models import DocumentChunkRow, RevisionRow

MIN_CHUNK = 16 * 1024  # characters before a chunk may end
MAX_CHUNK = 256 * 1024  # a chunk ends here at the latest (a text without cut points)
CUT_MASK = 1023  # a line (with the one before it) ends a chunk when its CRC-32 & CUT_MASK == 0
BATCH = 500  # digests per IN (...) query: under SQLite's oldest limit of 999 parameters

Layout = dict[str, list[str]]  # document name -> its chunks' digests, in order


def digest(chunk: str) -> str:
    return hashlib.sha256(chunk.encode("utf-8", "surrogatepass")).hexdigest()


def chunk_end(text: str, start: int, least: int = MIN_CHUNK, most: int = MAX_CHUNK) -> int:
    """Where the chunk of `text` that starts at `start` ends (exclusive). It depends
    on text[start:end] alone, which is what lets a commit keep unchanged chunks."""
    if len(text) - start <= least:
        return len(text)
    limit = min(len(text), start + most)
    previous = text.rfind("\n", start, start + least)  # the line before the one that crosses `least`
    window = text.rfind("\n", start, previous) + 1 if previous != -1 else start
    end = text.find("\n", start + least)
    while 0 <= end < limit:
        if zlib.crc32(text[window:end].encode("utf-8", "surrogatepass")) & CUT_MASK == 0:
            return end + 1
        window = previous + 1 if previous != -1 else start
        previous, end = end, text.find("\n", end + 1)
    if end == -1 and len(text) <= limit:  # no cut point before the end: the rest is the chunk
        return len(text)
    return limit  # none within `most`: cut there, mid-line if need be (decided by text[start:limit] alone)


@dataclass(frozen=True)
class ChunkedText:
    """One document and its chunks: each chunk's end offset and digest."""

    text: str
    ends: tuple[int, ...]
    digests: tuple[str, ...]

    def starts(self) -> list[int]:
        return [0, *self.ends[:-1]] if self.ends else []

    def chunk(self, index: int) -> str:
        return self.text[self.ends[index - 1] if index else 0:self.ends[index]]

    @classmethod
    def of(cls, text: str, previous: ChunkedText | None = None) -> ChunkedText:
        """`text` cut into chunks; with `previous` (an earlier version of it), its
        chunks before and after the edit are kept instead of cut and hashed again."""
        if previous is not None and (previous.text is text or previous.text == text):
            return cls(text, previous.ends, previous.digests)
        ends: list[int] = []
        digests: list[str] = []
        position = 0
        after: dict[int, int] = {}  # offset in `text` -> the previous chunk the rest of it starts with
        if previous is not None and previous.ends:
            position = _kept_prefix(text, previous, ends, digests)
            after = _kept_suffix(text, previous, position)
        while position < len(text):
            first = after.get(position)
            if first is not None:  # from here on the text is the previous one's: so are its chunks, moved
                assert previous is not None  # `after` is empty without it
                shift = len(text) - len(previous.text)
                ends.extend(end + shift for end in previous.ends[first:])
                digests.extend(previous.digests[first:])
                break
            end = chunk_end(text, position)
            ends.append(end)
            digests.append(digest(text[position:end]))
            position = end
        return cls(text, tuple(ends), tuple(digests))


def _kept_prefix(text: str, previous: ChunkedText, ends: list[int], digests: list[str]) -> int:
    """Keep the previous chunks `text` starts with (not the last one: where that ends
    depended on the text ending there); where the cutting goes on."""
    position = 0
    for start, end, key in zip(previous.starts()[:-1], previous.ends[:-1], previous.digests[:-1], strict=True):
        if end > len(text) or text[start:end] != previous.text[start:end]:
            break
        ends.append(end)
        digests.append(key)
        position = end
    return position


def _kept_suffix(text: str, previous: ChunkedText, position: int) -> dict[int, int]:
    """Offsets in `text` (at or after `position`) from which it ends as the previous
    text does from one of its chunk starts: offset -> that chunk's index."""
    shift = len(text) - len(previous.text)
    first = len(previous.ends)  # the earliest previous chunk `text` ends with
    starts = previous.starts()
    while first > 0:
        start, end = starts[first - 1], previous.ends[first - 1]
        if start + shift < position or text[start + shift:end + shift] != previous.text[start:end]:
            break
        first -= 1
    return {starts[index] + shift: index for index in range(first, len(previous.ends))}


@dataclass(frozen=True)
class Chunked:
    """A revision's documents cut into chunks, ready to be stored (cut outside the write lock)."""

    documents: dict[str, ChunkedText]

    @classmethod
    def of(cls, documents: Documents, previous: Mapping[str, ChunkedText] | None = None) -> Chunked:
        previous = previous or {}
        return cls({name: ChunkedText.of(text, previous.get(name)) for name, text in documents.items()})

    @property
    def layout(self) -> Layout:
        return {name: list(chunked.digests) for name, chunked in self.documents.items()}

    @property
    def layout_json(self) -> str:
        return json.dumps(self.layout, sort_keys=True, separators=(",", ":"))

    @property
    def content_hash(self) -> str:
        """The revision's content hash: of its layout, hence of its documents."""
        return hashlib.sha256(self.layout_json.encode()).hexdigest()

    def save(self, session: Session) -> str:
        """Store the chunks the database does not hold yet (each is asked for, kept
        ones too: a database restored under a running controller may lack them); the
        layout as JSON."""
        where: dict[str, tuple[ChunkedText, int]] = {}
        for chunked in self.documents.values():
            where.update((key, (chunked, index)) for index, key in enumerate(chunked.digests))
        held: set[str] = set()
        for batch in _batches(where):
            held.update(session.scalars(select(DocumentChunkRow.digest).where(DocumentChunkRow.digest.in_(batch))))
        session.add_all(DocumentChunkRow(digest=key, text=chunked.chunk(index)) for key, (chunked, index) in where.items() if key not in held)
        return self.layout_json


@dataclass(frozen=True)
class Stored:
    """A revision's documents as read back, and their chunks when stored as such."""

    documents: Documents
    chunked: dict[str, ChunkedText] | None  # None: stored whole, before schema 0007


def read(session: Session, number: int) -> Stored | None:
    """Revision `number`'s documents (None: no such revision)."""
    stored = session.execute(select(RevisionRow.layout, RevisionRow.legacy_documents).where(RevisionRow.number == number)).first()
    if stored is None:
        return None
    if stored.layout is None:
        return Stored(json.loads(stored.legacy_documents), None)
    layout: Layout = json.loads(stored.layout)
    wanted = {key for digests in layout.values() for key in digests}
    texts: dict[str, str] = {}
    for batch in _batches(wanted):
        for key, text in session.execute(select(DocumentChunkRow.digest, DocumentChunkRow.text).where(DocumentChunkRow.digest.in_(batch))):
            texts[key] = text
    missing = wanted - texts.keys()
    if missing:  # chunks are never deleted: only a damaged database gets here
        raise LookupError(f"revision {number}: {len(missing)} chunk(s) of its documents are missing from the database, e.g. {min(missing)}")
    chunked = {name: _assembled([texts[key] for key in digests], digests) for name, digests in layout.items()}
    return Stored({name: document.text for name, document in chunked.items()}, chunked)


def _assembled(pieces: list[str], digests: list[str]) -> ChunkedText:
    ends, offset = [], 0
    for piece in pieces:
        offset += len(piece)
        ends.append(offset)
    return ChunkedText("".join(pieces), tuple(ends), tuple(digests))


def _batches(keys: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(keys)
    for at in range(0, len(ordered), BATCH):
        yield ordered[at:at + BATCH]
