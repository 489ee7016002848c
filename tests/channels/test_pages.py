"""The channels settings page: every inbox with where to push messages; admins add API inboxes."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from allo.accounts.models import User
from allo.channels import service as channels
from allo.channels.models import ChannelAccount
from allo.db.engine import Database
from tests.conftest import Tenant
from tests.fakes.server import serving
from tests.fakes.whatsapp_cloud import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, FakeWhatsAppCloud
from tests.web.test_sessions import make_agent, sign_in


async def test_inboxes_are_listed_and_only_an_admin_adds_one(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    token = await sign_in(client)
    page = (await client.get("/settings/channels")).text
    assert f"/api/v1/inboxes/{tenant.inbox_id}/messages" in page
    await client.post("/settings/channels", data={"csrf_token": token, "name": "CRM"})
    async with db.transaction() as session:
        assert len(await channels.list_channel_accounts(session, tenant.account_id)) == 1
        user = await session.scalar(select(User))
        assert user is not None
        user.role = "admin"
    await client.post("/settings/channels", data={"csrf_token": token, "name": "<b>CRM</b>"})
    async with db.sessions() as session:
        names = [c.name for c in await channels.list_channel_accounts(session, tenant.account_id)]
    assert names == ["API", "<b>CRM</b>"]
    assert "&lt;b&gt;CRM&lt;/b&gt;" in (await client.get("/settings/channels")).text


async def test_an_admin_connects_a_network_sees_its_webhook_and_checks_it(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    token = await sign_in(client)
    form = {
        "csrf_token": token,
        "kind": "whatsapp",
        "external_id": PHONE_NUMBER_ID,
        "access_token": ACCESS_TOKEN,
        "app_secret": APP_SECRET,
    }
    refused = await client.post("/settings/channels/connect", data=form)
    assert refused.headers["location"] == "/settings/channels?error=role"
    async with db.transaction() as session:
        user = await session.scalar(select(User))
        assert user is not None
        user.role = "admin"
    missing = await client.post("/settings/channels/connect", data={**form, "app_secret": ""})
    assert "connect_error=whatsapp+needs+app_secret" in missing.headers["location"]
    fake = FakeWhatsAppCloud()
    with serving(fake.app) as url:
        assert (await client.post("/settings/channels/connect", data=form)).status_code == 303
        async with db.transaction() as session:
            channel = await session.scalar(
                select(ChannelAccount).where(ChannelAccount.kind == "whatsapp")
            )
            assert channel is not None
            channel.settings = {"api_url": url}
        page = (await client.get("/settings/channels")).text
        assert f"/webhooks/{channel.id}" in page and "not checked yet" in page
        checked = await client.post(
            f"/settings/channels/{channel.id}/check", data={"csrf_token": token}
        )
        assert checked.status_code == 303
    page = (await client.get("/settings/channels")).text
    assert "working" in page and ACCESS_TOKEN not in page and APP_SECRET not in page
