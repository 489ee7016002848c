"""`allo simulate`: a day of arrivals against a team, through the real routing code.

The simulator plays arrivals (a trace, or a synthetic Poisson day) against agents who each hold
`concurrency` conversations at a time, with handling times drawn once per arrival so that every
policy meets exactly the same work. Policies differ only in the routing code they call:

- fifo: one queue in arrival order, round-robin assignment (what Chatwoot does). Spam and
  thank-you notes wait in the same line as everyone else.
- allo: `routing.priority.WaitingQueue` (earliest SLA deadline first, triage credits, overdue
  after on time, no-clock last) and `routing.assignment.choose("balanced")`.

A reply is sent when its handling ends, so a first response time is the wait plus the handling.
Messages that need no answer (spam, thanks, automated) take a short look to dismiss, in both
policies, and have no clock. Agents take new work only while their calendar is open.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from allo.routing import assignment
from allo.routing.assignment import AgentLoad, Need
from allo.routing.calendars import BusinessCalendar
from allo.routing.priority import PriorityWeights, Waiting, WaitingQueue

POLICIES = {
    "fifo": "FIFO, round robin",
    "allo": "Allo: deadline first, balanced",
}
WITHIN = timedelta(hours=1)
# Answers later than this after the last arrival are not waited for: never answered. A week
# lets a business-hours team come back after a weekend or a bank holiday.
DRAIN = timedelta(days=7)


@dataclass(frozen=True)
class Arrival:
    """A customer message that starts or reopens a wait for an answer, with its triage."""

    at: datetime
    channel: str = "x"
    urgent: bool = False
    sentiment: float = 0.0
    churn: bool = False
    spam: bool = False
    needs_answer: bool = True
    followers: int = 0

    @property
    def answerable(self) -> bool:
        return self.needs_answer and not self.spam


@dataclass(frozen=True)
class FirstResponseTargets:
    """The SLA policy's first-response targets the simulation holds the team to."""

    normal: timedelta = timedelta(hours=1)
    urgent: timedelta = timedelta(minutes=15)

    def target(self, arrival: Arrival) -> timedelta | None:
        if not arrival.answerable:
            return None
        return self.urgent if arrival.urgent else self.normal


@dataclass(frozen=True)
class Team:
    agents: int
    handle: timedelta  # mean handling time of a message that needs an answer
    handle_cv: float = 1.0  # coefficient of variation of the (lognormal) handling time
    dismiss: timedelta = timedelta(seconds=30)  # looking at spam or a thank-you and closing it
    concurrency: int = 1
    calendar: BusinessCalendar | None = None
    # Agents on duty in each hour of the day (UTC), at most `agents`; None: all of them always.
    shifts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.agents < 1 or self.concurrency < 1:
            raise ValueError("a team needs at least one agent holding at least one conversation")
        if self.handle <= timedelta(0) or self.dismiss < timedelta(0) or self.handle_cv < 0:
            raise ValueError("handling times must be positive and the variation not negative")
        if self.shifts is not None and (
            len(self.shifts) != 24 or not all(0 <= n <= self.agents for n in self.shifts)
        ):
            raise ValueError(f"shifts: 24 hourly head counts between 0 and {self.agents}")

    def on_duty(self, now: datetime) -> int:
        return self.agents if self.shifts is None else self.shifts[now.astimezone(UTC).hour]

    def work_seconds(self, arrivals: Sequence[Arrival]) -> float:
        """The mean work the arrivals bring, in agent-seconds."""
        return sum(
            (self.handle if a.answerable else self.dismiss).total_seconds() for a in arrivals
        )


@dataclass
class Outcome:
    policy: str
    arrivals: int
    to_answer: int
    answered: int
    answered_within_hour: int
    breaches: int
    urgent_breaches: int
    occupancy: float
    first_response_seconds: list[float] = field(repr=False)

    @property
    def within_hour(self) -> float:
        return self.answered_within_hour / self.to_answer if self.to_answer else 1.0

    @property
    def response_rate(self) -> float:
        return self.answered / self.to_answer if self.to_answer else 1.0

    def percentile(self, share: float) -> float | None:
        if not self.first_response_seconds:
            return None
        ordered = sorted(self.first_response_seconds)
        return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]

    def to_json(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "arrivals": self.arrivals,
            "to_answer": self.to_answer,
            "answered": self.answered,
            "response_rate": round(self.response_rate, 4),
            "within_hour": round(self.within_hour, 4),
            "median_first_response_s": self.percentile(0.5),
            "p90_first_response_s": self.percentile(0.9),
            "breaches": self.breaches,
            "urgent_breaches": self.urgent_breaches,
            "occupancy": round(self.occupancy, 4),
        }


