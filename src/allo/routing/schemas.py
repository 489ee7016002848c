"""What crosses the routing API: teams, agents, SLA policies, escalation rules, the queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from allo.routing.calendars import BusinessCalendar, CalendarError
from allo.routing.models import ESCALATION_ACTIONS, PRESENCES, SLA_KINDS, STRATEGIES
from allo.routing.sla import PolicyError, parse_targets

Seconds = dict[str, int]


class SlaPolicyIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    targets: dict[str, Seconds] = Field(
        description="Seconds of business time per priority (low, normal, high, urgent) and "
        "clock (first_response, next_response, resolution)",
        examples=[{"normal": {"first_response": 3600, "next_response": 3600}}],
    )
    channel_targets: dict[str, dict[str, Seconds]] = Field(
        default_factory=dict, description="The same, for one channel where it differs"
    )

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: dict[str, Seconds]) -> dict[str, Seconds]:
        try:
            parse_targets(value)
        except PolicyError as error:
            raise ValueError(str(error)) from error
        return value

    @field_validator("channel_targets")
    @classmethod
    def _channel_targets(
        cls, value: dict[str, dict[str, Seconds]]
    ) -> dict[str, dict[str, Seconds]]:
        for channel, targets in value.items():
            try:
                parse_targets(targets, f"channel_targets.{channel}")
            except PolicyError as error:
                raise ValueError(str(error)) from error
        return value


class SlaPolicyOut(SlaPolicyIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class TeamIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    strategy: str = Field(default="balanced", description=f"one of {', '.join(STRATEGIES)}")
    calendar: dict[str, Any] | None = Field(
        default=None,
        description='Business hours: {time_zone, hours: {mon: [["09:00", "17:00"]], …}, '
        'holidays: ["2026-12-25"]}; null: always open',
    )
    sla_policy_id: int | None = None
    inbox_ids: list[int] = Field(default_factory=list, max_length=1000)
    languages: list[str] = Field(default_factory=list, max_length=50)
    unassign_grace_seconds: int = Field(default=300, ge=0, le=86_400)
    acknowledgements: dict[str, str] = Field(
        default_factory=dict,
        description="Out-of-hours acknowledgement per language; {expected} is replaced by the "
        "expected answer time",
    )
    member_ids: list[int] = Field(default_factory=list, max_length=1000)

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"one of {', '.join(STRATEGIES)}")
        return value

    @field_validator("calendar")
    @classmethod
    def _calendar(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            return BusinessCalendar.from_json(value).to_json()
        except CalendarError as error:
            raise ValueError(str(error)) from error

    @field_validator("acknowledgements")
    @classmethod
    def _acknowledgements(cls, value: dict[str, str]) -> dict[str, str]:
        for language, message in value.items():
            if not message.strip() or len(message) > 2000:
                raise ValueError(f"{language}: 1 to 2,000 characters")
        return value


class TeamOut(TeamIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class AgentIn(BaseModel):
    presence: str | None = Field(default=None, description=f"one of {', '.join(PRESENCES)}")
    capacity: dict[str, int] | None = Field(
        default=None, description="Conversations held at once per channel kind"
    )
    skills: list[str] | None = Field(
        default=None, max_length=100, description="lang:fr, channel:x, …"
    )

    @field_validator("presence")
    @classmethod
    def _presence(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESENCES:
            raise ValueError(f"one of {', '.join(PRESENCES)}")
        return value

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        kinds = ("social", "messaging", "email", "voice")
        for kind, count in (value or {}).items():
            if kind not in kinds:
                raise ValueError(f"{kind!r}: one of {', '.join(kinds)}")
            if not 0 <= count <= 100:
                raise ValueError(f"{kind}: between 0 and 100")
        return value


class AgentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: int
    presence: str
    presence_changed_at: datetime
    capacity: dict[str, int]
    skills: list[str]
    last_assigned_at: datetime | None


class EscalationRuleIn(BaseModel):
    team_id: int | None = None
    kind: str = Field(description=f"one of {', '.join(SLA_KINDS)}")
    before_seconds: int = Field(default=0, ge=0, description="0: at the breach")
    action: str = Field(description=f"one of {', '.join(ESCALATION_ACTIONS)}")
    target_team_id: int | None = Field(default=None, description="for move_team")

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in SLA_KINDS:
            raise ValueError(f"one of {', '.join(SLA_KINDS)}")
        return value

    @field_validator("action")
    @classmethod
    def _action(cls, value: str) -> str:
        if value not in ESCALATION_ACTIONS:
            raise ValueError(f"one of {', '.join(ESCALATION_ACTIONS)}")
        return value


class EscalationRuleOut(EscalationRuleIn):
    model_config = ConfigDict(from_attributes=True)

    id: int


class QueueEntry(BaseModel):
    conversation_id: int
    assignee_id: int | None
    priority: int
    waiting_since: datetime | None
    due_at: datetime | None
    reasons: list[str] = Field(description="why it has this place in the queue")


class RoutingOut(BaseModel):
    conversation_id: int
    team_id: int | None
    assignee_id: int | None
    priority: int
    first_response_due_at: datetime | None
    next_response_due_at: datetime | None
    resolution_due_at: datetime | None
    position: int | None = Field(description="1-based place in its team's queue, if waiting")
    reasons: list[str]


class AssignIn(BaseModel):
    user_id: int | None = Field(description="null: unassign")


class TransferIn(BaseModel):
    team_id: int


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int | None
    team_id: int | None
    conversation_id: int | None
    kind: str
    text: str
    created_at: datetime
    read_at: datetime | None


class SlaReport(BaseModel):
    since: datetime
    until: datetime
    breaches: dict[str, int] = Field(description="breaches per clock kind")
    resolved_without_answer: dict[str, int] = Field(description="per reason given")
