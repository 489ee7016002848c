"""Triage of stored messages: every customer message read once; failures never block."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest
from sqlalchemy import select

from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.settings import Settings
from allo.triage import service as triage
from allo.triage.assessor import Assessor, CustomIntents
from allo.triage.intents import train_intent_model
from allo.triage.schemas import Assessment
from tests.conftest import Tenant, auth, process


@pytest.fixture(scope="module")
def assessor() -> Assessor:
    return Assessor()


async def push(client: httpx.AsyncClient, tenant: Tenant, external_id: str, text: str) -> None:
    response = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages",
        json={"external_id": external_id, "contact": {"id": "c1"}, "text": text},
        headers=auth(tenant.token),
    )
    assert response.status_code == 202, response.text


async def messages(db: Database) -> list[Message]:
    async with db.sessions() as session:
        return list(await session.scalars(select(Message).order_by(Message.id)))


async def test_customer_messages_are_read_once_and_the_conversation_takes_their_language(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings, assessor: Assessor
) -> None:
    await push(
        client,
        tenant,
        "m1",
        "Bonjour, ma commande n'est toujours pas arrivée, c'est inadmissible !",
    )
    await push(client, tenant, "m2", "Et le suivi ne marche pas non plus. Vous pouvez m'aider ?")
    await process(db, settings)

    first = await triage.triage_pending(db, assessor)
    again = await triage.triage_pending(db, assessor)

    assert (first.assessed, first.failed, again.assessed) == (2, 0, 0)
    stored = await messages(db)
    assert all(m.triaged_at is not None and m.language == "fr" for m in stored)
    complaint = Assessment.model_validate(stored[0].triage)
    assert complaint.sentiment.label == "negative"
    assert "complaint" in complaint.intents and complaint.needs_answer
    assert "question" in Assessment.model_validate(stored[1].triage).intents
    async with db.sessions() as session:
        conversation = (await session.scalars(select(Conversation))).one()
    assert conversation.language == "fr"


async def test_the_api_shows_what_triage_read(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings, assessor: Assessor
) -> None:
    await push(
        client,
        tenant,
        "p1",
        "Call me at +33 6 12 34 56 78, my card 4111 1111 1111 1111 was charged twice",
    )
    await process(db, settings)
    await triage.triage_pending(db, assessor)
    conversation_id = (await messages(db))[0].conversation_id

    response = await client.get(
        f"/api/v1/conversations/{conversation_id}/messages", headers=auth(tenant.token)
    )

    shown = response.json()["messages"][0]
    assert shown["language"] == "en"
    assert {"phone", "card"} <= set(shown["triage"]["pii"])


class FailsOn(Assessor):
    """Triage that breaks on one text, as a bug in a model would."""

    def assess(  # type: ignore[override]
        self, texts: Sequence[str], *args: object, **kwargs: object
    ) -> list[Assessment]:
        if any("poison" in t for t in texts):
            raise RuntimeError("model crashed")
        return super().assess(texts, *args, **kwargs)  # type: ignore[arg-type]


async def test_a_message_triage_cannot_read_is_marked_read_without_blocking_the_others(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    for n, text in enumerate(["thanks a lot!", "poison", "where is my parcel?"]):
        await push(client, tenant, f"f{n}", text)
    await process(db, settings)

    report = await triage.triage_pending(db, FailsOn())

    assert (report.assessed, report.failed) == (2, 1)
    stored = await messages(db)
    assert [m.triage is None for m in stored] == [False, True, False]
    assert all(m.triaged_at is not None for m in stored)


async def test_without_embeddings_triage_takes_the_fast_path(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings, assessor: Assessor
) -> None:
    await push(client, tenant, "x1", "I love this brand, thank you so much!")
    await process(db, settings)

    report = await triage.triage_pending(db, assessor, embeddings=False)

    assert report.fast == 1
    assert Assessment.model_validate((await messages(db))[0].triage).sentiment.label == "positive"


async def test_an_account_intent_model_adds_its_labels(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings, assessor: Assessor
) -> None:
    examples = {
        "refund": ["I want my money back", "please refund me", "remboursez-moi", "refund my order"],
        "delivery": [
            "where is my parcel",
            "my package is late",
            "colis pas arrivé",
            "delivery delay",
        ],
    }
    model = train_intent_model(
        [t for texts in examples.values() for t in texts],
        [label for label, texts in examples.items() for _ in texts],
    )

    [assessment] = assessor.assess(
        ["please refund me, I want my money back"], ("fr", "en"), custom=CustomIntents(1, model)
    )

    assert "refund" in assessment.intents


async def test_triage_steps_aside_while_more_urgent_work_waits(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings, assessor: Assessor
) -> None:
    await push(client, tenant, "s1", "where is my order?")
    await process(db, settings)
    answers = iter([True])

    async def intake_waits() -> bool:
        return next(answers, False)

    first = await triage.triage_pending(db, assessor, step_aside=intake_waits)
    then = await triage.triage_pending(db, assessor, step_aside=intake_waits)

    assert (first.stepped_aside, first.assessed) == (True, 0)
    assert (then.stepped_aside, then.assessed) == (False, 1)
