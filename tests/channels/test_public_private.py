"""A customer comments under the brand's post, is answered in private, writes back in
Messenger, then comments again: one conversation, one customer, every message once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.signatures import meta_signature
from allo.contacts.models import Contact, Identity
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.replies.sender import Sender
from allo.settings import Settings
from tests.conftest import agent_replies, process
from tests.fakes.meta_graph import APP_SECRET, PAGE_ID, TOKEN, VERSION, MetaGraph
from tests.fakes.server import serving

POST = f"{PAGE_ID}_901"
COMMENTER = "7001"  # the customer's id in the page's feed
PSID = "26000000000000001"  # the same customer's id in Messenger


def now() -> int:
    return int(datetime.now(UTC).timestamp())


@pytest.fixture
def graph() -> Iterator[tuple[MetaGraph, str]]:
    fake = MetaGraph(require_proof=False)
    with serving(fake.app) as url:
        yield fake, f"{url}/{VERSION}"


@pytest.fixture
async def page(db: Database, settings: Settings, graph: tuple[MetaGraph, str]) -> int:
    async with db.transaction() as session:
        account = await accounts.create_account(session, "Brand")
        channel = await channels.connect_channel(
            session,
            account.id,
            "facebook",
            "Facebook page",
            PAGE_ID,
            {"access_token": TOKEN, "app_secret": APP_SECRET},
            CredentialsCipher(load_key(settings)),
            {"api_url": graph[1]},
        )
    return channel.id


def comment(comment_id: str, text: str, at: int) -> dict[str, Any]:
    return {
        "field": "feed",
        "value": {
            "from": {"id": COMMENTER, "name": "Jane Doe"},
            "post_id": POST,
            "comment_id": comment_id,
            "parent_id": POST,
            "item": "comment",
            "verb": "add",
            "message": text,
            "created_time": at,
        },
    }


def webhook(entry: dict[str, Any]) -> bytes:
    return json.dumps(
        {"object": "page", "entry": [{"id": PAGE_ID, "time": now(), **entry}]}
    ).encode()


async def deliver(client: httpx.AsyncClient, channel_id: int, raw: bytes) -> None:
    answer = await client.post(
        f"/webhooks/{channel_id}",
        content=raw,
        headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": meta_signature(APP_SECRET, raw),
        },
    )
    assert answer.status_code == 200, answer.text


async def test_public_then_private_then_public_stays_one_conversation_with_one_customer(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    graph: tuple[MetaGraph, str],
    page: int,
) -> None:
    fake = graph[0]
    fake.add_post(POST, text="Our new store opens today!")
    fake.add_comment(f"{POST}_c1", POST, COMMENTER, "Jane Doe", "Where is my refund?", psid=PSID)

    await deliver(
        client,
        page,
        webhook({"changes": [comment(f"{POST}_c1", "Where is my refund?", now() - 60)]}),
    )
    await process(db, settings)
    written = await agent_replies(
        db,
        "We have sent you a message about your refund.",
        "private_reply",
        visibility="public",
    )
    key = written.message.idempotency_key

    async with httpx.AsyncClient() as http:
        sent = await Sender(db, CredentialsCipher(load_key(settings)), http, 3).send_due()
    assert sent.sent == 1
    [private_reply] = fake.requests_to("/messages", "POST")
    assert private_reply.json["recipient"] == {"comment_id": f"{POST}_c1"}
    async with db.sessions() as session:
        reply = await session.get(Message, written.message.id)
    assert reply is not None and reply.external_id

    # Messenger echoes the page's own message back, with the key Allo gave it.
    echo = {
        "sender": {"id": PAGE_ID},
        "recipient": {"id": PSID},
        "timestamp": (now() + 5) * 1000,
        "message": {
            "is_echo": True,
            "mid": reply.external_id,
            "metadata": key,
            "text": "We have sent you a message about your refund.",
        },
    }
    dm = {
        "sender": {"id": PSID},
        "recipient": {"id": PAGE_ID},
        "timestamp": (now() + 60) * 1000,
        "message": {"mid": "m_customer_1", "text": "Thanks! My order is 4412."},
    }
    await deliver(client, page, webhook({"messaging": [echo]}))
    await deliver(client, page, webhook({"messaging": [dm]}))
    again = comment(f"{POST}_c2", "Got it, all sorted now 👍", now() + 120)
    await deliver(client, page, webhook({"changes": [again]}))
    await process(db, settings)

    async with db.sessions() as session:
        conversations = (await session.scalars(select(Conversation))).all()
        contacts = (await session.scalars(select(Contact))).all()
        identities = (await session.scalars(select(Identity.platform_id))).all()
        thread = (
            await session.scalars(select(Message).order_by(Message.sent_at, Message.id))
        ).all()
    assert len(conversations) == 1 and len(contacts) == 1
    assert sorted(identities) == sorted([COMMENTER, PSID])
    assert [(m.direction, m.visibility, m.text) for m in thread] == [
        ("in", "public", "Where is my refund?"),
        ("out", "private", "We have sent you a message about your refund."),
        ("in", "private", "Thanks! My order is 4412."),
        ("in", "public", "Got it, all sorted now 👍"),
    ]
    assert conversations[0].recipient_id == PSID and conversations[0].private_since is not None


async def test_a_public_reply_answers_the_customers_latest_comment_in_the_thread(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    graph: tuple[MetaGraph, str],
    page: int,
) -> None:
    fake = graph[0]
    fake.add_post(POST, text="Our new store opens today!")
    fake.add_comment(f"{POST}_c1", POST, COMMENTER, "Jane Doe", "Is it open on Sunday?")
    await deliver(
        client,
        page,
        webhook({"changes": [comment(f"{POST}_c1", "Is it open on Sunday?", now() - 60)]}),
    )
    await process(db, settings)
    await agent_replies(db, "Yes, from 10 am to 6 pm.")
    async with httpx.AsyncClient() as http:
        report = await Sender(db, CredentialsCipher(load_key(settings)), http, 3).send_due()
    assert report.sent == 1
    [posted] = fake.requests_to(f"{POST}_c1/comments", "POST")
    assert posted.form == {"message": "Yes, from 10 am to 6 pm."}
