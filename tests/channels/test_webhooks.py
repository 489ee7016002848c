"""Webhooks of the networks, end to end: signed bytes in, stored raw, processed into the inbox;
statuses applied to the replies they name, in whatever order they come."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.channels.credentials import CredentialsCipher, load_key
from allo.channels.models import DeliveryUpdate
from allo.channels.signatures import x_signature
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.intake.models import InboundEvent
from allo.settings import Settings
from tests.conftest import REPO, SHARED, process
from tests.fakes.whatsapp_channel import (
    CUSTOMER,
    VERIFY_TOKEN,
    Connected,
    change,
    signed,
    status,
    text_message,
)


async def count(db: Database, model: type[Any]) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_meta_subscribes_with_the_verify_token_given_at_connection(
    client: httpx.AsyncClient, whatsapp: Connected
) -> None:
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": VERIFY_TOKEN,
        "hub.challenge": "1158201444",
    }
    answer = await client.get(f"/webhooks/{whatsapp.channel_id}", params=query)
    assert answer.status_code == 200
    assert answer.text == "1158201444"
    wrong = await client.get(
        f"/webhooks/{whatsapp.channel_id}", params={**query, "hub.verify_token": "guess"}
    )
    assert wrong.status_code == 403
    assert (await client.get("/webhooks/999999", params=query)).status_code == 404


async def test_a_signed_message_is_stored_raw_then_reaches_the_inbox_once(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected
) -> None:
    raw = text_message("wamid.A1", "Bonjour, ma commande n'est pas arrivée 📦")
    first = await client.post(f"/webhooks/{whatsapp.channel_id}", content=raw, headers=signed(raw))
    again = await client.post(f"/webhooks/{whatsapp.channel_id}", content=raw, headers=signed(raw))
    assert first.status_code == again.status_code == 200
    assert first.json()["duplicate"] is False and again.json()["duplicate"] is True
    async with db.sessions() as session:
        event = await session.scalar(select(InboundEvent))
    assert event is not None and event.raw == raw and event.parser == "whatsapp"
    assert event.headers["x-hub-signature-256"].startswith("sha256=")

    await process(db, settings)
    async with db.sessions() as session:
        messages = (await session.scalars(select(Message))).all()
        conversation = await session.scalar(select(Conversation))
    assert [m.text for m in messages] == ["Bonjour, ma commande n'est pas arrivée 📦"]
    assert conversation is not None and conversation.channel == "whatsapp"
    assert conversation.visibility == "private" and conversation.recipient_id == CUSTOMER


@pytest.mark.parametrize(
    ("headers", "status_code"),
    [
        ({"Content-Type": "application/json"}, 401),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 403),
        ({"X-Hub-Signature-256": "sha1=fe88ecdfc7d2625d07453fe348460bad55999610"}, 403),
    ],
    ids=["missing", "forged", "legacy-sha1-only"],
)
async def test_an_unsigned_or_forged_webhook_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
    db: Database,
    whatsapp: Connected,
    headers: dict[str, str],
    status_code: int,
) -> None:
    raw = text_message("wamid.F1", "<script>alert(1)</script>")
    answer = await client.post(f"/webhooks/{whatsapp.channel_id}", content=raw, headers=headers)
    assert answer.status_code == status_code
    assert await count(db, InboundEvent) == 0


async def test_a_body_signed_with_another_apps_secret_is_refused(
    client: httpx.AsyncClient, db: Database, whatsapp: Connected
) -> None:
    raw = text_message("wamid.F2", "hello")
    answer = await client.post(
        f"/webhooks/{whatsapp.channel_id}", content=raw, headers=signed(raw, "another-secret")
    )
    assert answer.status_code == 403
    assert await count(db, InboundEvent) == 0


async def test_a_webhook_over_the_size_limit_is_refused_with_413(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected
) -> None:
    raw = text_message("wamid.BIG", "x" * settings.max_body_bytes)
    answer = await client.post(f"/webhooks/{whatsapp.channel_id}", content=raw, headers=signed(raw))
    assert answer.status_code == 413
    assert await count(db, InboundEvent) == 0


async def test_a_webhook_for_a_channel_without_a_network_is_not_found(
    client: httpx.AsyncClient, db: Database
) -> None:
    async with db.transaction() as session:
        account = await accounts.create_account(session, "Brand")
        inbox = await channels.create_channel_account(session, account.id, "api", "API", "api-x")
    raw = b"{}"
    answer = await client.post(f"/webhooks/{inbox.id}", content=raw, headers=signed(raw))
    assert answer.status_code == 404


async def test_a_signed_body_that_is_not_json_is_kept_and_marked_failed(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected
) -> None:
    raw = b'{"object": "whatsapp_business_account", "entry": ['
    answer = await client.post(f"/webhooks/{whatsapp.channel_id}", content=raw, headers=signed(raw))
    assert answer.status_code == 200
    report = await process(db, settings)
    assert report.failed == 1
    async with db.sessions() as session:
        event = await session.scalar(select(InboundEvent))
    assert event is not None and event.status == "failed" and event.raw == raw
    assert event.error and "ParseError" in event.error


async def test_statuses_move_a_reply_forward_and_never_back(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected
) -> None:
    raw = text_message("wamid.IN2", "Bonjour")
    await client.post(f"/webhooks/{whatsapp.channel_id}", content=raw, headers=signed(raw))
    await process(db, settings)
    async with db.transaction() as session:
        conversation = await session.scalar(select(Conversation))
        assert conversation is not None
        session.add(
            Message(
                account_id=whatsapp.account_id,
                conversation_id=conversation.id,
                channel_account_id=whatsapp.channel_id,
                direction="out",
                visibility="private",
                external_id="wamid.OUT1",
                text="Bonjour Léa",
                sent_at=datetime.now(UTC),
                received_at=datetime.now(UTC),
                delivery_status="sent",
            )
        )
    for kind in ("read", "delivered"):
        body = status("wamid.OUT1", kind)
        await client.post(f"/webhooks/{whatsapp.channel_id}", content=body, headers=signed(body))
        await process(db, settings)
    async with db.sessions() as session:
        reply = await session.scalar(select(Message).where(Message.external_id == "wamid.OUT1"))
    assert reply is not None and reply.delivery_status == "read"


async def test_a_status_that_comes_before_its_message_waits_for_it(
    client: httpx.AsyncClient, db: Database, settings: Settings, whatsapp: Connected
) -> None:
    early = change(
        {"messages": [], "statuses": []}
    )  # a technical change first: yields nothing, fails nothing
    await client.post(f"/webhooks/{whatsapp.channel_id}", content=early, headers=signed(early))
    reaction = change(
        {
            "contacts": [{"profile": {"name": "Léa"}, "wa_id": CUSTOMER}],
            "messages": [
                {
                    "from": CUSTOMER,
                    "id": "wamid.REACT",
                    "timestamp": "1764400200",
                    "type": "reaction",
                    "reaction": {"message_id": "wamid.LATE", "emoji": "❤️"},
                }
            ],
        }
    )
    await client.post(
        f"/webhooks/{whatsapp.channel_id}", content=reaction, headers=signed(reaction)
    )
    report = await process(db, settings)
    assert report.failed == 0
    assert await count(db, DeliveryUpdate) == 1

    late = text_message("wamid.LATE", "Merci beaucoup !")
    await client.post(f"/webhooks/{whatsapp.channel_id}", content=late, headers=signed(late))
    await process(db, settings)
    async with db.sessions() as session:
        message = await session.scalar(select(Message).where(Message.external_id == "wamid.LATE"))
    assert message is not None and message.reaction == "❤️"
    assert await count(db, DeliveryUpdate) == 0


async def test_x_checks_the_webhook_with_a_crc_and_signs_every_event(
    client: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    vectors = json.loads((SHARED / "fixtures/signatures/signature_vectors.json").read_text())
    crc = vectors["x_crc_and_signature"]
    async with db.transaction() as session:
        account = await accounts.create_account(session, "Brand")
        channel = await channels.connect_channel(
            session, account.id, "x", "@brand", "1400000000000000001",
            {"access_token": "t", "consumer_secret": crc["consumer_secret"]},
            CredentialsCipher(load_key(settings)),
        )  # fmt: skip
    answer = await client.get(f"/webhooks/{channel.id}", params={"crc_token": crc["crc_token"]})
    assert answer.status_code == 200 and answer.json() == crc["expected_response"]
    assert (await client.get(f"/webhooks/{channel.id}")).status_code == 403
    raw = (REPO / "tests/channels/payloads/x/aaa_mention.json").read_bytes()
    forged = await client.post(
        f"/webhooks/{channel.id}",
        content=raw,
        headers={"x-twitter-webhooks-signature": "sha256=AAAA"},
    )
    assert forged.status_code == 403
    signature = x_signature(crc["consumer_secret"], raw)
    accepted = await client.post(
        f"/webhooks/{channel.id}",
        content=raw,
        headers={"x-twitter-webhooks-signature": signature},
    )
    assert accepted.status_code == 200
    report = await process(db, settings)
    assert report.processed == 1 and report.messages >= 1
