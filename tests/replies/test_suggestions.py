"""Suggested replies: what agents answered to the most similar messages in recently resolved
conversations, in the same language."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import update

from allo.conversations.models import Conversation
from allo.db.engine import Database
from allo.replies import service as replies
from allo.settings import Settings
from tests.conftest import Tenant, auth, process
from tests.replies.test_replies import write
from tests.routing.conftest import conversations, push
from tests.web.test_sessions import make_agent

ANSWER = "Votre colis est parti hier, voici le suivi : ..."


async def test_a_similar_question_gets_the_answer_that_was_given(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    agent = replies.Author(await make_agent(db, tenant), "Ana")
    await push(
        client, tenant, "m1", "Bonjour, mon colis n'est pas arrivé, où est-il ?", contact="c1"
    )
    await push(client, tenant, "m2", "Hello, can I change my password?", contact="c2")
    await push(
        client,
        tenant,
        "m3",
        "Bonsoir, mon colis n'est toujours pas arrivé. Où est-il ?",
        contact="c3",
    )
    await push(client, tenant, "m4", "Quels sont vos horaires d'ouverture ?", contact="c4")
    await process(db, settings)
    answered, english, asking, unrelated = await conversations(db)
    await write(db, tenant, answered.id, "a1", body=ANSWER, author=agent)
    await write(db, tenant, english.id, "a2", body="Yes: Settings, Password.", author=agent)
    async with db.transaction() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id.in_([answered.id, english.id]))
            .values(status="resolved", resolved_at=datetime.now(UTC))
        )
        await session.execute(update(Conversation).values(language="fr"))
        await session.execute(
            update(Conversation).where(Conversation.id == english.id).values(language="en")
        )
    async with db.sessions() as session:
        found = await replies.suggestions(session, await session.get(Conversation, asking.id))
        none = await replies.suggestions(session, await session.get(Conversation, unrelated.id))
    assert [(s.text, s.from_conversation_id) for s in found] == [(ANSWER, answered.id)]
    assert found[0].score >= replies.SIMILAR_AT_LEAST
    assert none == []
    api = await client.get(
        f"/api/v1/conversations/{asking.id}/suggestions", headers=auth(tenant.token)
    )
    assert api.status_code == 200 and api.json()[0]["text"] == ANSWER
