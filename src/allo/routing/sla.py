"""SLA clocks: targets from a policy, and the due times of a conversation's running clocks.

A clock is one wait: the first response (from the customer's first message to the brand's first
answer), the next response (from a customer message that follows an answer to the next answer),
and the resolution (from the conversation's start to its resolution). Targets are business time
on the team's calendar. The response clocks run whenever the customer waits for an answer,
whatever the status, so no status can hide a waiting customer; the resolution clock pauses while
the conversation is pending (waiting on the customer) or snoozed. Spam and messages that need no
answer start no response clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from allo.routing.calendars import BusinessCalendar

SLA_KINDS = ("first_response", "next_response", "resolution")
PRIORITIES = {"low": -1, "normal": 0, "high": 1, "urgent": 2}
PRIORITY_NAMES = {value: name for name, value in PRIORITIES.items()}
PAUSED_STATUSES = ("pending", "snoozed")


class PolicyError(ValueError):
    """A policy's targets that cannot be read: the message names the field."""


@dataclass(frozen=True)
class Targets:
    first_response: timedelta | None = None
    next_response: timedelta | None = None
    resolution: timedelta | None = None

    def of(self, kind: str) -> timedelta | None:
        target: timedelta | None = getattr(self, kind)
        return target


def parse_targets(
    targets: Mapping[str, Mapping[str, int]], where: str = "targets"
) -> dict[str, Targets]:
    """Targets per priority name from their JSON form (seconds), checked."""
    if not isinstance(targets, Mapping):
        raise PolicyError(f"{where}: an object of priorities is expected")
    parsed = {}
    for priority, by_kind in targets.items():
        if priority not in PRIORITIES:
            raise PolicyError(f"{where}: unknown priority {priority!r} (one of {list(PRIORITIES)})")
        if not isinstance(by_kind, Mapping):
            raise PolicyError(f"{where}.{priority}: an object of targets is expected")
        values = {}
        for kind, seconds in by_kind.items():
            if kind not in SLA_KINDS:
                raise PolicyError(f"{where}.{priority}: unknown target {kind!r}")
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
                raise PolicyError(f"{where}.{priority}.{kind}: a whole number of seconds > 0")
            values[kind] = timedelta(seconds=seconds)
        parsed[priority] = Targets(**values)
    return parsed


def targets_for(
    targets: Mapping[str, Mapping[str, int]],
    channel_targets: Mapping[str, Mapping[str, Mapping[str, int]]],
    priority: int,
    channel: str,
) -> Targets:
    """The targets for a priority on a channel: the channel's own where it has them, else the
    policy's; a priority the policy does not name takes the nearest lower one it does, then
    normal."""
    for table in (channel_targets.get(channel), targets):
        if not table:
            continue
        parsed = parse_targets(table)
        for name in _fallbacks(priority):
            if name in parsed:
                return parsed[name]
    return Targets()


def _fallbacks(priority: int) -> list[str]:
    names = [PRIORITY_NAMES[p] for p in sorted(PRIORITY_NAMES, reverse=True) if p <= priority]
    return names + (["normal"] if "normal" not in names else [])


@dataclass(frozen=True)
class ClockState:
    """What the clocks depend on in a conversation."""

    status: str
    created_at: datetime
    waiting_since: datetime | None
    first_response_at: datetime | None
    sla_paused_seconds: int
    answerable: bool  # the waiting messages need an answer (not spam, not thanks alone)


@dataclass(frozen=True)
class Clock:
    kind: str
    started_at: datetime
    due_at: datetime


def running_clocks(state: ClockState, targets: Targets, calendar: BusinessCalendar) -> list[Clock]:
    """The clocks running now, with their due times."""
    if state.status == "resolved":
        return []
    clocks = []
    if state.waiting_since is not None and state.answerable:
        kind = "first_response" if state.first_response_at is None else "next_response"
        target = targets.of(kind)
        if target is not None:
            due = calendar.add(state.waiting_since, target)
            clocks.append(Clock(kind, state.waiting_since, due))
    if targets.resolution is not None and state.status not in PAUSED_STATUSES:
        paused = timedelta(seconds=state.sla_paused_seconds)
        due = calendar.add(state.created_at, targets.resolution + paused)
        clocks.append(Clock("resolution", state.created_at, due))
    return clocks
