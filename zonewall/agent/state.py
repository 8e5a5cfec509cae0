"""The agent's memory on disk: the last state it applied, and the one it is applying.

At start the agent restores from here before (and without) talking to the
controller, so a node whose controller is gone still gets its last rules back,
e.g. after a reboot or an `nft flush ruleset` while the agent was down.

Three kinds of file, each written atomically (temporary file, fsync, rename), so a
crash never leaves half a file:

* `desired-<content hash>.json`: a revision's documents, written once, before the
  kernel sees that revision; kept while a state below names it;
* `pending.json`: "revision N is being applied", written before the kernel commit.
  A kill -9 between the commit and `applied.json` used to bring the older revision
  back at the next start (a just-deleted allow rule was open again); now the start
  finishes the pending revision instead, so the node never steps back;
* `applied.json`: what was applied and read back, with the kernel's readback hash.

A file of the wrong shape (edited by hand, another version's) is ignored with a
logged reason, never a crash at every start.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

log = logging.getLogger("zonewall.agent.state")
DEFAULT_STATE_DIR = Path("/var/lib/zonewall/agent")
STATE_FILE = "applied.json"
PENDING_FILE = "pending.json"
FORMAT = 2  # 1: applied.json held the documents itself (still read)


@dataclass
class AppliedState:
    node: str
    revision: int
    content_hash: str
    documents: dict[str, str]
    fingerprint: str  # compiler's ir.fingerprint of what was applied
    readback_hash: str  # the kernel's readback of our tables right after applying
    applied_at: float
    taps: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Pending:
    node: str
    revision: int
    content_hash: str


_APPLIED = TypeAdapter(AppliedState)
_PENDING = TypeAdapter(Pending)
_DOCUMENTS = TypeAdapter(dict[str, str])


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self.pending_path = directory / PENDING_FILE

    # -- reading ----------------------------------------------------------------------

    def load(self, node: str) -> AppliedState | None:
        """The applied state, or None (none yet, another node's, or unreadable)."""
        document = self._read(self.path)
        if document is None:
            return None
        state = document.get("state")
        if isinstance(state, dict) and document.get("format") == FORMAT:
            state = {**state, "documents": self.documents(str(state.get("content_hash", "")))}
        try:
            applied = _APPLIED.validate_python(state)
        except ValidationError as exc:
            log.error("%s ignored: not a saved state of this agent (%s)", self.path, _first(exc))
            return None
        return applied if applied.node == node else None

    def load_pending(self, node: str) -> tuple[Pending, dict[str, str]] | None:
        """A revision whose apply began and was never recorded, with its documents."""
        document = self._read(self.pending_path)
        if document is None:
            return None
        try:
            pending = _PENDING.validate_python(document.get("pending"))
        except ValidationError as exc:
            log.error("%s ignored: %s", self.pending_path, _first(exc))
            return None
        documents = self.documents(pending.content_hash)
        if pending.node != node or documents is None:
            return None
        return pending, documents

    def documents(self, content_hash: str) -> dict[str, str] | None:
        document = self._read(self._payload(content_hash)) if content_hash else None
        try:
            return _DOCUMENTS.validate_python(document.get("documents") if document else None)
        except ValidationError:
            return None

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("%s ignored: unreadable (%s)", path, exc)
            return None
        if not isinstance(document, dict) or document.get("format") not in (1, FORMAT):
            log.error("%s ignored: not a state file of this agent", path)
            return None
        return document

    # -- writing ----------------------------------------------------------------------

    def begin(self, node: str, revision: int, content_hash: str, documents: dict[str, str]) -> None:
        """Before the kernel commit: the documents, then the marker naming them."""
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = self._payload(content_hash)
        if not payload.exists():
            self._write(payload, {"format": FORMAT, "documents": documents})
        self._write(self.pending_path, {"format": FORMAT, "pending": asdict(Pending(node, revision, content_hash))})

    def abandon(self) -> None:
        """The pending apply failed (the old rules hold): forget it."""
        self.pending_path.unlink(missing_ok=True)
        self._collect()

    def save(self, state: AppliedState) -> None:
        """After the kernel commit and its readback."""
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = self._payload(state.content_hash)
        if not payload.exists():
            self._write(payload, {"format": FORMAT, "documents": state.documents})
        body = {k: v for k, v in asdict(state).items() if k != "documents"}
        self._write(self.path, {"format": FORMAT, "state": body})
        self.pending_path.unlink(missing_ok=True)
        self._collect()

    def _payload(self, content_hash: str) -> Path:
        return self.directory / f"desired-{content_hash}.json"

    def _collect(self) -> None:
        """Remove the documents no state names any more."""
        wanted = set()
        for path, key in ((self.path, "state"), (self.pending_path, "pending")):
            document = self._read(path)
            part = document.get(key) if document else None
            if isinstance(part, dict):
                wanted.add(f"desired-{part.get('content_hash')}.json")
        for path in self.directory.glob("desired-*.json"):
            if path.name not in wanted:
                path.unlink(missing_ok=True)

    @staticmethod
    def _write(path: Path, document: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as handle:
            json.dump(document, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def _first(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "the file"
    return f"{where}: {first['msg']}"
