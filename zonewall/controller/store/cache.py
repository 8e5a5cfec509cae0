"""Revisions as this controller has parsed them, by number.

A revision never changes once stored, so what was read and parsed for it stays
true: every replica parses a revision once, whichever replica committed it, and
every later request (long-polls, status reports, the dashboard) reuses it. Only the
newest few are kept: a parsed policy of 10,000 VMs is over a gigabyte.

Each view also holds its nodes' desired states (`NodeStates`: the documents scoped
to a node, policy/scope.py), each built once, when the first agent of that node
asks, and shared by every later answer; a node the change from the previous view
does not affect gets the previous view's state object itself, nothing rebuilt; and
when the change is one every node's documents take alike (a group's members, a
zone's default: scope.shared_edit) or an edit inside one rules block (the nodes
holding it take its lines, the others blank lines: scope.block_edit), each node's
state is its previous one with those lines replaced and its delta is that change,
instead of scoping and diffing each node's documents anew (~0.1 s per node at 10,000
VMs: 10 s of a group change at 100 nodes).

A parsed 10,000-VM policy is millions of objects, and the collector's oldest
generation walks them all now and then: a pause of ~1.5 s landing on a random
commit (bench/commit.py's p99). So after a view parsed whole is put, what survives a
collection is frozen (`gc.freeze`: later collections skip it), and after each
commit's diff what that commit left alive is frozen too (`settle`: its edited
policy's own objects, the analyzer the diff kept; ~150,000 objects after a group
edit at 10,000 VMs, which the oldest generation otherwise walked on every commit,
~110 ms each). Frozen objects still go by their reference counts; only cycles
among them wait. An edited policy and its diff hold none once a revision leaves the
cache (its kept analyzer, which refers back to the policy, is dropped then:
analysis/kept.py `forget`); what else ends up frozen in cycles (a request's own
machinery, a few kilobytes) is collected at the next whole parse, or after
SWEEP_EVERY commits, when everything is unfrozen and collected once (seconds at
this size, as a whole parse pays). (The loader's own pause, gcpause.py, unfreezes
everything at the end of a whole load too.)
"""

from __future__ import annotations

import gc
import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy.orm import Session, sessionmaker

from ...analysis.kept import forget
from ...policy.delta import Delta, apply_delta, delta_size, make_delta
from ...policy.documents import Documents, HashedDocuments, hash_documents, load_documents
from ...policy.incremental import index_for_edits
from ...policy.resolve import Policy
from ...policy.scope import NodeEdit, Scoper, affected, node_edit
from . import chunks
from .chunks import ChunkedText
from .models import RevisionRow

KEPT = 2  # the current revision and its parent (a diff needs both)
SWEEP_EVERY = 500  # commits frozen by `settle` between two full collections
PREPARED_NODES = 4  # a change touching at most this many nodes has their states built before the agents are woken (`prepare`)
DELTA_SHARE = 0.25  # a delta is sent instead of the documents when it is at most this share of them


@dataclass(frozen=True)
class NodeState:
    """What one node is sent for a revision: its scoped documents, encoded once when
    first sent whole (after a shared edit, 100 nodes' states are made and each is
    sent a delta: the encoding was ~5 ms per node, on the path of the answers)."""

    documents: Documents
    hashed: HashedDocuments  # its content hash, resumable where the next state differs
    size: int  # characters of the documents

    @property
    def content_hash(self) -> str:
        return self.hashed.hexdigest

    @cached_property
    def documents_json(self) -> bytes:
        return json.dumps(self.documents, sort_keys=True).encode("utf-8", "surrogatepass")


