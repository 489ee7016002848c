"""Custom intents and corrections through the API."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from allo.db.engine import Database
from allo.settings import Settings
from allo.triage import service as triage
from allo.triage.assessor import Assessor
from allo.triage.models import TriageCorrection
from tests.conftest import Tenant, auth, process

EXAMPLES = {
    "refund": ["I want my money back", "please refund me", "remboursez-moi svp", "refund my order"],
    "delivery": ["where is my parcel", "my package is late", "colis pas arrivé", "delivery delay"],
}


async def define(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for name, examples in EXAMPLES.items():
        response = await client.post(
            "/api/v1/triage/intents",
            json={"name": name, "description": f"about {name}", "examples": examples},
            headers=auth(tenant.token),
        )
        assert response.status_code == 201, response.text


async def one_triaged_message(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings, text: str
) -> int:
    response = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages",
        json={"external_id": "t1", "contact": {"id": "c1"}, "text": text},
        headers=auth(tenant.token),
    )
    assert response.status_code == 202
    await process(db, settings)
    await triage.triage_pending(db, Assessor())
    conversations = await client.get("/api/v1/conversations", headers=auth(tenant.token))
    conversation_id = conversations.json()["conversations"][0]["id"]
    listed = await client.get(
        f"/api/v1/conversations/{conversation_id}/messages", headers=auth(tenant.token)
    )
    return int(listed.json()["messages"][0]["id"])


async def test_intents_are_defined_listed_replaced_and_deleted(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await define(client, tenant)
    replaced = await client.post(
        "/api/v1/triage/intents",
        json={"name": "refund", "examples": ["money back please", "  "]},
        headers=auth(tenant.token),
    )
    listed = (await client.get("/api/v1/triage/intents", headers=auth(tenant.token))).json()

    assert [i["name"] for i in listed] == ["delivery", "refund"]
    assert listed[1]["examples"] == ["money back please"]
    deleted = await client.delete(
        f"/api/v1/triage/intents/{replaced.json()['id']}", headers=auth(tenant.token)
    )
    assert deleted.status_code == 204
    missing = await client.delete(
        f"/api/v1/triage/intents/{replaced.json()['id']}", headers=auth(tenant.token)
    )
    assert missing.status_code == 404


async def test_a_blank_intent_name_is_refused(client: httpx.AsyncClient, tenant: Tenant) -> None:
    response = await client.post(
        "/api/v1/triage/intents", json={"name": " "}, headers=auth(tenant.token)
    )
    assert response.status_code == 422


async def test_training_makes_a_new_active_version_and_keeps_the_previous(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    await define(client, tenant)

    first = await client.post("/api/v1/triage/intents/train", headers=auth(tenant.token))
    second = await client.post("/api/v1/triage/intents/train", headers=auth(tenant.token))
    versions = (
        await client.get("/api/v1/triage/intents/models", headers=auth(tenant.token))
    ).json()

    assert (first.status_code, second.status_code) == (201, 201)
    assert [(v["version"], v["active"]) for v in versions] == [(2, True), (1, False)]
    assert versions[0]["labels"] == ["delivery", "refund"] and versions[0]["examples"] == 8


async def test_training_without_enough_examples_is_refused(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    response = await client.post("/api/v1/triage/intents/train", headers=auth(tenant.token))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "cannot_train"


async def test_a_correction_changes_the_message_and_feeds_the_next_training(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    await define(client, tenant)
    message_id = await one_triaged_message(
        client, tenant, db, settings, "the courier left my box at the wrong door"
    )

    corrected = await client.post(
        f"/api/v1/messages/{message_id}/corrections",
        json={"field": "intent", "value": "delivery"},
        headers=auth(tenant.token),
    )
    sentiment = await client.post(
        f"/api/v1/messages/{message_id}/corrections",
        json={"field": "sentiment", "value": "negative"},
        headers=auth(tenant.token),
    )
    trained = await client.post("/api/v1/triage/intents/train", headers=auth(tenant.token))

    assert corrected.status_code == 201 and corrected.json()["value"] == ["delivery"]
    assert sentiment.json()["value"] == {"label": "negative", "score": -1.0}
    assert trained.json()["corrections"] == 1 and trained.json()["examples"] == 9
    async with db.sessions() as session:
        assert len((await session.scalars(select(TriageCorrection))).all()) == 2


async def test_bad_corrections_are_refused(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    message_id = await one_triaged_message(client, tenant, db, settings, "hello?")
    cases = [
        ({"field": "sentiment", "value": "furious"}, 422),
        ({"field": "spam", "value": "yes"}, 422),
        ({"field": "colour", "value": "red"}, 422),
        ({"field": "language", "value": "<script>"}, 422),
    ]
    for body, status in cases:
        response = await client.post(
            f"/api/v1/messages/{message_id}/corrections", json=body, headers=auth(tenant.token)
        )
        assert response.status_code == status, (body, response.text)
    unknown = await client.post(
        "/api/v1/messages/999999/corrections",
        json={"field": "spam", "value": True},
        headers=auth(tenant.token),
    )
    assert unknown.status_code == 404
