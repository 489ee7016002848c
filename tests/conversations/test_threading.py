"""Which conversation a message joins: threading through the real intake path.

Events are recorded raw with `intake.record`, then processed by `intake.process_all` exactly as
the worker does; the tests read back what the database holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from sqlalchemy import select

from allo.channels import email as email_channel
from allo.channels import service as channels
from allo.conversations import service as conversations
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.intake import service as intake
from allo.intake.models import InboundEvent
from allo.settings import Settings
from tests.conftest import Tenant, process

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class Inbox:
    db: Database
    account_id: int
    id: int
    kind: str

    async def receive(self, parser: str, external_id: str, raw: bytes) -> None:
        async with self.db.transaction() as session:
            recorded = await intake.record(
                session,
                intake.NewEvent(
                    account_id=self.account_id,
                    channel_account_id=self.id,
                    parser=parser,
                    external_id=external_id,
                    raw=raw,
                ),
            )
        assert recorded.duplicate is False

    async def api(self, external_id: str, **fields: object) -> None:
        """A message pushed through the generic API parser (event id = payload id)."""
        payload = {"external_id": external_id, "contact": {"id": "cust-1"}, "text": "hello"}
        await self.receive("api", external_id, json.dumps(payload | fields).encode())

    async def tweet(
        self,
        tweet_id: str,
        author: str,
        at: datetime,
        text: str = "my order never came",
        answers: str = "",
        inbound: bool = True,
    ) -> None:
        """One row of the Customer Support on Twitter export."""
        row = {
            "tweet_id": tweet_id,
            "author_id": author,
            "inbound": str(inbound),
            "created_at": at.strftime("%a %b %d %H:%M:%S %z %Y"),
            "text": text,
            "response_tweet_id": "",
            "in_response_to_tweet_id": answers,
        }
        await self.receive("twcs", tweet_id, json.dumps(row).encode())

    async def mail(self, raw: bytes) -> str:
        message_id = email_channel.message_id(raw)
        await self.receive("email", message_id, raw)
        return message_id


async def inbox(db: Database, account_id: int, kind: str, external_id: str) -> Inbox:
    async with db.transaction() as session:
        created = await channels.create_channel_account(
            session, account_id, kind, external_id, external_id
        )
    return Inbox(db, account_id, created.id, kind)


def rfc5322(
    message_id: str,
    sender: str,
    at: datetime,
    subject: str = "Colis perdu",
    body: str = "Où est mon colis ?",
    in_reply_to: str | None = None,
    references: tuple[str, ...] = (),
) -> bytes:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = "care@brand.example"
    mail["Subject"] = subject
    mail["Date"] = format_datetime(at)
    mail["Message-ID"] = f"<{message_id}>"
    if in_reply_to:
        mail["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        mail["References"] = " ".join(f"<{r}>" for r in references)
    mail.set_content(body)
    return mail.as_bytes()


async def message(db: Database, channel_account_id: int, external_id: str) -> Message:
    async with db.sessions() as session:
        found = await session.scalar(
            select(Message).where(
                Message.channel_account_id == channel_account_id,
                Message.external_id == external_id,
            )
        )
    assert found is not None, f"no message {external_id}"
    return found


async def conversation_of(db: Database, channel_account_id: int, external_id: str) -> Conversation:
    stored = await message(db, channel_account_id, external_id)
    async with db.sessions() as session:
        found = await session.get(Conversation, stored.conversation_id)
    assert found is not None
    return found


async def all_conversations(db: Database) -> list[Conversation]:
    async with db.sessions() as session:
        return list((await session.scalars(select(Conversation).order_by(Conversation.id))).all())


async def thread(db: Database, conversation_id: int) -> list[str | None]:
    """External ids of a conversation's messages, oldest first."""
    async with db.sessions() as session:
        rows = await session.scalars(
            select(Message.external_id)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.sent_at, Message.id)
        )
        return list(rows.all())


