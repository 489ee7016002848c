"""Business-hours calendars: when a team is open, and how much business time lies between instants.

SLA clocks only run while a team is open. A calendar holds weekly opening hours as local wall-clock
intervals, whole local days closed as holidays, and the team's IANA time zone. Instants go in and
come out as aware datetimes and are worked on in UTC (the rule of the house); the local intervals
are turned into real UTC instants one local day at a time, so every computation walks days, never
minutes, and business time is real elapsed time even across daylight-saving changes:

- a wall-clock time skipped by the spring change means the first instant after the gap (the clock's
  jump), so a 00:00-06:00 window holds 5 real hours on that night;
- a wall-clock time repeated by the autumn change means its first occurrence, so the same window
  holds 7 real hours on that night.

Weekly hours are validated and normalised when a calendar is built: intervals sorted, intervals that
touch (one ends when the next starts) merged, days without hours dropped. Everything wrong raises
`CalendarError` with a message naming the day or JSON field at fault.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from types import MappingProxyType
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# As the end of an interval, midnight means the end of the day (written "24:00" in JSON): an end
# must come after its start, so it can mean nothing else.
END_OF_DAY: Final = time(0)

# `add` and `next_open` give up after this many closed days in a row, rather than search forever
# for an opening that a calendar closed by holidays will never have.
HORIZON_DAYS: Final = 400

DAY_KEYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

ONE_DAY: Final = timedelta(days=1)
CLOCK = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
JSON_KEYS: Final = frozenset({"time_zone", "hours", "holidays"})

Interval = tuple[time, time]
Period = tuple[datetime, datetime]


class CalendarError(ValueError):
    """A calendar, or an argument given to one, that cannot be used; the message says why."""


@dataclass(frozen=True)
class BusinessCalendar:
    """Weekly business hours, holidays and a time zone: the clock an SLA target runs on.

    `hours` maps a weekday (0 = Monday) to its open intervals in local wall-clock time; an end of
    `END_OF_DAY` (midnight) means 24:00. Days missing from `hours` are closed, and so are the local
    days in `holidays`. The week must have some open time.
    """

    time_zone: str
    hours: Mapping[int, tuple[Interval, ...]]
    holidays: frozenset[date] = frozenset()
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Normalised copies: a caller's dict changed later must not change a frozen calendar, and
        # equal calendars must compare (and hash) equal however their hours were written.
        object.__setattr__(self, "_zone", _zone(self.time_zone))
        object.__setattr__(self, "hours", MappingProxyType(_normalise_week(self.hours)))
        object.__setattr__(self, "holidays", _holiday_set(self.holidays))
        if not self.hours:
            raise CalendarError("the calendar is empty: no day of the week has business hours")

    def __hash__(self) -> int:
        return hash((self.time_zone, tuple(self.hours.items()), self.holidays))

    @classmethod
    def always_open(cls, time_zone: str = "UTC") -> BusinessCalendar:
        """A calendar open around the clock, every day: business time is plain elapsed time."""
        return cls(time_zone, dict.fromkeys(range(7), ((time(0), END_OF_DAY),)))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BusinessCalendar:
        """Read the form `to_json` writes; days missing from "hours" are closed."""
        if not isinstance(data, Mapping):
            raise CalendarError("a calendar must be a JSON object")
        unknown = sorted(str(key) for key in data if key not in JSON_KEYS)
        if unknown:
            raise CalendarError(f"unknown calendar fields: {', '.join(unknown)}")
        if "time_zone" not in data or "hours" not in data:
            raise CalendarError('a calendar needs "time_zone" and "hours"')
        return cls(
            time_zone=data["time_zone"],
            hours=_week_from_json(data["hours"]),
            holidays=_holidays_from_json(data.get("holidays", [])),
        )

    def to_json(self) -> dict[str, Any]:
        """{"time_zone": ..., "hours": {"mon": [["09:00", "17:00"]], ...}, "holidays": [...]}."""
        return {
            "time_zone": self.time_zone,
            "hours": {
                DAY_KEYS[weekday]: [[_clock(start), _clock(end, end=True)] for start, end in spans]
                for weekday, spans in self.hours.items()
            },
            "holidays": [day.isoformat() for day in sorted(self.holidays)],
        }

    def is_open(self, at: datetime) -> bool:
        """Whether business hours are running at instant `at`."""
        at = _utc(at, "at")
        return any(opening <= at for opening, _ in self._periods(at, at))

    def next_open(self, at: datetime) -> datetime:
        """The first open instant from `at` on: `at` itself (in UTC) when open."""
        at = _utc(at, "at")
        opening, _ = next(self._periods(at))
        return max(opening, at)

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The instant at which `duration` of business time has passed since `start`.

        A zero duration is owed at once: the result is `start` itself, even outside business
        hours. A duration that runs out exactly at closing time is due at closing time.
        """
        start = _utc(start, "start")
        if duration < timedelta(0):
            raise CalendarError(f"a duration of business time cannot be negative: {duration}")
        if not duration:
            return start
        remaining = duration
        # Without an end, _periods never runs out: it finds an opening or raises CalendarError.
        periods = self._periods(start)
        while True:
            opening, closing = next(periods)
            opening = max(opening, start)
            if remaining <= closing - opening:
                return opening + remaining
            remaining -= closing - opening

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Business time between two instants; nothing when `end` is not after `start`."""
        return sum(
            (closing - opening for opening, closing in self.open_intervals(start, end)),
            timedelta(0),
        )

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[Period]:
        """The open periods overlapping [start, end), in UTC, clipped to it, in order.

        Periods that meet (a day open until 24:00 and the next from 00:00) come as one.
        """
        start, end = _utc(start, "start"), _utc(end, "end")
        if end <= start:
            return
        pending: Period | None = None
        for opening, closing in self._periods(start, end):
            if opening >= end:
                break
            opening, closing = max(opening, start), min(closing, end)
            if pending is not None and pending[1] == opening:
                pending = (pending[0], closing)
                continue
            if pending is not None:
                yield pending
            pending = (opening, closing)
        if pending is not None:
            yield pending

    def _periods(self, start: datetime, end: datetime | None = None) -> Iterator[Period]:
        """Each local day's open periods in UTC that close after `start`, in order, unclipped.

        With `end`, it stops after the local days that can open before `end` (callers stop at
        `end` themselves). Without, it goes on until HORIZON_DAYS closed days in a row, which
        raise CalendarError instead of searching forever.
        """
        # Earlier days close by the first instant at which the wall clock reads 00:00 on the local
        # day of `start`, which is no later than `start`.
        day = start.astimezone(self._zone).date()
        # The day after too: when a clock falls back across midnight, the next day's first
        # instants can come before the repeated end of the day of `end`.
        last = None if end is None else end.astimezone(self._zone).date() + ONE_DAY
        closed_days = 0
        while last is None or day <= last:
            periods = [period for period in self._day_periods(day) if period[1] > start]
            yield from periods
            closed_days = 0 if periods else closed_days + 1
            if end is None and closed_days >= HORIZON_DAYS:
                raise CalendarError(
                    f"no business hours in the {HORIZON_DAYS} days after {start.isoformat()} "
                    "(are they all holidays?)"
                )
            day += ONE_DAY

    def _day_periods(self, day: date) -> list[Period]:
        """The open periods of one local day, in UTC; empty on holidays and closed days."""
        if day in self.holidays:
            return []
        periods = []
        for start, end in self.hours.get(day.weekday(), ()):
            opening = _instant(self._zone, day, start)
            if end == END_OF_DAY:
                closing = _instant(self._zone, day + ONE_DAY, END_OF_DAY)
            else:
                closing = _instant(self._zone, day, end)
            # An interval inside a spring gap never happens on that day.
            if opening < closing:
                periods.append((opening, closing))
        return periods


def _instant(zone: ZoneInfo, day: date, wall: time) -> datetime:
    """The UTC instant a local wall-clock time means: its first occurrence when the autumn change
    repeats it, the first instant after the gap when the spring change skips it."""
    naive = datetime.combine(day, wall)
    # fold=0 is the first occurrence of a repeated time; for a skipped one it is the time read with
    # the offset from before the change, which lands after the jump.
    first = naive.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return first
    # fold=1 reads a skipped time with the offset from after the change, which lands before the
    # jump: the jump lies between the two readings.
    return _jump(zone, naive.replace(tzinfo=zone, fold=1).astimezone(UTC), first)


def _jump(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in (before, after] at which the zone's UTC offset changes.

    zoneinfo does not expose its transitions, so bisect: they are at whole seconds, and the window
    spans the size of the change (an hour, usually), so this takes a dozen or so steps.
    """
    offset = before.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _zone(name: object) -> ZoneInfo:
    if not isinstance(name, str):
        raise CalendarError(f"time_zone must be an IANA time zone name, not {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # OSError: a key naming a folder of the database, such as "Europe".
        raise CalendarError(
            f'unknown time zone {name!r}; use an IANA name such as "Europe/Paris"'
        ) from None


def _normalise_week(hours: object) -> dict[int, tuple[Interval, ...]]:
    if not isinstance(hours, Mapping):
        raise CalendarError("hours must map weekdays (0 = Monday) to open intervals")
    week = {}
    for weekday in sorted(hours, key=_weekday):
        intervals = _normalise_day(DAY_NAMES[weekday], hours[weekday])
        if intervals:
            week[weekday] = intervals
    return week


def _weekday(key: object) -> int:
    if isinstance(key, bool) or not isinstance(key, int) or not 0 <= key <= 6:
        raise CalendarError(f"hours: weekday {key!r} is not a number from 0 (Monday) to 6 (Sunday)")
    return key


def _normalise_day(name: str, intervals: object) -> tuple[Interval, ...]:
    """A day's intervals sorted, checked for order and overlap, with touching ones merged."""
    if not isinstance(intervals, Iterable):
        raise CalendarError(f"{name}: the open intervals must be a sequence of (start, end) pairs")
    spans = sorted(_span(name, interval) for interval in intervals)
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            raise CalendarError(f"{name}: {_range(*merged[-1])} and {_range(start, end)} overlap")
        if merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple((_time(start), _time(end)) for start, end in merged)


def _span(name: str, interval: object) -> tuple[int, int]:
    """One interval as minutes since local midnight, 1440 for an end at 24:00."""
    if not (
        isinstance(interval, tuple | list)
        and len(interval) == 2
        and all(isinstance(bound, time) for bound in interval)
    ):
        raise CalendarError(f"{name}: {interval!r} is not a (start, end) pair of datetime.time")
    start, end = interval
    for bound in (start, end):
        if bound.tzinfo is not None or bound.second or bound.microsecond:
            raise CalendarError(
                f"{name}: {bound} must be a local wall-clock time in whole minutes, no time zone"
            )
    start_minute = start.hour * 60 + start.minute
    end_minute = 24 * 60 if end == END_OF_DAY else end.hour * 60 + end.minute
    if end_minute <= start_minute:
        raise CalendarError(f"{name}: {_range(start_minute, end_minute)} ends before it starts")
    return start_minute, end_minute


def _time(minute: int) -> time:
    return END_OF_DAY if minute == 24 * 60 else time(minute // 60, minute % 60)


def _range(start: int, end: int) -> str:
    return f"{start // 60:02}:{start % 60:02}-{end // 60:02}:{end % 60:02}"


def _holiday_set(holidays: object) -> frozenset[date]:
    if not isinstance(holidays, Iterable):
        raise CalendarError("holidays must be a set of dates")
    days = frozenset(holidays)
    for day in days:
        # A datetime is a date too, but never equal to one: as a holiday it would close nothing.
        if not isinstance(day, date) or isinstance(day, datetime):
            raise CalendarError(f"holidays: {day!r} is not a datetime.date")
    return days


def _clock(moment: time, *, end: bool = False) -> str:
    return "24:00" if end and moment == END_OF_DAY else f"{moment:%H:%M}"


def _week_from_json(hours: object) -> dict[int, tuple[Interval, ...]]:
    if not isinstance(hours, Mapping):
        raise CalendarError('"hours" must be an object such as {"mon": [["09:00", "17:00"]]}')
    week = {}
    for key, intervals in hours.items():
        if key not in DAY_KEYS:
            raise CalendarError(f"hours: unknown day {key!r}; use {', '.join(DAY_KEYS)}")
        if not isinstance(intervals, list):
            raise CalendarError(f'hours.{key}: must be a list of ["HH:MM", "HH:MM"] pairs')
        week[DAY_KEYS.index(key)] = tuple(
            _interval_from_json(f"hours.{key}[{index}]", interval)
            for index, interval in enumerate(intervals)
        )
    return week


def _interval_from_json(path: str, interval: object) -> Interval:
    if not (
        isinstance(interval, list)
        and len(interval) == 2
        and all(isinstance(bound, str) for bound in interval)
    ):
        raise CalendarError(f'{path}: {interval!r} is not a ["HH:MM", "HH:MM"] pair')
    start, end = interval
    if end == "24:00":
        return _clock_from_json(path, start), END_OF_DAY
    if end == "00:00":
        # In Python an end at midnight means 24:00; in JSON that is spelt out, so that "00:00"
        # as an end is a mistake to report, not a second way of saying it.
        raise CalendarError(f'{path}: an interval cannot end at "00:00"; midnight is "24:00"')
    return _clock_from_json(path, start), _clock_from_json(path, end)


def _clock_from_json(path: str, text: str) -> time:
    if not CLOCK.fullmatch(text):
        raise CalendarError(f"{path}: {text!r} is not a time of day written HH:MM (00:00-23:59)")
    return time(int(text[:2]), int(text[3:]))


def _holidays_from_json(holidays: object) -> frozenset[date]:
    if not isinstance(holidays, list):
        raise CalendarError('"holidays" must be a list of dates written "YYYY-MM-DD"')
    return frozenset(
        _date_from_json(f"holidays[{index}]", text) for index, text in enumerate(holidays)
    )


def _date_from_json(path: str, text: object) -> date:
    if isinstance(text, str) and ISO_DATE.fullmatch(text):
        # The pattern lets through impossible dates such as 2026-02-30.
        with suppress(ValueError):
            return date.fromisoformat(text)
    raise CalendarError(f'{path}: {text!r} is not a date written "YYYY-MM-DD"')


def _utc(moment: object, name: str) -> datetime:
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise CalendarError(f"{name} must be a timezone-aware datetime, not {moment!r}")
    return moment.astimezone(UTC)


WEEK_PART = re.compile(
    r"^(mon|tue|wed|thu|fri|sat|sun)(?:-(mon|tue|wed|thu|fri|sat|sun))?\s+"
    r"(\d{2}:\d{2})-(\d{2}:\d{2})$"
)


def week_from_text(text: str) -> dict[str, list[list[str]]]:
    """Weekly hours as people write them, "mon-fri 09:00-12:00, mon-fri 13:00-17:00,
    sat 10:00-14:00", into the calendar's `hours` (checked when the calendar is built)."""
    week: dict[str, list[list[str]]] = {}
    for part in (piece.strip().lower() for piece in text.replace(";", ",").split(",")):
        if not part:
            continue
        found = WEEK_PART.match(" ".join(part.split()))
        if found is None:
            raise CalendarError(
                f"{part!r}: write a day or days and hours, like mon-fri 09:00-17:00"
            )
        first, last, start, end = found.groups()
        days = DAY_KEYS[DAY_KEYS.index(first) : DAY_KEYS.index(last or first) + 1]
        if not days:
            raise CalendarError(f"{part!r}: the days run from Monday to Sunday")
        for day in days:
            week.setdefault(day, []).append([start, end])
    return week


def week_to_text(hours: Mapping[str, Any]) -> str:
    """The calendar's `hours` as `week_from_text` reads them, days in a row with the same
    hours written as one range."""
    runs: list[tuple[str, str, list[Any]]] = []
    for day in DAY_KEYS:
        intervals = [list(interval) for interval in hours.get(day, [])]
        follows = runs and DAY_KEYS.index(runs[-1][1]) + 1 == DAY_KEYS.index(day)
        if follows and runs[-1][2] == intervals and intervals:
            runs[-1] = (runs[-1][0], day, intervals)
        elif intervals:
            runs.append((day, day, intervals))
    return ", ".join(
        f"{first if first == last else f'{first}-{last}'} {start}-{end}"
        for first, last, intervals in runs
        for start, end in intervals
    )