class NodeStates:
    """The desired states of one revision's nodes, built on demand, once each."""

    def __init__(self, documents: Documents, policy: Policy) -> None:
        self._documents = documents
        self._placement = {name: vm.host for name, vm in policy.doc.vms.items()}
        self._zone_of = {name: vm.zone for name, vm in policy.doc.vms.items()}
        self.hosts = frozenset(policy.doc.hosts)
        self._parent: NodeStates | None = None
        self._unaffected: frozenset[str] | None = None
        self._states: dict[str, NodeState] = {}
        self._deltas: dict[str, Delta] = {}  # node -> its delta from the parent's state (a shared edit's, or made at the first ask)
        self._lock = threading.Lock()
        self.built = 0  # states built here, not carried over (tests and the bench watch it)

    @property
    def documents(self) -> Documents:
        return self._documents

    @cached_property
    def scoper(self) -> Scoper:
        parent = self._parent
        if parent is not None and "scoper" in parent.__dict__:  # the parent's is built: follow it
            return Scoper.following(parent.scoper, self._documents, self._placement, zone_of=self._zone_of)
        return Scoper(self._documents, self._placement, zone_of=self._zone_of)

    def follow(self, parent: NodeStates) -> None:
        """This revision comes right after `parent`: unaffected nodes keep its states."""
        with self._lock:
            self._parent = parent
        parent._parent = None  # one step back is all a delta needs; older views may go

    def _left_alone(self) -> frozenset[str] | None:
        """The nodes whose documents the change from the parent leaves as they were,
        worked out once (None: no parent). The caller holds the lock."""
        parent = self._parent
        if parent is not None and self._unaffected is None:
            self._unaffected = self.hosts - affected(parent.scoper, self.scoper, self.hosts | parent.hosts)
        return self._unaffected

    def _carried(self, node: str) -> NodeState | None:
        unaffected = self._left_alone()
        parent = self._parent
        return parent.get(node) if parent is not None and unaffected is not None and node in unaffected else None

    def _followed(self, node: str) -> NodeState | None:
        """The node's state from its previous one and the edit as that node takes it
        (scope.node_edit: an edit every node shares, a group's members, a zone's
        default, the settings; or an edit inside one rules block): its lines replaced,
        instead of scoping the documents again (~45 ms per node at 10,000 VMs, for
        each of them when a group or zone changed or a rule line was added)."""
        parent, edit = self._parent, self._edit
        if parent is None or edit is None or node not in parent.hosts:
            return None
        before = parent.get(node)
        delta = edit.delta_for(node)
        if delta is None:
            return before
        self._deltas[node] = delta
        return _state(apply_delta(before.documents, delta), before)

    @cached_property
    def _edit(self) -> NodeEdit | None:
        """scope.node_edit from the parent's documents (asked at the first state
        built, after `follow`: a view gets its parent before anyone reads it)."""
        parent = self._parent
        return node_edit(parent.scoper, self.scoper) if parent is not None else None

    def prepare(self) -> frozenset[str] | None:
        """Build now what the first answer of the revision would otherwise build while
        every other woken agent's request waited for it, each holding a thread of the
        server's pool (100 nodes: the pool is 40 threads): the scoper and, after a
        parent, which nodes the change leaves alone (~0.1 s at 10,000 VMs); and the
        states of the nodes it changes when they are few (a VM's rule: its node), so
        that theirs too are ready the moment they ask. Returns the nodes whose
        documents the change touches (those that left the policy included) but for
        those it only renumbers (`_renumbered_only`): the nodes to wake before the
        commit's diff; None: not known (no parent), every node."""
        with self._lock:
            self.scoper  # noqa: B018 - the cached property is the point
            unaffected = self._left_alone()
            parent = self._parent
        if unaffected is None or parent is None:
            touched, known = self.hosts, False
        else:
            touched, known = (self.hosts | parent.hosts) - unaffected, True
            touched -= self._renumbered_only()
        if len(touched) <= PREPARED_NODES:
            for node in sorted(touched & self.hosts):
                self.get(node)
        return frozenset(touched) if known else None

    def _renumbered_only(self) -> frozenset[str]:
        """The nodes whose documents the change only gives or takes blank lines: a
        rule line added to or removed from a rules block they do not hold
        (scope.block_edit). What they filter stays; only the derived ids of their
        later rules move (their counters' and logs' ids). At 100 nodes, waking them
        with the node that holds the block had the commit wait for 100 answers and
        their agents' renumbering beside its diff (~3-4 s in bench/cluster.py)."""
        edit = self._edit
        if edit is None or edit.holding is None or edit.blanked is None:
            return frozenset()
        return frozenset(self.hosts - edit.holding)

    def ready(self, node: str) -> NodeState | None:
        """The node's state when nothing is left to build for it (built, or carried
        over from the parent's unchanged); None: `get` builds it."""
        with self._lock:
            state = self._states.get(node)
            if state is not None or self._unaffected is None or node not in self._unaffected or self._parent is None:
                return state
            parent = self._parent
        carried = parent.ready(node)
        if carried is not None:
            with self._lock:
                state = self._states.setdefault(node, carried)
        return state

    def get(self, node: str) -> NodeState:
        with self._lock:  # one build per node and revision; pollers of that node wait for it
            state = self._states.get(node)
            if state is None:
                state = self._carried(node)
                if state is None:
                    state = self._followed(node) or _state(self.scoper.scoped(node), self._parent.ready(node) if self._parent is not None else None)
                    self.built += 1
                self._states[node] = state
            return state

    def delta(self, node: str, have: str) -> Delta | None:
        """The change from the node's previous state, when `have` is its hash and the
        delta is small; None: send the documents."""
        parent = self._parent
        if parent is None or node not in parent.hosts:
            return None
        before, after = parent.get(node), self.get(node)
        if before.content_hash != have:
            return None
        delta = self._deltas.get(node)
        if delta is None:  # made once: the node's agent, a reader following it, an agent asking again
            delta = self._deltas.setdefault(node, make_delta(before.documents, after.documents))
        return delta if delta_size(delta) <= DELTA_SHARE * after.size else None


