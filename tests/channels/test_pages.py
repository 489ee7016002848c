"""The channels settings page: every inbox with where to push messages; admins add API inboxes."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from allo.accounts.models import User
from allo.channels import service as channels
from allo.db.engine import Database
from tests.conftest import Tenant
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
