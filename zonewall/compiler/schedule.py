"""Schedules as kernel time matches (`meta day`, `meta hour`), converted to UTC.

The kernel compares `meta hour`/`meta day` against UTC, so a window written in a
timezone is converted here using that zone's offset at compile time (`now`); windows
that cross midnight (before or after conversion) become one alternative per piece.
The dataplane loads rulesets with TZ=UTC so libnftables does not convert again.
DST: the offset is the one in force at `now`; the agent recompiles when it changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from ..policy.model import Schedule
from . import nftexpr as x
from .stmt import Statement

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
NFT_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEK = 7 * 1440


def local_timezone(localtime: str = "/etc/localtime") -> str:
    """The machine's IANA timezone name (what schedules without `timezone` use).

    Read from the /etc/localtime link rather than the process's TZ, which the
    dataplane pins to UTC for libnftables.
    """
    import os

    target = os.path.realpath(localtime)
    marker = "/zoneinfo/"
    if marker in target:
        name = target.split(marker, 1)[1]
        try:
            ZoneInfo(name)
            return name
        except Exception:  # noqa: BLE001 - an unusual zoneinfo layout: fall back to UTC
            pass
    return "UTC"


def utc_week_minutes(schedule: Schedule, now: datetime | None = None, default_tz: str | None = None) -> list[tuple[int, int]]:
    """The window as [start, end) minute-of-week intervals in UTC (Monday 00:00 = 0)."""
    zone = ZoneInfo(schedule.timezone or default_tz or "UTC")
    moment = (now or datetime.now(UTC)).astimezone(zone)
    utc_offset = moment.utcoffset()
    offset = int(utc_offset.total_seconds() // 60) if utc_offset else 0
    start_text, end_text = schedule.time.split("-")
    start = int(start_text[:2]) * 60 + int(start_text[3:])
    end = int(end_text[:2]) * 60 + int(end_text[3:])
    pieces: list[tuple[int, int]] = []
    for day in schedule.days:
        base = DAYS.index(day) * 1440
        length = (end - start) % 1440 or 1440  # end <= start: the window crosses midnight
        low = (base + start - offset) % WEEK
        high = low + length
        if high <= WEEK:
            pieces.append((low, high))
        else:
            pieces += [(low, WEEK), (0, high - WEEK)]
    return _merge(pieces)


def _merge(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for low, high in sorted(pieces):
        if out and low <= out[-1][1]:
            out[-1][1] = max(out[-1][1], high)
        else:
            out.append([low, high])
    return [(a, b) for a, b in out]


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def schedule_alternatives(schedule: Schedule, now: datetime | None = None, default_tz: str | None = None) -> list[list[Statement]]:
    """Statement lists, one per distinct daily hour range, each with its days.

    Returns [[]] (no time match) when the window is always open.
    """
    return time_alternatives(utc_week_minutes(schedule, now, default_tz))


def time_alternatives(intervals: Sequence[tuple[int, int]] | None) -> list[list[Statement]]:
    """A time window ([start, end) minutes of the week, UTC; None: always) as
    statement lists, one per distinct daily hour range, each with its days."""
    if intervals is None or list(intervals) == [(0, WEEK)]:
        return [[]]
    by_hours: dict[tuple[int, int], list[int]] = {}
    for low, high in intervals:
        minute = low
        while minute < high:
            day, start = divmod(minute, 1440)
            stop = min(high, (day + 1) * 1440)
            by_hours.setdefault((start, stop - day * 1440), []).append(day)
            minute = stop
    out: list[list[Statement]] = []
    for (start, stop), days in sorted(by_hours.items()):
        statements: list[Statement] = []
        day_names = [NFT_DAYS[d] for d in sorted(set(days))]
        if len(day_names) < 7:
            statements.append(x.match(x.meta("day"), day_names[0] if len(day_names) == 1 else {"set": day_names}))
        if (start, stop) != (0, 1440):
            last = "23:59:59" if stop == 1440 else _clock(stop - 1) + ":59"
            statements.append(x.match(x.meta("hour"), x.value_range(_clock(start), last)))
        out.append(statements)
    return out
