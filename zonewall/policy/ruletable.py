"""A policy's rule table made from the previous policy's (policy/incremental.py).

`Policy._rule_table` is every rule with its id and position, and the same grouped by
owner. A policy validated from the previous one shares it but for what the edit
changed: the edited owner's rules, and, when lines were added or removed, every rule
below them in that file, whose position and derived id (`file:line`) move. At
10,000 VMs that is up to 200,000 rules, a second of Python to remake, and a commit
reads a few owners' rules. So `RuleTable` keeps the whole load's runs (`base`), the
line moves made since (`moves`, in order), and the runs made since (`made`, each
with how many of the moves it has had); an owner's run is moved when first read,
and an owner no table edited is moved once for all the tables made from one
another (`shared`: the next commit's table finds the runs its diff read made).
Every rule at once (`Policy.rules`) is made only when asked for.

A table answers exactly what the whole load's would: tests/policy/test_incremental*.py
compare every rule (id, path, position) with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from functools import cached_property

from .errors import Loc
from .resolve import RuleRef, default_rule_id

Owner = tuple[str, str]  # (level, owner), as Policy._rule_table groups rules
Move = tuple[str, int, int]  # (file, the first line that moves, by how many lines)
Shared = tuple[list[RuleRef], tuple[Move, ...]]  # a run, the moves it was made with
MAX_MOVES = 64  # pending moves before every run is made anew (a first read pays for each)


class Runs(Mapping[Owner, list[RuleRef]]):
    """Each owner's rules, moved when first read."""

    def __init__(self, base: Mapping[Owner, list[RuleRef]], moves: tuple[Move, ...] = (), made: dict[Owner, tuple[list[RuleRef], int]] | None = None,
                 edited: frozenset[Owner] = frozenset(), memo: dict[str, bool] | None = None, shared: dict[Owner, Shared] | None = None,
                 explicit: dict[str, Owner | None] | None = None):
        self._base, self._moves, self._made = base, moves, made if made is not None else {}
        self._edited = edited  # owners whose rules were replaced since the whole load
        self._memo = memo if memo is not None else {}  # any_rule's answers over `base`, shared by the tables made from it
        # explicit id -> the owner of `base` with a rule of that id (None: several, which
        # a whole load refuses), made at the first ask and shared likewise (a commit
        # editing a rule with an explicit id scanned all 200,000 rules' ids: ~45 ms at
        # 10,000 VMs)
        self._explicit = explicit if explicit is not None else {}
        # the runs of owners no table edited, moved from `base`, shared by every table
        # made from it: a commit's diff reads every VM's run on its old side, and the
        # next commit's old side (this commit's new one) finds them made (once per
        # revision they were each made again: seconds at 10,000 VMs after a line moved)
        self._shared = shared if shared is not None else {}

    def _entry(self, key: Owner) -> tuple[list[RuleRef], int] | None:
        """The owner's run as made so far and how many of the moves it has had."""
        found = self._made.get(key)
        if found is not None or key in self._edited:
            return found
        shared = self._shared.get(key)
        if shared is None:
            return None
        run, moves = shared
        if moves is not self._moves and (len(moves) > len(self._moves) or self._moves[: len(moves)] != moves):
            return None  # made with moves not all ours (a table made later, or beside this one)
        return run, len(moves)

    def __getitem__(self, key: Owner) -> list[RuleRef]:
        found = self._entry(key)
        run, applied = found if found is not None else (self._base[key], 0)
        if applied < len(self._moves):
            run = moved_through(run, self._moves[applied:])
            shared = self._shared.get(key)
            if key in self._edited or (shared is not None and len(shared[1]) > len(self._moves)):
                self._made[key] = (run, len(self._moves))  # (an older table: the newer run stays shared)
            else:
                self._shared[key] = (run, self._moves)
        return run

    def __iter__(self) -> Iterator[Owner]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)

    def unmoved(self, key: Owner) -> list[RuleRef]:
        """The owner's rules as last made, perhaps at old positions: their rules, levels
        and owners are right (for checks that read only those)."""
        found = self._entry(key)
        return found[0] if found is not None else self._base[key]

    def kept_from(self, before: Runs, key: Owner) -> bool | None:
        """Whether the owner's run here is the one of `before` (rules, ids, places),
        told from its lines when this table was made from `before` by later moves
        and the run is the same list in both, made with the same moves; None: make
        both runs and compare them. A commit's diff asks it of every VM after a line
        added: making 10,000 moved runs to compare them costs seconds."""
        if self._base is not before._base or self._moves[: len(before._moves)] != before._moves or key not in self._base:
            return None
        unmade = (self._base[key], 0)
        run, applied = self._entry(key) or unmade
        their_run, their_applied = before._entry(key) or unmade
        if their_run is not run or their_applied != applied:
            return None  # replaced here, or made apart since
        extra = self._moves[len(before._moves):]
        for ref in run if extra else ():
            loc = ref.loc
            if loc is None:
                return None
            line = loc.line
            for file, below, delta in before._moves[applied:]:
                if loc.file == file and line >= below:
                    line += delta
            if any(loc.file == file and line >= below for file, below, _delta in extra):
                return False  # its line moves (the first move that reaches it; a later one sees it moved already)
        return True

    def replaced_since(self, before: Runs) -> set[Owner] | None:
        """The owners whose run here may not be `before`'s, when this table was made
        from `before` by edits that moved no line (the same base, moves and shared
        runs): every other owner reads the very run `before` reads, so `kept_from`
        would say True of it. None: ask `kept_from` owner by owner. A commit's diff
        asks whether each of 10,000 peers' rules are the same on both sides."""
        if self._base is not before._base or self._shared is not before._shared or self._moves != before._moves:
            return None
        return {*self._made, *before._made, *self._edited, *before._edited}

    def then(self, move: Move | None, key: Owner, run: list[RuleRef]) -> Runs:
        """These runs after `move` (None: lines stay), with `key`'s run replaced by `run`
        (made at the new positions)."""
        moves = self._moves + ((move,) if move is not None else ())
        made = dict(self._made)
        made[key] = (run, len(moves))
        return self._made_with(moves, made, self._edited | {key})

    def after(self, move: Move) -> Runs:
        """These runs after `move`, no owner's run replaced (empty lines added or
        removed: policy/incremental.py `moved_empty_lines`)."""
        return self._made_with(self._moves + (move,), dict(self._made), self._edited)

    def _made_with(self, moves: tuple[Move, ...], made: dict[Owner, tuple[list[RuleRef], int]], edited: frozenset[Owner]) -> Runs:
        """The runs of a table made from this one; past MAX_MOVES every run is moved
        now and they start a new base (a first read pays for each pending move)."""
        if len(moves) > MAX_MOVES:
            runs = Runs(self._base, moves, made)
            return Runs({owner: runs[owner] for owner in self._base})
        return Runs(self._base, moves, made, edited, self._memo, self._shared, self._explicit)

    def index_ids(self) -> None:
        """Make the index of the whole load's explicit ids (once: the tables made
        from this one share it)."""
        if not self._explicit:
            index = self._explicit
            for key, run in self._base.items():
                for ref in run:
                    rule_id = ref.rule.id
                    if rule_id is not None:
                        index[rule_id] = key if rule_id not in index else None
            index[""] = None  # (made, even for a policy with no explicit id; "" is no rule's id)

    def id_elsewhere(self, ids: set[str], owner: Owner) -> bool:
        """Whether a rule of an owner other than `owner` has one of the explicit `ids`:
        the whole load's owners from an index made once, the owners edited since
        from their rules (positions do not matter: `unmoved`)."""
        self.index_ids()
        for rule_id in ids:
            if rule_id in self._explicit:
                key = self._explicit[rule_id]
                if key is None or (key != owner and key not in self._edited):
                    return True
        return any(ref.rule.id in ids for key in self._edited if key != owner for ref in self.unmoved(key))

    def any_rule(self, name: str, test: Callable[[RuleRef], bool]) -> bool:
        """Whether some rule passes `test` (a test of its rule and file, not of its
        line): the whole load's runs are asked once per `name`, and that answer kept
        (a rule edited away since still counts: a refusal too many sends a commit to
        the whole load, never a wrong answer); the runs edited since, each time."""
        found = self._memo.get(name)
        if found is None:
            found = self._memo[name] = any(test(ref) for run in self._base.values() for ref in run)
        return found or any(test(ref) for key in self._edited for ref in self.unmoved(key))


