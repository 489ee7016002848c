"""Business-hours calendars: due times, business time elapsed, validation, daylight saving."""

from __future__ import annotations

import random
import time as clock
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from allo.routing.calendars import END_OF_DAY, HORIZON_DAYS, BusinessCalendar, CalendarError

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
NINE_TO_FIVE = ((time(9), time(17)),)

# 2026 in Paris: summer time starts on Sunday 29 March (02:00 -> 03:00) and ends on Sunday
# 25 October (03:00 -> 02:00).
SPRING_CHANGE = date(2026, 3, 29)
AUTUMN_CHANGE = date(2026, 10, 25)


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def office(holidays: frozenset[date] = frozenset()) -> BusinessCalendar:
    """Paris, Monday to Friday, 9 to 17."""
    return BusinessCalendar("Europe/Paris", dict.fromkeys(range(5), NINE_TO_FIVE), holidays)


def every_day(*intervals: tuple[time, time], zone: str = "Europe/Paris") -> BusinessCalendar:
    return BusinessCalendar(zone, dict.fromkeys(range(7), intervals))


def day_span(calendar: BusinessCalendar, day: date) -> list[tuple[datetime, datetime]]:
    """The calendar's open periods during one Paris day."""
    midnight = datetime.combine(day, time(0), PARIS)
    return list(calendar.open_intervals(midnight, midnight + timedelta(days=1)))


# Due times


def test_a_friday_1645_message_with_a_30_minute_target_in_9_to_17_is_due_monday_0915() -> None:
    # Friday 16 January 2026, 16:45 in Paris (UTC+1) -> Monday 19 January, 09:15 = 08:15 UTC.
    due = office().add(paris(2026, 1, 16, 16, 45), timedelta(minutes=30))

    assert due == utc(2026, 1, 19, 8, 15)
    assert due.tzinfo is UTC


def test_a_start_before_opening_counts_from_opening() -> None:
    assert office().add(paris(2026, 1, 19, 7, 0), timedelta(minutes=30)) == utc(2026, 1, 19, 8, 30)


def test_a_start_after_closing_counts_from_the_next_mornings_opening() -> None:
    due = office().add(paris(2026, 1, 19, 18, 0), timedelta(minutes=30))

    assert due == utc(2026, 1, 20, 8, 30)


def test_a_start_on_a_holiday_counts_from_the_next_working_day() -> None:
    christmas = date(2026, 12, 25)  # a Friday
    due = office(frozenset({christmas})).add(paris(2026, 12, 25, 10, 0), timedelta(hours=1))

    assert due == utc(2026, 12, 28, 9, 0)  # Monday 10:00 in Paris


def test_a_holiday_on_a_weekend_is_accepted_and_changes_nothing() -> None:
    boxing_day = date(2026, 12, 26)  # a Saturday
    plain, with_holiday = office(), office(frozenset({boxing_day}))
    start = paris(2026, 12, 26, 10, 0)

    assert with_holiday.holidays == {boxing_day}
    assert with_holiday.add(start, timedelta(minutes=30)) == utc(2026, 12, 28, 8, 30)
    assert with_holiday.add(start, timedelta(minutes=30)) == plain.add(start, timedelta(minutes=30))
    week = (paris(2026, 12, 21), paris(2027, 1, 4))
    assert with_holiday.elapsed(*week) == plain.elapsed(*week) == timedelta(hours=80)


def test_an_add_spanning_a_holiday_monday_skips_the_whole_day() -> None:
    easter_monday = date(2026, 4, 6)
    start = paris(2026, 4, 3, 16, 0)  # Friday, summer time (UTC+2)

    due = office(frozenset({easter_monday})).add(start, timedelta(hours=2))

    assert due == utc(2026, 4, 7, 8, 0)  # Tuesday 10:00 in Paris
    assert office().add(start, timedelta(hours=2)) == utc(2026, 4, 6, 8, 0)


