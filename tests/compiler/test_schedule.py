"""Schedules become kernel time matches in UTC: timezones, DST, midnight."""

from __future__ import annotations

from datetime import UTC, datetime

from zonewall.compiler.schedule import WEEK, schedule_alternatives, utc_week_minutes
from zonewall.policy.model import Schedule

MON = 0
DAY = 1440


def minutes(day: int, hh: int, mm: int = 0) -> int:
    return day * DAY + hh * 60 + mm


def test_berlin_business_hours_in_winter_and_summer() -> None:
    schedule = Schedule(days=["mon"], time="08:00-18:00", timezone="Europe/Berlin")
    winter = utc_week_minutes(schedule, datetime(2026, 1, 12, tzinfo=UTC))
    summer = utc_week_minutes(schedule, datetime(2026, 7, 13, tzinfo=UTC))
    assert winter == [(minutes(MON, 7), minutes(MON, 17))]  # CET = UTC+1
    assert summer == [(minutes(MON, 6), minutes(MON, 16))]  # CEST = UTC+2


def test_dst_edge_uses_the_offset_in_force_at_compile_time() -> None:
    schedule = Schedule(days=["sun"], time="08:00-09:00", timezone="Europe/Berlin")
    before = utc_week_minutes(schedule, datetime(2026, 3, 29, 0, 59, tzinfo=UTC))  # 01:59 CET
    after = utc_week_minutes(schedule, datetime(2026, 3, 29, 1, 1, tzinfo=UTC))  # 03:01 CEST
    assert before == [(minutes(6, 7), minutes(6, 8))]
    assert after == [(minutes(6, 6), minutes(6, 7))]


def test_window_crossing_midnight_continues_into_the_next_day() -> None:
    schedule = Schedule(days=["sat"], time="22:00-02:00", timezone="UTC")
    assert utc_week_minutes(schedule, datetime(2026, 1, 12, tzinfo=UTC)) == [(minutes(5, 22), minutes(6, 2))]


def test_sunday_night_wraps_to_monday_morning() -> None:
    schedule = Schedule(days=["sun"], time="23:00-01:00", timezone="UTC")
    assert utc_week_minutes(schedule, datetime(2026, 1, 12, tzinfo=UTC)) == [(0, 60), (WEEK - 60, WEEK)]


def test_conversion_can_move_a_window_across_midnight() -> None:
    # 00:30-02:00 in Berlin (UTC+1) is 23:30 the day before until 01:00 UTC
    schedule = Schedule(days=["tue"], time="00:30-02:00", timezone="Europe/Berlin")
    alternatives = schedule_alternatives(schedule, datetime(2026, 1, 12, tzinfo=UTC))
    rendered = [[(s.left["meta"]["key"], s.right) for s in alt] for alt in alternatives]
    assert rendered == [
        [("day", "Tuesday"), ("hour", {"range": ["00:00", "00:59:59"]})],
        [("day", "Monday"), ("hour", {"range": ["23:30", "23:59:59"]})],
    ]


def test_every_day_all_day_needs_no_time_match() -> None:
    assert schedule_alternatives(Schedule(), datetime(2026, 1, 12, tzinfo=UTC)) == [[]]