def _state(documents: Documents, before: NodeState | None = None) -> NodeState:
    """The state of `documents`; hashed from where they first differ from `before`'s."""
    hashed = hash_documents(documents, before.hashed if before is not None else None)
    return NodeState(documents, hashed, sum(len(text) for text in documents.values()))


@dataclass(frozen=True)
class RevisionView:
    row: RevisionRow
    policy: Policy
    hosts: frozenset[str] = field(default_factory=frozenset)
    states: NodeStates | None = None  # each node's desired state
    chunked: dict[str, ChunkedText] | None = None  # its documents' chunks (None: stored whole, before schema 0007)

    @classmethod
    def of(cls, row: RevisionRow, policy: Policy, documents: Documents, chunked: dict[str, ChunkedText] | None) -> RevisionView:
        """`documents`: the row's (store/chunks.py reads them), `chunked` their chunks."""
        return cls(row, policy, frozenset(policy.doc.hosts), NodeStates(documents, policy), chunked)

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
        self._settled = 0  # commits frozen since the last full collection

    def peek(self, number: int) -> RevisionView | None:
        """The view if it is at hand (no I/O: safe on the event loop)."""
        with self._lock:
            view = self._views.get(number)
            if view is not None:
                self._views.move_to_end(number)
            return view

    def newest(self) -> RevisionView | None:
        """The newest revision at hand (no I/O): what a commit is most likely an edit of."""
        with self._lock:
            return self._views[max(self._views)] if self._views else None

    def put(self, view: RevisionView, *, whole: bool = True) -> None:
        """Keep `view`; `whole`: its policy was parsed whole (not edited from the
        previous one: policy/incremental.py), so it is frozen for the collector."""
        with self._lock:
            if view.number in self._views:  # parsed meanwhile (a NOTIFY): keep that one, it may have states built
                self._views.move_to_end(view.number)
                return
            older = [number for number in self._views if number < view.number]
            if older and view.states is not None:
                parent = self._views[max(older)].states
                if parent is not None:
                    view.states.follow(parent)
            self._views[view.number] = view
            self._views.move_to_end(view.number)
            while len(self._views) > self._kept:
                # the oldest revision goes, not the least recently read: a diff reads the
                # parent after the new revision, and an LRU then dropped the parent of the
                # next commit (parsed again: seconds at 10,000 VMs)
                forget(self._views.pop(min(self._views)).policy)  # (no name holds it past here)
        if whole:
            self._sweep()

    def settle(self) -> None:
        """After a commit's diff: what it left alive is frozen, the young generations
        collected first (a few thousand objects; module docstring)."""
        with self._lock:
            self._settled += 1
            due = self._settled >= SWEEP_EVERY
        if due:
            self._sweep()
        else:
            gc.collect(1)
            gc.freeze()

    def _sweep(self) -> None:
        with self._lock:
            self._settled = 0
        freeze_survivors()


    @contextmanager
    def filling(self, number: int) -> Iterator[None]:
        """While revision `number` is being committed here: `get` of it waits for the
        committer's `put` rather than parsing it a second time."""
        with self._lock:
            loading = self._loading.setdefault(number, threading.Lock())
        with loading:
            yield
        with self._lock:
            self._loading.pop(number, None)

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
                    stored = chunks.read(session, number) if row is not None else None
                if row is None or stored is None:
                    return None
                self.parses += 1
                policy = load_documents(stored.documents)
                index_for_edits(policy)  # a commit may edit it next (a restart, another controller's revision)
                view = RevisionView.of(row, policy, stored.documents, stored.chunked)
                self.put(view)
        with self._lock:
            self._loading.pop(number, None)
        return view


def freeze_survivors() -> None:
    """Collect everything (what earlier calls froze included: policies evicted since
    are garbage now) and freeze what survives (module docstring)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
