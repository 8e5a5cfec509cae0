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
from pathlib import Path

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
    digest = hashlib.sha256()
    separator = "{"
    for name in sorted(documents):
        text = documents[name]
        digest.update(f'{separator}{json.dumps(name)}:"'.encode())
        for at in range(0, len(text), HASH_CHUNK):
            digest.update(json.dumps(text[at:at + HASH_CHUNK])[1:-1].encode("utf-8", "surrogatepass"))
        digest.update(b'"')
        separator = ","
    digest.update(b"{}" if separator == "{" else b"}")
    return digest.hexdigest()


def problems_json(error: PolicyError) -> list[dict[str, object]]:
    """The loader's problems, each with its `file:line:col: key: message` text."""
    return [{**problem.to_json(), "text": str(problem)} for problem in error.problems]