def test_lunch_breaks_are_not_business_time() -> None:
    lunch = BusinessCalendar(
        "Europe/Paris", dict.fromkeys(range(5), ((time(9), time(12, 30)), (time(13, 30), time(17))))
    )

    assert lunch.add(paris(2026, 1, 19, 12, 0), timedelta(hours=1)) == utc(2026, 1, 19, 13, 0)
    assert lunch.add(paris(2026, 1, 19, 12, 45), timedelta(minutes=1)) == utc(2026, 1, 19, 12, 31)
    assert lunch.elapsed(paris(2026, 1, 19), paris(2026, 1, 20)) == timedelta(hours=7)
    assert not lunch.is_open(paris(2026, 1, 19, 13, 0))


def test_a_target_running_out_at_closing_time_is_due_at_closing_not_the_next_morning() -> None:
    assert office().add(paris(2026, 1, 16, 16, 30), timedelta(minutes=30)) == utc(2026, 1, 16, 16)


def test_a_zero_target_is_due_at_the_start_itself_even_when_closed() -> None:
    saturday = paris(2026, 1, 17, 3, 0)

    assert office().add(saturday, timedelta(0)) == saturday
    assert office().add(saturday, timedelta(0)).tzinfo is UTC


def test_a_negative_duration_is_refused() -> None:
    with pytest.raises(CalendarError, match="negative"):
        office().add(paris(2026, 1, 19, 10), timedelta(minutes=-1))


def test_a_1000_hour_target_walks_days_not_minutes() -> None:
    started = clock.perf_counter()
    due = office().add(paris(2026, 1, 5, 9), timedelta(hours=1000))
    spent = clock.perf_counter() - started

    assert due == utc(2026, 6, 26, 15)  # closing time on the 125th working day, a Friday
    assert spent < 0.5


# Business time elapsed, and open periods


def test_elapsed_is_nothing_when_the_end_is_not_after_the_start() -> None:
    start = paris(2026, 1, 19, 10)

    assert office().elapsed(start, start) == timedelta(0)
    assert office().elapsed(start, start - timedelta(hours=5)) == timedelta(0)
    assert list(office().open_intervals(start, start)) == []


@pytest.mark.parametrize(
    "calendar",
    [
        pytest.param(
            BusinessCalendar(
                "Europe/Paris",
                dict.fromkeys(range(5), ((time(9), time(12, 30)), (time(13, 30), time(17, 30)))),
                frozenset({date(2026, 4, 6), date(2026, 5, 1), date(2026, 12, 25)}),
            ),
            id="paris-office-with-lunch-and-holidays",
        ),
        pytest.param(
            BusinessCalendar(
                "America/New_York",
                {
                    0: ((time(0), time(6)), (time(22), END_OF_DAY)),
                    1: ((time(0), time(6)), (time(22), END_OF_DAY)),
                    2: ((time(0), time(6)),),
                    6: ((time(1, 30), time(3, 30)),),
                },
            ),
            id="new-york-night-shifts-and-dst-windows",
        ),
        pytest.param(BusinessCalendar.always_open("Australia/Lord_Howe"), id="always-open"),
    ],
)
def test_elapsed_is_the_inverse_of_add(calendar: BusinessCalendar) -> None:
    draw = random.Random(2026)
    year = utc(2026, 1, 1)
    for _ in range(300):
        start = year + timedelta(seconds=draw.randrange(365 * 24 * 3600))
        duration = timedelta(minutes=draw.randrange(3 * 7 * 24 * 60))

        due = calendar.add(start, duration)

        assert calendar.elapsed(start, due) == duration
        if duration:
            # The due time is the first instant at which the whole duration has passed.
            assert calendar.elapsed(start, due - timedelta(seconds=1)) < duration
        end = start + duration
        assert calendar.add(start, calendar.elapsed(start, end)) <= end


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Australia/Lord_Howe"])
def test_an_always_open_calendar_is_plain_addition(zone: str) -> None:
    calendar = BusinessCalendar.always_open(zone)
    draw = random.Random(zone)
    for _ in range(50):
        start = utc(2026, 1, 1) + timedelta(seconds=draw.randrange(365 * 24 * 3600))
        duration = timedelta(seconds=draw.randrange(60 * 24 * 3600))

        assert calendar.add(start, duration) == start + duration
        assert calendar.elapsed(start, start + duration) == duration
    year = (utc(2026, 1, 1), utc(2027, 1, 1))
    assert list(calendar.open_intervals(*year)) == [year]