async def resolve(db: Database, conversation_id: int, at: datetime) -> None:
    async with db.transaction() as session:
        loaded = await session.get(Conversation, conversation_id)
        assert loaded is not None
        changed = await conversations.change_status(
            session, loaded.account_id, conversation_id, "resolved", at, "handled_elsewhere"
        )
        assert changed is not None and changed.status == "resolved"


# Public threads (X)


async def test_a_public_reply_joins_the_conversation_of_the_post_it_answers(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    await x.tweet("100", "cust_a", T0)
    await x.tweet(
        "101", "BrandCare", T0 + timedelta(minutes=5), "@cust_a so sorry, DM us", "100", False
    )
    await x.tweet("102", "cust_a", T0 + timedelta(minutes=9), "@BrandCare done", "101")
    report = await process(db, settings)
    assert (report.processed, report.failed, report.skipped, report.messages) == (3, 0, 0, 3)

    [conversation] = await all_conversations(db)
    assert await thread(db, conversation.id) == ["100", "101", "102"]
    assert (conversation.channel, conversation.visibility) == ("x", "public")
    assert conversation.thread_key == "100"
    post, answer, follow_up = [await message(db, x.id, i) for i in ("100", "101", "102")]
    assert post.reply_to_id is None
    assert answer.reply_to_id == post.id and follow_up.reply_to_id == answer.id
    assert (answer.direction, answer.author_name, answer.author_contact_id) == (
        "out",
        "BrandCare",
        None,
    )
    assert follow_up.author_contact_id == post.author_contact_id == conversation.contact_id


async def test_replies_to_a_post_allo_never_saw_share_one_conversation_keyed_by_that_post(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    await x.tweet("201", "cust_a", T0, "@BrandCare same here", answers="200")
    await x.tweet("202", "cust_b", T0 + timedelta(minutes=1), "@BrandCare me too", answers="200")
    await process(db, settings)

    [conversation] = await all_conversations(db)
    assert conversation.thread_key == "200"
    assert await thread(db, conversation.id) == ["201", "202"]
    first = await message(db, x.id, "201")
    second = await message(db, x.id, "202")
    assert first.reply_to_id is None and first.reply_to_external_id == "200"
    assert conversation.contact_id == first.author_contact_id != second.author_contact_id


async def test_a_post_that_arrives_after_its_replies_joins_their_conversation(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    await x.tweet("301", "cust_b", T0 + timedelta(minutes=3), "@cust_a +1", answers="300")
    await x.tweet("302", "cust_c", T0 + timedelta(minutes=4), "@cust_a +1", answers="300")
    await process(db, settings)
    await x.tweet("300", "cust_a", T0, "@BrandCare the app is down")
    await process(db, settings)

    [conversation] = await all_conversations(db)
    assert await thread(db, conversation.id) == ["300", "301", "302"]
    assert conversation.last_message_at == T0 + timedelta(minutes=4)
    assert conversation.waiting_since == T0


async def test_a_root_post_that_arrives_after_a_chain_of_its_replies_joins_their_conversation(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    # Arrival order: C (answers B), then B (answers A), then A, the root post.
    await x.tweet("402", "cust_c", T0 + timedelta(minutes=2), "@cust_b indeed", answers="401")
    await x.tweet("401", "cust_b", T0 + timedelta(minutes=1), "@cust_a same", answers="400")
    await x.tweet("400", "cust_a", T0, "@BrandCare outage?")
    await process(db, settings)

    assert len(await all_conversations(db)) == 1


async def test_an_explicit_thread_key_groups_public_messages_and_another_key_starts_another(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    await x.api("c1", contact={"id": "u1"}, visibility="public", thread_id="post-7")
    await x.api("c2", contact={"id": "u2"}, visibility="public", thread_id="post-7")
    await x.api("c3", contact={"id": "u3"}, visibility="public", thread_id="post-8")
    await process(db, settings)

    first, second = await all_conversations(db)
    assert (first.thread_key, second.thread_key) == ("post-7", "post-8")
    assert await thread(db, first.id) == ["c1", "c2"]
    assert await thread(db, second.id) == ["c3"]


async def test_a_brand_answer_naming_no_customer_joins_what_it_answers_as_the_first_response(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    await x.tweet("500", "cust_a", T0, "@BrandCare my bill doubled")
    await process(db, settings)
    [waiting] = await all_conversations(db)
    assert waiting.waiting_since == T0 and waiting.first_response_at is None

    answered_at = T0 + timedelta(minutes=12)
    await x.tweet("501", "BrandCare", answered_at, "Sorry! Sending a DM.", "500", inbound=False)
    report = await process(db, settings)
    assert (report.processed, report.skipped, report.messages) == (1, 0, 1)

    [conversation] = await all_conversations(db)
    assert conversation.id == waiting.id
    assert conversation.first_response_at == answered_at
    assert conversation.waiting_since is None
    assert conversation.last_message_at == answered_at
    answer = await message(db, x.id, "501")
    assert (answer.direction, answer.delivery_status, answer.author_contact_id) == (
        "out",
        "sent",
        None,
    )


async def test_a_brand_answer_naming_no_customer_joins_the_thread_of_an_unseen_post(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    await x.tweet("801", "cust_a", T0, "@BrandCare same problem", answers="800")
    answered_at = T0 + timedelta(minutes=7)
    await x.tweet("802", "BrandCare", answered_at, "We're on it.", answers="800", inbound=False)
    report = await process(db, settings)
    assert (report.processed, report.skipped) == (2, 0)

    [conversation] = await all_conversations(db)
    assert await thread(db, conversation.id) == ["801", "802"]
    assert (conversation.first_response_at, conversation.waiting_since) == (answered_at, None)


async def test_a_brand_message_answering_nothing_known_and_naming_no_customer_is_skipped(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    await x.tweet("600", "BrandCare", T0, "Sorry to hear that!", answers="599", inbound=False)
    await x.tweet("601", "BrandCare", T0, "Our new plan is out", inbound=False)
    await x.tweet("602", "cust_a", T0, "@BrandCare hello?")
    report = await process(db, settings)

    assert (report.processed, report.failed, report.skipped, report.messages) == (1, 0, 2, 1)
    async with db.sessions() as session:
        events = (await session.scalars(select(InboundEvent).order_by(InboundEvent.id))).all()
    assert [e.status for e in events] == ["skipped", "skipped", "processed"]
    for event in events[:2]:
        assert event.error is not None and "names no customer" in event.error
        assert event.message_ids == [] and event.processed_at is not None
    [conversation] = await all_conversations(db)
    assert await thread(db, conversation.id) == ["602"]


async def test_a_customer_post_imported_after_the_brand_answer_does_not_leave_it_waiting(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    x = await inbox(db, tenant.account_id, "x", "BrandCare")
    answered_at = T0 + timedelta(minutes=30)
    await x.tweet("701", "BrandCare", answered_at, "@cust_a we're on it", "700", inbound=False)
    await x.tweet("700", "cust_a", T0, "@BrandCare no signal since noon")
    await process(db, settings)

    [conversation] = await all_conversations(db)
    assert await thread(db, conversation.id) == ["700", "701"]
    assert conversation.first_response_at == answered_at
    assert conversation.waiting_since is None
    assert conversation.last_message_at == answered_at


# Private conversations


async def test_private_messages_from_one_contact_on_one_channel_account_form_one_conversation(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    whatsapp = await inbox(db, tenant.account_id, "whatsapp", "+33100000000")
    for number in range(3):
        at = T0 + timedelta(hours=number)
        await whatsapp.api(f"w{number}", contact={"id": "+33611111111"}, sent_at=at.isoformat())
    await whatsapp.api("other", contact={"id": "+33622222222"}, sent_at=T0.isoformat())
    await process(db, settings)

    first, second = await all_conversations(db)
    assert await thread(db, first.id) == ["w0", "w1", "w2"]
    assert await thread(db, second.id) == ["other"]
    assert first.contact_id != second.contact_id
    assert (first.channel, first.visibility, first.thread_key, first.status) == (
        "whatsapp",
        "private",
        None,
        "open",
    )
    assert first.waiting_since == T0 and first.last_message_at == T0 + timedelta(hours=2)


async def test_the_same_contact_on_another_channel_account_gets_another_conversation(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    france = await inbox(db, tenant.account_id, "whatsapp", "+33100000000")
    belgium = await inbox(db, tenant.account_id, "whatsapp", "+32100000000")
    await france.api("fr-1", contact={"id": "+33611111111"})
    await belgium.api("be-1", contact={"id": "+33611111111"})
    await process(db, settings)

    in_france = await conversation_of(db, france.id, "fr-1")
    in_belgium = await conversation_of(db, belgium.id, "be-1")
    assert in_france.id != in_belgium.id
    assert in_france.contact_id == in_belgium.contact_id


async def test_a_message_within_the_reopen_window_reopens_the_resolved_conversation(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    api = await inbox(db, tenant.account_id, "api", "crm")
    await api.api("r1", sent_at=T0.isoformat())
    await process(db, settings)
    resolved_at = T0 + timedelta(hours=1)
    conversation = await conversation_of(db, api.id, "r1")
    await resolve(db, conversation.id, resolved_at)
    assert (await conversation_of(db, api.id, "r1")).status == "resolved"

    window = timedelta(hours=settings.reopen_window_hours)
    await api.api("r2", sent_at=(resolved_at + window - timedelta(hours=1)).isoformat())
    await process(db, settings)

    [reopened] = await all_conversations(db)
    assert reopened.id == conversation.id
    assert (reopened.status, reopened.resolved_at) == ("open", None)
    assert await thread(db, reopened.id) == ["r1", "r2"]


async def test_a_message_after_the_reopen_window_starts_a_new_conversation(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    api = await inbox(db, tenant.account_id, "api", "crm")
    await api.api("r1", sent_at=T0.isoformat())
    await process(db, settings)
    resolved_at = T0 + timedelta(hours=1)
    old = await conversation_of(db, api.id, "r1")
    await resolve(db, old.id, resolved_at)

    later = resolved_at + timedelta(hours=settings.reopen_window_hours + 1)
    await api.api("r2", sent_at=later.isoformat())
    await api.api("r3", sent_at=(later + timedelta(minutes=5)).isoformat())
    await process(db, settings)

    first, second = await all_conversations(db)
    assert first.id == old.id
    assert (first.status, first.resolved_at) == ("resolved", resolved_at)
    assert await thread(db, first.id) == ["r1"]
    assert await thread(db, second.id) == ["r2", "r3"]
    assert (second.status, second.contact_id, second.waiting_since) == (
        "open",
        first.contact_id,
        later,
    )


async def test_an_older_message_arriving_late_does_not_move_last_message_at_back(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    api = await inbox(db, tenant.account_id, "api", "crm")
    await api.api("late-2", sent_at=(T0 + timedelta(hours=2)).isoformat())
    await process(db, settings)
    await api.api("late-1", sent_at=(T0 + timedelta(hours=1)).isoformat())
    await process(db, settings)

    [conversation] = await all_conversations(db)
    assert conversation.last_message_at == T0 + timedelta(hours=2)
    assert conversation.waiting_since == T0 + timedelta(hours=1)
    assert await thread(db, conversation.id) == ["late-1", "late-2"]


async def test_a_brand_answer_in_a_private_conversation_clears_waiting_and_sets_first_response(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    api = await inbox(db, tenant.account_id, "api", "crm")
    await api.api("q1", sent_at=T0.isoformat())
    await api.api("a1", direction="out", sent_at=(T0 + timedelta(minutes=20)).isoformat())
    await api.api("q2", sent_at=(T0 + timedelta(hours=1)).isoformat())
    await process(db, settings)

    [conversation] = await all_conversations(db)
    assert conversation.first_response_at == T0 + timedelta(minutes=20)
    assert conversation.waiting_since == T0 + timedelta(hours=1)


async def test_a_late_customer_message_already_answered_by_a_later_brand_reply_is_not_waiting(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    api = await inbox(db, tenant.account_id, "api", "crm")
    await api.api("q1", sent_at=T0.isoformat())
    await api.api("a1", direction="out", sent_at=(T0 + timedelta(minutes=10)).isoformat())
    await api.api("a2", direction="out", sent_at=(T0 + timedelta(hours=2)).isoformat())
    await process(db, settings)
    # Sent an hour in, between the two answers, but delivered after both.
    await api.api("q-late", sent_at=(T0 + timedelta(hours=1)).isoformat())
    await process(db, settings)

    [conversation] = await all_conversations(db)
    assert conversation.waiting_since is None


# Email


async def test_an_email_threads_by_in_reply_to(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    mailbox = await inbox(db, tenant.account_id, "email", "care@brand.example")
    first = await mailbox.mail(rfc5322("a1@customer.example", "Camille <camille@c.example>", T0))
    reply = await mailbox.mail(
        rfc5322(
            "a2@customer.example",
            "camille@c.example",
            T0 + timedelta(hours=1),
            subject="Re: Colis perdu",
            in_reply_to="a1@customer.example",
        )
    )
    await process(db, settings)

    [conversation] = await all_conversations(db)
    assert await thread(db, conversation.id) == [first, reply]
    assert (conversation.channel, conversation.subject) == ("email", "Colis perdu")
    assert (await message(db, mailbox.id, reply)).reply_to_id == (
        await message(db, mailbox.id, first)
    ).id


async def test_an_email_threads_by_references_when_in_reply_to_is_unknown(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    mailbox = await inbox(db, tenant.account_id, "email", "care@brand.example")
    await mailbox.mail(rfc5322("b1@customer.example", "camille@c.example", T0))
    await mailbox.mail(
        rfc5322(
            "b3@customer.example",
            "camille@c.example",
            T0 + timedelta(days=1),
            in_reply_to="agent-answer@brand.example",
            references=("b1@customer.example", "agent-answer@brand.example"),
        )
    )
    await mailbox.mail(
        rfc5322(
            "b4@customer.example",
            "camille@c.example",
            T0 + timedelta(days=2),
            references=("b1@customer.example",),
        )
    )
    await process(db, settings)

    [conversation] = await all_conversations(db)
    assert await thread(db, conversation.id) == [
        "b1@customer.example",
        "b3@customer.example",
        "b4@customer.example",
    ]


async def test_an_email_with_neither_header_starts_a_new_conversation_even_from_the_same_sender(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    mailbox = await inbox(db, tenant.account_id, "email", "care@brand.example")
    await mailbox.mail(rfc5322("c1@customer.example", "camille@c.example", T0))
    await mailbox.mail(
        rfc5322("c2@customer.example", "Camille@C.example", T0 + timedelta(minutes=1), "Autre")
    )
    await process(db, settings)

    first, second = await all_conversations(db)
    assert first.contact_id == second.contact_id
    assert (first.subject, second.subject) == ("Colis perdu", "Autre")
    assert await thread(db, second.id) == ["c2@customer.example"]


async def test_email_threading_does_not_cross_mailboxes(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    sales = await inbox(db, tenant.account_id, "email", "sales@brand.example")
    care = await inbox(db, tenant.account_id, "email", "care@brand.example")
    await sales.mail(rfc5322("d1@customer.example", "camille@c.example", T0))
    await care.mail(
        rfc5322(
            "d2@customer.example",
            "camille@c.example",
            T0 + timedelta(hours=1),
            in_reply_to="d1@customer.example",
        )
    )
    await process(db, settings)

    assert len(await all_conversations(db)) == 2
    assert (await message(db, care.id, "d2@customer.example")).reply_to_id is None


async def test_an_email_whose_in_reply_to_names_two_messages_threads_on_the_known_one(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    mailbox = await inbox(db, tenant.account_id, "email", "care@brand.example")
    await mailbox.mail(rfc5322("known@brand.example", "camille@c.example", T0))
    raw = rfc5322("e2@customer.example", "camille@c.example", T0 + timedelta(hours=1))
    raw = raw.replace(
        b"Message-ID:",
        b"In-Reply-To: <unknown@elsewhere.example> <known@brand.example>\nMessage-ID:",
    )
    await mailbox.mail(raw)
    await process(db, settings)

    assert len(await all_conversations(db)) == 1
