"""Canned responses: saved per language, checked when saved, filled in for the conversation
at hand, offered in the composer in the customer's language first."""

from __future__ import annotations

import re

import httpx
import pytest

from allo.accounts import service as accounts
from allo.db.engine import Database
from allo.replies import service as replies
from allo.settings import Settings
from tests.conftest import Tenant, auth
from tests.routing.conftest import arrive, conversations
from tests.web.test_sessions import make_agent, sign_in


async def save(
    db: Database, tenant: Tenant, shortcut: str, body: str, language: str | None = None
) -> None:
    async with db.transaction() as session:
        await replies.save_canned(session, tenant.account_id, shortcut, shortcut, body, language)


def test_variables_are_filled_for_the_conversation_at_hand() -> None:
    values = replies.canned_values("Camille Durand", "Ana Agent", 42)
    body = (
        "Bonjour {{contact.first_name}}, {{ agent.first_name }} ici (dossier {{conversation.id}})."
    )
    assert replies.fill_canned(body, values) == "Bonjour Camille, Ana ici (dossier 42)."
    assert (
        replies.fill_canned("Hi {{contact.first_name}}!", replies.canned_values(None, "A", 1))
        == "Hi !"
    )


@pytest.mark.parametrize(
    ("shortcut", "body", "language", "field"),
    [
        ("Refund Delay", "ok", None, "shortcut"),
        ("refund", "", None, "body"),
        ("refund", "x" * (replies.MAX_CANNED + 1), None, "body"),
        ("refund", "Bonjour {{contact.password}}", None, "body"),
        ("refund", "ok", "french", "language"),
    ],
)
def test_what_would_not_work_is_refused_when_saved(
    shortcut: str, body: str, language: str | None, field: str
) -> None:
    with pytest.raises(replies.ReplyError) as refused:
        replies.check_canned(shortcut, "Title", body, language)
    assert refused.value.field == field


async def test_one_shortcut_per_language_and_the_customers_language_first(
    db: Database, tenant: Tenant
) -> None:
    await save(db, tenant, "delay", "Sorry for the delay", "en")
    await save(db, tenant, "delay", "Désolé pour le retard", "fr")
    await save(db, tenant, "delay", "Désolés pour ce retard", "fr")  # changes the French one
    await save(db, tenant, "thanks", "Merci ! / Thank you!")
    async with db.sessions() as session:
        everything = await replies.list_canned(session, tenant.account_id)
        french = await replies.list_canned(session, tenant.account_id, "fr")
    assert len(everything) == 3
    assert [(c.shortcut, c.body) for c in french] == [
        ("delay", "Désolés pour ce retard"),
        ("thanks", "Merci ! / Thank you!"),
    ]


async def test_the_api_saves_lists_and_deletes(client: httpx.AsyncClient, tenant: Tenant) -> None:
    headers = auth(tenant.token)
    saved = await client.put(
        "/api/v1/canned-responses",
        json={"shortcut": "hello", "title": "Hello", "body": "Hi {{contact.first_name}}"},
        headers=headers,
    )
    assert saved.status_code == 200
    bad = await client.put(
        "/api/v1/canned-responses",
        json={"shortcut": "x", "title": "X", "body": "{{agent.salary}}"},
        headers=headers,
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "body"
    listed = (await client.get("/api/v1/canned-responses", headers=headers)).json()
    assert [c["shortcut"] for c in listed] == ["hello"]
    url = f"/api/v1/canned-responses/{saved.json()['id']}"
    assert (await client.delete(url, headers=headers)).status_code == 204
    assert (await client.delete(url, headers=headers)).status_code == 404


async def test_the_composer_offers_them_filled_in_and_only_supervisors_change_them(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await save(
        db, tenant, "hello", "Bonjour {{contact.first_name}}, <b>{{agent.first_name}}</b> ici"
    )
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    token = await sign_in(client)
    page = (await client.get(f"/conversations/{conversation.id}")).text
    assert 'Bonjour , &lt;b&gt;Ana&lt;/b&gt; ici">hello</option>' in page
    refused = await client.post(
        "/settings/canned-responses",
        data={"csrf_token": token, "shortcut": "bye", "title": "Bye", "body": "Au revoir"},
    )
    assert refused.headers["location"].endswith("error=role")
    listing = (await client.get("/settings/canned-responses")).text
    assert re.search(r"<code>bye</code>", listing) is None


async def test_an_agents_token_cannot_change_canned_responses(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    agent_id = await make_agent(db, tenant)
    async with db.transaction() as session:
        token = await accounts.create_api_token(session, tenant.account_id, "ana", agent_id)
    refused = await client.put(
        "/api/v1/canned-responses",
        json={"shortcut": "x", "title": "X", "body": "Hello"},
        headers=auth(token),
    )
    assert refused.status_code == 403
