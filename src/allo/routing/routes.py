"""Routing in the API: teams, agents, SLA policies, escalation rules, queues and reports."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allo.accounts.models import MANAGERS, User
from allo.conversations.routes import Openable
from allo.conversations.schemas import ConversationOut
from allo.jobs import defer_routing
from allo.routing import service as routing
from allo.routing.calendars import CalendarError, week_from_text, week_to_text
from allo.routing.models import STRATEGIES, SlaPolicy, Team
from allo.routing.models import Agent as AgentRow
from allo.routing.schemas import (
    AgentIn,
    AgentOut,
    AssignIn,
    EscalationRuleIn,
    EscalationRuleOut,
    NotificationOut,
    QueueEntry,
    RoutingOut,
    SlaPolicyIn,
    SlaPolicyOut,
    SlaReport,
    TeamIn,
    TeamOut,
    TransferIn,
)
from allo.web.auth import Agent, Owner
from allo.web.errors import ApiError
from allo.web.i18n import render
from allo.web.state import State

router = APIRouter(prefix="/api/v1", tags=["routing"])


@asynccontextmanager
async def _writing(state: State) -> AsyncIterator[AsyncSession]:
    """A transaction whose routing errors become API errors."""
    try:
        async with state.db.transaction() as session:
            yield session
    except routing.RoutingError as error:
        code = "not_found" if error.status == 404 else "invalid"
        if error.status == 409:
            code = "conflict"
        raise ApiError(error.status, code, str(error), error.field) from None


def _team_out(team: Team, members: list[int]) -> TeamOut:
    return TeamOut.model_validate(
        {
            **{name: getattr(team, name) for name in TeamIn.model_fields if name != "member_ids"},
            "id": team.id,
            "member_ids": members,
        }
    )


@router.get("/sla-policies", response_model=list[SlaPolicyOut], summary="SLA policies")
async def list_policies(owner: Owner, state: State) -> list[SlaPolicyOut]:
    async with state.db.sessions() as session:
        policies = await routing.list_sla_policies(session, owner.account_id)
    return [SlaPolicyOut.model_validate(policy) for policy in policies]


@router.post(
    "/sla-policies", response_model=SlaPolicyOut, status_code=201, summary="Create a policy"
)
async def create_policy(body: SlaPolicyIn, owner: Owner, state: State) -> SlaPolicyOut:
    async with _writing(state) as session:
        policy = await routing.save_sla_policy(session, owner.account_id, body)
        return SlaPolicyOut.model_validate(policy)


@router.put(
    "/sla-policies/{policy_id}",
    response_model=SlaPolicyOut,
    summary="Change a policy (running clocks follow it)",
)
async def update_policy(
    policy_id: int, body: SlaPolicyIn, owner: Owner, state: State
) -> SlaPolicyOut:
    async with _writing(state) as session:
        policy = await routing.save_sla_policy(session, owner.account_id, body, policy_id)
        out = SlaPolicyOut.model_validate(policy)
    await defer_routing()
    return out


@router.get("/teams", response_model=list[TeamOut], summary="Teams")
async def list_teams(owner: Owner, state: State) -> list[TeamOut]:
    async with state.db.sessions() as session:
        teams = await routing.list_teams(session, owner.account_id)
    return [_team_out(team, members) for team, members in teams]


@router.post("/teams", response_model=TeamOut, status_code=201, summary="Create a team")
async def create_team(body: TeamIn, owner: Owner, state: State) -> TeamOut:
    async with _writing(state) as session:
        team, members = await routing.save_team(session, owner.account_id, body)
        out = _team_out(team, members)
    await defer_routing()
    return out


@router.put("/teams/{team_id}", response_model=TeamOut, summary="Change a team")
async def update_team(team_id: int, body: TeamIn, owner: Owner, state: State) -> TeamOut:
    async with _writing(state) as session:
        team, members = await routing.save_team(session, owner.account_id, body, team_id)
        out = _team_out(team, members)
    await defer_routing()
    return out


@router.get(
    "/teams/{team_id}/queue",
    response_model=list[QueueEntry],
    summary="The team's waiting conversations, first to answer first, with the reasons",
)
async def team_queue(team_id: int, owner: Owner, state: State) -> list[QueueEntry]:
    async with _writing(state) as session:
        return await routing.queue_of(session, owner.account_id, team_id, datetime.now(UTC))


@router.put(
    "/agents/{user_id}", response_model=AgentOut, summary="An agent's presence, capacity, skills"
)
async def update_agent(user_id: int, body: AgentIn, owner: Owner, state: State) -> AgentOut:
    async with _writing(state) as session:
        agent = await routing.save_agent(
            session, owner.account_id, user_id, body, datetime.now(UTC)
        )
        out = AgentOut.model_validate(agent)
    await defer_routing()
    return out


@router.get("/escalation-rules", response_model=list[EscalationRuleOut], summary="Escalation rules")
async def list_rules(owner: Owner, state: State) -> list[EscalationRuleOut]:
    async with state.db.sessions() as session:
        rules = await routing.list_escalation_rules(session, owner.account_id)
    return [EscalationRuleOut.model_validate(rule) for rule in rules]


@router.post(
    "/escalation-rules",
    response_model=EscalationRuleOut,
    status_code=201,
    summary="Notify, raise priority, reassign or move team before or at a breach",
)
async def create_rule(body: EscalationRuleIn, owner: Owner, state: State) -> EscalationRuleOut:
    async with _writing(state) as session:
        rule = await routing.save_escalation_rule(session, owner.account_id, body)
        out = EscalationRuleOut.model_validate(rule)
    await defer_routing()
    return out


@router.get(
    "/conversations/{conversation_id}/routing",
    response_model=RoutingOut,
    summary="Its team, due times and place in the queue: why it is where it is",
)
async def conversation_routing(conversation_id: int, owner: Owner, state: State) -> RoutingOut:
    async with _writing(state) as session:
        return await routing.routing_of(
            session, owner.account_id, conversation_id, datetime.now(UTC)
        )


@router.post(
    "/conversations/{conversation_id}/assign",
    response_model=ConversationOut,
    summary="Assign to a person (or unassign with null)",
)
async def assign(
    conversation_id: int, body: AssignIn, owner: Owner, state: State
) -> ConversationOut:
    async with _writing(state) as session:
        conversation = await routing.assign_by_hand(
            session, owner.account_id, conversation_id, body.user_id
        )
        return ConversationOut.model_validate(conversation)


@router.post(
    "/conversations/{conversation_id}/transfer",
    response_model=ConversationOut,
    summary="Move to another team",
)
async def transfer(
    conversation_id: int, body: TransferIn, owner: Owner, state: State
) -> ConversationOut:
    async with _writing(state) as session:
        conversation = await routing.transfer(
            session, owner.account_id, conversation_id, body.team_id
        )
        out = ConversationOut.model_validate(conversation)
    await defer_routing()
    return out


@router.get("/notifications", response_model=list[NotificationOut], summary="Notifications")
async def notifications(owner: Owner, state: State) -> list[NotificationOut]:
    async with state.db.sessions() as session:
        found = await routing.list_notifications(session, owner.account_id)
    return [NotificationOut.model_validate(one) for one in found]


@router.get(
    "/reports/sla",
    response_model=SlaReport,
    summary="Breaches per clock, and conversations resolved without an answer per reason",
)
async def sla_report(
    owner: Owner,
    state: State,
    since: datetime | None = None,
    until: datetime | None = None,
) -> SlaReport:
    end = until or datetime.now(UTC)
    start = since or end - timedelta(days=7)
    if start.tzinfo is None or end.tzinfo is None:
        raise ApiError(
            422, "invalid", "times need a time zone", "since" if start.tzinfo is None else "until"
        )
    async with state.db.sessions() as session:
        return await routing.sla_report(session, owner.account_id, start, end)


pages = APIRouter(include_in_schema=False)


@pages.post("/conversations/{conversation_id}/assign", response_model=None)
async def assign_to_me(conversation_id: Openable, agent: Agent, state: State) -> RedirectResponse:
    """The conversation page's "Assign to me"."""
    try:
        async with state.db.transaction() as session:
            await routing.assign_by_hand(session, agent.account_id, conversation_id, agent.user_id)
    except routing.RoutingError:
        return RedirectResponse("/inbox", status_code=303)
    return RedirectResponse(f"/conversations/{conversation_id}", status_code=303)