def test_open_intervals_are_clipped_to_the_range_asked_for() -> None:
    periods = list(office().open_intervals(paris(2026, 1, 16, 12), paris(2026, 1, 19, 10)))

    assert periods == [
        (utc(2026, 1, 16, 11), utc(2026, 1, 16, 16)),
        (utc(2026, 1, 19, 8), utc(2026, 1, 19, 9)),
    ]


def test_an_interval_to_24_00_joins_the_next_days_from_00_00() -> None:
    weekend_night = BusinessCalendar(
        "Europe/Paris", {4: ((time(18), END_OF_DAY),), 5: ((time(0), time(2)),)}
    )

    assert list(weekend_night.open_intervals(paris(2026, 1, 16), paris(2026, 1, 18))) == [
        (utc(2026, 1, 16, 17), utc(2026, 1, 17, 1))
    ]
    assert weekend_night.add(paris(2026, 1, 16, 23, 30), timedelta(hours=1)) == utc(
        2026, 1, 16, 23, 30
    )


def test_is_open_and_next_open() -> None:
    calendar = office()
    monday_ten = paris(2026, 1, 19, 10)

    assert calendar.is_open(monday_ten)
    assert calendar.next_open(monday_ten) == monday_ten
    assert calendar.next_open(monday_ten).tzinfo is UTC
    assert calendar.is_open(paris(2026, 1, 19, 9))
    assert not calendar.is_open(paris(2026, 1, 19, 17))
    assert calendar.next_open(paris(2026, 1, 17, 12)) == utc(2026, 1, 19, 8)


def test_holidays_are_whole_local_days_in_the_calendars_time_zone() -> None:
    auckland = BusinessCalendar(
        "Pacific/Auckland", dict.fromkeys(range(7), NINE_TO_FIVE), frozenset({date(2026, 12, 25)})
    )
    christmas_morning = utc(2026, 12, 24, 21)  # 10:00 on the 25th in Auckland (UTC+13)

    assert not auckland.is_open(christmas_morning)
    assert auckland.is_open(utc(2026, 12, 24, 3))  # 16:00 on the 24th in Auckland
    assert auckland.next_open(christmas_morning) == utc(2026, 12, 25, 20)  # 09:00 on the 26th


def test_arguments_in_any_time_zone_give_results_in_utc() -> None:
    tokyo_start = datetime(2026, 1, 17, 0, 45, tzinfo=ZoneInfo("Asia/Tokyo"))  # 16:45 in Paris

    due = office().add(tokyo_start, timedelta(minutes=30))

    assert due == utc(2026, 1, 19, 8, 15)
    assert due.tzinfo is UTC


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c, t: c.is_open(t), id="is_open"),
        pytest.param(lambda c, t: c.next_open(t), id="next_open"),
        pytest.param(lambda c, t: c.add(t, timedelta(hours=1)), id="add"),
        pytest.param(lambda c, t: c.elapsed(t, utc(2026, 2, 1)), id="elapsed-start"),
        pytest.param(lambda c, t: c.elapsed(utc(2026, 1, 1), t), id="elapsed-end"),
        pytest.param(lambda c, t: list(c.open_intervals(t, utc(2026, 2, 1))), id="open_intervals"),
    ],
)
def test_naive_datetimes_are_refused(call: Callable[[BusinessCalendar, datetime], Any]) -> None:
    with pytest.raises(CalendarError, match="timezone-aware"):
        call(office(), datetime(2026, 1, 19, 10))


# Daylight saving (Europe/Paris, 2026)


def test_9_to_17_in_paris_is_8_to_16_utc_in_winter_and_7_to_15_in_summer() -> None:
    calendar = every_day(*NINE_TO_FIVE)

    assert day_span(calendar, date(2026, 1, 14)) == [(utc(2026, 1, 14, 8), utc(2026, 1, 14, 16))]
    assert day_span(calendar, date(2026, 7, 15)) == [(utc(2026, 7, 15, 7), utc(2026, 7, 15, 15))]


