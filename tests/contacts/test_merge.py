"""Merging two contacts that are one customer: identities, conversations and messages move,
details fill in, the other contact is gone; refused across accounts and into itself."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from allo.contacts.models import Contact, ContactNote, Identity
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.settings import Settings
from tests.conftest import Tenant, auth, process
from tests.routing.conftest import push
from tests.web.test_sessions import make_agent, sign_in


async def two_of_one_customer(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> tuple[int, int]:
    for external_id, contact in (("m1", "twitter-camille"), ("m2", "mail-camille")):
        answer = await client.post(
            f"/api/v1/inboxes/{tenant.inbox_id}/messages",
            json={
                "external_id": external_id,
                "contact": {"id": contact, "name": "Camille Durand"},
                "text": "Bonjour",
            },
            headers=auth(tenant.token),
        )
        assert answer.status_code == 202
    await process(db, settings)
    async with db.transaction() as session:
        first, second = list(await session.scalars(select(Contact).order_by(Contact.id)))
        second.email = "camille@example.test"
        second.attributes = {"vip": True}
        return first.id, second.id


async def test_merging_moves_everything_to_the_kept_contact(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    keep, merged = await two_of_one_customer(client, db, settings, tenant)
    answer = await client.post(
        f"/api/v1/contacts/{keep}/merge", json={"contact_id": merged}, headers=auth(tenant.token)
    )
    assert answer.status_code == 200
    assert len(answer.json()["identities"]) == 2
    async with db.sessions() as session:
        contacts = list(await session.scalars(select(Contact)))
        owners = set(await session.scalars(select(Conversation.contact_id)))
        authors = set(await session.scalars(select(Message.author_contact_id)))
        identities = await session.scalar(
            select(func.count()).select_from(Identity).where(Identity.contact_id == keep)
        )
    assert [(c.id, c.email, c.attributes) for c in contacts] == [
        (keep, "camille@example.test", {"vip": True})
    ]
    assert owners == authors == {keep} and identities == 2


async def test_a_merge_into_itself_or_across_accounts_is_refused(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    keep, _ = await two_of_one_customer(client, db, settings, tenant)
    itself = await client.post(
        f"/api/v1/contacts/{keep}/merge", json={"contact_id": keep}, headers=auth(tenant.token)
    )
    missing = await client.post(
        f"/api/v1/contacts/{keep}/merge", json={"contact_id": 999999}, headers=auth(tenant.token)
    )
    assert itself.status_code == 422 and missing.status_code == 404
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Contact)) == 2


async def test_the_customer_panel_offers_the_same_name_for_merging(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    keep, merged = await two_of_one_customer(client, db, settings, tenant)
    await push(client, tenant, "m3", "Encore moi", contact="twitter-camille")
    async with db.sessions() as session:
        conversation_id = await session.scalar(
            select(Conversation.id).where(Conversation.contact_id == keep)
        )
    token = await sign_in(client)
    page = (await client.get(f"/conversations/{conversation_id}")).text
    assert f'name="merged_id" value="{merged}"' in page
    done = await client.post(
        f"/contacts/{keep}/merge",
        data={"csrf_token": token, "merged_id": str(merged), "back_to": str(conversation_id)},
    )
    assert done.status_code == 303
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Contact)) == 1


async def test_notes_about_a_customer_are_kept_and_shown_escaped(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    keep, merged = await two_of_one_customer(client, db, settings, tenant)
    async with db.sessions() as session:
        conversation_id = await session.scalar(
            select(Conversation.id).where(Conversation.contact_id == keep)
        )
    token = await sign_in(client)
    url = f"/contacts/{keep}/notes"
    for text in ("Préfère être appelée le matin <script>x</script>", "   ", "x" * 6000):
        answer = await client.post(
            url, data={"csrf_token": token, "text": text, "back_to": str(conversation_id)}
        )
        assert answer.status_code == 303
    page = (await client.get(f"/conversations/{conversation_id}")).text
    assert "Préfère être appelée le matin &lt;script&gt;" in page
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ContactNote)) == 1
    # Merged into the other contact, the note follows the customer.
    other = await client.post(
        f"/api/v1/contacts/{merged}/merge", json={"contact_id": keep}, headers=auth(tenant.token)
    )
    assert other.status_code == 200
    async with db.sessions() as session:
        assert set(await session.scalars(select(ContactNote.contact_id))) == {merged}