@pages.post("/conversations/{conversation_id}/transfer", response_model=None)
async def transfer_page(
    conversation_id: Openable, agent: Agent, state: State, team_id: Annotated[int, Form()]
) -> RedirectResponse:
    """The conversation page's "Move to team"."""
    try:
        async with state.db.transaction() as session:
            await routing.transfer(session, agent.account_id, conversation_id, team_id)
    except routing.RoutingError:
        return RedirectResponse("/inbox", status_code=303)
    await defer_routing()
    return RedirectResponse(f"/conversations/{conversation_id}", status_code=303)


CLOCKS = ("first_response", "next_response", "resolution")
PRIORITY_NAMES = ("normal", "urgent")


@pages.get("/settings/routing", response_class=HTMLResponse)
async def routing_settings(request: Request, agent: Agent, state: State) -> HTMLResponse:
    """Teams (members, business hours, policy, out-of-hours texts), SLA policies, agents'
    presence and capacity."""
    async with state.db.sessions() as session:
        teams = await routing.list_teams(session, agent.account_id)
        policies = await routing.list_sla_policies(session, agent.account_id)
        people = list(
            await session.scalars(
                select(User).where(User.account_id == agent.account_id).order_by(User.name)
            )
        )
        agents = {
            row.user_id: row
            for row in await session.scalars(
                select(AgentRow).where(AgentRow.account_id == agent.account_id)
            )
        }
    context = {
        "agent": agent,
        "section": "settings",
        "teams": [(team, members, _team_hours(team)) for team, members in teams],
        "policies": policies,
        "people": people,
        "agents": agents,
        "clocks": CLOCKS,
        "priorities": PRIORITY_NAMES,
        "strategies": STRATEGIES,
        "may_change": agent.role in MANAGERS,
        "error": request.query_params.get("error"),
    }
    return render(request, "routing.html", agent.language, context)


