"""A sharded lint run (shards.py): shard 0 in this process, each other one in a
forked child, speaking over a pipe.

    child                                   this process (shard 0)
    survey: its chains; every finding  -->  (the same)
    of its own rules but redundancy's;
    what it saw of shared rules             merge what the shards saw of shared rules
                                            and their conflicts, report them; the
                                            shared rules that may go, in judging order
                                       <--  (shared rules that never decide, that order)
    redundancy walk: at each shared    -->  all say it can go?
    rule, what its chains say          <--  the verdict, to every shard alike
    its redundant rules; the order     -->  the shared redundant rules; all its
    of all its findings                     findings sorted; the sorted runs merged

Every shard decides its own rules exactly as a run of one would (it sees all their
chains), and each shared rule is decided once, here, on what every shard saw: the
findings are the same whatever the number of shards (tests/analysis/test_lint_shards.py).

A child is forked after the policy and its analyzer are built (it shares them), never
touches the terminal, and leaves with os._exit; it also leaves when this process's end
of its pipe closes (this process ended).
"""

from __future__ import annotations

import os
import signal
import threading
import traceback
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from typing import Any

from ...policy.resolve import RuleRef
from ..engine import Analyzer
from .decisions import judging_order
from .linter import _Linter, drive
from .report import Finding, LintReport, Related, merge_sorted
from .shards import Shard, SharedConflict, SharedStats


class LintWorkerError(RuntimeError):
    """A shard's process failed: the run has no findings."""


class _Child:
    def __init__(self, shard: Shard, pid: int, conn: Connection):
        self.shard, self.pid, self.conn = shard, pid, conn

    def receive(self, tag: str) -> Any:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            raise LintWorkerError(f"lint shard {self.shard.index} stopped without an answer{self._status()}") from None
        if message[0] == "error":
            error = LintWorkerError(f"lint shard {self.shard.index} failed: {message[1].strip().splitlines()[-1]}")
            error.add_note(message[1])
            raise error
        assert message[0] == tag, message[0]
        return message[1]

    def _status(self) -> str:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return ""
        if pid == 0:
            return ""
        self.pid = 0
        return f" (it was killed by signal {os.WTERMSIG(status)})" if os.WIFSIGNALED(status) else f" (exit status {os.waitstatus_to_exitcode(status)})"

    def end(self, kill: bool) -> None:
        """Close its pipe and reap it: killed and reaped now (a failed run), or, once it
        has answered, reaped by a thread as it exits (a large shard takes a while to
        hand its memory back: ~0.2 s at 10,000 VMs, which the findings need not wait for)."""
        self.conn.close()
        if not self.pid:
            return
        if kill:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _reap(self.pid)
        else:
            threading.Thread(target=_reap, args=(self.pid,), name=f"lint shard {self.shard.index} reaper", daemon=True).start()
        self.pid = 0


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _fork(analyzer: Analyzer, shard: Shard, shortcuts: bool, siblings: list[_Child]) -> _Child:
    mine, theirs = Pipe()
    pid = os.fork()
    if pid == 0:  # the child: serve, never return into the caller's code
        mine.close()
        for sibling in siblings:  # (holding their pipes open, it would keep them from seeing this process end)
            sibling.conn.close()
        code = 0
        try:
            _serve(_Linter(analyzer, shortcuts=shortcuts, shard=shard), theirs)
        except BaseException:  # noqa: BLE001 - told to the parent, which raises it
            code = 1
            try:
                theirs.send(("error", traceback.format_exc()))
            except OSError:
                pass
        finally:
            os._exit(code)
    theirs.close()
    return _Child(shard, pid, mine)


def _serve(linter: _Linter, conn: Connection) -> None:
    seen, conflicts = linter.survey()
    conn.send(("seen", (seen, conflicts, linter.findings)))  # its findings so far, sent while shard 0 may still work
    surveyed = len(linter.findings)
    removed_shared, order = conn.recv()

    def decide(answer: tuple[bool, dict[str, Related]]) -> bool:
        conn.send(("answer", answer))
        return bool(conn.recv())

    linter.conclude(drive(linter.judging(removed_shared, order), decide))
    # sorted here, while shard 0 sorts its own, which then merges the runs: the order
    # of all its findings, the surveyed ones (sent already) first
    keys = [finding.sort_key() for finding in linter.findings]
    conn.send(("done", (linter.findings[surveyed:], sorted(range(len(keys)), key=keys.__getitem__))))


