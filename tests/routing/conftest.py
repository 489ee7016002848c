"""A brand with a support team on business hours, agents and an SLA policy, for routing tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from allo.accounts import service as accounts
from allo.conversations.models import Conversation
from allo.db.engine import Database
from allo.routing import service as routing
from allo.routing.schemas import AgentIn, SlaPolicyIn, TeamIn
from allo.settings import Settings
from tests.conftest import Tenant, auth, process

PARIS_WEEKDAYS = {
    "time_zone": "Europe/Paris",
    "hours": {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")},
}
TARGETS = {
    "normal": {"first_response": 1800, "next_response": 3600, "resolution": 8 * 3600},
    "urgent": {"first_response": 600, "next_response": 600},
}
# Long after any test's messages were sent: routing does not wait for triage any more.
LATER = timedelta(minutes=1)


@dataclass
class Desk:
    tenant: Tenant
    team_id: int
    policy_id: int
    agents: list[int]


async def make_desk(
    db: Database,
    tenant: Tenant,
    agents: int = 2,
    calendar: dict[str, Any] | None = None,
    strategy: str = "balanced",
    capacity: int = 2,
    acknowledgements: dict[str, str] | None = None,
) -> Desk:
    async with db.transaction() as session:
        policy = await routing.save_sla_policy(
            session, tenant.account_id, SlaPolicyIn(name="Standard", targets=TARGETS)
        )
        users = [
            (
                await accounts.create_user(
                    session,
                    tenant.account_id,
                    f"agent{i}@brand.test",
                    f"Agent {i}",
                    "agent",
                    "password-1",
                )
            ).id
            for i in range(agents)
        ]
        team, _ = await routing.save_team(
            session,
            tenant.account_id,
            TeamIn(
                name="Support",
                strategy=strategy,
                calendar=calendar,
                sla_policy_id=policy.id,
                member_ids=users,
                acknowledgements=acknowledgements or {},
            ),
        )
        for user in users:
            await routing.save_agent(
                session,
                tenant.account_id,
                user,
                AgentIn(presence="online", capacity={"messaging": capacity}),
                datetime.now(UTC),
            )
        return Desk(tenant, team.id, policy.id, users)


@pytest.fixture
async def desk(db: Database, tenant: Tenant) -> Desk:
    return await make_desk(db, tenant)


async def push(
    client: httpx.AsyncClient,
    tenant: Tenant,
    external_id: str,
    text: str = "Bonjour, ma commande n'est pas arrivée, pouvez-vous m'aider ?",
    contact: str = "c1",
    sent_at: datetime | None = None,
    direction: str = "in",
) -> None:
    body: dict[str, Any] = {
        "external_id": external_id,
        "contact": {"id": contact},
        "text": text,
        "direction": direction,
    }
    if sent_at is not None:
        body["sent_at"] = sent_at.isoformat()
    response = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages", json=body, headers=auth(tenant.token)
    )
    assert response.status_code == 202, response.text


async def arrive(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    tenant: Tenant,
    *messages: tuple[str, str],
    sent_at: datetime | None = None,
) -> None:
    """Customer messages (external id, contact) stored by intake."""
    for external_id, contact in messages:
        await push(client, tenant, external_id, contact=contact, sent_at=sent_at)
    await process(db, settings)


async def conversations(db: Database) -> list[Conversation]:
    async with db.sessions() as session:
        return list(await session.scalars(select(Conversation).order_by(Conversation.id)))


async def route(db: Database, at: datetime | None = None) -> routing.RouteReport:
    return await routing.route_pending(db, (at or datetime.now(UTC)) + LATER)
