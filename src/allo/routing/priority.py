"""The order of the queue: which waiting conversation should be answered next, and why.

Earliest deadline first. A conversation's deadline is the SLA due time of the answer it waits
for, brought forward by what triage read in it: an urgent message (safety, legal threat, outage,
a customer in a store), a clearly negative customer, a risk of churn, and, only where the admin
turns it on, the customer's reach. Conversations whose due time has already passed come after
those that can still be answered in time, most overdue first: during a peak, answering a late
one first would make an on-time one late as well. They are answered as soon as the queue allows,
so nobody is dropped. Conversations with no clock (spam, nothing to answer) come last.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

# The customer's followers at which reach gives its full credit (log scale below that).
REACH_FULL_CREDIT_AT = 100_000
# A sentiment score at or under this is a clearly unhappy customer.
NEGATIVE_AT = -0.5

ON_TIME, OVERDUE, NO_CLOCK = 0, 1, 2


@dataclass(frozen=True)
class PriorityWeights:
    """How much earlier than its due time each sign makes a conversation come up."""

    urgent: timedelta = timedelta(minutes=30)
    negative: timedelta = timedelta(minutes=10)
    churn: timedelta = timedelta(minutes=15)
    # Per level of priority above normal (set by hand, by triage's urgency or by escalation).
    priority_step: timedelta = timedelta(minutes=15)
    # Off unless the admin turns it on: a customer with many followers is not worth more.
    reach: timedelta | None = None


@dataclass(frozen=True)
class Waiting:
    """What the queue knows of a conversation waiting for an answer."""

    conversation_id: int
    waiting_since: datetime
    due_at: datetime | None  # the SLA due time of the answer it waits for; None: no clock
    urgent: bool = False
    sentiment: float = 0.0
    churn: bool = False
    followers: int = 0
    priority: int = 0  # -1 low, 0 normal, 1 high, 2 urgent


@dataclass(frozen=True)
class Rank:
    """A conversation's place in the queue (smaller first) and the reasons for it."""

    key: tuple[int, float, float, int]
    reasons: tuple[str, ...]


def credits(waiting: Waiting, weights: PriorityWeights) -> list[tuple[str, timedelta]]:
    """What brings the conversation's deadline forward, and by how much."""
    found = []
    if waiting.priority > 0:
        found.append((f"priority +{waiting.priority}", weights.priority_step * waiting.priority))
    if waiting.urgent:
        found.append(("urgent", weights.urgent))
    if waiting.sentiment <= NEGATIVE_AT:
        found.append(("negative sentiment", weights.negative))
    if waiting.churn:
        found.append(("churn risk", weights.churn))
    if weights.reach is not None and waiting.followers > 0:
        share = min(1.0, math.log1p(waiting.followers) / math.log1p(REACH_FULL_CREDIT_AT))
        found.append((f"reach ({waiting.followers:,} followers)", weights.reach * share))
    return [(reason, amount) for reason, amount in found if amount > timedelta(0)]


def place(
    waiting: Waiting, now: datetime, weights: PriorityWeights
) -> tuple[int, float, float, int]:
    """The conversation's sort key in the queue (smaller first)."""
    arrived = waiting.waiting_since.timestamp()
    if waiting.due_at is None:
        return (NO_CLOCK, arrived, arrived, waiting.conversation_id)
    if waiting.due_at <= now:
        return (OVERDUE, waiting.due_at.timestamp(), arrived, waiting.conversation_id)
    return (ON_TIME, deadline(waiting, weights), arrived, waiting.conversation_id)


def rank(waiting: Waiting, now: datetime, weights: PriorityWeights) -> Rank:
    """The conversation's place and the reasons for it."""
    key = place(waiting, now, weights)
    if waiting.due_at is None:
        return Rank(key, ("no SLA clock",))
    if key[0] == OVERDUE:
        late = _minutes(now - waiting.due_at)
        return Rank(key, (f"overdue by {late}: after those still on time, most overdue first",))
    reasons = [f"due in {_minutes(waiting.due_at - now)}"]
    reasons += [
        f"{reason}: {_minutes(amount)} earlier" for reason, amount in credits(waiting, weights)
    ]
    return Rank(key, tuple(reasons))


def deadline(waiting: Waiting, weights: PriorityWeights) -> float:
    """The due time brought forward by the conversation's credits, as a POSIX timestamp."""
    assert waiting.due_at is not None
    given = credits(waiting, weights)
    return waiting.due_at.timestamp() - sum(amount.total_seconds() for _, amount in given)


def order(
    waiting: Iterable[Waiting], now: datetime, weights: PriorityWeights | None = None
) -> list[Waiting]:
    """The queue, first to answer first."""
    weights = weights or PriorityWeights()
    return sorted(waiting, key=lambda one: place(one, now, weights))


def _minutes(span: timedelta) -> str:
    minutes = math.ceil(span.total_seconds() / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d}"


class WaitingQueue:
    """The queue in `order`'s order, kept as heaps: each pop costs log n, not a sort.

    Conversations go in with their deadline; one whose due time has passed by the time it
    would come up moves to the overdue part, so `pop(now)` always returns the first of
    `order(queue, now)`.
    """

    def __init__(self, weights: PriorityWeights | None = None) -> None:
        self.weights = weights or PriorityWeights()
        self._on_time: list[tuple[float, float, int, Waiting]] = []
        self._overdue: list[tuple[float, float, int, Waiting]] = []
        self._no_clock: list[tuple[float, float, int, Waiting]] = []

    def __len__(self) -> int:
        return len(self._on_time) + len(self._overdue) + len(self._no_clock)

    def push(self, waiting: Waiting) -> None:
        arrived = waiting.waiting_since.timestamp()
        if waiting.due_at is None:
            heap = self._no_clock
            first = arrived
        else:
            heap = self._on_time
            first = deadline(waiting, self.weights)
        heapq.heappush(heap, (first, arrived, waiting.conversation_id, waiting))

    def pop(self, now: datetime) -> Waiting | None:
        moment = now.timestamp()
        while self._on_time:
            entry = heapq.heappop(self._on_time)
            waiting = entry[3]
            assert waiting.due_at is not None
            if waiting.due_at.timestamp() > moment:
                return waiting
            heapq.heappush(
                self._overdue,
                (waiting.due_at.timestamp(), entry[1], waiting.conversation_id, waiting),
            )
        for heap in (self._overdue, self._no_clock):
            if heap:
                return heapq.heappop(heap)[3]
        return None
