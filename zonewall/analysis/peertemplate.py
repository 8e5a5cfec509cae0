"""Peers whose reduced sides differ in their rules' names alone, run once.

A zone rule open to everyone compares the zone's VMs (one class of endpoints,
analysis/endpointclass.py) with every peer; each VM peer's side holds its own
`{direction: in, action: reject, tcp: 25}`, the same step but for its name (its rule
id and line), so each peer was a group of its own: 10,000 runs of one side. The
engine's run reads of a chain step its region and action (`first_match`); a step
with a rate limit, a connection condition or the label that lets packets go on reads
more, and keeps its side out of any template.

`template_key` is a reduced side's key without the names of its chain steps (None:
it has such a step). `Relabel` runs a group of such peers once: where the run's
decisions come from steps whose names differ between the peers, it splits the peers
by those names and gives each subgroup its outcomes with its own steps in them
(`split`); elsewhere every peer's outcomes are the first one's. diff asks `split`
only of the parts whose flows differ for the endpoints (no verdict there depends on
a name), so the ~10,000 peers whose own rule refuses what the zone refused before
cost one run. tests/analysis/test_endpoint_classes.py compares the diff with and
without templates.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator

from .chains import PASS, Chain, Step
from .engine import Decision, GuardOrChain, Outcome
from .peers import Key, NicKey

Stages = tuple[GuardOrChain, ...]
Sides = tuple[Stages, Stages]  # a peer's reduced side in the old and the new policy


def template_key(stages: Stages, key: Key) -> Hashable | None:
    """`key` (the reduced side's, one item per stage) with its chains' step names left
    out; None: a step that the run reads more of than its region and action."""
    if len(stages) != len(key):
        return None  # (every reduction keys its stages one by one: not one of those)
    out: list[object] = []
    for stage, item in zip(stages, key):
        if not isinstance(stage, Chain):
            out.append(item)
            continue
        for step in stage.steps:
            if step.limited or step.packet_limited or step.over_only or step.condition is not None or step.label == PASS:
                return None
        default = stage.default
        out.append(("chain", stage.name, stage.accept_ends, tuple((id(st.region), st.action) for st in stage.steps),
                    id(default.region), default.action, default.label))
    return tuple(out)


class Relabel:
    """One template's peers (`members`, each with its own `sides`) as the first one's
    run sees them (`first_old`, `first_new`)."""

    def __init__(self, first_old: Stages, first_new: Stages, members: list[NicKey], sides: list[Sides]):
        self.members, self.sides = members, sides  # (aligned)
        self.positions = (_positions(first_old), _positions(first_new))
        # every member's sides the first one's: nothing to relabel
        self.alike = all(old is first_old and new is first_new for old, new in sides)
        self._subgroups: dict[tuple[object, ...], list[tuple[Sides, list[NicKey]]]] = {}

    def split(self, old: Outcome, new: Outcome) -> Iterator[tuple[Outcome, Outcome, list[NicKey]]]:
        """The members grouped by the steps of theirs that decided where the first
        one's decided, with their outcomes."""
        used = (_used(old, self.positions[0]), _used(new, self.positions[1]))
        subgroups = self._subgroups.get(used)
        if subgroups is None:
            by_steps: dict[tuple[int, ...], tuple[Sides, list[NicKey]]] = {}
            for member, (old_sides, new_sides) in zip(self.members, self.sides):
                steps = tuple(id(_step(old_sides, at)) for at in used[0]) + tuple(id(_step(new_sides, at)) for at in used[1])
                found = by_steps.get(steps)
                if found is None:
                    by_steps[steps] = ((old_sides, new_sides), [member])
                else:
                    found[1].append(member)
            subgroups = self._subgroups[used] = list(by_steps.values())  # (lists kept: the rows' label memo keys them by id)
        for (old_sides, new_sides), members in subgroups:
            yield _relabelled(old, self.positions[0], old_sides), _relabelled(new, self.positions[1], new_sides), members


def _positions(stages: Stages) -> dict[int, tuple[int, int]]:
    """Where each chain step of the stages is: (stage, step; -1 for the default)."""
    out: dict[int, tuple[int, int]] = {}
    for index, stage in enumerate(stages):
        if isinstance(stage, Chain):
            for at, step in enumerate(stage.steps):
                out[id(step)] = (index, at)
            out.setdefault(id(stage.default), (index, -1))
    return out


def _used(outcome: Outcome, positions: dict[int, tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple(positions[id(d.step)] for d in outcome.decisions if d.step is not None and id(d.step) in positions)


def _step(stages: Stages, at: tuple[int, int]) -> Step:
    chain = stages[at[0]]
    assert isinstance(chain, Chain)
    return chain.default if at[1] < 0 else chain.steps[at[1]]


def _relabelled(outcome: Outcome, positions: dict[int, tuple[int, int]], stages: Stages) -> Outcome:
    decisions = []
    changed = False
    for decision in outcome.decisions:
        at = positions.get(id(decision.step)) if decision.step is not None else None
        if at is not None:
            step = _step(stages, at)
            if step is not decision.step:
                decision = Decision(decision.stage, decision.action, step.label, step)
                changed = True
        decisions.append(decision)
    return Outcome(outcome.verdict, tuple(decisions)) if changed else outcome