def run_shards(analyzer: Analyzer, shards: list[Shard], shortcuts: bool) -> LintReport:
    """The run of several shards; the findings of a run of one."""
    children: list[_Child] = []
    done = False
    try:
        for shard in shards[1:]:
            children.append(_fork(analyzer, shard, shortcuts, children))
        home = _Linter(analyzer, shortcuts=shortcuts, shard=shards[0])
        seen, conflicts = home.survey()
        # its surveyed findings sorted while the children pickle theirs (the later ones
        # are sorted at the end and merged in: ties keep the surveyed ones first)
        home_surveyed = sorted(home.findings, key=Finding.sort_key)
        surveyed_count = len(home.findings)
        sightings, sighted, surveyed = [seen], [conflicts], []
        for child in children:
            their_seen, their_conflicts, their_findings = child.receive("seen")
            sightings.append(their_seen)
            sighted.append(their_conflicts)
            surveyed.append(their_findings)
        merged = merge_seen(sightings)
        refs = {ref.id: ref for ref in analyzer.policy.rules if home.shard.shared(ref)}
        removed_shared, order = report_shared_rules(home, merged, refs)
        for child in children:
            child.conn.send((removed_shared, order))
        for (later, _), conflict in merge_conflicts(sighted).items():
            home.report_conflict(refs[later], conflict.later_action, conflict.earlier, conflict.overlap, conflict.exception, conflict.chains)
        redundant_shared: dict[str, dict[str, Related]] = {}
        pending = iter(order)

        def decide(answer: tuple[bool, dict[str, Related]]) -> bool:
            _, key = next(pending)
            answers = [answer, *(child.receive("answer") for child in children)]
            goes = all(ok for ok, _ in answers)
            for child in children:
                child.conn.send(goes)
            if goes:
                takers = redundant_shared[key] = {}
                for _, theirs in answers:
                    takers.update(theirs)
            return goes

        home.conclude(drive(home.judging(removed_shared, order), decide))
        for key, takers in redundant_shared.items():
            home.report_redundant(refs[key], sorted(merged[key].placed_in), list(takers.values()))
        home.release()
        findings = merge_sorted(home_surveyed, sorted(home.findings[surveyed_count:], key=Finding.sort_key))  # (as each child sorts its own)
        del home_surveyed
        del home  # its chains and memos freed (~0.2 s at 10,000 VMs) while the children still sort
        for child, theirs in zip(children, surveyed):
            concluded, ranks = child.receive("done")
            theirs += concluded
            findings = merge_sorted(findings, [theirs[index] for index in ranks])
        done = True
    finally:
        for child in children:
            child.end(kill=not done)
    return LintReport(findings)


def merge_seen(parts: list[dict[str, SharedStats]]) -> dict[str, SharedStats]:
    merged: dict[str, SharedStats] = {}
    for part in parts:
        for key, stats in part.items():
            found = merged.get(key)
            if found is None:
                merged[key] = stats
            else:
                found.add(stats)
    return merged


def merge_conflicts(parts: list[dict[tuple[str, str], SharedConflict]]) -> dict[tuple[str, str], SharedConflict]:
    merged: dict[tuple[str, str], SharedConflict] = {}
    for part in parts:
        for key, conflict in part.items():
            found = merged.get(key)
            merged[key] = conflict if found is None else found.add(conflict)
    return merged


def report_shared_rules(home: _Linter, seen: dict[str, SharedStats], refs: dict[str, RuleRef]) -> tuple[set[str], list[tuple[tuple[int, ...], str]]]:
    """The dead, shadowed, partly-shadowed and exposure findings of the shared rules
    (and of those no shard placed); the ones that never decide, and the judging order
    of those redundancy must judge."""
    removed: set[str] = set()
    order = []
    for key, part in seen.items():
        ref = refs[key]
        if home.report_rule(part.as_stats(ref)):
            removed.add(key)
        elif not ref.rule.log and ref.rule.limit is None:
            order.append((judging_order(ref, part.first), key))
        if part.exposure:
            home.report_exposure_of(ref, part.exposure)
    for key, ref in refs.items():
        if key not in seen:
            home.report_unplaced(ref)
    order.sort()
    return removed, order