@pytest.mark.parametrize("change_day", [SPRING_CHANGE, AUTUMN_CHANGE])
def test_a_9_to_17_paris_day_is_8_hours_on_both_change_days(change_day: date) -> None:
    calendar = every_day(*NINE_TO_FIVE)
    day = datetime.combine(change_day, time(0), PARIS)

    assert calendar.elapsed(day, day + timedelta(days=1)) == timedelta(hours=8)


def test_a_midnight_to_6_window_holds_5_real_hours_in_march_and_7_in_october() -> None:
    nights = every_day((time(0), time(6)))

    assert day_span(nights, SPRING_CHANGE) == [(utc(2026, 3, 28, 23), utc(2026, 3, 29, 4))]
    assert day_span(nights, AUTUMN_CHANGE) == [(utc(2026, 10, 24, 22), utc(2026, 10, 25, 5))]
    assert nights.elapsed(paris(2026, 3, 29), paris(2026, 3, 29, 12)) == timedelta(hours=5)
    assert nights.elapsed(paris(2026, 10, 25), paris(2026, 10, 25, 12)) == timedelta(hours=7)


def test_a_window_across_the_changes_counts_real_time() -> None:
    # 01:30-03:30 local: 1 real hour when 02:00-03:00 is skipped, 3 when it is lived twice.
    window = every_day((time(1, 30), time(3, 30)))

    assert day_span(window, SPRING_CHANGE) == [(utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30))]
    assert day_span(window, AUTUMN_CHANGE) == [
        (utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30))
    ]


def test_a_time_skipped_in_spring_means_the_first_instant_after_the_gap() -> None:
    opening_in_gap = every_day((time(2, 30), time(4)))
    closing_in_gap = every_day((time(0), time(2, 30)))
    inside_gap = BusinessCalendar("Europe/Paris", {6: ((time(2, 15), time(2, 45)),)})

    # The clock jumps from 02:00 to 03:00 at 01:00 UTC.
    assert day_span(opening_in_gap, SPRING_CHANGE) == [(utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))]
    assert day_span(closing_in_gap, SPRING_CHANGE) == [(utc(2026, 3, 28, 23), utc(2026, 3, 29, 1))]
    # A window wholly inside the gap does not happen that night, and happens the week after.
    assert day_span(inside_gap, SPRING_CHANGE) == []
    assert inside_gap.next_open(paris(2026, 3, 29)) == utc(2026, 4, 5, 0, 15)


def test_a_time_repeated_in_autumn_means_its_first_occurrence() -> None:
    opening_in_repeat = every_day((time(2, 30), time(5)))
    closing_in_repeat = every_day((time(0), time(2, 30)))

    # 02:30 comes first at 00:30 UTC (summer time), then again at 01:30 UTC.
    assert day_span(opening_in_repeat, AUTUMN_CHANGE) == [
        (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 4))
    ]
    assert day_span(closing_in_repeat, AUTUMN_CHANGE) == [
        (utc(2026, 10, 24, 22), utc(2026, 10, 25, 0, 30))
    ]


def test_add_across_the_spring_change_counts_real_hours() -> None:
    sunday_nights = BusinessCalendar("Europe/Paris", {6: ((time(0), time(6)),)})
    start = paris(2026, 3, 29)

    assert sunday_nights.add(start, timedelta(hours=5)) == utc(2026, 3, 29, 4)  # 06:00 local
    assert sunday_nights.add(start, timedelta(hours=5, minutes=1)) == utc(2026, 4, 4, 22, 1)


# No open time


