"""Revisions as this controller has parsed them, by number.

A revision never changes once stored, so what was read and parsed for it stays
true: every replica parses a revision once, whichever replica committed it, and
every later request (long-polls, status reports, the dashboard) reuses it. Only the
newest few are kept: a parsed policy of 10,000 VMs is over a gigabyte.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.orm import Session, sessionmaker

from ...policy.documents import load_documents
from ...policy.resolve import Policy
from .models import RevisionRow

KEPT = 2  # the current revision and its parent (a diff needs both)


@dataclass(frozen=True)
class RevisionView:
    row: RevisionRow
    policy: Policy
    hosts: frozenset[str] = field(default_factory=frozenset)
    documents_json: bytes = b""  # the row's documents, encoded once for every agent's answer

    @classmethod
    def of(cls, row: RevisionRow, policy: Policy) -> RevisionView:
        return cls(row, policy, frozenset(policy.doc.hosts), row.documents.encode("utf-8", "surrogatepass"))

    @property
    def number(self) -> int:
        return int(self.row.number)

    @cached_property
    def placement(self) -> dict[str, tuple[str, str | None]]:
        """VM -> (its host, its zone): whose VMs an agent may report about."""
        return {name: (vm.host, vm.zone) for name, vm in self.policy.doc.vms.items()}


class RevisionCache:
    def __init__(self, sessions: sessionmaker[Session], kept: int = KEPT) -> None:
        self._sessions = sessions
        self._kept = kept
        self._views: OrderedDict[int, RevisionView] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[int, threading.Lock] = {}  # one parse per revision, others wait for it
        self.parses = 0  # how many revisions this process parsed (tests watch it)

    def peek(self, number: int) -> RevisionView | None:
        """The view if it is at hand (no I/O: safe on the event loop)."""
        with self._lock:
            view = self._views.get(number)
            if view is not None:
                self._views.move_to_end(number)
            return view

    def put(self, view: RevisionView) -> None:
        with self._lock:
            self._views[view.number] = view
            self._views.move_to_end(view.number)
            while len(self._views) > self._kept:
                self._views.popitem(last=False)

    def get(self, number: int) -> RevisionView | None:
        """The view of revision `number`, read and parsed at most once (None: no such revision)."""
        view = self.peek(number)
        if view is not None:
            return view
        with self._lock:
            loading = self._loading.setdefault(number, threading.Lock())
        with loading:
            view = self.peek(number)
            if view is None:
                with self._sessions() as session:
                    row = session.get(RevisionRow, number)
                if row is None:
                    return None
                self.parses += 1
                view = RevisionView.of(row, load_documents(json.loads(row.documents)))
                self.put(view)
        with self._lock:
            self._loading.pop(number, None)
        return view
