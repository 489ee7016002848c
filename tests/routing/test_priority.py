"""The queue's order: earliest deadline first, triage credits, overdue after on time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from allo.routing.priority import (
    PriorityWeights,
    Waiting,
    WaitingQueue,
    credits,
    order,
    rank,
)

NOW = datetime(2026, 3, 6, 15, 0, tzinfo=UTC)


def waiting(
    conversation_id: int,
    due_in_minutes: float | None,
    waited_minutes: float = 10,
    **triage: object,
) -> Waiting:
    due = None if due_in_minutes is None else NOW + timedelta(minutes=due_in_minutes)
    return Waiting(
        conversation_id=conversation_id,
        waiting_since=NOW - timedelta(minutes=waited_minutes),
        due_at=due,
        **triage,  # type: ignore[arg-type]
    )


def ids(queue: list[Waiting]) -> list[int]:
    return [one.conversation_id for one in queue]


def test_the_earliest_due_comes_first() -> None:
    queue = [waiting(1, 40), waiting(2, 5), waiting(3, 20)]
    assert ids(order(queue, NOW)) == [2, 3, 1]


def test_an_urgent_message_comes_up_its_credit_earlier() -> None:
    # Due in 40 minutes, urgent (30 minutes of credit): ahead of one due in 20, behind one in 5.
    queue = [waiting(1, 20), waiting(2, 40, urgent=True), waiting(3, 5)]
    assert ids(order(queue, NOW)) == [3, 2, 1]


def test_negative_sentiment_and_churn_risk_add_their_credits() -> None:
    both = waiting(1, 30, sentiment=-0.9, churn=True)  # 10 + 15 minutes earlier: 5
    assert ids(order([waiting(2, 6), both], NOW)) == [1, 2]
    mildly_unhappy = waiting(3, 30, sentiment=-0.3)
    assert credits(mildly_unhappy, PriorityWeights()) == []


def test_reach_counts_only_where_the_admin_turned_it_on() -> None:
    famous = waiting(1, 30, followers=2_000_000)
    assert credits(famous, PriorityWeights()) == []
    weights = PriorityWeights(reach=timedelta(minutes=20))
    assert credits(famous, weights) == [("reach (2,000,000 followers)", timedelta(minutes=20))]
    modest = credits(waiting(2, 30, followers=300), weights)[0][1]
    assert timedelta(0) < modest < timedelta(minutes=20)
    assert ids(order([waiting(3, 15), famous], NOW, weights)) == [1, 3]


def test_overdue_conversations_come_after_those_still_on_time_most_overdue_first() -> None:
    queue = [waiting(1, -5), waiting(2, 50), waiting(3, -30), waiting(4, 10)]
    assert ids(order(queue, NOW)) == [4, 2, 3, 1]


def test_conversations_without_a_clock_come_last_in_arrival_order() -> None:
    queue = [
        waiting(1, None, waited_minutes=5),
        waiting(2, -300),
        waiting(3, None, waited_minutes=50),
    ]
    assert ids(order(queue, NOW)) == [2, 3, 1]


def test_ties_are_broken_by_arrival_then_id() -> None:
    queue = [waiting(5, 10, waited_minutes=1), waiting(4, 10, waited_minutes=1), waiting(3, 10, 9)]
    assert ids(order(queue, NOW)) == [3, 4, 5]


def test_each_place_is_explained() -> None:
    weights = PriorityWeights()
    assert rank(waiting(1, 42, urgent=True, churn=True), NOW, weights).reasons == (
        "due in 42 min",
        "urgent: 30 min earlier",
        "churn risk: 15 min earlier",
    )
    assert rank(waiting(2, -95), NOW, weights).reasons == (
        "overdue by 1 h 35: after those still on time, most overdue first",
    )
    assert rank(waiting(3, None), NOW, weights).reasons == ("no SLA clock",)


def test_the_heap_queue_pops_in_the_order_of_order_as_time_passes() -> None:
    generator = random.Random(7)
    population = [
        waiting(
            index,
            None if generator.random() < 0.1 else generator.uniform(-60, 120),
            generator.uniform(0, 60),
            urgent=generator.random() < 0.2,
            sentiment=generator.choice([-0.9, 0.0, 0.5]),
            churn=generator.random() < 0.1,
        )
        for index in range(300)
    ]
    queue = WaitingQueue()
    for one in population:
        queue.push(one)
    remaining = list(population)
    now = NOW
    while remaining:
        expected = order(remaining, now)[0]
        popped = queue.pop(now)
        assert popped == expected
        remaining.remove(expected)
        now += timedelta(seconds=generator.uniform(0, 90))
    assert len(queue) == 0
    assert queue.pop(now) is None
