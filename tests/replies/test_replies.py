"""Replies and notes: written once per key, queued in the outbox in the conversation's own
channel and visibility, stopped when someone else answered meanwhile, and bad input refused
with nothing written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from allo.accounts.models import User
from allo.conversations import service as conversations_service
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.replies import service as replies
from allo.replies.models import OutboxEntry
from allo.routing.models import Notification
from allo.settings import Settings
from tests.conftest import Tenant, auth, process
from tests.routing.conftest import arrive, conversations
from tests.web.test_sessions import make_agent


async def count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def write(
    db: Database,
    tenant: Tenant,
    conversation_id: int,
    key: str,
    body: str = "Bonjour, nous regardons votre commande tout de suite.",
    kind: str = "reply",
    author: replies.Author | None = None,
    seen: int | None = None,
) -> replies.Written | None:
    async with db.transaction() as session:
        return await replies.write(
            session,
            tenant.account_id,
            conversation_id,
            author or replies.Author(None, "API"),
            kind,
            body,
            key,
            datetime.now(UTC),
            seen,
        )


@pytest.fixture
async def waiting(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> Conversation:
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    return conversation


async def test_a_reply_is_queued_in_the_outbox_and_answers_the_customer(
    db: Database, tenant: Tenant, waiting: Conversation
) -> None:
    agent_id = await make_agent(db, tenant)
    written = await write(db, tenant, waiting.id, "k1", author=replies.Author(agent_id, "Ana"))
    assert written is not None and written.created
    message = written.message
    assert (message.direction, message.visibility, message.delivery_status) == (
        "out",
        waiting.visibility,
        "queued",
    )
    async with db.sessions() as session:
        entry = await session.scalar(select(OutboxEntry))
        conversation = await session.get(Conversation, waiting.id)
    assert entry is not None and entry.message_id == message.id and entry.status == "queued"
    assert conversation is not None
    assert conversation.waiting_since is None and conversation.first_response_at is not None
    assert conversation.assignee_id == agent_id  # whoever answers an unassigned one holds it
    assert conversation.routed_at is None  # routing reads it again: its clocks stop


async def test_the_same_key_twice_writes_once_even_at_the_same_moment(
    db: Database, tenant: Tenant, waiting: Conversation
) -> None:
    results = await asyncio.gather(*(write(db, tenant, waiting.id, "same") for _ in range(5)))
    assert sum(1 for r in results if r is not None and r.created) == 1
    assert len({r.message.id for r in results if r is not None}) == 1
    assert await count(db, OutboxEntry) == 1


async def test_a_note_stays_inside_and_leaves_the_customer_waiting(
    db: Database, tenant: Tenant, waiting: Conversation
) -> None:
    written = await write(
        db, tenant, waiting.id, "n1", body="Client VIP, voir avec Léa", kind="note"
    )
    assert written is not None and written.message.visibility == "note"
    assert await count(db, OutboxEntry) == 0
    async with db.sessions() as session:
        conversation = await session.get(Conversation, waiting.id)
    assert conversation is not None and conversation.waiting_since is not None


async def test_a_reply_is_stopped_when_someone_else_answered_after_what_the_writer_saw(
    db: Database, tenant: Tenant, waiting: Conversation
) -> None:
    ana = replies.Author(await make_agent(db, tenant), "Ana")
    bob = replies.Author(await make_agent(db, tenant, "bob@brand.test"), "Bob")
    async with db.sessions() as session:
        seen = await session.scalar(select(func.max(Message.id)))
    assert seen is not None
    first = await write(db, tenant, waiting.id, "bob-1", author=bob, seen=seen)
    assert first is not None
    with pytest.raises(replies.AlreadyAnswered) as stopped:
        await write(db, tenant, waiting.id, "ana-1", author=ana, seen=seen)
    assert [m.id for m in stopped.value.answers] == [first.message.id]
    assert await count(db, OutboxEntry) == 1
    again = await write(db, tenant, waiting.id, "ana-1", author=ana, seen=first.message.id)
    assert again is not None and again.created  # having seen it, Ana may still send hers


@pytest.mark.parametrize(
    ("kind", "body", "key", "field"),
    [
        ("reply", "   ", "k", "body"),
        ("reply", "x" * (replies.MAX_TEXT + 1), "k", "body"),
        ("reply", "Bonjour", "", "key"),
        ("reply", "Bonjour", "k" * 201, "key"),
        ("tweet", "Bonjour", "k", "kind"),
    ],
)
async def test_bad_replies_are_refused_with_the_field_and_write_nothing(
    db: Database, tenant: Tenant, waiting: Conversation, kind: str, body: str, key: str, field: str
) -> None:
    with pytest.raises(replies.ReplyError) as refused:
        await write(db, tenant, waiting.id, key, body=body, kind=kind)
    assert refused.value.field == field
    assert await count(db, OutboxEntry) == 0
    assert await count(db, Message) == 1


async def test_another_accounts_conversation_cannot_be_answered(
    db: Database, tenant: Tenant, waiting: Conversation
) -> None:
    other = Tenant(account_id=tenant.account_id + 999, token="", inbox_id=0)
    assert await write(db, other, waiting.id, "k") is None
    assert await count(db, OutboxEntry) == 0


async def test_the_api_replies_idempotently_and_lists_the_outbox(
    client: httpx.AsyncClient, tenant: Tenant, waiting: Conversation
) -> None:
    url = f"/api/v1/conversations/{waiting.id}/replies"
    body = {"text": "On s'en occupe.", "idempotency_key": "api-1"}
    first = await client.post(url, json=body, headers=auth(tenant.token))
    second = await client.post(url, json=body, headers=auth(tenant.token))
    assert first.status_code == second.status_code == 201
    assert first.json()["created"] and not second.json()["created"]
    assert first.json()["message"]["id"] == second.json()["message"]["id"]
    outbox = (await client.get("/api/v1/outbox", headers=auth(tenant.token))).json()
    assert [e["message"]["text"] for e in outbox["entries"]] == ["On s'en occupe."]
    missing = await client.post(
        "/api/v1/conversations/999999/replies",
        json=body | {"idempotency_key": "x"},
        headers=auth(tenant.token),
    )
    assert missing.status_code == 404
    empty = await client.post(
        url, json={"text": "", "idempotency_key": "e"}, headers=auth(tenant.token)
    )
    assert empty.status_code == 422 and empty.json()["error"]["field"] == "text"


async def test_the_api_answers_409_when_someone_answered_since(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, waiting: Conversation
) -> None:
    async with db.sessions() as session:
        seen = await session.scalar(select(func.max(Message.id)))
    agent_id = await make_agent(db, tenant)
    await write(db, tenant, waiting.id, "first", author=replies.Author(agent_id, "Ana"))
    answer = await client.post(
        f"/api/v1/conversations/{waiting.id}/replies",
        json={"text": "Moi aussi", "idempotency_key": "second", "seen_message_id": seen},
        headers=auth(tenant.token),
    )
    assert answer.status_code == 409 and answer.json()["error"]["code"] == "already_answered"


async def public_post(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> Conversation:
    answer = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages",
        json={
            "external_id": "post-1",
            "contact": {"id": "c1"},
            "text": "@marque mon colis est perdu !",
            "visibility": "public",
        },
        headers=auth(tenant.token),
    )
    assert answer.status_code == 202
    await process(db, settings)
    (conversation,) = await conversations(db)
    assert conversation.visibility == "public"
    return conversation


async def test_a_public_reply_with_personal_data_needs_a_confirmation(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    post = await public_post(client, db, settings, tenant)
    leaking = "Appelez-nous au 06 12 34 56 78 avec la carte 4970 1012 3456 7890"
    with pytest.raises(replies.PublicPersonalData) as refused:
        await write(db, tenant, post.id, "k1", body=leaking)
    assert set(refused.value.kinds) >= {"phone"}
    assert await count(db, OutboxEntry) == 0
    async with db.transaction() as session:
        confirmed = await replies.write(
            session,
            tenant.account_id,
            post.id,
            replies.Author(None, "API"),
            "reply",
            leaking,
            "k1",
            datetime.now(UTC),
            personal_data_confirmed=True,
        )
    assert confirmed is not None and confirmed.message.visibility == "public"
    private = await write(db, tenant, post.id, "k2", body=leaking, kind="private_reply")
    assert private is not None and private.message.visibility == "private"
    assert await count(db, OutboxEntry) == 2


async def test_the_api_refuses_a_public_leak_and_takes_a_private_handoff(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    post = await public_post(client, db, settings, tenant)
    url = f"/api/v1/conversations/{post.id}/replies"
    body = {"text": "Écrivez-nous à aide@marque.test", "idempotency_key": "a"}
    refused = await client.post(url, json=body, headers=auth(tenant.token))
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "personal_data"
    handed = await client.post(
        url, json=body | {"kind": "private_reply"}, headers=auth(tenant.token)
    )
    assert handed.status_code == 201 and handed.json()["message"]["visibility"] == "private"


async def test_a_note_mentioning_colleagues_notifies_them_and_lists_the_conversation(
    client: httpx.AsyncClient, db: Database, tenant: Tenant, waiting: Conversation
) -> None:
    ana = await make_agent(db, tenant)
    bob = await make_agent(db, tenant, "bob.martin@brand.test")
    léa = await make_agent(db, tenant, "lea@brand.test")
    async with db.transaction() as session:
        for user_id, name in ((bob, "Bob Martin"), (léa, "Léa Roux")):
            user = await session.get(User, user_id)
            assert user is not None
            user.name = name
    body = "@bob.martin et @Léa, pouvez-vous voir ? (pas ana@brand.test ni @nobody)"
    await write(
        db, tenant, waiting.id, "n1", body=body, kind="note", author=replies.Author(ana, "Ana")
    )
    async with db.sessions() as session:
        notified = list(
            await session.scalars(select(Notification.user_id).order_by(Notification.user_id))
        )
        viewer = conversations_service.Viewer(bob, tenant.account_id, "agent")
        listed = await conversations_service.inbox(
            session, viewer, "mentions", conversations_service.InboxFilters(), datetime.now(UTC)
        )
    assert notified == [bob, léa]
    assert [row.conversation.id for row in listed] == [waiting.id]