def handling_times(arrivals: Sequence[Arrival], team: Team, seed: int) -> list[float]:
    """One handling time per arrival, in seconds (lognormal with the team's mean and CV)."""
    generator = random.Random(seed)
    sigma = math.sqrt(math.log1p(team.handle_cv**2))
    mean = team.handle.total_seconds()
    mu = math.log(mean) - sigma**2 / 2
    return [
        generator.lognormvariate(mu, sigma) if a.answerable else team.dismiss.total_seconds()
        for a in arrivals
    ]


def simulate(
    arrivals: Sequence[Arrival],
    team: Team,
    policy: str,
    targets: FirstResponseTargets | None = None,
    weights: PriorityWeights | None = None,
    seed: int = 0,
) -> Outcome:
    """Play `arrivals` (in time order) against `team` with `policy`; what the customers got."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
    targets = targets or FirstResponseTargets()
    run = _Run(sorted(arrivals, key=lambda a: a.at), team, policy, targets, weights, seed)
    return run.play()


class _Run:
    """One simulation: an event heap of arrivals, completions and openings of the calendar."""

    def __init__(
        self,
        arrivals: Sequence[Arrival],
        team: Team,
        policy: str,
        targets: FirstResponseTargets,
        weights: PriorityWeights | None,
        seed: int,
    ) -> None:
        self.arrivals, self.team, self.policy = arrivals, team, policy
        self.work = handling_times(arrivals, team, seed)
        self.due = [self._due(a, targets.target(a)) for a in arrivals]
        self.fifo: deque[int] = deque()
        self.queue = WaitingQueue(weights)
        self.holding = [0] * team.agents
        self.last_assigned: list[datetime | None] = [None] * team.agents
        self.last_round_robin: int | None = None
        self.answered_at: dict[int, float] = {}
        self.busy_seconds = 0.0
        self.events: list[tuple[float, int, str, int]] = []
        self.wake_at: float | None = None
        self.sequence = 0

    def _due(self, arrival: Arrival, target: timedelta | None) -> datetime | None:
        if target is None:
            return None
        if self.team.calendar is None:
            return arrival.at + target
        return self.team.calendar.add(arrival.at, target)

    def _schedule(self, moment: float, kind: str, index: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (moment, self.sequence, kind, index))

    def play(self) -> Outcome:
        if not self.arrivals:
            return self._outcome(0.0, 0.0)
        start = self.arrivals[0].at.timestamp()
        end = self.arrivals[-1].at.timestamp() + DRAIN.total_seconds()
        for index, arrival in enumerate(self.arrivals):
            self._schedule(arrival.at.timestamp(), "arrive", index)
        finished = start
        while self.events and self.events[0][0] <= end:
            moment, _, kind, index = heapq.heappop(self.events)
            finished = moment
            if kind == "arrive":
                self._enqueue(index)
            elif kind == "done":
                self.holding[index] -= 1
            self._dispatch(moment)
        return self._outcome(start, max(finished, start))

    def _enqueue(self, index: int) -> None:
        if self.policy == "fifo":
            self.fifo.append(index)
            return
        arrival = self.arrivals[index]
        self.queue.push(
            Waiting(
                conversation_id=index,
                waiting_since=arrival.at,
                due_at=self.due[index],
                urgent=arrival.urgent,
                sentiment=arrival.sentiment,
                churn=arrival.churn,
                followers=arrival.followers,
            )
        )

    def _waiting(self) -> int:
        return len(self.fifo) if self.policy == "fifo" else len(self.queue)

    def _dispatch(self, moment: float) -> None:
        now = datetime.fromtimestamp(moment, UTC)
        calendar = self.team.calendar
        if calendar is not None and not calendar.is_open(now):
            if self._waiting():
                self._wake(calendar.next_open(now).timestamp())
            return
        while self._waiting():
            agent = self._choose(now)
            if agent is None:
                if self.team.shifts is not None:
                    # The next hour may bring more agents on duty.
                    self._wake((moment // 3600 + 1) * 3600)
                return
            index = self.fifo.popleft() if self.policy == "fifo" else self._pop(now)
            self._start(index, agent, moment, now)

    def _pop(self, now: datetime) -> int:
        waiting = self.queue.pop(now)
        assert waiting is not None
        return waiting.conversation_id

    def _wake(self, moment: float) -> None:
        if self.wake_at != moment:
            self.wake_at = moment
            self._schedule(moment, "open", -1)

    def _choose(self, now: datetime) -> int | None:
        on_duty = self.team.on_duty(now)
        loads = [
            AgentLoad(
                agent_id=agent,
                online=agent < on_duty,
                capacity=self.team.concurrency,
                holding=self.holding[agent],
                last_assigned_at=self.last_assigned[agent],
            )
            for agent in range(self.team.agents)
        ]
        strategy = "round_robin" if self.policy == "fifo" else "balanced"
        chosen = assignment.choose(strategy, loads, Need(), self.last_round_robin)
        if chosen is None:
            return None
        self.last_round_robin = chosen.agent_id
        return chosen.agent_id

    def _start(self, index: int, agent: int, moment: float, now: datetime) -> None:
        self.holding[agent] += 1
        self.last_assigned[agent] = now
        work = self.work[index]
        self.busy_seconds += work
        self._schedule(moment + work, "done", agent)
        if self.arrivals[index].answerable:
            self.answered_at[index] = moment + work

    def _outcome(self, start: float, finished: float) -> Outcome:
        to_answer = [i for i, a in enumerate(self.arrivals) if a.answerable]
        end = (self.arrivals[-1].at + DRAIN).timestamp() if self.arrivals else 0.0
        responses, within, breaches, urgent_breaches = [], 0, 0, 0
        for index in to_answer:
            arrived = self.arrivals[index].at.timestamp()
            answered = self.answered_at.get(index)
            if answered is not None and answered <= end:
                responses.append(answered - arrived)
                within += answered - arrived <= WITHIN.total_seconds()
            due = self.due[index]
            if answered is None or answered > end or (due and answered > due.timestamp()):
                breaches += 1
                urgent_breaches += self.arrivals[index].urgent
        return Outcome(
            policy=self.policy,
            arrivals=len(self.arrivals),
            to_answer=len(to_answer),
            answered=len(responses),
            answered_within_hour=within,
            breaches=breaches,
            urgent_breaches=urgent_breaches,
            occupancy=self._occupancy(start, finished),
            first_response_seconds=responses,
        )

    def _occupancy(self, start: float, finished: float) -> float:
        """Busy agent-time over the agent-time on duty while the day's work was done."""
        on_duty = self._duty_seconds(start, finished) * self.team.concurrency
        return min(1.0, self.busy_seconds / on_duty) if on_duty else 0.0

    def _duty_seconds(self, start: float, finished: float) -> float:
        """Agent-seconds on duty (open calendar, agents of the hour's shift) in the span."""
        total, moment = 0.0, start
        while moment < finished:
            until = min(finished, (moment // 3600 + 1) * 3600)
            begin = datetime.fromtimestamp(moment, UTC)
            stop = datetime.fromtimestamp(until, UTC)
            calendar = self.team.calendar
            open_time = calendar.elapsed(begin, stop) if calendar else stop - begin
            total += open_time.total_seconds() * self.team.on_duty(begin)
            moment = until
        return total


def size_team(
    arrivals: Sequence[Arrival],
    load: float,
    handle: timedelta,
    *,
    hourly: bool = True,
    **team: object,
) -> Team:
    """A team that the arrivals keep busy `load` of its time over the day.

    hourly: a shift plan from the day's own volumes (a perfect forecast): each hour's need in
    agents, rounded so that the day's total matches the load (largest remainders), with at
    least one agent every hour. Otherwise a flat head count for the whole span.
    """
    if not 0 < load <= 1:
        raise ValueError("the load must be above 0 and at most 1")
    probe = Team(1, handle, **team)  # type: ignore[arg-type]
    slots = load * probe.concurrency
    if not hourly:
        span = _span_seconds(arrivals)
        agents = max(1, round(probe.work_seconds(arrivals) / (slots * span)))
        return Team(agents, handle, **team)  # type: ignore[arg-type]
    by_hour: list[list[Arrival]] = [[] for _ in range(24)]
    for arrival in arrivals:
        by_hour[arrival.at.astimezone(UTC).hour].append(arrival)
    days = _span_seconds(arrivals) / 86400
    needs = [probe.work_seconds(hour) / days / (slots * 3600) for hour in by_hour]
    shifts = [math.floor(need) for need in needs]
    by_remainder = sorted(range(24), key=lambda hour: needs[hour] - shifts[hour], reverse=True)
    for hour in by_remainder[: round(sum(needs)) - sum(shifts)]:
        shifts[hour] += 1
    shifts = [max(1, count) for count in shifts]
    return Team(max(shifts), handle, shifts=tuple(shifts), **team)  # type: ignore[arg-type]


def _span_seconds(arrivals: Sequence[Arrival]) -> float:
    """Whole UTC days covered by the arrivals, in seconds (a one-day trace is 86,400)."""
    if not arrivals:
        return 86400.0
    days = {arrival.at.astimezone(UTC).date() for arrival in arrivals}
    return (max(days) - min(days)).days * 86400.0 + 86400.0