def test_no_open_time_in_the_next_400_days_is_an_error() -> None:
    closed = frozenset(date(2026, 1, 1) + timedelta(days=n) for n in range(730))
    calendar = office(closed)
    start = utc(2026, 1, 1)

    with pytest.raises(CalendarError, match=f"no business hours in the {HORIZON_DAYS} days"):
        calendar.next_open(start)
    with pytest.raises(CalendarError, match=f"no business hours in the {HORIZON_DAYS} days"):
        calendar.add(start, timedelta(minutes=30))
    # Questions about a bounded range have an answer however long the closure.
    assert not calendar.is_open(paris(2026, 6, 1, 10))
    assert calendar.elapsed(start, utc(2027, 12, 1)) == timedelta(0)
    # A closure that ends within the horizon is crossed: 2028 opens on Monday 3 January.
    assert calendar.next_open(utc(2027, 6, 1)) == utc(2028, 1, 3, 8)


# JSON


EXAMPLE = {
    "time_zone": "Europe/Paris",
    "hours": {
        "mon": [["09:00", "12:30"], ["13:30", "17:00"]],
        "tue": [["09:00", "17:00"]],
        "fri": [["09:00", "24:00"]],
        "sat": [["00:00", "02:00"]],
    },
    "holidays": ["2026-05-01", "2026-12-25"],
}


def test_json_round_trips() -> None:
    calendar = BusinessCalendar.from_json(EXAMPLE)

    assert calendar.to_json() == EXAMPLE
    assert BusinessCalendar.from_json(calendar.to_json()) == calendar
    assert calendar.hours[4] == ((time(9), END_OF_DAY),)
    assert calendar.holidays == {date(2026, 5, 1), date(2026, 12, 25)}


def test_json_days_left_out_are_closed_and_holidays_are_optional() -> None:
    calendar = BusinessCalendar.from_json(
        {"time_zone": "UTC", "hours": {"wed": [["09:00", "17:00"]], "thu": []}}
    )

    assert calendar.hours == {2: NINE_TO_FIVE}
    assert calendar.to_json() == {
        "time_zone": "UTC",
        "hours": {"wed": [["09:00", "17:00"]]},
        "holidays": [],
    }


def test_always_open_writes_every_day_from_00_00_to_24_00() -> None:
    assert BusinessCalendar.always_open().to_json() == {
        "time_zone": "UTC",
        "hours": {day: [["00:00", "24:00"]] for day in (*WEEKDAYS, "sat", "sun")},
        "holidays": [],
    }


def test_hours_are_sorted_and_touching_intervals_merged() -> None:
    written = BusinessCalendar(
        "Europe/Paris", {0: [(time(13), time(17)), (time(9), time(12)), (time(12), time(13))]}
    )
    plain = BusinessCalendar("Europe/Paris", {0: NINE_TO_FIVE})

    assert written.hours == {0: NINE_TO_FIVE}
    assert written == plain
    assert hash(written) == hash(plain)


def test_a_calendar_does_not_change_when_the_dict_it_was_built_from_does() -> None:
    hours = {0: NINE_TO_FIVE}
    calendar = BusinessCalendar("Europe/Paris", hours)
    hours[1] = NINE_TO_FIVE

    assert list(calendar.hours) == [0]


