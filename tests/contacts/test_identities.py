"""Contacts: one per channel identity, refreshed as the channel learns more; listed over the API."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from allo.accounts import service as accounts
from allo.channels.inbound import Author
from allo.contacts import service as contacts
from allo.contacts.models import Contact, Identity
from allo.db.engine import Database
from tests.conftest import Tenant, auth


async def resolve(db: Database, account_id: int, platform: str, author: Author) -> int:
    async with db.transaction() as session:
        return await contacts.resolve_identity(session, account_id, platform, author)


async def identities(db: Database) -> list[Identity]:
    async with db.sessions() as session:
        return list((await session.scalars(select(Identity).order_by(Identity.id))).all())


async def contact_count(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Contact)) or 0)


async def test_a_new_identity_creates_one_contact_and_the_same_identity_finds_it_again(
    db: Database, tenant: Tenant
) -> None:
    author = Author(
        platform_id="115712",
        handle="camille_fr",
        display_name="Camille",
        email="camille@example.fr",
        phone="+33611111111",
        language="fr",
    )
    first = await resolve(db, tenant.account_id, "x", author)
    again = await resolve(db, tenant.account_id, "x", Author(platform_id="115712"))
    assert first == again
    assert await contact_count(db) == 1
    async with db.sessions() as session:
        contact = await session.get(Contact, first)
    assert contact is not None
    assert (contact.name, contact.email, contact.phone, contact.language) == (
        "Camille",
        "camille@example.fr",
        "+33611111111",
        "fr",
    )
    [identity] = await identities(db)
    assert (identity.contact_id, identity.platform, identity.platform_id) == (first, "x", "115712")
    assert (identity.handle, identity.display_name) == ("camille_fr", "Camille")


async def test_two_transactions_creating_the_same_identity_end_with_one_contact(
    db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as first:
        first_id = await contacts.resolve_identity(first, tenant.account_id, "x", Author("7"))
        # The second waits on the unique index until the first commits, then takes its contact
        # and drops the one it had made.
        second = asyncio.create_task(resolve(db, tenant.account_id, "x", Author("7")))
        await asyncio.sleep(0.3)
        assert not second.done()
    assert await second == first_id
    assert await contact_count(db) == 1
    assert [i.contact_id for i in await identities(db)] == [first_id]


async def test_a_contact_without_a_display_name_is_named_by_its_handle(
    db: Database, tenant: Tenant
) -> None:
    contact_id = await resolve(db, tenant.account_id, "x", Author("1", handle="someone"))
    async with db.sessions() as session:
        contact = await session.get(Contact, contact_id)
    assert contact is not None and contact.name == "someone"


async def test_a_known_identity_is_refreshed_with_what_the_channel_now_says(
    db: Database, tenant: Tenant
) -> None:
    await resolve(db, tenant.account_id, "x", Author("115712", "old_handle", "Old", followers=10))
    await resolve(
        db,
        tenant.account_id,
        "x",
        Author("115712", "new_handle", "New name", followers=12_000, verified=True),
    )
    [identity] = await identities(db)
    assert (identity.handle, identity.display_name, identity.followers, identity.verified) == (
        "new_handle",
        "New name",
        12_000,
        True,
    )
    # What the channel does not say now is kept, not erased.
    await resolve(db, tenant.account_id, "x", Author("115712"))
    [identity] = await identities(db)
    assert (identity.handle, identity.display_name, identity.followers, identity.verified) == (
        "new_handle",
        "New name",
        12_000,
        True,
    )


async def test_the_same_id_on_two_platforms_is_two_contacts(db: Database, tenant: Tenant) -> None:
    on_x = await resolve(db, tenant.account_id, "x", Author("42"))
    on_whatsapp = await resolve(db, tenant.account_id, "whatsapp", Author("42"))
    assert on_x != on_whatsapp
    assert await contact_count(db) == 2
    assert [(i.platform, i.contact_id) for i in await identities(db)] == [
        ("x", on_x),
        ("whatsapp", on_whatsapp),
    ]


async def test_the_same_identity_in_two_accounts_is_two_contacts(
    db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as session:
        other = await accounts.create_account(session, "Other brand")
    mine = await resolve(db, tenant.account_id, "x", Author("42"))
    theirs = await resolve(db, other.id, "x", Author("42"))
    assert mine != theirs


# The contacts API


async def test_contacts_are_searched_by_name_handle_email_and_phone(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    camille = await resolve(
        db,
        tenant.account_id,
        "x",
        Author("1", handle="camille_fr", display_name="Camille", email="c.dupont@example.fr"),
    )
    yusuf = await resolve(
        db,
        tenant.account_id,
        "whatsapp",
        Author("+33622222222", display_name="Yusuf", phone="+33622222222"),
    )
    await resolve(
        db, tenant.account_id, "email", Author("zoe.f@example.org", email="zoe.f@example.org")
    )
    headers = auth(tenant.token)

    async def found(q: str) -> list[int]:
        response = await client.get("/api/v1/contacts", params={"q": q}, headers=headers)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["contacts"]]

    assert await found("CAMILLE_FR") == [camille]
    assert await found("dupont@") == [camille]
    assert await found("yus") == [yusuf]
    assert await found("22222") == [yusuf]
    assert len(await found("example")) == 2
    assert await found("nobody") == []
    # LIKE wildcards are searched literally.
    assert await found("e_f") == [camille]
    assert await found("%%") == []


async def test_a_search_shorter_than_two_characters_is_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.get("/api/v1/contacts", params={"q": "c"}, headers=auth(tenant.token))
    assert response.status_code == 422


async def test_contacts_are_listed_in_pages_by_cursor(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    created = [await resolve(db, tenant.account_id, "api", Author(f"c{n}")) for n in range(5)]
    headers = auth(tenant.token)
    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/contacts", params=params, headers=headers)).json()
        pages.append([c["id"] for c in page["contacts"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [created[0:2], created[2:4], created[4:5]]

    exact = await client.get("/api/v1/contacts", params={"limit": "5"}, headers=headers)
    assert exact.json()["next_cursor"] is None and len(exact.json()["contacts"]) == 5
    bad = await client.get("/api/v1/contacts", params={"cursor": "abc"}, headers=headers)
    assert bad.status_code == 422


async def test_a_contact_is_shown_with_every_identity(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    contact_id = await resolve(
        db, tenant.account_id, "x", Author("115712", "camille_fr", "Camille", followers=3)
    )
    response = await client.get(f"/api/v1/contacts/{contact_id}", headers=auth(tenant.token))
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Camille"
    assert [
        (i["platform"], i["platform_id"], i["handle"], i["followers"]) for i in body["identities"]
    ] == [("x", "115712", "camille_fr", 3)]


async def test_another_accounts_contact_is_not_found_nor_listed(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as session:
        other = await accounts.create_account(session, "Other brand")
    theirs = await resolve(db, other.id, "x", Author("99", "their_customer"))
    response = await client.get(f"/api/v1/contacts/{theirs}", headers=auth(tenant.token))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    listed = await client.get("/api/v1/contacts", params={"q": "their"}, headers=auth(tenant.token))
    assert listed.json()["contacts"] == []
    everything = await client.get("/api/v1/contacts", headers=auth(tenant.token))
    assert everything.json()["contacts"] == []