def _team_hours(team: Team) -> dict[str, str]:
    calendar = team.calendar or {}
    return {
        "time_zone": calendar.get("time_zone", "UTC"),
        "week": week_to_text(calendar.get("hours", {})),
        "holidays": ", ".join(calendar.get("holidays", [])),
    }


def _refused(problem: str) -> RedirectResponse:
    return RedirectResponse(f"/settings/routing?error={quote(problem[:300])}", status_code=303)


@pages.post("/settings/routing/teams", response_model=None)
async def save_team_page(
    request: Request,
    agent: Agent,
    state: State,
    name: Annotated[str, Form(max_length=200)],
    team_id: Annotated[int | None, Form()] = None,
    strategy: Annotated[str, Form()] = "balanced",
    time_zone: Annotated[str, Form(max_length=64)] = "",
    week: Annotated[str, Form(max_length=2000)] = "",
    holidays: Annotated[str, Form(max_length=4000)] = "",
    sla_policy_id: Annotated[str, Form()] = "",
    ack_fr: Annotated[str, Form(max_length=2000)] = "",
    ack_en: Annotated[str, Form(max_length=2000)] = "",
) -> RedirectResponse:
    if agent.role not in MANAGERS:
        return _refused("role")
    chosen = (await request.form()).getlist("member_ids")
    members = [int(str(value)) for value in chosen if NUMBER.fullmatch(str(value))]
    # What the page does not show (inboxes, languages, grace, other languages' texts) is kept.
    kept = await _team_fields_not_shown(state, agent.account_id, team_id)
    if kept is None:
        return _refused(f"no team {team_id}")
    acknowledgements = dict(kept.pop("acknowledgements"))
    for language, text in (("fr", ack_fr), ("en", ack_en)):
        if text.strip():
            acknowledgements[language] = text.strip()
        else:
            acknowledgements.pop(language, None)
    try:
        calendar = (
            {
                "time_zone": time_zone.strip() or "UTC",
                "hours": week_from_text(week),
                "holidays": [day.strip() for day in holidays.split(",") if day.strip()],
            }
            if week.strip()
            else None
        )
        data = TeamIn(
            name=name,
            strategy=strategy,
            calendar=calendar,
            sla_policy_id=int(sla_policy_id) if NUMBER.fullmatch(sla_policy_id) else None,
            acknowledgements=acknowledgements,
            member_ids=members,
            **kept,
        )
        async with state.db.transaction() as session:
            await routing.save_team(session, agent.account_id, data, team_id)
    except (ValidationError, CalendarError, routing.RoutingError) as error:
        return _refused(_first_problem(error))
    await defer_routing()
    return RedirectResponse("/settings/routing", status_code=303)


