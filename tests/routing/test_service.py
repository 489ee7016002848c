"""Routing stored conversations: clocks on business hours, the queue, assignment within
capacity, out-of-hours acknowledgements, and the faults the issue names."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select, update

from allo.contacts.models import Contact
from allo.conversations import service as conversations_service
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.routing import service as routing
from allo.routing.models import SlaTimer, Team
from allo.routing.priority import order
from allo.routing.schemas import AgentIn, SlaPolicyIn
from allo.routing.service import Queued
from allo.settings import Settings
from allo.triage import service as triage
from allo.triage.assessor import Assessor
from tests.conftest import Tenant, process
from tests.routing.conftest import (
    PARIS_WEEKDAYS,
    TARGETS,
    Desk,
    arrive,
    conversations,
    make_desk,
    push,
    route,
)

FRIDAY_1645_PARIS = datetime(2026, 1, 16, 15, 45, tzinfo=UTC)


async def timers(db: Database) -> list[SlaTimer]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(SlaTimer).where(SlaTimer.done_at.is_(None)).order_by(SlaTimer.id)
        )
        return list(rows.all())


async def test_a_friday_1645_message_with_30_minutes_in_9_to_17_is_due_monday_0915(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_desk(db, tenant, calendar=PARIS_WEEKDAYS)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=FRIDAY_1645_PARIS)
    await route(db)

    (conversation,) = await conversations(db)
    monday_0915_paris = datetime(2026, 1, 19, 8, 15, tzinfo=UTC)
    assert conversation.first_response_due_at == monday_0915_paris
    assert conversation.next_response_due_at is None
    breach = [t for t in await timers(db) if t.kind == "first_response"]
    assert [(t.action, t.fires_at) for t in breach] == [("breach", monday_0915_paris)]


async def test_an_answer_stops_the_first_response_clock_and_a_new_message_starts_the_next(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=10)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=start)
    await route(db)
    await push(
        client,
        tenant,
        "r1",
        "Nous regardons.",
        sent_at=start + timedelta(minutes=5),
        direction="out",
    )
    await process(db, settings)
    await route(db)
    (conversation,) = await conversations(db)
    assert conversation.first_response_due_at is None
    assert conversation.next_response_due_at is None
    assert {t.kind for t in await timers(db)} == {"resolution"}

    await arrive(client, db, settings, tenant, ("m2", "c1"), sent_at=start + timedelta(minutes=8))
    await route(db)
    (conversation,) = await conversations(db)
    assert conversation.next_response_due_at == start + timedelta(minutes=8, hours=1)
    assert {t.kind for t in await timers(db)} == {"next_response", "resolution"}


async def test_spam_starts_no_response_clock_and_is_not_given_to_an_agent(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await push(
        client,
        tenant,
        "s1",
        "CHECK OUT my channel and subscribe!!! free iphone giveaway http://spam.example",
        contact="spammer",
    )
    await push(client, tenant, "u1", "Mon colis est perdu, je veux être remboursé", contact="c2")
    await process(db, settings)
    await triage.triage_pending(db, Assessor())
    await route(db)

    spam, customer = await conversations(db)
    assert spam.waiting_triage is not None and not spam.waiting_triage["answerable"]
    assert spam.first_response_due_at is None and spam.assignee_id is None
    assert customer.first_response_due_at is not None and customer.assignee_id in desk.agents


async def test_routing_waits_briefly_for_triage_then_goes_without_it(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    waiting = await routing.route_pending(db, datetime.now(UTC))
    assert waiting.routed == 0
    later = await routing.route_pending(db, datetime.now(UTC) + routing.TRIAGE_GRACE * 2)
    assert later.routed == 1 and later.assigned == 1


async def test_routing_steps_aside_for_intake_batch_by_batch_and_leaves_the_rest_pending(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    count = routing.ROUTE_BATCH + 5
    await arrive(client, db, settings, tenant, *[(f"m{i}", f"c{i}") for i in range(count)])
    later = datetime.now(UTC) + routing.TRIAGE_GRACE * 2
    looks = 0

    async def intake_waits_after_one_batch() -> bool:
        nonlocal looks
        looks += 1
        return looks > 1

    first = await routing.route_pending(db, later, step_aside=intake_waits_after_one_batch)
    assert first.routed == routing.ROUTE_BATCH and first.assigned > 0
    async with db.sessions() as session:
        assert await routing.pending_exists(session)
    rest = await routing.route_pending(db, later)
    assert rest.routed == 5
    async with db.sessions() as session:
        assert not await routing.pending_exists(session)


async def test_agents_get_conversations_balanced_and_never_past_their_capacity(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await arrive(client, db, settings, tenant, *[(f"m{i}", f"c{i}") for i in range(6)])
    report = await route(db)

    assert (report.routed, report.assigned) == (6, 4)  # two agents, two places each
    held = [c.assignee_id for c in await conversations(db)]
    assert sorted(held.count(agent) for agent in desk.agents) == [2, 2]
    assert held.count(None) == 2


async def test_an_offline_agent_gets_nothing_and_coming_online_fills_their_places(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    async with db.transaction() as session:
        for agent in desk.agents:
            await routing.save_agent(
                session, tenant.account_id, agent, AgentIn(presence="offline"), datetime.now(UTC)
            )
    await arrive(client, db, settings, tenant, ("m1", "c1"), ("m2", "c2"))
    assert (await route(db)).assigned == 0

    async with db.transaction() as session:
        await routing.save_agent(
            session,
            tenant.account_id,
            desk.agents[1],
            AgentIn(presence="online"),
            datetime.now(UTC),
        )
    assert await routing.fill_all(db, datetime.now(UTC)) == 2
    assert {c.assignee_id for c in await conversations(db)} == {desk.agents[1]}


async def test_the_queue_gives_the_urgent_conversation_to_the_first_free_place(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    desk = await make_desk(db, tenant, agents=1, capacity=1)
    early = datetime.now(UTC) - timedelta(minutes=20)
    await arrive(client, db, settings, tenant, ("m1", "c1"), ("m2", "c2"), sent_at=early)
    await push(client, tenant, "m3", "Il y a une fuite de gaz dans votre magasin !", contact="c3")
    await process(db, settings)
    await triage.triage_pending(db, Assessor())
    await route(db)

    held = {c.contact_id: c for c in await conversations(db) if c.assignee_id is not None}
    assert len(held) == 1
    (urgent,) = held.values()
    assert urgent.priority == 2 and urgent.assignee_id == desk.agents[0]
    async with db.sessions() as session:
        queue = await routing.queue_of(session, tenant.account_id, desk.team_id, datetime.now(UTC))
    assert queue[0].conversation_id == urgent.id
    assert any(reason.startswith("urgent") for reason in queue[0].reasons)


async def test_two_workers_filling_at_once_never_assign_past_capacity(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    desk = await make_desk(db, tenant, agents=1, capacity=1)
    await arrive(client, db, settings, tenant, *[(f"m{i}", f"c{i}") for i in range(5)])
    await route(db)
    async with db.transaction() as session:
        await session.execute(update(Conversation).values(assignee_id=None))

    results = await asyncio.gather(
        *[routing.fill(db, desk.team_id, datetime.now(UTC)) for _ in range(4)]
    )
    assert sum(results) == 1
    assert [c.assignee_id for c in await conversations(db)].count(desk.agents[0]) == 1


async def test_two_workers_routing_at_once_route_each_conversation_once(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await arrive(client, db, settings, tenant, *[(f"m{i}", f"c{i}") for i in range(8)])
    reports = await asyncio.gather(route(db), route(db))

    assert sum(r.routed for r in reports) == 8
    async with db.sessions() as session:
        breach_timers = await session.scalar(
            select(func.count()).where(
                SlaTimer.action == "breach", SlaTimer.kind == "first_response"
            )
        )
    assert breach_timers == 8
    held = [c.assignee_id for c in await conversations(db)]
    assert all(held.count(agent) <= 2 for agent in desk.agents)


async def test_more_conversations_than_a_batch_are_each_routed_once_with_their_own_facts(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    count = routing.ROUTE_BATCH + 5
    await arrive(client, db, settings, tenant, *[(f"m{i}", f"c{i}") for i in range(count)])
    async with db.transaction() as session:
        rows = (await session.scalars(select(Conversation).order_by(Conversation.id))).all()
        vip = await session.get(Contact, rows[3].contact_id)
        not_quite = await session.get(Contact, rows[4].contact_id)
        assert vip is not None and not_quite is not None
        vip.attributes = {"vip": True}
        not_quite.attributes = {"vip": "yes"}  # not a boolean: not a VIP, and no failure

    report = await route(db)
    # Read again, with every conversation waiting anew: its timers are replaced, not added.
    async with db.transaction() as session:
        await session.execute(update(Conversation).values(routed_at=None))
    again = await route(db)

    assert (report.routed, again.routed, report.failed) == (count, count, 0)
    routed = await conversations(db)
    assert all(c.routed_at is not None and c.team_id == desk.team_id for c in routed)
    assert [c.waiting_triage["vip"] for c in routed[:6]] == [
        False,
        False,
        False,
        True,
        False,
        False,
    ]
    assert all(c.first_response_due_at is not None for c in routed)
    breaches = [t.conversation_id for t in await timers(db) if t.kind == "first_response"]
    assert sorted(breaches) == [c.id for c in routed]


async def test_a_conversation_that_cannot_be_routed_leaves_the_rest_of_its_batch_routed(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await arrive(client, db, settings, tenant, *[(f"m{i}", f"c{i}") for i in range(6)])
    async with db.transaction() as session:
        # A team whose stored calendar names a time zone that does not exist.
        broken = Team(
            account_id=tenant.account_id,
            name="Broken hours",
            calendar={"time_zone": "Nowhere/Void", "hours": {}},
        )
        session.add(broken)
        await session.flush()
        third = (await session.scalars(select(Conversation.id).order_by(Conversation.id))).all()[2]
        await session.execute(
            update(Conversation).where(Conversation.id == third).values(team_id=broken.id)
        )

    report = await route(db)

    assert (report.routed, report.failed) == (5, 1)
    routed = await conversations(db)
    assert [c.routed_at is None for c in routed] == [False, False, True, False, False, False]
    assert len([t for t in await timers(db) if t.kind == "first_response"]) == 5


async def test_an_agent_removed_while_holding_conversations_gives_them_back(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await arrive(client, db, settings, tenant, ("m1", "c1"), ("m2", "c2"))
    await route(db)
    removed = desk.agents[0]
    async with db.transaction() as session:
        released = await routing.remove_agent(session, tenant.account_id, removed)
    assert released == 1
    report = await route(db)
    assert report.routed == 1
    assert {c.assignee_id for c in await conversations(db)} == {desk.agents[1]}


async def test_an_offline_agent_keeps_conversations_for_the_grace_period_only(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    await route(db)
    (conversation,) = await conversations(db)
    holder = conversation.assignee_id
    assert holder is not None
    left = datetime.now(UTC)
    async with db.transaction() as session:
        await routing.save_agent(
            session, tenant.account_id, holder, AgentIn(presence="offline"), left
        )
        assert await routing.release_offline_agents(session, left + timedelta(seconds=299)) == 0
        assert await routing.release_offline_agents(session, left + timedelta(seconds=301)) == 1
    (conversation,) = await conversations(db)
    assert conversation.assignee_id is None and conversation.routed_at is None


async def test_a_policy_changed_while_clocks_run_moves_their_due_times_from_their_start(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=5)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=start)
    await route(db)
    (conversation,) = await conversations(db)
    assert conversation.first_response_due_at == start + timedelta(minutes=30)

    tighter = {**TARGETS, "normal": {**TARGETS["normal"], "first_response": 600}}
    async with db.transaction() as session:
        await routing.save_sla_policy(
            session,
            tenant.account_id,
            SlaPolicyIn(name="Standard", targets=tighter),
            desk.policy_id,
        )
    await route(db)
    (conversation,) = await conversations(db)
    assert conversation.first_response_due_at == start + timedelta(minutes=10)
    breach = [t for t in await timers(db) if t.kind == "first_response"]
    assert [t.fires_at for t in breach] == [start + timedelta(minutes=10)]


async def test_pending_pauses_the_resolution_clock_and_reopening_extends_it(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    await route(db)
    (conversation,) = await conversations(db)
    due = conversation.resolution_due_at
    assert due is not None
    paused_at = datetime.now(UTC)
    async with db.transaction() as session:
        await conversations_service.change_status(
            session, tenant.account_id, conversation.id, "pending", paused_at
        )
    await route(db)
    (conversation,) = await conversations(db)
    assert conversation.resolution_due_at is None
    async with db.transaction() as session:
        await conversations_service.change_status(
            session, tenant.account_id, conversation.id, "open", paused_at + timedelta(hours=2)
        )
    await routing.route_pending(db, paused_at + timedelta(hours=2))
    (conversation,) = await conversations(db)
    assert conversation.resolution_due_at is not None
    assert conversation.resolution_due_at - due == timedelta(hours=2)


async def test_out_of_hours_the_customer_is_told_once_when_to_expect_an_answer(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    closed_all_week = {
        "time_zone": "Europe/Paris",
        "hours": {"sun": [["09:00", "09:30"]]},
    }
    await make_desk(
        db,
        tenant,
        calendar=closed_all_week,
        acknowledgements={
            "fr": "Merci ! Nous vous répondrons vers le {expected}.",
            "en": "Thanks! We will answer around {expected}.",
        },
    )
    sunday_noon = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=sunday_noon)
    await triage.triage_pending(db, Assessor())
    first = await routing.route_pending(db, sunday_noon + timedelta(minutes=1))
    await arrive(
        client, db, settings, tenant, ("m2", "c1"), sent_at=sunday_noon + timedelta(minutes=2)
    )
    await triage.triage_pending(db, Assessor())
    again = await routing.route_pending(db, sunday_noon + timedelta(minutes=3))

    assert (first.acknowledged, again.acknowledged) == (1, 0)
    async with db.sessions() as session:
        sent = list(await session.scalars(select(Message).where(Message.direction == "out")))
    assert len(sent) == 1
    assert sent[0].delivery_status == "queued"
    # Opening at 09:00, then five minutes of handling (it alone waits, two agents), rounded up
    # to the quarter.
    assert sent[0].text == "Merci ! Nous vous répondrons vers le 2026-03-08 09:15."
    (conversation,) = await conversations(db)
    assert conversation.first_response_at is None  # an acknowledgement is not an answer


async def test_no_acknowledgement_to_spam_or_to_an_automated_reply(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_desk(
        db,
        tenant,
        calendar={"time_zone": "UTC", "hours": {"sun": [["09:00", "09:30"]]}},
        acknowledgements={"en": "We will answer around {expected}."},
    )
    monday = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    await push(
        client,
        tenant,
        "s1",
        "Subscribe to my channel!!! free giveaway http://x.example",
        "s",
        monday,
    )
    await push(
        client,
        tenant,
        "a1",
        "Automatic reply: I am out of the office until Monday.",
        "bot",
        monday,
    )
    await process(db, settings)
    await triage.triage_pending(db, Assessor())
    report = await routing.route_pending(db, monday + timedelta(minutes=1))
    assert report.routed == 2 and report.acknowledged == 0


async def test_sticky_assignment_returns_a_contact_to_the_agent_who_answered_them(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    desk = await make_desk(db, tenant, strategy="sticky")
    earlier = datetime.now(UTC) - timedelta(days=5)
    await arrive(client, db, settings, tenant, ("old", "c1"), sent_at=earlier)
    (first,) = await conversations(db)
    answered_by = desk.agents[1]
    async with db.transaction() as session:
        session.add(
            Message(
                account_id=tenant.account_id,
                conversation_id=first.id,
                channel_account_id=tenant.inbox_id,
                direction="out",
                visibility="private",
                text="Done!",
                author_user_id=answered_by,
                sent_at=earlier + timedelta(minutes=5),
                received_at=earlier + timedelta(minutes=5),
                delivery_status="sent",
            )
        )
        await conversations_service.change_status(
            session, tenant.account_id, first.id, "resolved", earlier, "handled_elsewhere"
        )
    await arrive(client, db, settings, tenant, ("other", "c2"))
    await route(db)  # c2 goes to the least loaded agent, the first one
    await arrive(client, db, settings, tenant, ("new", "c1"))
    await route(db)

    by_contact = {c.contact_id: c for c in await conversations(db) if c.status == "open"}
    assert by_contact[first.contact_id].assignee_id == answered_by


async def test_round_robin_takes_agents_in_turn(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    desk = await make_desk(db, tenant, agents=3, strategy="round_robin", capacity=5)
    for i in range(6):
        await arrive(client, db, settings, tenant, (f"m{i}", f"c{i}"))
        await route(db)
    held = [c.assignee_id for c in await conversations(db)]
    assert held == desk.agents * 2


async def test_the_database_orders_the_queue_exactly_as_the_priority_rules_do(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    await arrive(client, db, settings, tenant, *[(f"m{i}", f"c{i}") for i in range(40)])
    await route(db)
    generator = random.Random(3)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        for conversation in (await session.scalars(select(Conversation))).all():
            due = now + timedelta(minutes=generator.uniform(-90, 90))
            conversation.assignee_id = None
            conversation.priority = generator.choice([-1, 0, 0, 1, 2])
            conversation.first_response_due_at = None if generator.random() < 0.15 else due
            conversation.next_response_due_at = (
                now + timedelta(minutes=generator.uniform(-30, 60))
                if generator.random() < 0.3
                else None
            )
            conversation.waiting_triage = {
                "urgent": generator.random() < 0.2,
                "sentiment": generator.choice([-0.9, -0.5, 0.0, 0.6]),
                "churn": generator.random() < 0.2,
            }
            routing.set_queue_place(conversation)
    async with db.sessions() as session:
        team = await session.get(Team, desk.team_id)
        assert team is not None
        in_sql = [c.id for c in await routing.team_queue(session, team, now)]
        head_first = [c.id async for c in routing.assignable(session, team, now)]
        stored = (await session.scalars(select(Conversation))).all()
    waiting = order([Queued.of(c).waiting() for c in stored], now)
    assert in_sql == [w.conversation_id for w in waiting] and len(in_sql) == 40
    # What assignment reads: the same order, without the conversations off the clock.
    assert head_first == [w.conversation_id for w in waiting if w.due_at is not None]


async def test_a_vip_waits_for_the_teams_vip_agent_and_french_goes_to_french_speakers(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    desk = await make_desk(db, tenant, agents=3, capacity=3)
    vip_agent, french_agent, other = desk.agents
    async with db.transaction() as session:
        for agent, skills in ((vip_agent, ["vip"]), (french_agent, ["lang:fr"]), (other, [])):
            await routing.save_agent(
                session, tenant.account_id, agent, AgentIn(skills=skills), datetime.now(UTC)
            )
    await arrive(client, db, settings, tenant, ("v1", "vip-customer"), ("f1", "french"))
    async with db.transaction() as session:
        vip_conversation, french_conversation = (
            await session.scalars(select(Conversation).order_by(Conversation.id))
        ).all()
        contact = await session.get(Contact, vip_conversation.contact_id)
        assert contact is not None
        contact.attributes = {"vip": True}
        french_conversation.language = "fr"
        vip_conversation.language = None
    await route(db)

    vip_conversation, french_conversation = await conversations(db)
    assert vip_conversation.assignee_id == vip_agent
    assert french_conversation.assignee_id == french_agent