class RuleTable:
    """`Policy._rule_table`: the runs by owner, and every rule in order when asked."""

    def __init__(self, runs: Runs):
        self.runs = runs

    @cached_property
    def every(self) -> list[RuleRef]:
        return [ref for key in self.runs for ref in self.runs[key]]


def moved_through(run: list[RuleRef], moves: tuple[Move, ...]) -> list[RuleRef]:
    """The run with its rules moved by each move in turn (a move's file, from its line on), each
    moved rule made once; the same list when none moves."""
    out: list[RuleRef] | None = None
    for k, ref in enumerate(run):
        loc = ref.loc
        if loc is None:
            continue
        line = loc.line
        for file, below, delta in moves:
            if line >= below and loc.file == file:
                line += delta
        if line != loc.line:
            if out is None:
                out = list(run)
            out[k] = moved_ref(ref, line - loc.line)
    return out if out is not None else run


def moved_ref(ref: RuleRef, delta: int) -> RuleRef:
    loc = ref.loc
    assert loc is not None
    new_loc = Loc(loc.file, loc.line + delta, loc.col)
    rid = ref.id
    if ref.rule.id is None:
        # a derived id: `file:line`, and `:col` after it where two rules share a line
        rid = default_rule_id(new_loc, ref.path) + ref.id[len(default_rule_id(loc, ref.path)):]
    return RuleRef(ref.rule, ref.level, ref.owner, ref.index, rid, ref.path, new_loc)
