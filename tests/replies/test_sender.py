"""The outbox sender: every reply reaches the network once — retried when the network fails,
given up with a reason when it refuses, and never sent twice, even when the worker dies
between the network's answer and the database write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from allo.channels import service as channels
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.outbound import SendError
from allo.channels.registry import network_for
from allo.channels.service import connect
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.replies import service as replies
from allo.replies.models import OutboxEntry
from allo.replies.sender import LEASE, Sender, outgoing_of
from allo.routing.models import Notification
from allo.settings import Settings
from tests.conftest import Tenant, agent_replies, auth, process
from tests.fakes.whatsapp_channel import (
    CUSTOMER,
    Connected,
    signed,
    status,
    text_message,
)

API = replies.Author(user_id=None, name="Support")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
def sender(db: Database, settings: Settings, http: httpx.AsyncClient) -> Sender:
    return Sender(db, CredentialsCipher(load_key(settings)), http, max_attempts=3)


async def customer_writes(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected
) -> int:
    """The customer writes now (the 24-hour window opens); the conversation's id."""
    raw = text_message(
        "wamid.IN1", "Où en est mon remboursement ?", int(datetime.now(UTC).timestamp())
    )
    await client.post(f"/webhooks/{whatsapp.channel_id}", content=raw, headers=signed(raw))
    await process(db, settings)
    whatsapp.fake.customer_wrote(CUSTOMER)
    async with db.sessions() as session:
        conversation_id = await session.scalar(select(Conversation.id))
    assert conversation_id is not None
    return conversation_id


async def reply(db: Database, conversation_id: int, text: str) -> int:
    return (await agent_replies(db, text, conversation_id=conversation_id)).message.id


async def state_of(db: Database, message_id: int) -> tuple[Message, OutboxEntry]:
    async with db.sessions() as session:
        message = await session.get(Message, message_id)
        entry = await session.scalar(
            select(OutboxEntry).where(OutboxEntry.message_id == message_id)
        )
    assert message is not None and entry is not None
    return message, entry


