"""X end to end: mentions polled where webhooks cannot deliver them, replies sent, and a send
interrupted by a crash settled by asking X, never by posting twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select, update

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.channels import x as x_network
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.models import ChannelAccount
from allo.conversations.models import Message
from allo.db.engine import Database
from allo.intake import service as intake
from allo.intake.models import InboundEvent
from allo.replies.models import OutboxEntry
from allo.replies.sender import Sender
from allo.settings import Settings
from tests.conftest import agent_replies, process
from tests.fakes.server import serving
from tests.fakes.x_api import FakeX

CUSTOMER = "2244994945"


@dataclass
class Connected:
    fake: FakeX
    channel_id: int
    cipher: CredentialsCipher


@pytest.fixture
def x_api() -> Iterator[tuple[FakeX, str]]:
    fake = FakeX()
    fake.add_user(CUSTOMER, "jane_doe", "Jane Doe", followers=120)
    with serving(fake.app) as url:
        yield fake, url


@pytest.fixture
async def x(db: Database, settings: Settings, x_api: tuple[FakeX, str]) -> Connected:
    fake, url = x_api
    cipher = CredentialsCipher(load_key(settings))
    async with db.transaction() as session:
        account = await accounts.create_account(session, "Brand")
        channel = await channels.connect_channel(
            session,
            account.id,
            "x",
            "@AlloCare",
            fake.own_id,
            {"access_token": fake.token, "consumer_secret": "consumer-secret"},
            cipher,
            {"api_url": url, "poll_seconds": 60},
        )
    return Connected(fake, channel.id, cipher)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def poll_now(db: Database, x: Connected, http: httpx.AsyncClient) -> int:
    async with db.transaction() as session:
        await session.execute(update(ChannelAccount).values(fetched_at=None))
    return await channels.poll_due(db, x.cipher, http)


async def test_polled_mentions_reach_the_inbox_once_and_polling_resumes_after_them(
    db: Database, settings: Settings, x: Connected, http: httpx.AsyncClient
) -> None:
    x.fake.add_tweet(CUSTOMER, "@AlloCare my parcel is a week late")
    assert await poll_now(db, x, http) == 1
    assert await poll_now(db, x, http) == 0  # since_id: nothing new
    x.fake.add_tweet(CUSTOMER, "@AlloCare still nothing…")
    assert await poll_now(db, x, http) == 1
    await process(db, settings)
    async with db.sessions() as session:
        texts = (await session.scalars(select(Message.text).order_by(Message.sent_at))).all()
        events = (await session.scalars(select(InboundEvent.status))).all()
    assert texts == ["@AlloCare my parcel is a week late", "@AlloCare still nothing…"]
    assert events == ["processed", "processed"]


async def test_a_channel_is_not_polled_before_its_interval(
    db: Database, x: Connected, http: httpx.AsyncClient
) -> None:
    x.fake.add_tweet(CUSTOMER, "@AlloCare hello")
    assert await poll_now(db, x, http) == 1
    x.fake.add_tweet(CUSTOMER, "@AlloCare hello again")
    assert await channels.poll_due(db, x.cipher, http) == 0  # polled less than 60 s ago
    assert len(x.fake.requests_to("/2/users/" + x.fake.own_id + "/mentions")) == 1


async def reply_to_mention(
    db: Database, settings: Settings, x: Connected, http: httpx.AsyncClient
) -> tuple[str, int]:
    """A polled mention, answered by an agent: the mention's id and the reply's message id."""
    mention = x.fake.add_tweet(CUSTOMER, "@AlloCare is the store open today?")
    await poll_now(db, x, http)
    await process(db, settings)
    written = await agent_replies(db, "@jane_doe Yes, until 8 pm!", visibility="public")
    return mention["id"], written.message.id


def posted_by_brand(fake: FakeX) -> list[dict[str, object]]:
    return [t for t in fake.tweets.values() if t["author_id"] == fake.own_id]


async def expire_leases(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(OutboxEntry).values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


async def test_a_reply_goes_to_the_mention_it_answers(
    db: Database, settings: Settings, x: Connected, http: httpx.AsyncClient
) -> None:
    mention_id, message_id = await reply_to_mention(db, settings, x, http)
    report = await Sender(db, x.cipher, http, 3).send_due()
    assert report.sent == 1
    [reply] = posted_by_brand(x.fake)
    assert reply["referenced_tweets"] == [{"type": "replied_to", "id": mention_id}]
    async with db.sessions() as session:
        message = await session.get(Message, message_id)
    assert message is not None and message.external_id == reply["id"]


async def test_a_crash_after_x_took_the_reply_is_settled_by_finding_it_not_by_posting_again(
    db: Database, settings: Settings, x: Connected, http: httpx.AsyncClient
) -> None:
    _, message_id = await reply_to_mention(db, settings, x, http)
    sender = Sender(db, x.cipher, http, 3)
    [claimed] = await sender._claim("queued", None)
    connection = channels.connect(claimed.channel_account, x.cipher, http)
    posted = await x_network.send(connection, claimed.outgoing)  # then the worker dies
    await expire_leases(db)
    report = await sender.send_due()
    assert report.reconciled == 1 and report.sent == 0
    assert len(posted_by_brand(x.fake)) == 1
    async with db.sessions() as session:
        message = await session.get(Message, message_id)
        entry = await session.scalar(select(OutboxEntry))
    assert message is not None and message.external_id == posted.external_id
    assert entry is not None and entry.status == "sent"


async def test_a_crash_before_x_got_the_reply_sends_it_once_after_looking(
    db: Database, settings: Settings, x: Connected, http: httpx.AsyncClient
) -> None:
    await reply_to_mention(db, settings, x, http)
    sender = Sender(db, x.cipher, http, 3)
    await sender._claim("queued", None)  # claimed, then the worker dies before calling X
    await expire_leases(db)
    first = await sender.send_due()
    assert first.reconciled == 1
    assert len(posted_by_brand(x.fake)) == 1  # looked, found nothing, sent it
    async with db.sessions() as session:
        entry = await session.scalar(select(OutboxEntry))
    assert entry is not None and entry.status == "sent"


async def test_an_echo_stored_before_the_send_was_written_is_merged_into_the_reply(
    db: Database, settings: Settings, x: Connected, http: httpx.AsyncClient
) -> None:
    """X sends the brand's own post back with its link shortened: the text does not match the
    reply being sent, so the echo is stored first; once the send is settled, one message."""
    mention_id, message_id = await reply_to_mention(db, settings, x, http)
    sender = Sender(db, x.cipher, http, 3)
    [claimed] = await sender._claim("queued", None)
    connection = channels.connect(claimed.channel_account, x.cipher, http)
    posted = await x_network.send(connection, claimed.outgoing)  # then the worker dies
    echo = {
        "for_user_id": x.fake.own_id,
        "tweet_create_events": [
            {
                "created_at": datetime.now(UTC).strftime("%a %b %d %H:%M:%S +0000 %Y"),
                "id_str": posted.external_id,
                "text": "@jane_doe Yes, until 8 pm! https://t.co/abc",
                "in_reply_to_status_id_str": mention_id,
                "in_reply_to_user_id_str": CUSTOMER,
                "user": {"id_str": x.fake.own_id, "screen_name": "AlloCare", "name": "Allo"},
            }
        ],
    }
    async with db.transaction() as session:
        await intake.record(
            session,
            intake.NewEvent(
                account_id=claimed.channel_account.account_id,
                channel_account_id=x.channel_id,
                parser="x",
                external_id="echo-1",
                raw=json.dumps(echo).encode(),
            ),
        )
    await process(db, settings)
    await expire_leases(db)
    assert (await sender.send_due()).reconciled == 1
    async with db.sessions() as session:
        replies_out = (
            await session.scalars(select(Message).where(Message.direction == "out"))
        ).all()
    assert [(m.id, m.external_id) for m in replies_out] == [(message_id, posted.external_id)]
    assert len(posted_by_brand(x.fake)) == 1
