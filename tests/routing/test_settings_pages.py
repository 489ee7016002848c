"""The routing settings page: teams with business hours written as people write them, SLA
policies in minutes, agents' presence and capacity; bad input refused, nothing half saved."""

from __future__ import annotations

import re
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import select

from allo.accounts.models import User
from allo.db.engine import Database
from allo.routing import service as routing
from allo.routing.calendars import CalendarError, week_from_text, week_to_text
from allo.routing.models import Agent, SlaPolicy, Team
from allo.routing.schemas import SlaPolicyIn, TeamIn
from tests.conftest import Tenant
from tests.web.test_sessions import make_agent, sign_in


def test_business_hours_read_and_written_as_people_write_them() -> None:
    week = week_from_text("Mon-Fri 09:00-12:00, mon-fri 13:00-17:00; sat 10:00-14:00")
    assert week["wed"] == [["09:00", "12:00"], ["13:00", "17:00"]] and "sun" not in week
    assert week_to_text(week) == "mon-fri 09:00-12:00, mon-fri 13:00-17:00, sat 10:00-14:00"
    for wrong in ("lundi 09:00-17:00", "mon-fri 9h-17h", "fri-mon 09:00-17:00"):
        with pytest.raises(CalendarError):
            week_from_text(wrong)


async def supervisor(db: Database, tenant: Tenant) -> int:
    user_id = await make_agent(db, tenant)
    async with db.transaction() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.role = "supervisor"
    return user_id


async def test_a_supervisor_sets_up_a_team_a_policy_and_an_agent(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    lead = await supervisor(db, tenant)
    token = await sign_in(client)
    policy = await client.post(
        "/settings/routing/policies",
        data={
            "csrf_token": token,
            "name": "Standard",
            "normal.first_response": "60",
            "urgent.first_response": "15",
            "normal.resolution": "1440",
        },
    )
    assert policy.headers["location"] == "/settings/routing"
    async with db.sessions() as session:
        saved = await session.scalar(select(SlaPolicy))
    assert saved is not None
    assert saved.targets == {
        "normal": {"first_response": 3600, "resolution": 86400},
        "urgent": {"first_response": 900},
    }
    team = await client.post(
        "/settings/routing/teams",
        data={
            "csrf_token": token,
            "name": "Support",
            "strategy": "round_robin",
            "time_zone": "Europe/Paris",
            "week": "mon-fri 09:00-17:00",
            "holidays": "2026-12-25",
            "sla_policy_id": str(saved.id),
            "member_ids": [str(lead)],
            "ack_fr": "Réponse vers {expected}",
        },
    )
    assert team.headers["location"] == "/settings/routing"
    presence = await client.post(
        f"/settings/routing/agents/{lead}",
        data={"csrf_token": token, "presence": "online", "capacity.messaging": "3"},
    )
    assert presence.headers["location"] == "/settings/routing"
    async with db.sessions() as session:
        stored = await session.scalar(select(Team))
        agent = await session.get(Agent, lead)
    assert stored is not None and stored.strategy == "round_robin"
    assert stored.calendar == {
        "time_zone": "Europe/Paris",
        "hours": week_from_text("mon-fri 09:00-17:00"),
        "holidays": ["2026-12-25"],
    }
    assert stored.acknowledgements == {"fr": "Réponse vers {expected}"}
    assert agent is not None and agent.presence == "online" and agent.capacity == {"messaging": 3}
    page = (await client.get("/settings/routing")).text
    assert 'value="mon-fri 09:00-17:00"' in page


async def test_bad_settings_are_refused_with_the_reason_and_nothing_saved(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await supervisor(db, tenant)
    token = await sign_in(client)
    refused = [
        await client.post(
            "/settings/routing/teams",
            data={
                "csrf_token": token,
                "name": "Support",
                "week": "mon 09:00-12:00, mon 11:00-13:00",
            },
        ),
        await client.post(
            "/settings/routing/teams",
            data={
                "csrf_token": token,
                "name": "Support",
                "time_zone": "Mars/Olympus",
                "week": "mon 09:00-12:00",
            },
        ),
        await client.post(
            "/settings/routing/policies",
            data={"csrf_token": token, "name": "Fast", "normal.first_response": "-5"},
        ),
    ]
    reasons = [unquote(answer.headers["location"]) for answer in refused]
    assert all(reason.startswith("/settings/routing?error=") for reason in reasons)
    assert "overlap" in reasons[0]
    page = (await client.get(refused[0].headers["location"])).text
    assert re.search(r"Not saved: .*overlap", page)
    async with db.sessions() as session:
        assert list(await session.scalars(select(Team))) == []
        assert list(await session.scalars(select(SlaPolicy))) == []


async def test_an_agent_sets_only_their_own_presence(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    me = await make_agent(db, tenant)
    other = await make_agent(db, tenant, "bob@brand.test")
    token = await sign_in(client)
    mine = await client.post(
        f"/settings/routing/agents/{me}",
        data={"csrf_token": token, "presence": "away", "capacity.messaging": "99"},
    )
    theirs = await client.post(
        f"/settings/routing/agents/{other}", data={"csrf_token": token, "presence": "offline"}
    )
    assert mine.headers["location"] == "/settings/routing"
    assert theirs.headers["location"].endswith("error=role")
    async with db.sessions() as session:
        agent = await session.get(Agent, me)
    assert agent is not None and agent.presence == "away" and agent.capacity == {}


async def test_saving_from_the_page_keeps_what_the_page_does_not_show(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await supervisor(db, tenant)
    async with db.transaction() as session:
        policy = await routing.save_sla_policy(
            session,
            tenant.account_id,
            SlaPolicyIn(
                name="Full",
                targets={"high": {"first_response": 600}, "normal": {"first_response": 3600}},
                channel_targets={"x": {"normal": {"first_response": 1800}}},
            ),
        )
        team, _ = await routing.save_team(
            session,
            tenant.account_id,
            TeamIn(
                name="Support",
                inbox_ids=[tenant.inbox_id],
                languages=["fr"],
                unassign_grace_seconds=120,
                acknowledgements={"de": "Wir antworten bald", "fr": "Bientôt"},
            ),
        )
    token = await sign_in(client)
    await client.post(
        "/settings/routing/teams",
        data={"csrf_token": token, "team_id": str(team.id), "name": "Support FR", "ack_fr": ""},
    )
    await client.post(
        "/settings/routing/policies",
        data={
            "csrf_token": token,
            "policy_id": str(policy.id),
            "name": "Full",
            "normal.first_response": "30",
        },
    )
    async with db.sessions() as session:
        kept = await session.get(Team, team.id)
        changed = await session.get(SlaPolicy, policy.id)
    assert kept is not None and kept.name == "Support FR"
    assert kept.inbox_ids == [tenant.inbox_id] and kept.languages == ["fr"]
    assert kept.unassign_grace_seconds == 120
    assert kept.acknowledgements == {"de": "Wir antworten bald"}
    assert changed is not None
    assert changed.targets == {"high": {"first_response": 600}, "normal": {"first_response": 1800}}
    assert changed.channel_targets == {"x": {"normal": {"first_response": 1800}}}
