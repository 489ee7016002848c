"""Each network's rules for what a brand may send: X's weighted 280 characters, and the
messaging windows of WhatsApp, Messenger and Instagram."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from allo.conversations.models import Conversation
from allo.db.engine import Database
from allo.replies import rules
from allo.replies import service as replies
from allo.replies.models import OutboxEntry
from allo.settings import Settings
from tests.conftest import Tenant
from tests.replies.test_replies import write
from tests.routing.conftest import arrive, conversations

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "weighted"),
    [
        ("a" * 280, 280),
        ("Bonjour, où est ma commande ? Merci !", 37),
        ("https://www.example.com/a/very/long/path/to/an/order?id=123456789 ok", 26),
        ("日本語のテキスト", 16),  # CJK weighs two
        ("👨‍👩‍👧‍👦", 2),  # one emoji, however many code points
        ("café", 4),  # composed or not
        ("cafe\u0301", 4),
    ],
)
def test_x_counts_as_x_does(text: str, weighted: int) -> None:
    assert rules.length_of("x", text) == weighted


def test_a_reply_too_long_for_its_network_is_a_problem() -> None:
    assert rules.check("x", "public", "a" * 281, None, NOW).problems == ["too_long"]
    assert rules.check("x", "public", "日" * 140, None, NOW).problems == []
    assert rules.check("x", "public", "日" * 141, None, NOW).problems == ["too_long"]
    assert rules.check("email", "private", "a" * 50_000, None, NOW).limit is None


@pytest.mark.parametrize(
    ("channel", "hours_ago", "window"),
    [
        ("whatsapp", 23, "open"),
        ("whatsapp", 25, "template_only"),
        ("messenger", 23, "open"),
        ("messenger", 30, "human_agent"),
        ("messenger", 24 * 8, "closed"),
        ("instagram", 24 * 6, "human_agent"),
        ("email", 24 * 30, "none"),
        ("x", 24 * 30, "none"),
    ],
)
def test_messaging_windows_follow_the_customers_last_message(
    channel: str, hours_ago: int, window: str
) -> None:
    found, _ = rules.window_of(channel, "private", NOW - timedelta(hours=hours_ago), NOW)
    assert found == window


def test_a_public_comment_has_no_window() -> None:
    assert rules.window_of("instagram", "public", NOW - timedelta(days=30), NOW)[0] == "none"


async def as_channel(
    db: Database,
    conversation: Conversation,
    channel: str,
    ago: timedelta,
    visibility: str = "private",
) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == conversation.id)
            .values(channel=channel, visibility=visibility, last_inbound_at=datetime.now(UTC) - ago)
        )


async def test_replies_outside_a_window_or_over_the_length_are_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    await as_channel(db, conversation, "whatsapp", timedelta(hours=25))
    with pytest.raises(replies.ReplyError) as closed:
        await write(db, tenant, conversation.id, "k1")
    assert closed.value.field == "window"
    note = await write(db, tenant, conversation.id, "k2", kind="note")
    assert note is not None  # notes go nowhere: no window

    await as_channel(db, conversation, "messenger", timedelta(days=3))
    tagged = await write(db, tenant, conversation.id, "k3")
    assert tagged is not None and tagged.created
    async with db.sessions() as session:
        entry = await session.scalar(
            select(OutboxEntry).where(OutboxEntry.message_id == tagged.message.id)
        )
    assert entry is not None and entry.payload == {"tag": "HUMAN_AGENT"}

    await as_channel(db, conversation, "x", timedelta(minutes=5))
    direct = await write(db, tenant, conversation.id, "k4", body="a" * 281)
    assert direct is not None  # an X direct message may be longer than a post
    await as_channel(db, conversation, "x", timedelta(minutes=5), visibility="public")
    with pytest.raises(replies.ReplyError) as long:
        await write(db, tenant, conversation.id, "k5", body="a" * 281)
    assert long.value.field == "body"
