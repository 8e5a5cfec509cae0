"""Creating absent tables in stages, with their encoding and readback overlapped.

A node's first apply builds its tables from nothing in stages (stages.py). The
kernel's share of it (libnftables parsing each stage, the kernel committing it) is
what `nft -f` of the same ruleset costs; ours was on top of it, one after the other:
encoding the commands (~0.05 s at 100 guests, next to `nft -f`'s 0.19 s) and reading
the whole ruleset back to verify it (~0.05 s). libnftables runs on the backend's
worker thread without Python's lock, so both are done while it works: stage k+1 is
encoded while stage k is taken, and what stage k finished (its sets, and the chains
whose rules it carried: no later stage touches them) is read back while stage k+1 is
taken. Only the last stage (the base chains) is read after the end.

Why the early reads are the final state: every stage is a transaction of our own and
moves the ruleset generation on by one. If, after the last stage, the generation is
the one before the first plus the number of stages, nobody else committed anything
meanwhile, and no later stage of ours touched what was read (Stage.finished), so each
read is what the kernel holds now. Otherwise (someone else committed, or a read
failed) the tables are read again whole, as before. The verification against the IR
(readback.verify_problems) is then the same as for a single transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress

from zonewall.compiler.ir import Ruleset
from zonewall.dataplane.backend import Backend, NftError, Pending
from zonewall.dataplane.encodings import Encodings, Piece, encode_ruleset
from zonewall.dataplane.nftstate import Scope, TableState
from zonewall.dataplane.readback import KernelView, read_view
from zonewall.dataplane.stages import STAGE_COMMANDS, Stage, creation_stages

TableKey = tuple[str, str]
_EMPTY = TableState({}, {}, {})


def create_in_stages(backend: Backend, ruleset: Ruleset, size: int = STAGE_COMMANDS) -> tuple[KernelView, Encodings, int]:
    """Create `ruleset`'s tables, all absent from the kernel, in stages; return the
    kernel's view right after (read back as described above), the tables'
    encodings (for the fingerprint) and the number of commands sent.

    NftError: a stage was refused. The earlier stages' tables are left in place (inert:
    no base chain); the caller removes them. No stage is running when this returns
    or raises."""
    keys = [(table.family, table.name) for table in ruleset.tables]
    pieces: dict[TableKey, dict[tuple[str, str], Piece]] = {}
    reads = _Readback(backend, keys)
    first_generation = backend.generation()
    commits = commands = 0
    pending: Pending | None = None
    previous: Stage | None = None
    try:
        for stage in creation_stages(ruleset, size, pieces):  # encoded while the previous stage is taken
            if pending is not None:
                pending.wait()
            pending = backend.start(stage.commands, text=stage.text)
            commits, commands = commits + 1, commands + len(stage.commands)
            if previous is not None:
                reads.finished(previous.finished)  # while this stage is taken
            previous = stage
        if pending is not None:
            pending.wait()
    except BaseException:
        if pending is not None:
            with suppress(NftError):
                pending.wait()
        raise
    view = reads.complete(previous.finished if previous is not None else {}, first_generation + commits)
    return view, encode_ruleset(ruleset, Encodings({}, pieces)), commands


class _Readback:
    """The tables' state assembled from reads of what each stage finished."""

    def __init__(self, backend: Backend, keys: list[TableKey]) -> None:
        self.backend = backend
        self.keys = keys
        self.state: dict[TableKey, TableState] = {}
        self.broken = False  # a read failed: the tables are read whole at the end

    def finished(self, finished: Mapping[TableKey, tuple[set[str], set[str]]]) -> None:
        """Read what a committed stage finished, while ours alone may commit."""
        if self.broken or not finished:
            return
        keys = list(finished)
        try:
            _generation, tables = self.backend.read_state(keys, base=self._base(keys), scope=_scopes(finished, keys), steady=False)
        except (NftError, OSError):
            self.broken = True
            return
        self._keep(tables)

    def complete(self, last: Mapping[TableKey, tuple[set[str], set[str]]], expected_generation: int) -> KernelView:
        """The view after the last stage: what it finished read now, the rest as read
        before if nobody else committed meanwhile; else every table read again."""
        if not self.broken and self.backend.generation() == expected_generation:
            generation, tables = self.backend.read_state(self.keys, base=self._base(self.keys), scope=_scopes(last, self.keys))
            if generation == expected_generation and all(state is not None for state in tables.values()):
                return KernelView(generation, tables)
        return read_view(self.backend, self.keys)

    def _base(self, keys: list[TableKey]) -> dict[TableKey, TableState | None]:
        return {key: self.state.get(key, _EMPTY) for key in keys}

    def _keep(self, tables: Mapping[TableKey, TableState | None]) -> None:
        for key, state in tables.items():
            if state is None:  # our own table gone between stages: only someone else does that
                self.broken = True
            else:
                self.state[key] = state


def _scopes(finished: Mapping[TableKey, tuple[set[str], set[str]]], keys: list[TableKey]) -> dict[TableKey, Scope]:
    return {key: Scope(frozenset(finished[key][0]), frozenset(finished[key][1])) if key in finished else Scope() for key in keys}
