"""An agent sends of each counter reading only what moved (agent/counter_reports.py)."""

from __future__ import annotations

from dataclasses import replace

from zonewall.agent.counter_reports import CounterReports
from zonewall.dataplane.counters import RuleCounter


def counter(rule: str, packets: int) -> RuleCounter:
    return RuleCounter("vm", "web1", "in", rule, "accept", packets, packets * 10, (("inet:1", packets, packets * 10),))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_whole_first_then_only_what_moved_then_nothing() -> None:
    clock = Clock()
    reports = CounterReports(full_every=60, clock=clock)
    first = [counter("a", 1), counter("b", 5)]
    assert reports.report(first) == (first, False)
    reports.delivered(first, False)
    assert reports.report([counter("a", 1), counter("b", 5)]) is None  # nothing moved: nothing sent
    moved = reports.report([counter("a", 1), counter("b", 9)])
    assert moved == ([counter("b", 9)], True)
    reports.delivered(*moved)  # type: ignore[misc]
    assert reports.report([counter("a", 1), counter("b", 9)]) is None


def test_a_reading_not_delivered_is_compared_with_what_the_controller_has() -> None:
    reports = CounterReports(clock=Clock())
    reports.delivered([counter("a", 1), counter("b", 5)], False)
    assert reports.report([counter("a", 2), counter("b", 5)]) == ([counter("a", 2)], True)  # lost on the way
    assert reports.report([counter("a", 3), counter("b", 5)]) == ([counter("a", 3)], True)
    assert reports.report([counter("a", 1), counter("b", 5)]) is None  # back to what was delivered


def test_whole_again_when_the_rules_changed_or_after_full_every() -> None:
    clock = Clock()
    reports = CounterReports(full_every=60, clock=clock)
    reports.delivered([counter("a", 1), counter("b", 5)], False)
    fewer = [counter("a", 1)]  # rule b removed from the node: the controller must mark it gone
    assert reports.report(fewer) == (fewer, False)
    more = [counter("a", 1), counter("b", 5), counter("c", 0)]
    assert reports.report(more) == (more, False)
    clock.now += 59
    assert reports.report([counter("a", 1), counter("b", 5)]) is None
    clock.now += 1
    assert reports.report([counter("a", 1), counter("b", 5)]) == ([counter("a", 1), counter("b", 5)], False)


def test_a_rename_goes_with_the_whole_reading_and_its_end_alone_sends_nothing() -> None:
    """After an apply that only renamed rules, their ids changed: the whole reading
    carries the renames (`was`); once the next apply ends them, a counter that did not
    move is not sent for it, one that moved is (the negative case beside it)."""
    reports = CounterReports(clock=Clock())
    reports.delivered([counter("policy:1", 1), counter("policy:2", 5)], False)
    renamed = [replace(counter("policy:2", 1), was="policy:1"), replace(counter("policy:3", 5), was="policy:2")]
    assert reports.report(renamed) == (renamed, False)
    reports.delivered(renamed, False)
    assert reports.report([counter("policy:2", 1), counter("policy:3", 5)]) is None
    assert reports.report([counter("policy:2", 1), counter("policy:3", 6)]) == ([counter("policy:3", 6)], True)


def test_rules_reordered_under_the_same_ids_send_their_renames_whole() -> None:
    reports = CounterReports(clock=Clock())
    reports.delivered([counter("policy:1", 1), counter("policy:2", 5)], False)
    swapped = [replace(counter("policy:1", 0), was="policy:2"), replace(counter("policy:2", 0), was="policy:1")]
    assert reports.report(swapped) == (swapped, False)  # the same ids: whole all the same
