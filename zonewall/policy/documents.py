"""A policy as the controller stores and ships it: a set of named YAML documents.

The same set is what an operator keeps in a policy directory (`zones.yaml`,
`vms/web.yaml`, ...), what a revision records, and what an agent receives as its
node's desired state. Loading goes through the ordinary loader on a temporary
directory, so errors carry the document's own name as `file:line:col`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .delta import common_prefix
from .errors import Loc, PolicyError, Problem
from .incremental import load_edit
from .loader import load_policy
from .resolve import Policy
from .source import policy_files

Documents = dict[str, str]  # file name (relative, may have folders) -> YAML text

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}){0,7}\.ya?ml")
MAX_DOCUMENTS = 1000
MAX_TOTAL_BYTES = 64 * 1024 * 1024


def document_name_problem(name: str) -> str | None:
    """Why `name` cannot be a document name (None: it can): no absolute paths, no
    `..`, no hidden files; it must end in .yaml or .yml like policy files do."""
    if not _NAME.fullmatch(name) or ".." in name.split("/"):
        return f"{name!r} is not a valid document name (expected a relative path like zones.yaml or vms/web.yaml: letters, digits, . _ -, ending in .yaml or .yml)"
    return None


def check_documents(documents: Documents) -> None:
    """Refuse a set that could not be a policy directory, with the loader's error type."""
    problems: list[Problem] = []
    if not documents:
        problems.append(Problem(None, "", "a policy needs at least one document"))
    if len(documents) > MAX_DOCUMENTS:
        problems.append(Problem(None, "", f"{len(documents)} documents: at most {MAX_DOCUMENTS}"))
    if sum(len(text.encode("utf-8", "surrogatepass")) for text in documents.values()) > MAX_TOTAL_BYTES:
        problems.append(Problem(None, "", f"the documents exceed {MAX_TOTAL_BYTES // (1024 * 1024)} MiB"))
    for name in documents:
        reason = document_name_problem(name)
        if reason:
            problems.append(Problem(Loc(name, 1, 1), "", reason))
    folders = {"/".join(name.split("/")[:depth]) for name in documents for depth in range(1, name.count("/") + 1)}
    for name in sorted(folders & set(documents)):
        inside = next(other for other in sorted(documents) if other.startswith(name + "/"))
        problems.append(Problem(Loc(name, 1, 1), "", f"{name!r} is a document and also the folder of {inside!r}: rename one of them"))
    if problems:
        raise PolicyError(problems)


def write_documents(documents: Documents, directory: Path) -> None:
    for name, text in documents.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        # lone surrogates are written as such, so the loader reports "not UTF-8" at them
        path.write_bytes(text.encode("utf-8", "surrogatepass"))


def load_documents(documents: Documents) -> Policy:
    """Validate and resolve; PolicyError names `document:line:col` for every problem."""
    check_documents(documents)
    with tempfile.TemporaryDirectory(prefix="zonewall-policy-") as tmp:
        write_documents(documents, Path(tmp))
        return load_policy(tmp)


def load_edited(documents: Documents, previous: tuple[Documents, Policy] | None) -> Policy:
    """`load_documents`, from the previous documents and their policy when the edit
    allows (incremental.py: some rules of one VM or zone, or one group's member line,
    rewritten in place); the same policy,
    or the same PolicyError, either way."""
    check_documents(documents)
    if previous is not None:
        found = load_edit(previous[0], previous[1], documents, groups=True, lines=True)
        if found is not None:
            return found
    return load_documents(documents)


def read_directory(path: Path) -> Documents:
    """A policy file or directory from disk as a document set (for uploads)."""
    files = policy_files(path)
    base = path if path.is_dir() else path.parent
    return {str(f.relative_to(base)): f.read_text() for f in files}


HASH_CHUNK = 1 << 16  # characters escaped and hashed at once


def content_hash(documents: Documents) -> str:
    """sha256 of the documents as compact JSON, names sorted
    (`json.dumps(documents, sort_keys=True, separators=(",", ":"))`, UTF-8), the
    JSON escaped and hashed a chunk at a time: an agent hashes its node's documents for every change it receives (at
    10,000 VMs 2 MB of text, whose encoding and its bytes were ~4.6 MB at the peak of
    its memory). A chunk ends between code points, and JSON escapes each on its own,
    so the bytes hashed are the whole encoding's."""
    return hash_documents(documents).hexdigest


@dataclass(frozen=True)
class HashedDocuments:
    """A document set's `content_hash`, and the hasher as it stood before each chunk
    of each document (and after its last), so that the hash of a set that differs
    from this one only from some point on starts there (`hash_documents`)."""

    hexdigest: str
    names: tuple[str, ...]  # sorted, as hashed
    texts: tuple[str, ...]  # the documents' texts, in that order
    marks: tuple[tuple[Any, ...], ...]  # per document: hashlib states, never updated (copied to go on)


def hash_documents(documents: Documents, previous: HashedDocuments | None = None) -> HashedDocuments:
    """`content_hash` of `documents`, the hashing taken up where they first differ from
    `previous` (the same names, the texts equal up to a point): the bytes hashed up to
    the last chunk boundary before it are the same, and so is the hasher there. A
    controller builds a node's documents from its previous ones for every change
    (~2 MB at 10,000 VMs, ~5 ms each to hash whole; a rule line added changes every
    node's: half a second per commit)."""
    names = tuple(sorted(documents))
    texts = tuple(documents[name] for name in names)
    resumed = previous if previous is not None and previous.names == names else None
    start = _resume_point(texts, resumed) if resumed is not None else (0, 0)
    if start is None:
        return resumed  # type: ignore[return-value]  # (the very documents)
    first, chunk = start
    marks: list[tuple[Any, ...]] = list(resumed.marks[:first]) if resumed is not None else []
    digest = resumed.marks[first][chunk].copy() if resumed is not None else hashlib.sha256()
    for index in range(first, len(names)):
        text = texts[index]
        if index == first and resumed is not None:
            kept: list[Any] = list(resumed.marks[first][: chunk + 1])
            begin = chunk * HASH_CHUNK
        else:
            digest.update(f'{"," if index else "{"}{json.dumps(names[index])}:"'.encode())
            kept, begin = [digest.copy()], 0
        for at in range(begin, len(text), HASH_CHUNK):
            digest.update(json.dumps(text[at:at + HASH_CHUNK])[1:-1].encode("utf-8", "surrogatepass"))
            kept.append(digest.copy())
        digest.update(b'"')
        marks.append(tuple(kept))
    digest.update(b"}" if names else b"{}")
    return HashedDocuments(digest.hexdigest(), names, texts, tuple(marks))


def _resume_point(texts: tuple[str, ...], previous: HashedDocuments) -> tuple[int, int] | None:
    """(document, chunk) of the first chunk of `texts` that can differ from those of
    `previous` (the same names); None: every text is the same."""
    for index, (before, now) in enumerate(zip(previous.texts, texts)):
        if before is now or before == now:
            continue
        return index, common_prefix(before, now) // HASH_CHUNK
    return None


def problems_json(error: PolicyError) -> list[dict[str, object]]:
    """The loader's problems, each with its `file:line:col: key: message` text."""
    return [{**problem.to_json(), "text": str(problem)} for problem in error.problems]
