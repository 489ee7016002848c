"""WhatsApp templates: recorded as Meta approved them, the one message allowed once the
customer's 24-hour window has closed, queued with their name and parameters for the sender."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from allo.db.engine import Database
from allo.replies import service as replies
from allo.replies.models import OutboxEntry
from allo.settings import Settings
from tests.conftest import Tenant, auth
from tests.replies.test_replies import write
from tests.replies.test_rules import as_channel
from tests.routing.conftest import arrive, conversations
from tests.web.test_sessions import make_agent, sign_in

BODY = "Bonjour {{1}}, votre commande {{2}} est arrivée au magasin."


@pytest.mark.parametrize(
    ("name", "language", "body", "field"),
    [
        ("Order Update", "fr", BODY, "name"),
        ("order_update", "français", BODY, "language"),
        ("order_update", "fr", "Bonjour {{2}}", "body"),
        ("order_update", "fr", "", "body"),
    ],
)
async def test_a_template_not_as_meta_names_it_is_refused(
    db: Database, tenant: Tenant, name: str, language: str, body: str, field: str
) -> None:
    with pytest.raises(replies.ReplyError) as refused:
        async with db.transaction() as session:
            await replies.save_template(session, tenant.account_id, name, language, body)
    assert refused.value.field == field


async def test_after_the_window_only_a_template_goes_out_with_its_parameters(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    await as_channel(db, conversation, "whatsapp", timedelta(hours=30))
    async with db.transaction() as session:
        template = await replies.save_template(
            session, tenant.account_id, "order_update", "fr", BODY
        )
    with pytest.raises(replies.ReplyError):
        await write(db, tenant, conversation.id, "free")
    url = f"/api/v1/conversations/{conversation.id}/template-messages"
    missing = await client.post(
        url,
        json={"template_id": template.id, "parameters": ["Inès"], "idempotency_key": "t0"},
        headers=auth(tenant.token),
    )
    assert missing.status_code == 422 and missing.json()["error"]["field"] == "parameters"
    sent = await client.post(
        url,
        json={"template_id": template.id, "parameters": ["Inès", "A-42"], "idempotency_key": "t1"},
        headers=auth(tenant.token),
    )
    assert sent.status_code == 201
    assert (
        sent.json()["message"]["text"]
        == "Bonjour Inès, votre commande A-42 est arrivée au magasin."
    )
    async with db.sessions() as session:
        entry = await session.scalar(select(OutboxEntry))
    assert entry is not None and entry.payload == {
        "template": {"name": "order_update", "language": "fr", "parameters": ["Inès", "A-42"]}
    }


async def test_the_composer_offers_templates_on_whatsapp_only(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    async with db.transaction() as session:
        await replies.save_template(session, tenant.account_id, "order_update", "fr", BODY)
    token = await sign_in(client)
    page = (await client.get(f"/conversations/{conversation.id}")).text
    assert "order_update" not in page
    await as_channel(db, conversation, "whatsapp", timedelta(hours=30))
    page = (await client.get(f"/conversations/{conversation.id}")).text
    assert "order_update" in page and "only an approved template" in page
    template_id = page.split('name="template_id" required>')[1].split('value="')[1].split('"')[0]
    key = page.split('name="key" value="')[2].split('"')[0]
    sent = await client.post(
        f"/conversations/{conversation.id}/template",
        data={
            "csrf_token": token,
            "template_id": template_id,
            "parameters": "Inès\nA-42\n",
            "key": key,
        },
    )
    assert sent.status_code == 303 and "template_error" not in sent.headers["location"]
    async with db.sessions() as session:
        assert len(list(await session.scalars(select(OutboxEntry)))) == 1
