"""`allo simulate`'s engine: the same arrivals and work, through each policy's routing code."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from allo.analytics.simulation import Arrival, FirstResponseTargets, Team, simulate
from allo.analytics.traces import synthetic_day
from allo.routing.calendars import BusinessCalendar

T0 = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)  # a Wednesday
MINUTE = timedelta(minutes=1)


def at(minutes: float, **triage: object) -> Arrival:
    return Arrival(at=T0 + minutes * MINUTE, **triage)  # type: ignore[arg-type]


def steady(agents: int = 1, handle_minutes: float = 5, concurrency: int = 1) -> Team:
    """Every handling takes exactly the mean: outcomes can be computed by hand."""
    return Team(agents, handle_minutes * MINUTE, handle_cv=0.0, concurrency=concurrency)


def test_one_agent_answers_in_arrival_order_and_replies_when_handling_ends() -> None:
    outcome = simulate([at(0), at(1), at(2)], steady(), "fifo")
    assert sorted(outcome.first_response_seconds) == [300, 540, 780]
    assert (outcome.to_answer, outcome.answered, outcome.answered_within_hour) == (3, 3, 3)
    assert outcome.response_rate == 1.0
    assert outcome.percentile(0.5) == 540
    assert outcome.occupancy == pytest.approx(1.0)


def test_allo_answers_the_urgent_message_first_and_fifo_does_not() -> None:
    arrivals = [at(0), at(1), at(2), at(3, urgent=True)]
    targets = FirstResponseTargets(normal=timedelta(hours=1), urgent=timedelta(minutes=15))
    fifo = simulate(arrivals, steady(), "fifo", targets)
    allo = simulate(arrivals, steady(), "allo", targets)
    assert fifo.urgent_breaches == 1  # answered at 20 minutes, 17 after it arrived
    assert allo.urgent_breaches == 0  # taken second, answered at 10 minutes
    assert fifo.breaches == 1 and allo.breaches == 0


def test_spam_and_thanks_need_no_answer_and_allo_looks_at_them_last() -> None:
    arrivals = [at(0), at(0.5, spam=True), at(0.6, needs_answer=False), at(1)]
    team = Team(1, 5 * MINUTE, handle_cv=0.0, dismiss=timedelta(minutes=1))
    fifo = simulate(arrivals, team, "fifo")
    allo = simulate(arrivals, team, "allo")
    assert fifo.to_answer == allo.to_answer == 2
    # FIFO dismisses both before the second customer (answered at 12 min); Allo answers the
    # customer at 10 min and dismisses afterwards.
    assert max(fifo.first_response_seconds) == 11 * 60
    assert max(allo.first_response_seconds) == 9 * 60


def test_every_policy_meets_exactly_the_same_work() -> None:
    arrivals = synthetic_day(T0.date(), 300, seed=3)
    team = Team(3, 8 * MINUTE)
    outcomes = [simulate(arrivals, team, policy, seed=11) for policy in ("fifo", "allo")]
    assert outcomes[0].arrivals == outcomes[1].arrivals == len(arrivals)
    assert outcomes[0].occupancy == pytest.approx(outcomes[1].occupancy, rel=0.02)


def test_agents_hold_several_conversations_with_concurrency() -> None:
    outcome = simulate([at(0), at(0), at(0), at(0)], steady(concurrency=2), "allo")
    assert sorted(outcome.first_response_seconds) == [300, 300, 600, 600]


def test_balanced_assignment_spreads_work_over_the_team() -> None:
    outcome = simulate([at(0), at(0), at(0)], steady(agents=3), "allo")
    assert outcome.first_response_seconds == [300, 300, 300]


def test_agents_start_work_only_while_their_calendar_is_open() -> None:
    calendar = BusinessCalendar.from_json(
        {
            "time_zone": "Europe/Paris",
            "hours": {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
        }
    )
    friday_evening = datetime(2026, 3, 6, 15, 45, tzinfo=UTC)  # 16:45 in Paris
    team = Team(1, 20 * MINUTE, handle_cv=0.0, calendar=calendar)
    targets = FirstResponseTargets(normal=timedelta(minutes=30))
    late = Arrival(at=friday_evening + 5 * MINUTE)
    outcome = simulate([Arrival(at=friday_evening), late], team, "allo", targets)
    # The first is answered at 17:05; the second waits for Monday 09:00 and is answered at 09:20,
    # within its 30 business minutes (due Monday 09:20 + the 10 minutes left on Friday).
    monday_answer = datetime(2026, 3, 9, 8, 20, tzinfo=UTC)
    assert sorted(outcome.first_response_seconds) == [
        20 * 60,
        (monday_answer - late.at).total_seconds(),
    ]
    assert outcome.breaches == 0
    assert outcome.answered_within_hour == 1


def test_nothing_answered_within_a_week_of_the_last_arrival_counts_as_unanswered() -> None:
    arrivals = [at(0), at(1)]
    outcome = simulate(arrivals, Team(1, timedelta(days=8), handle_cv=0.0), "fifo")
    assert outcome.answered == 0
    assert outcome.response_rate == 0.0
    assert outcome.breaches == 2


def test_under_a_burst_allo_answers_more_within_the_hour_than_fifo() -> None:
    # Two hours of double the team's capacity, then quiet: FIFO makes everyone late.
    burst = [at(i * 2.5) for i in range(48)] + [at(130 + i * 10) for i in range(30)]
    team = steady(agents=1, handle_minutes=5)
    fifo = simulate(burst, team, "fifo")
    allo = simulate(burst, team, "allo")
    assert allo.answered_within_hour > fifo.answered_within_hour
    assert allo.breaches < fifo.breaches
    assert allo.answered == fifo.answered == 78


def test_an_empty_day_and_bad_settings() -> None:
    empty = simulate([], steady(), "allo")
    assert (empty.arrivals, empty.within_hour, empty.percentile(0.5)) == (0, 1.0, None)
    with pytest.raises(ValueError, match="unknown policy"):
        simulate([at(0)], steady(), "lifo")
    with pytest.raises(ValueError, match="at least one agent"):
        Team(0, MINUTE)
    with pytest.raises(ValueError, match="positive"):
        Team(1, timedelta(0))
