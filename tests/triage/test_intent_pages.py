"""The custom intents page: intents with examples one per line, training a version from
them, and what an agent may not do."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from allo.accounts.models import User
from allo.db.engine import Database
from allo.triage.models import IntentLabel, IntentModelVersion
from tests.conftest import Tenant
from tests.web.test_sessions import make_agent, sign_in

EXAMPLES = {
    "refund": "Je veux être remboursé\nRemboursez-moi svp\nI want my money back\nRefund please",
    "delivery": "Où est mon colis ?\nLivraison en retard\nWhere is my parcel?\nMy order is late",
}


async def test_a_supervisor_defines_intents_and_trains_a_version(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    user_id = await make_agent(db, tenant)
    async with db.transaction() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.role = "supervisor"
    token = await sign_in(client)
    untrained = await client.post("/settings/intents/train", data={"csrf_token": token})
    assert untrained.headers["location"].endswith("error=train")
    for name, examples in EXAMPLES.items():
        saved = await client.post(
            "/settings/intents",
            data={"csrf_token": token, "name": name, "examples": examples + "\n\n"},
        )
        assert saved.headers["location"] == "/settings/intents"
    blank = await client.post("/settings/intents", data={"csrf_token": token, "name": " "})
    assert blank.headers["location"].endswith("error=label")
    trained = await client.post("/settings/intents/train", data={"csrf_token": token})
    assert trained.headers["location"] == "/settings/intents"
    async with db.sessions() as session:
        labels = {
            label.name: label.examples for label in await session.scalars(select(IntentLabel))
        }
        version = await session.scalar(select(IntentModelVersion))
    assert len(labels["refund"]) == 4
    assert (
        version is not None and version.active and sorted(version.labels) == ["delivery", "refund"]
    )
    page = (await client.get("/settings/intents")).text
    assert "Version 1" in page and "refund" in page


async def test_an_agent_sees_the_intents_but_changes_nothing(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    token = await sign_in(client)
    refused = await client.post(
        "/settings/intents", data={"csrf_token": token, "name": "x", "examples": "a\nb\nc"}
    )
    assert refused.headers["location"].endswith("error=role")
    assert (await client.get("/settings/intents")).status_code == 200
    async with db.sessions() as session:
        assert list(await session.scalars(select(IntentLabel))) == []