async def come_due(db: Database) -> None:
    """Time passes: every waiting retry and every lease is due."""
    async with db.transaction() as session:
        await session.execute(
            update(OutboxEntry).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


async def test_a_reply_is_sent_once_with_its_key_and_takes_the_networks_id(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected, sender: Sender
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    message_id = await reply(db, conversation_id, "Votre remboursement part demain.")
    report = await sender.send_due()
    assert report.sent == 1
    again = await sender.send_due()
    assert again.done == 0
    assert len(whatsapp.fake.accepted) == 1
    sent = whatsapp.fake.accepted[0]
    message, entry = await state_of(db, message_id)
    assert sent["to"] == CUSTOMER and sent["text"]["body"] == "Votre remboursement part demain."
    assert sent["biz_opaque_callback_data"] == entry.idempotency_key
    assert entry.status == "sent" and message.delivery_status == "sent"
    assert message.external_id is not None and message.external_id.startswith("wamid.FAKE")


async def test_a_network_outage_is_retried_with_backoff_until_it_goes_through(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected, sender: Sender
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    message_id = await reply(db, conversation_id, "On s'en occupe.")
    whatsapp.fake.fail_next(503, {"error": {"message": "Service unavailable", "code": 2}})
    first = await sender.send_due()
    assert first.retried == 1
    _, entry = await state_of(db, message_id)
    assert entry.status == "queued" and entry.next_attempt_at > datetime.now(UTC)
    assert entry.last_error and entry.last_error.startswith("unavailable")
    assert (await sender.send_due()).done == 0  # not due yet
    await come_due(db)
    assert (await sender.send_due()).sent == 1
    assert len(whatsapp.fake.accepted) == 1


async def test_a_rate_limited_send_waits_at_least_as_long_as_the_network_asks(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected, sender: Sender
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    message_id = await reply(db, conversation_id, "Merci de votre patience.")
    whatsapp.fake.fail_next(
        429,
        {"error": {"message": "Rate limit hit", "code": 130429, "type": "OAuthException"}},
        {"Retry-After": "120"},
    )
    await sender.send_due()
    _, entry = await state_of(db, message_id)
    assert entry.status == "queued"
    assert entry.next_attempt_at >= datetime.now(UTC) + timedelta(seconds=110)


async def test_a_refusal_that_cannot_succeed_fails_at_once_and_the_customer_waits_again(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected, sender: Sender
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    message_id = await reply(db, conversation_id, "Bonjour !")
    whatsapp.fake.last_customer_message.clear()  # the network says the window has closed
    report = await sender.send_due()
    assert report.failed == 1 and report.retried == 0
    message, entry = await state_of(db, message_id)
    assert entry.status == "failed" and entry.attempts == 1
    assert entry.last_error and entry.last_error.startswith("window_closed")
    assert message.delivery_status == "failed"
    async with db.sessions() as session:
        conversation = await session.get(Conversation, conversation_id)
        notice = await session.scalar(
            select(Notification).where(Notification.kind == "send_failed")
        )
    assert conversation is not None and conversation.waiting_since is not None
    assert notice is not None and "window_closed" in notice.text


async def test_a_send_that_keeps_failing_is_given_up_after_the_last_attempt(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected, sender: Sender
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    message_id = await reply(db, conversation_id, "Toujours là ?")
    whatsapp.fake.fail_next(500, {"error": {"message": "boom", "code": 1}}, times=3)
    for _ in range(3):
        await sender.send_due()
        await come_due(db)
    _, entry = await state_of(db, message_id)
    assert entry.status == "failed" and entry.attempts == 3
    assert whatsapp.fake.accepted == []


async def test_two_senders_at_once_send_each_reply_once(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    whatsapp: Connected,
    sender: Sender,
    http: httpx.AsyncClient,
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    for number in range(6):
        await reply(db, conversation_id, f"Réponse {number}")
    other = Sender(db, CredentialsCipher(load_key(settings)), http, max_attempts=3)
    reports = await asyncio.gather(sender.send_due(), other.send_due())
    assert sum(r.sent for r in reports) == 6
    bodies = [body["text"]["body"] for body in whatsapp.fake.accepted]
    assert sorted(bodies) == sorted(f"Réponse {n}" for n in range(6))


async def crash_after_the_network_answered(
    db: Database, settings: Settings, sender: Sender, http: httpx.AsyncClient
) -> str:
    """A worker claims the reply and the network takes it; the worker dies before writing the
    answer down. Returns the id the network gave."""
    claimed = await sender._claim("queued", None)
    assert len(claimed) == 1
    network = network_for(claimed[0].channel_account.kind)
    assert network is not None
    connection = connect(claimed[0].channel_account, CredentialsCipher(load_key(settings)), http)
    sent = await network.send(connection, claimed[0].outgoing)
    return sent.external_id


async def test_a_crash_after_sending_is_reconciled_by_the_status_that_carries_the_key(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    whatsapp: Connected,
    sender: Sender,
    http: httpx.AsyncClient,
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    message_id = await reply(db, conversation_id, "Colis renvoyé aujourd'hui.")
    wamid = await crash_after_the_network_answered(db, settings, sender, http)
    _, entry = await state_of(db, message_id)
    assert entry.status == "sending"

    body = status(wamid, "delivered", key=entry.idempotency_key)
    await client.post(f"/webhooks/{whatsapp.channel_id}", content=body, headers=signed(body))
    await process(db, settings)
    await come_due(db)
    await sender.send_due()

    message, entry = await state_of(db, message_id)
    assert message.external_id == wamid and message.delivery_status == "delivered"
    assert entry.status == "sent"
    assert len(whatsapp.fake.accepted) == 1


async def test_a_crash_the_network_cannot_account_for_is_left_to_a_person_not_sent_again(
    client: httpx.AsyncClient,
    db: Database,
    settings: Settings,
    whatsapp: Connected,
    sender: Sender,
    http: httpx.AsyncClient,
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    message_id = await reply(db, conversation_id, "Nous vous rappelons.")
    await crash_after_the_network_answered(db, settings, sender, http)
    assert (await sender.send_due()).done == 0  # the lease has not run out: still sending
    await come_due(db)
    report = await sender.send_due()
    assert report.reconciled == 1
    message, entry = await state_of(db, message_id)
    assert entry.status == "failed" and entry.last_error and "interrupted" in entry.last_error
    assert message.delivery_status == "failed"
    assert len(whatsapp.fake.accepted) == 1


async def test_the_lease_of_a_send_in_progress_is_the_time_it_may_take(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected, sender: Sender
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    message_id = await reply(db, conversation_id, "Un instant.")
    before = datetime.now(UTC)
    claimed = await sender._claim("queued", None)
    _, entry = await state_of(db, message_id)
    assert [c.entry_id for c in claimed] == [entry.id]
    assert entry.status == "sending" and entry.attempts == 1
    assert before + LEASE <= entry.next_attempt_at <= datetime.now(UTC) + LEASE


async def answer_pushed_message(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, inbox_id: int
) -> int:
    """A customer message pushed through the API into `inbox_id`, and a reply written to it:
    the reply's message id."""
    pushed = await client.post(
        f"/api/v1/inboxes/{inbox_id}/messages",
        json={"contact": {"id": "crm-7"}, "text": "Bonjour"},
        headers=auth(tenant.token),
    )
    assert pushed.status_code == 202
    await process(db, settings)
    return (await agent_replies(db, "Bonjour !")).message.id


async def test_replies_of_channels_without_a_network_are_left_alone(
    client: httpx.AsyncClient, db: Database, settings: Settings, sender: Sender, tenant: Tenant
) -> None:
    """An API inbox's replies are read by the integration through the API: nothing to send."""
    reply_id = await answer_pushed_message(client, db, settings, tenant, tenant.inbox_id)
    assert (await sender.send_due()).done == 0
    _, entry = await state_of(db, reply_id)
    assert entry.status == "queued" and entry.attempts == 0


async def test_what_a_public_reply_answers_is_the_customers_latest_public_message(
    db: Database, whatsapp: Connected
) -> None:
    """The module is told which message a reply answers and where to send a private one."""
    now = datetime.now(UTC)
    async with db.transaction() as session:
        conversation = Conversation(
            account_id=whatsapp.account_id,
            channel_account_id=whatsapp.channel_id,
            channel="whatsapp",
            visibility="private",
            contact_id=await _contact(session, whatsapp),
            recipient_id=CUSTOMER,
            last_message_at=now,
        )
        session.add(conversation)
        await session.flush()
        message = Message(
            account_id=whatsapp.account_id,
            conversation_id=conversation.id,
            channel_account_id=whatsapp.channel_id,
            direction="out",
            visibility="private",
            text="Bonjour",
            sent_at=now,
            received_at=now,
            delivery_status="queued",
        )
        session.add(message)
        await session.flush()
        entry = OutboxEntry(
            account_id=whatsapp.account_id,
            message_id=message.id,
            conversation_id=conversation.id,
            channel_account_id=whatsapp.channel_id,
            idempotency_key="k-1",
            next_attempt_at=now,
            payload={"template": {"name": "order_update", "language": "fr", "parameters": ["42"]}},
        )
        session.add(entry)
        await session.flush()
        outgoing = await outgoing_of(session, entry, message, conversation)
    assert outgoing.recipient_id == CUSTOMER and outgoing.key == "k-1"
    assert outgoing.template is not None and outgoing.template.parameters == ("42",)
    assert outgoing.reply_to_external_id is None


async def _contact(session: object, whatsapp: Connected) -> int:
    from allo.contacts.models import Contact

    assert hasattr(session, "add")
    contact = Contact(account_id=whatsapp.account_id, name="Léa")
    session.add(contact)  # type: ignore[attr-defined]
    await session.flush()  # type: ignore[attr-defined]
    return contact.id


def test_send_errors_name_their_reason_for_the_agent() -> None:
    error = SendError("blocked", "This person isn't available right now.")
    assert str(error) == "blocked: This person isn't available right now."
    assert error.retryable is False


async def test_a_reply_can_quote_the_customers_message_it_answers(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected, sender: Sender
) -> None:
    conversation_id = await customer_writes(client, db, settings, whatsapp)
    async with db.transaction() as session:
        question = await session.scalar(select(Message).where(Message.direction == "in"))
        assert question is not None
        written = await replies.write(
            session, whatsapp.account_id, conversation_id, API, "reply", "C'est parti hier.",
            replies.new_key(), datetime.now(UTC), in_reply_to_message_id=question.id,
        )  # fmt: skip
        assert written is not None
        with pytest.raises(replies.ReplyError):
            await replies.write(
                session, whatsapp.account_id, conversation_id, API, "reply", "Et ceci ?",
                replies.new_key(), datetime.now(UTC), in_reply_to_message_id=written.message.id,
            )  # fmt: skip
    await sender.send_due()
    [sent] = whatsapp.fake.accepted
    assert sent["context"] == {"message_id": "wamid.IN1"}


async def test_a_network_channel_without_credentials_is_not_connected_nothing_is_sent(
    client: httpx.AsyncClient, db: Database, settings: Settings, sender: Sender, tenant: Tenant
) -> None:
    """The demo's and imports' X or WhatsApp inboxes are fed through the API: their replies
    wait there, and no webhook can be delivered to them."""
    async with db.transaction() as session:
        wa = await channels.create_channel_account(
            session, tenant.account_id, "whatsapp", "WA", "+331"
        )
    await answer_pushed_message(client, db, settings, tenant, wa.id)
    assert (await sender.send_due()).done == 0
    assert (await client.post(f"/webhooks/{wa.id}", content=b"{}")).status_code == 404