@pages.post("/settings/routing/policies", response_model=None)
async def save_policy_page(
    request: Request,
    agent: Agent,
    state: State,
    name: Annotated[str, Form(max_length=200)],
    policy_id: Annotated[int | None, Form()] = None,
) -> RedirectResponse:
    """Targets in minutes, per priority and clock (an empty field: no target)."""
    if agent.role not in MANAGERS:
        return _refused("role")
    form = await request.form()
    stored = await _policy(state, agent.account_id, policy_id)
    if policy_id is not None and stored is None:
        return _refused(f"no SLA policy {policy_id}")
    # Priorities and channels the page does not show keep their targets.
    targets = {key: dict(value) for key, value in (stored.targets if stored else {}).items()}
    for priority_name in PRIORITY_NAMES:
        shown = targets.setdefault(priority_name, {})
        for clock in CLOCKS:
            minutes = str(form.get(f"{priority_name}.{clock}", "")).strip()
            if not minutes:
                shown.pop(clock, None)
            elif not NUMBER.fullmatch(minutes) or int(minutes) == 0:
                return _refused(f"{priority_name} {clock}: a whole number of minutes")
            else:
                shown[clock] = int(minutes) * 60
        if not shown:
            del targets[priority_name]
    channel_targets = dict(stored.channel_targets) if stored else {}
    try:
        data = SlaPolicyIn(name=name, targets=targets, channel_targets=channel_targets)
        async with state.db.transaction() as session:
            await routing.save_sla_policy(session, agent.account_id, data, policy_id)
    except (ValidationError, routing.RoutingError) as error:
        return _refused(_first_problem(error))
    await defer_routing()
    return RedirectResponse("/settings/routing", status_code=303)


@pages.post("/settings/routing/agents/{user_id}", response_model=None)
async def save_agent_page(
    request: Request,
    user_id: int,
    agent: Agent,
    state: State,
    presence: Annotated[str, Form()] = "offline",
) -> RedirectResponse:
    """An agent's presence (anyone for themselves, supervisors for everyone) and capacity."""
    if agent.role not in MANAGERS and user_id != agent.user_id:
        return _refused("role")
    form = await request.form()
    capacity = {
        kind: int(str(form.get(f"capacity.{kind}")))
        for kind in routing.KINDS
        if NUMBER.fullmatch(str(form.get(f"capacity.{kind}", "")))
    }
    try:
        data = AgentIn(
            presence=presence,
            capacity=capacity if agent.role in MANAGERS else None,
        )
        async with state.db.transaction() as session:
            await routing.save_agent(session, agent.account_id, user_id, data, datetime.now(UTC))
    except (ValidationError, routing.RoutingError) as error:
        return _refused(_first_problem(error))
    await defer_routing()
    return RedirectResponse("/settings/routing", status_code=303)


NUMBER = re.compile(r"\d{1,9}")


async def _policy(state: State, account_id: int, policy_id: int | None) -> SlaPolicy | None:
    if policy_id is None:
        return None
    async with state.db.sessions() as session:
        policy = await session.get(SlaPolicy, policy_id)
    return policy if policy is not None and policy.account_id == account_id else None


async def _team_fields_not_shown(
    state: State, account_id: int, team_id: int | None
) -> dict[str, Any] | None:
    """The stored values of a team's fields the settings page does not edit (empty for a new
    team); None when the team is not the account's."""
    if team_id is None:
        return {"acknowledgements": {}}
    async with state.db.sessions() as session:
        team = await session.get(Team, team_id)
    if team is None or team.account_id != account_id:
        return None
    return {
        "inbox_ids": list(team.inbox_ids),
        "languages": list(team.languages),
        "unassign_grace_seconds": team.unassign_grace_seconds,
        "acknowledgements": dict(team.acknowledgements),
    }


def _first_problem(error: Exception) -> str:
    if isinstance(error, ValidationError) and error.errors():
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        return f"{place}: {first['msg']}" if place else str(first["msg"])
    return str(error)
