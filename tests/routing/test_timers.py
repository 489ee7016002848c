"""SLA timers: a breach is recorded at its due second, once, and escalations act with it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from allo.conversations.models import Conversation
from allo.db.engine import Database
from allo.routing import service as routing
from allo.routing import timers
from allo.routing.models import Notification, SlaEvent
from allo.routing.schemas import EscalationRuleIn, SlaPolicyIn, TeamIn
from allo.settings import Settings
from tests.conftest import Tenant, process
from tests.routing.conftest import Desk, arrive, conversations, push, route


class FakeClock(timers.Clock):
    """Time that passes only when the loop sleeps."""

    def __init__(self, start: datetime) -> None:
        self.moment = start

    def now(self) -> datetime:
        return self.moment

    async def sleep(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)
        await asyncio.sleep(0)


async def events(db: Database, event: str | None = None) -> list[SlaEvent]:
    async with db.sessions() as session:
        query = select(SlaEvent).order_by(SlaEvent.id)
        if event is not None:
            query = query.where(SlaEvent.event == event)
        return list(await session.scalars(query))


async def add_rule(db: Database, tenant: Tenant, **rule: object) -> None:
    async with db.transaction() as session:
        await routing.save_escalation_rule(
            session, tenant.account_id, EscalationRuleIn.model_validate(rule)
        )


async def test_a_breach_is_detected_at_its_due_second_with_a_fake_clock(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    start = datetime.now(UTC)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=start)
    await route(db, start)
    (conversation,) = await conversations(db)
    due = conversation.first_response_due_at
    assert due == start + timedelta(minutes=30)

    loop = timers.TimerLoop(db, FakeClock(start + timedelta(minutes=2)))
    for _ in range(2000):
        await loop.step()
        if await events(db, "breached"):
            break
    (breach,) = await events(db, "breached")
    assert breach.kind == "first_response" and breach.due_at == due
    assert timedelta(0) <= breach.at - due <= timedelta(seconds=2)


async def test_a_breach_is_detected_within_two_seconds_in_real_time(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    async with db.transaction() as session:
        await routing.save_sla_policy(
            session,
            tenant.account_id,
            SlaPolicyIn(name="Standard", targets={"normal": {"first_response": 3}}),
            desk.policy_id,
        )
    start = datetime.now(UTC)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=start)
    await routing.route_pending(db, start + routing.TRIAGE_GRACE * 2)
    (conversation,) = await conversations(db)
    assert conversation.first_response_due_at == start + timedelta(seconds=3)

    loop = timers.TimerLoop(db)
    running = asyncio.create_task(loop.run())
    try:
        for _ in range(100):
            if await events(db, "breached"):
                break
            await asyncio.sleep(0.1)
    finally:
        loop.stop()
        await asyncio.wait_for(running, 5)
    (breach,) = await events(db, "breached")
    assert timedelta(0) <= breach.at - breach.due_at < timedelta(seconds=2)


async def test_an_answered_conversation_breaches_nothing_and_each_clock_breaches_once(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    start = datetime.now(UTC) - timedelta(hours=2)
    await arrive(client, db, settings, tenant, ("m1", "c1"), ("m2", "c2"), sent_at=start)
    await route(db)
    await push(client, tenant, "r1", "Voilà !", contact="c1", sent_at=start, direction="out")
    await process(db, settings)
    await route(db)

    now = datetime.now(UTC)
    fired = await asyncio.gather(timers.fire_due(db, now), timers.fire_due(db, now))
    assert sum(fired) >= 1
    assert await timers.fire_due(db, now) == 0
    breaches = await events(db, "breached")
    answered, waiting = await conversations(db)
    assert [(b.conversation_id, b.kind) for b in breaches] == [(waiting.id, "first_response")]
    assert answered.first_response_due_at is None


async def test_escalation_notifies_before_the_breach_and_raises_priority_at_it(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await add_rule(db, tenant, kind="first_response", before_seconds=600, action="notify")
    await add_rule(db, tenant, kind="first_response", action="raise_priority")
    start = datetime.now(UTC)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=start)
    await route(db, start)

    await timers.fire_due(db, start + timedelta(minutes=21))
    assert [e.event for e in await events(db)] == ["warned", "escalated"]
    async with db.sessions() as session:
        (note,) = list(await session.scalars(select(Notification)))
    (conversation,) = await conversations(db)
    assert note.user_id == conversation.assignee_id and "about to breach" in note.text

    await timers.fire_due(db, start + timedelta(minutes=31))
    (conversation,) = await conversations(db)
    assert conversation.priority == 1
    assert [e.event for e in await events(db)][-2:] == ["breached", "escalated"]


async def test_escalation_can_move_a_conversation_to_another_team(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    async with db.transaction() as session:
        seniors, _ = await routing.save_team(
            session, tenant.account_id, TeamIn(name="Seniors", inbox_ids=[tenant.inbox_id])
        )
    # The new team claims the inbox, but the conversation was routed to Support first.
    start = datetime.now(UTC)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=start)
    async with db.transaction() as session:
        conversation = (await session.scalars(select(Conversation))).one()
        conversation.team_id = desk.team_id
    await route(db, start)
    await add_rule(db, tenant, kind="first_response", action="move_team", target_team_id=seniors.id)
    await route(db, start)
    await timers.fire_due(db, start + timedelta(minutes=31))
    (conversation,) = await conversations(db)
    assert conversation.team_id == seniors.id and conversation.assignee_id is None


async def test_a_move_team_rule_needs_its_target(db: Database, tenant: Tenant, desk: Desk) -> None:
    with pytest.raises(routing.RoutingError, match="target_team_id"):
        await add_rule(db, tenant, kind="first_response", action="move_team")


async def test_escalation_can_reassign_to_another_agent_at_the_breach(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await add_rule(db, tenant, kind="first_response", action="reassign")
    start = datetime.now(UTC)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=start)
    await route(db, start)
    (conversation,) = await conversations(db)
    first_agent = conversation.assignee_id
    assert first_agent in desk.agents

    await timers.fire_due(db, start + timedelta(minutes=31))
    (conversation,) = await conversations(db)
    assert conversation.assignee_id in desk.agents and conversation.assignee_id != first_agent
    escalated = (await events(db, "escalated"))[0]
    assert escalated.details["from"] == first_agent


async def test_a_warning_is_given_once_per_clock_even_when_the_conversation_is_routed_again(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await add_rule(db, tenant, kind="first_response", before_seconds=600, action="notify")
    start = datetime.now(UTC)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=start)
    await route(db, start)
    await timers.fire_due(db, start + timedelta(minutes=21))
    async with db.transaction() as session:
        await session.execute(update(Conversation).values(routed_at=None))
    await routing.route_pending(db, start + timedelta(minutes=22))
    await timers.fire_due(db, start + timedelta(minutes=23))
    assert [e.event for e in await events(db)] == ["warned", "escalated"]
