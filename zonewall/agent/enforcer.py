"""Making the kernel hold the node's desired state, and keeping it there.

Single-threaded by design: the daemon's main loop is the only caller, so an apply,
a drift check and a repair never interleave. The kernel work itself is the
dataplane's (atomic apply with readback, zonewall's tables only).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from ..compiler.ir import Ruleset
from ..compiler.node import UnknownNode, compile_node
from ..compiler.schedule import local_timezone
from ..dataplane.apply import ApplyResult, Snapshot, VerifyError, apply_ruleset
from ..dataplane.backend import Backend, NftError
from ..dataplane.encodings import Encodings
from ..dataplane.readback import KernelView, read_view
from ..policy.documents import Documents, check_documents, content_hash, load_documents
from ..policy.errors import PolicyError
from ..policy.incremental import load_edit
from ..policy.resolve import Policy, changed_groups
from . import learning
from .discovery import Found, discover_taps, taps_report, with_taps
from .memory import keep_what_edits_read, release_freed_memory
from .state import AppliedState, StateStore

log = logging.getLogger("zonewall.agent.enforcer")
# What can go wrong while applying without it being a bug: refused by the kernel,
# read back wrong, a policy this agent cannot compile for its node.
APPLY_ERRORS = (NftError, VerifyError, PolicyError, UnknownNode, ValueError, OSError)
# The kernel test of a kill -9 between the commit and the saved state stops the
# agent exactly there (tests/kernel/test_agent_faults.py); never set in production.
CRASH_AFTER_COMMIT = "ZONEWALL_TEST_CRASH_AFTER_COMMIT"


def _crash_point_for_tests(revision: int) -> None:
    if os.environ.get(CRASH_AFTER_COMMIT) == str(revision):
        os._exit(137)
Discover = Callable[[Policy, str], dict[tuple[str, int], Found]]


@dataclass(frozen=True)
class Desired:
    revision: int
    documents: Documents
    content_hash: str


class Enforcer:
    def __init__(
        self,
        backend: Backend,
        node: str,
        store: StateStore,
        *,
        discover: Discover = lambda policy, node: discover_taps(policy, node),
        timezone: Callable[[], str] = local_timezone,
        inputs: Callable[[], Hashable] | None = None,
    ) -> None:
        self.backend, self.node, self.store = backend, node, store
        self._discover, self._timezone = discover, timezone
        # What a compile depends on besides the documents (the node's links, the
        # timezone's offset): a periodic refresh with the same inputs skips the
        # compile. None: not known, every refresh recompiles.
        self._inputs = inputs
        self._compiled_inputs: Hashable = None  # those of the ruleset in force
        self._pending_inputs: Hashable = None  # those of the last compile, in force once applied
        self.state: AppliedState | None = None
        self.ruleset: Ruleset | None = None
        self.expected_hash: str | None = None  # readback of our tables when we left them
        self.view: KernelView | None = None  # that readback: reused while nothing was committed since
        self.encodings: Encodings | None = None  # the ruleset in force, encoded: the next fingerprint re-encodes what changed
        self.drift_repairs = 0
        self.last_error: str | None = None
        # The documents loaded last and their parsed policy. A one-rule change is
        # validated from it (policy/incremental.py: ~50 ms where a whole load of a
        # 10,000-VM node's documents costs 1-3 s of CPU), a refresh of the same
        # documents reuses it. Retained, it costs the agent ~50 MB at 10,000 VMs
        # (docs/performance.md: what the agent keeps).
        self._parsed: tuple[Documents, Policy] | None = None
        self.loads: Counter[str] = Counter()  # policies by how they were had: same, edited, whole

    # -- compiling ------------------------------------------------------------------

    def policy_of(self, documents: Documents) -> Policy:
        """The policy of `documents`: the one parsed last when they are the same, else
        from it when the edit allows (only the edited rules are read and checked), else
        a whole load; the same policy, or the same PolicyError, either way."""
        parsed = self._parsed
        if parsed is not None and (parsed[0] is documents or parsed[0] == documents):
            self.loads["same"] += 1
            return parsed[1]
        check_documents(documents)  # policy.documents.load_edited's steps, counted
        policy = load_edit(parsed[0], parsed[1], documents, groups=True, lines=True, empty_lines=True) if parsed is not None else None
        if policy is not None and parsed is not None:
            # rules alone changed, or a group's members: what references mean in
            # addresses holds but for what names that group (worked out anew)
            policy.share_address_memos(parsed[1], changed_groups(parsed[1].doc.groups, policy.doc.groups))
            policy.keep_compile_memos()  # (those it did not take over: kept from here on)
        self.loads["edited" if policy is not None else "whole"] += 1
        if policy is None:
            # The policy kept is let go first: two parsed policies at once were the
            # agent's peak (~70 MiB each at 10,000 VMs); freed, the new one reuses its memory.
            self._parsed = parsed = None
            release_freed_memory(everything=True)
            policy = load_documents(documents)
            keep_what_edits_read(policy)
        self._parsed = (documents, policy)
        return policy

    def _compile(self, documents: Documents) -> tuple[Ruleset, dict[str, str]]:
        self._pending_inputs = self._inputs() if self._inputs is not None else None
        policy = self.policy_of(documents)
        found = self._discover(policy, self.node)
        policy = with_taps(policy, found)
        learned = learning.harvest(self.backend, self.store.directory, self.node, policy)  # guard learning mode
        ruleset = compile_node(policy, self.node, timezone=self._timezone(), learned=learned)
        return ruleset, taps_report(found)

    def _tables(self) -> list[tuple[str, str]]:
        assert self.ruleset is not None
        return [(t.family, t.name) for t in self.ruleset.tables]

    def _record(self, desired: Desired, ruleset: Ruleset, result: ApplyResult, taps: dict[str, str]) -> None:
        self.ruleset, self.expected_hash, self.view = ruleset, result.readback_hash, result.view
        self._compiled_inputs = self._pending_inputs
        self.state = AppliedState(
            node=self.node, revision=desired.revision, content_hash=desired.content_hash, documents=desired.documents,
            fingerprint=result.fingerprint, readback_hash=result.readback_hash, applied_at=time.time(), taps=taps,
        )
        self.encodings = result.encodings
        self.store.save(self.state)
        self.last_error = None

    # -- the three jobs ---------------------------------------------------------------

    def restore(self) -> str:
        """At start, before the controller answers: bring back the last applied state.

        Nothing is removed first: when the kernel still holds that state (the agent
        merely restarted) the apply finds nothing to do and no packet ever meets an
        empty ruleset; when it was flushed meanwhile, it is rebuilt in one transaction.
        A revision whose apply began and was never recorded (the agent died around
        the kernel commit) is newer than the applied one: it is finished, not undone.
        """
        saved = self.store.load(self.node)
        pending = self.store.load_pending(self.node)
        if pending is not None and (saved is None or pending[0].revision > saved.revision):
            marker, documents = pending
            try:
                result = self.enforce(Desired(marker.revision, documents, marker.content_hash))
            except APPLY_ERRORS as exc:
                log.error("revision %d was being applied when the agent stopped and cannot be applied now (%s)", marker.revision, exc)
                self.store.abandon()
            else:
                return f"revision {marker.revision} restored ({result.mode}): it was being applied when the agent stopped"
        if saved is None:
            return "no saved state: the kernel is left as it is until the controller answers"
        desired = Desired(saved.revision, saved.documents, saved.content_hash)
        ruleset, taps = self._compile(saved.documents)
        result = apply_ruleset(self.backend, ruleset, previous=ruleset)  # empty diff when the kernel still matches
        if result.readback_hash != saved.readback_hash and result.mode == "unchanged":
            result = apply_ruleset(self.backend, ruleset)  # same shape, other content: replace
        self._record(desired, ruleset, result, taps)
        return f"revision {saved.revision} {'adopted as it was' if result.mode == 'unchanged' else 'restored (' + result.mode + ')'}"

    def enforce(self, desired: Desired) -> ApplyResult:
        """Compile and apply a desired state; NftError/VerifyError leave the old rules."""
        applied = self.state is not None and self.view is not None and desired.content_hash == self.state.content_hash
        if applied and desired.documents is self.state.documents:  # type: ignore[union-attr]
            return self._renumber(desired.revision)  # the applied documents themselves: their hash was checked then
        if desired.content_hash != content_hash(desired.documents):
            raise ValueError(f"revision {desired.revision}: the documents do not match their hash")
        if applied:
            return self._renumber(desired.revision)
        ruleset, taps = self._compile(desired.documents)
        # Written before the commit: a crash after it must not bring the older state back.
        self.store.begin(self.node, desired.revision, desired.content_hash, desired.documents)
        try:
            result = apply_ruleset(self.backend, ruleset, previous=self.ruleset, seen=self.view, encodings=self.encodings)
        except BaseException:
            self.store.abandon()  # refused or restored: the old rules hold, and stay the applied state
            raise
        _crash_point_for_tests(desired.revision)
        self._record(desired, ruleset, result, taps)
        log.info("revision %d applied (%s, %d commands)", desired.revision, result.mode, result.commands)
        return result

    def _renumber(self, revision: int) -> ApplyResult:
        """A revision that leaves this node's documents as applied (a change elsewhere in
        the cluster): nothing to compile or apply, only its number is recorded. The
        kernel is checked as always, by the periodic readback."""
        assert self.state is not None and self.view is not None and self.expected_hash is not None
        state = self.state
        if revision != state.revision:
            state.revision = revision
            self.store.save(state)
        self.last_error = None  # what failed before (another revision's documents) is not what is in force
        if self._learns():  # what guests learned since is saved at every revision, as a compile would
            learning.harvest(self.backend, self.store.directory, self.node, self.policy_of(state.documents))
        fingerprint = state.fingerprint

        def no_snapshot() -> Snapshot:
            raise RuntimeError("nothing was applied: no snapshot")

        return ApplyResult(self.expected_hash, "unchanged", self.view, lambda: fingerprint, no_snapshot)

    def _learns(self) -> bool:
        assert self.ruleset is not None
        return any(s.name.startswith("learned4-") for table in self.ruleset.tables for s in table.sets)

    def verify(self) -> bool:
        """True when our tables read back as we left them (nothing to enforce: True)."""
        if self.ruleset is None:
            return True
        view = read_view(self.backend, self._tables(), base=self.view)  # free while nothing was committed
        if view.digest != self.expected_hash:
            return False
        self.view = view  # someone changed another table: the same digest, a newer generation
        return True

    def repair(self) -> ApplyResult | None:
        """If our tables drifted, replace them with the applied state (other tables untouched)."""
        if self.ruleset is None or self.state is None or self.verify():
            return None
        result = apply_ruleset(self.backend, self.ruleset)
        self.expected_hash, self.view = result.readback_hash, result.view
        self.state.readback_hash = result.readback_hash
        self.store.save(self.state)
        self.drift_repairs += 1
        log.warning("drift repaired: revision %d put back (%d commands)", self.state.revision, result.commands)
        return result

    def refresh(self, *, only_if_inputs_changed: bool = False) -> ApplyResult | None:
        """Recompile the applied revision (taps may have appeared, a DST offset may
        have changed schedules); apply only if the ruleset differs.

        `only_if_inputs_changed` (the periodic refresh): nothing is compiled while the
        inputs are those of the last compile and no guard learns addresses (what was
        learned is read at every compile). At 10,000 VMs a compile costs an agent
        seconds of CPU: once a minute on every node, for nothing, it was most of an
        idle agent's CPU (bench/cluster.py)."""
        if self.state is None:
            return None
        if (only_if_inputs_changed and self._inputs is not None and self.ruleset is not None and not self._learns()
                and self._inputs() == self._compiled_inputs):
            return None
        ruleset, taps = self._compile(self.state.documents)
        if self.ruleset is not None and ruleset == self.ruleset:
            self._compiled_inputs = self._pending_inputs  # the same ruleset: in force already
            return None
        desired = Desired(self.state.revision, self.state.documents, self.state.content_hash)
        result = apply_ruleset(self.backend, ruleset, previous=self.ruleset, seen=self.view, encodings=self.encodings)
        self._record(desired, ruleset, result, taps)
        log.info("revision %d recompiled and applied (%s)", desired.revision, result.mode)
        return result
