"""An agent sends of each counter reading only what moved (agent/counter_reports.py)."""

from __future__ import annotations

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