# Bad input


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ({0: ((time(9), time(13)), (time(12), time(17)))}, r"Monday: 09:00-13:00 and 12:00-17:00"),
        ({2: ((time(9), time(17)), (time(10), time(11)))}, r"Wednesday: .* overlap"),
        ({1: ((time(9), time(17)), (time(9), time(17)))}, r"Tuesday: .* overlap"),
        ({3: ((time(17), time(9)),)}, r"Thursday: 17:00-09:00 ends before it starts"),
        ({4: ((time(9), time(9)),)}, r"Friday: 09:00-09:00 ends before it starts"),
        ({}, "empty"),
        (dict.fromkeys(range(7), ()), "empty"),
        ({7: NINE_TO_FIVE}, "weekday 7"),
        ({"mon": NINE_TO_FIVE}, "weekday 'mon'"),
        ({0: (("09:00", "17:00"),)}, r"Monday: .* is not a \(start, end\) pair"),
        ({0: ((time(9),),)}, r"Monday: .* is not a \(start, end\) pair"),
        ({0: ((time(9, 0, 30), time(17)),)}, "whole minutes"),
        ({0: ((time(9, tzinfo=UTC), time(17)),)}, "no time zone"),
        ({0: 9}, "Monday: the open intervals must be a sequence"),
        ([NINE_TO_FIVE], "hours must map weekdays"),
    ],
)
def test_bad_hours_are_refused(hours: Any, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        BusinessCalendar("Europe/Paris", hours)


@pytest.mark.parametrize("zone", ["Europe/Nowhere", "Europe", "", "../etc/passwd", "CET ", 1])
def test_an_unknown_time_zone_is_refused(zone: Any) -> None:
    with pytest.raises(CalendarError, match=r"time[_ ]zone"):
        BusinessCalendar(zone, {0: NINE_TO_FIVE})


@pytest.mark.parametrize(
    "holidays",
    [frozenset({datetime(2026, 12, 25, tzinfo=UTC)}), frozenset({"2026-12-25"}), 20261225],
)
def test_holidays_that_are_not_dates_are_refused(holidays: Any) -> None:
    with pytest.raises(CalendarError, match="holidays"):
        BusinessCalendar("Europe/Paris", {0: NINE_TO_FIVE}, holidays)


def with_field(**changes: Any) -> dict[str, Any]:
    return {**EXAMPLE, **changes}


def with_monday(*intervals: Any) -> dict[str, Any]:
    return with_field(hours={"mon": list(intervals)})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ("Europe/Paris", "must be a JSON object"),
        ({"hours": EXAMPLE["hours"]}, "needs"),
        ({"time_zone": "Europe/Paris"}, "needs"),
        (with_field(holiday=[]), "unknown calendar fields: holiday"),
        (with_field(time_zone=None), "time_zone must be an IANA"),
        (with_field(time_zone="Paris"), "unknown time zone 'Paris'"),
        (with_field(hours=[["09:00", "17:00"]]), '"hours" must be an object'),
        (with_field(hours={"monday": [["09:00", "17:00"]]}), "unknown day 'monday'"),
        (with_field(hours={"Mon": [["09:00", "17:00"]]}), "unknown day 'Mon'"),
        (with_field(hours={"mon": ["09:00", "17:00"]}), r"hours.mon\[0\]: '09:00' is not a"),
        (with_field(hours={"mon": "09:00-17:00"}), "hours.mon: must be a list"),
        (with_monday(["09:00"]), r"hours.mon\[0\]: \['09:00'\] is not a"),
        (with_monday(["09:00", "12:00", "17:00"]), r"hours.mon\[0\]"),
        (with_monday([9, 17]), r"hours.mon\[0\]"),
        (with_monday(["09:00", "25:00"]), r"hours.mon\[0\]: '25:00' is not a time of day"),
        (with_monday(["9h", "17:00"]), r"hours.mon\[0\]: '9h' is not a time of day"),
        (with_monday(["9:00", "17:00"]), r"'9:00' is not a time of day"),
        (with_monday(["09:00", "17:00 "]), r"'17:00 ' is not a time of day"),
        (with_monday(["09:00:00", "17:00"]), r"'09:00:00' is not a time of day"),
        (with_monday(["24:00", "24:00"]), r"'24:00' is not a time of day"),
        (with_monday(["22:00", "00:00"]), r'cannot end at "00:00"; midnight is "24:00"'),
        (with_monday(["17:00", "09:00"]), "Monday: 17:00-09:00 ends before it starts"),
        (with_monday(["09:00", "13:00"], ["12:00", "17:00"]), "Monday: .* overlap"),
        (with_field(hours={}), "empty"),
        (with_field(hours={"sat": [], "sun": []}), "empty"),
        (with_field(holidays="2026-12-25"), '"holidays" must be a list'),
        (with_field(holidays=["2026-02-30"]), r"holidays\[0\]: '2026-02-30' is not a date"),
        (with_field(holidays=["2026-12-25", "25/12/2026"]), r"holidays\[1\]: '25/12/2026'"),
        (with_field(holidays=["20261225"]), r"holidays\[0\]: '20261225'"),
        (with_field(holidays=[20261225]), r"holidays\[0\]: 20261225"),
    ],
)
def test_bad_json_is_refused_with_a_message_naming_the_field(data: Any, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        BusinessCalendar.from_json(data)
