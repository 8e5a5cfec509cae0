"""What a diff keeps with its new policy for the next diff, where it is the old one.

The controller commits a chain of revisions: a commit's old policy is the previous
commit's new one, still in memory (controller/store/cache.py). A group member edit
builds the chains of the VMs whose rules name the group, on both sides: their rules'
matches (addresses resolved per family and protocol), regions and steps, ~0.5 s at
10,000 VMs for a group named by ~500 VMs. An operator editing a group again has the
next commit build the very same ones on its old side. So the new side's analyzer is
kept with the new policy, and the next diff starts its old side from it. A rule edit
keeps its new side too (`diffswitches.KEEP_AFTER_RULE_EDITS`): the next commit's old side
finds the edited VMs' and zones' chains and their peers' rule matches made (a zone
edit at 2,000 VMs: ~0.4 -> ~0.33 s of CPU).

An analyzer is a function of its policy, `now` and the timezone, and only through
the time windows of schedules do the latter two count (compiler/plan/rules.py
`time_window`: a diff with no `now` reads them at the current UTC offset). A kept
analyzer is taken for the same arguments when every window it read is still what it
reads now (a daylight saving change between two commits moves them: made anew).

Kept, it must hold nothing of the diff it came from: its matches were partly
borrowed from the old side (`RulePlanner.borrow_matches`: the lender is let go, the
borrowed tuples stay, right for this policy too), its regions memo was the old
side's (only the regions of its own matches are kept, so a chain of commits does not
pile up the regions of rules long gone), its directory was the old policy's (made
again from this policy's own table, lent to it by the diff). So one revision's
analyzer never holds an older revision alive.
"""

from __future__ import annotations

from datetime import datetime

from ..compiler.plan.rules import time_window
from ..compiler.schedule import local_timezone
from .endpoints import Directory
from .engine import Analyzer
from .peers import keep_candidates

KEPT = "_diff_kept_analyzer"  # where a policy keeps it (its __dict__, as its other memos)
KEEP = True  # False: every diff builds its old side anew


def kept_analyzer(policy: object, now: datetime | None, timezone: str | None) -> Analyzer | None:
    """The analyzer an earlier diff kept with `policy`, if it is the one
    `Analyzer(policy, now, timezone)` would be; None otherwise."""
    found: tuple[datetime | None, str | None, Analyzer] | None = getattr(policy, "__dict__", {}).get(KEPT)
    if not KEEP or found is None:
        return None
    kept_now, kept_timezone, analyzer = found
    if kept_now != now or kept_timezone != (timezone or local_timezone()):
        return None
    rules = analyzer.plan.rules
    for schedule, window in rules.times_read().items():
        if time_window(analyzer.policy, schedule, rules.now, rules.timezone) != window:
            return None
    return analyzer


def keep(analyzer: Analyzer, now: datetime | None) -> None:
    """Keep `analyzer` with its policy for the diff where it is the old one, cut
    loose from the diff's other side."""
    if not KEEP:
        return
    rules = analyzer.plan.rules
    rules.stop_borrowing()
    analyzer.chains.borrow_steps(None)
    keep_candidates(analyzer)
    regions = analyzer.regions.kept_for(rules.matches_memo.values())
    analyzer.regions = analyzer.chains.regions = analyzer.guards.regions = regions
    analyzer.directory = Directory(analyzer.policy)  # (its address table was lent to the policy)
    analyzer.policy.__dict__[KEPT] = (now, analyzer.timezone, analyzer)


def forget(policy: object) -> None:
    """Drop what a diff kept with `policy` (its revision is gone from memory): the
    analyzer refers to its policy, so together they would wait for a full collection."""
    getattr(policy, "__dict__", {}).pop(KEPT, None)
