"""Where the account asks for it, an agent's public replies wait for a supervisor: held in
the outbox, not answering the customer until approved, never sent if rejected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from allo.accounts import service as accounts
from allo.accounts.models import User
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.replies import service as replies
from allo.replies.models import OutboxEntry
from allo.settings import Settings
from tests.conftest import Tenant, auth
from tests.replies.test_replies import public_post, write
from tests.web.test_sessions import make_agent, sign_in


def now() -> datetime:
    return datetime.now(UTC)


async def require_approval(db: Database, tenant: Tenant) -> None:
    async with db.transaction() as session:
        await accounts.change_account(session, tenant.account_id, approve_public_replies=True)


async def entry(db: Database) -> OutboxEntry:
    async with db.sessions() as session:
        found = await session.scalar(select(OutboxEntry))
    assert found is not None
    return found


async def test_an_agents_public_reply_waits_and_a_supervisor_releases_it(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    post = await public_post(client, db, settings, tenant)
    await require_approval(db, tenant)
    agent = replies.Author(await make_agent(db, tenant), "Ana", "agent")
    written = await write(db, tenant, post.id, "k1", author=agent)
    assert written is not None and written.message.delivery_status == "held"
    held = await entry(db)
    assert held.status == "held"
    async with db.sessions() as session:
        waiting = await session.get(Conversation, post.id)
    assert waiting is not None and waiting.waiting_since is not None  # not answered yet

    with pytest.raises(replies.ApprovalError):
        async with db.transaction() as session:
            await replies.decide(
                session, tenant.account_id, held.id, agent, True, datetime.now(UTC)
            )
    lead = replies.Author(None, "Lea", "supervisor")
    async with db.transaction() as session:
        await replies.decide(session, tenant.account_id, held.id, lead, True, datetime.now(UTC))
    released = await entry(db)
    async with db.sessions() as session:
        answered = await session.get(Conversation, post.id)
    assert released.status == "queued"
    assert answered is not None and answered.waiting_since is None
    with pytest.raises(replies.ApprovalError):  # decided once
        async with db.transaction() as session:
            await replies.decide(
                session, tenant.account_id, held.id, lead, False, datetime.now(UTC)
            )


async def test_private_replies_and_supervisors_replies_are_not_held(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    post = await public_post(client, db, settings, tenant)
    await require_approval(db, tenant)
    agent = replies.Author(await make_agent(db, tenant), "Ana", "agent")
    private = await write(db, tenant, post.id, "k1", author=agent, kind="private_reply")
    lead = replies.Author(await make_agent(db, tenant, "lea@brand.test"), "Lea", "supervisor")
    public = await write(db, tenant, post.id, "k2", author=lead)
    assert private is not None and public is not None
    assert {private.message.delivery_status, public.message.delivery_status} == {"queued"}


async def test_a_rejected_reply_is_never_sent_and_the_page_offers_the_choice(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    post = await public_post(client, db, settings, tenant)
    await require_approval(db, tenant)
    agent_id = await make_agent(db, tenant)
    await write(db, tenant, post.id, "k1", author=replies.Author(agent_id, "Ana", "agent"))
    held = await entry(db)
    await make_agent(db, tenant, "lea@brand.test")
    async with db.transaction() as session:
        lea = await session.scalar(select(User).where(User.email == "lea@brand.test"))
        assert lea is not None
        lea.role = "supervisor"
    token = await sign_in(client, "lea@brand.test")
    page = (await client.get("/outbox")).text
    assert f'action="/outbox/{held.id}/reject"' in page and "awaiting approval" in page
    done = await client.post(f"/outbox/{held.id}/reject", data={"csrf_token": token})
    assert done.status_code == 303
    rejected = await entry(db)
    assert rejected.status == "rejected" and rejected.last_error == "rejected by Ana Agent"


async def test_only_admins_change_the_account_and_bad_settings_are_refused(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    url = "/api/v1/account"
    ok = await client.patch(
        url,
        json={"languages": ["fr", "en", "fr"], "approve_public_replies": True},
        headers=auth(tenant.token),
    )
    assert ok.status_code == 200
    assert ok.json()["settings"] == {"languages": ["fr", "en"], "approve_public_replies": True}
    bad = await client.patch(url, json={"languages": ["klingon"]}, headers=auth(tenant.token))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "languages"
    await make_agent(db, tenant)
    token = await sign_in(client)
    refused = await client.post(
        "/settings/account", data={"csrf_token": token, "name": "Mine now", "languages": "fr"}
    )
    assert refused.headers["location"].endswith("error=role")
    assert (await client.get(url, headers=auth(tenant.token))).json()["name"] == "Brand"


async def test_a_held_reply_does_not_stop_a_colleagues_answer_nor_goes_out_too_late(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    post = await public_post(client, db, settings, tenant)
    await require_approval(db, tenant)
    ana = replies.Author(await make_agent(db, tenant), "Ana", "agent")
    async with db.sessions() as session:
        seen = await session.scalar(select(func.max(Message.id)))
    await write(db, tenant, post.id, "k1", author=ana)
    lead = replies.Author(await make_agent(db, tenant, "lea@brand.test"), "Lea", "supervisor")
    answered = await write(db, tenant, post.id, "k2", author=lead, seen=seen)
    assert answered is not None and answered.created  # the held reply reached nobody
    held = await session_entry(db, "held")
    # Held long enough for the network's rules to refuse it now (a private WhatsApp message
    # after the customer's 24 hours): approving it does not queue it.
    async with db.transaction() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == post.id)
            .values(channel="whatsapp", last_inbound_at=datetime.now(UTC) - timedelta(days=2))
        )
        await session.execute(
            update(Message).where(Message.id == held.message_id).values(visibility="private")
        )
    with pytest.raises(replies.ApprovalError):
        async with db.transaction() as session:
            await replies.decide(session, tenant.account_id, held.id, lead, True, now())


async def session_entry(db: Database, status: str) -> OutboxEntry:
    async with db.sessions() as session:
        found = await session.scalar(select(OutboxEntry).where(OutboxEntry.status == status))
    assert found is not None
    return found
