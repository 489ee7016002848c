"""The workspace's inbox and conversation pages, over HTTP: views, filters, order, the
composer, the unanswered guard, and customer text that stays inert."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select, update

from allo.contacts.models import Contact
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.replies.models import OutboxEntry
from allo.routing import service as routing
from allo.routing.schemas import TeamIn
from allo.settings import Settings
from tests.conftest import Tenant, auth, process
from tests.routing.conftest import arrive, conversations, push
from tests.web.test_sessions import make_agent, sign_in

HOSTILE = [
    "<script>alert('x')</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">clic</a>',
    "<svg onload=alert(1)></svg>",
    '"><iframe src="https://evil.test"></iframe>',
]


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def composer_of(page: str) -> dict[str, str]:
    key = re.search(r'name="key" value="([^"]+)"', page)
    seen = re.search(r'name="seen" value="(\d+)"', page)
    assert key is not None and seen is not None
    return {"key": key.group(1), "seen": seen.group(1), "csrf_token": csrf_of(page)}


async def test_the_inbox_puts_the_next_conversation_to_answer_first_in_each_view(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    agent_id = await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"), ("m2", "c2"), ("m3", "c3"))
    first, second, third = await conversations(db)
    now = datetime.now(UTC)
    async with db.transaction() as session:
        for conversation, due in ((first, 50), (second, 5), (third, 30)):
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation.id)
                .values(
                    response_due_at=now + timedelta(minutes=due),
                    queue_deadline=now + timedelta(minutes=due),
                )
            )
        await session.execute(
            update(Conversation).where(Conversation.id == third.id).values(assignee_id=agent_id)
        )
    await sign_in(client)

    def order(page: str) -> list[int]:
        return [int(found) for found in re.findall(r'<li data-id="(\d+)"', page)]

    assert order((await client.get("/inbox?view=all")).text) == [second.id, third.id, first.id]
    assert order((await client.get("/inbox?view=unassigned")).text) == [second.id, first.id]
    assert order((await client.get("/inbox?view=mine")).text) == [third.id]
    assert order((await client.get("/inbox?view=sla")).text) == [second.id]
    assert order((await client.get("/inbox/queue?view=all&channel=email")).text) == []
    # A stale or forged filter opens the inbox rather than failing.
    assert (await client.get("/inbox?view=nope&priority=x&status=<b>")).status_code == 200


async def test_customer_text_is_shown_inert_in_the_inbox_and_the_thread(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    for number, payload in enumerate(HOSTILE):
        await push(client, tenant, f"h{number}", text=payload, contact="attacker")
    await process(db, settings)
    (conversation,) = await conversations(db)
    await sign_in(client)
    pages = [
        (await client.get("/inbox?view=all")).text,
        (await client.get(f"/conversations/{conversation.id}")).text,
    ]
    for page in pages:
        for tag in ("<script>alert", "<img src=x", "<svg onload", "<iframe", 'href="javascript:'):
            assert tag not in page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in pages[1]


async def test_replying_from_the_page_queues_one_message_however_often_it_is_sent(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    await sign_in(client)
    page = (await client.get(f"/conversations/{conversation.id}")).text
    form = composer_of(page) | {"body": "Bonjour, c'est en route.", "kind": "reply"}
    url = f"/conversations/{conversation.id}/replies"
    sent = [await client.post(url, data=form) for _ in range(3)]
    assert {answer.status_code for answer in sent} == {303}
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxEntry)) == 1
    outbox = (await client.get("/outbox")).text
    assert "Bonjour, c&#39;est en route." in outbox and "queued" in outbox


async def test_a_reply_after_someone_elses_answer_is_stopped_and_shows_it(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    await sign_in(client)
    form = composer_of((await client.get(f"/conversations/{conversation.id}")).text)
    other = await make_agent(db, tenant, "bob@brand.test")
    async with db.transaction() as session:
        session.add(
            Message(
                account_id=tenant.account_id,
                conversation_id=conversation.id,
                channel_account_id=conversation.channel_account_id,
                direction="out",
                visibility="private",
                text="Bob a déjà répondu",
                author_user_id=other,
                author_name="Bob",
                sent_at=datetime.now(UTC),
                received_at=datetime.now(UTC),
                delivery_status="queued",
            )
        )
    url = f"/conversations/{conversation.id}/replies"
    stopped = await client.post(url, data=form | {"body": "Ma réponse", "kind": "reply"})
    assert stopped.status_code == 409
    assert "Bob a déjà répondu" in stopped.text and "Ma réponse</textarea>" in stopped.text
    again = composer_of(stopped.text) | {"body": "Ma réponse", "kind": "reply"}
    assert (await client.post(url, data=again)).status_code == 303


async def test_resolving_while_the_customer_waits_needs_a_reason_in_the_agents_language(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant, language="fr")
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    await sign_in(client)
    page = (await client.get(f"/conversations/{conversation.id}")).text
    assert '<html lang="fr">' in page and "Résoudre" in page
    url = f"/conversations/{conversation.id}/status"
    refused = await client.post(url, data={"csrf_token": csrf_of(page), "status": "resolved"})
    assert refused.status_code == 422 and "Le client a parlé en dernier" in refused.text
    done = await client.post(
        url, data={"csrf_token": csrf_of(page), "status": "resolved", "reason": "spam"}
    )
    assert done.status_code == 303
    async with db.sessions() as session:
        resolved = await session.get(Conversation, conversation.id)
    assert resolved is not None and resolved.status == "resolved"
    assert resolved.unanswered_reason == "spam"


async def test_another_accounts_conversation_is_not_found(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await sign_in(client)
    assert (await client.get("/conversations/987654")).status_code == 404


async def test_presence_is_announced_only_for_known_states_on_the_accounts_conversations(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    token = await sign_in(client)
    url = f"/conversations/{conversation.id}/presence"
    headers = {"X-CSRF-Token": token}
    assert (await client.post(url, data={"now": "typing"}, headers=headers)).status_code == 204
    assert (await client.post(url, data={"now": "<script>"}, headers=headers)).status_code == 422
    assert (await client.post(url, data={"now": "viewing"})).status_code == 403
    missing = await client.post("/conversations/999999/presence", headers=headers)
    assert missing.status_code == 404


async def test_labels_and_priority_are_changed_checked_and_shown(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    api = await client.patch(
        f"/api/v1/conversations/{conversation.id}",
        json={"labels": ["Remboursement", " remboursement ", "VIP client"], "priority": 1},
        headers=auth(tenant.token),
    )
    assert api.status_code == 200
    assert api.json()["labels"] == ["remboursement", "vip client"]
    assert api.json()["priority"] == 1
    bad = await client.patch(
        f"/api/v1/conversations/{conversation.id}",
        json={"labels": ["<script>"]},
        headers=auth(tenant.token),
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "labels"
    token = await sign_in(client)
    url = f"/conversations/{conversation.id}/details"
    form = {"csrf_token": token, "labels": "colis, urgent livraison", "priority": "2"}
    assert (await client.post(url, data=form)).status_code == 303
    row = (await client.get("/inbox?view=all")).text
    assert "colis" in row and "urgent livraison" in row
    refused = await client.post(url, data=form | {"labels": "x" * 60})
    assert refused.status_code == 422
    async with db.sessions() as session:
        stored = await session.get(Conversation, conversation.id)
    assert stored is not None and stored.labels == ["colis", "urgent livraison"]
    assert stored.priority == 2


async def test_an_agent_corrects_what_triage_read_from_the_thread(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    async with db.transaction() as session:
        await session.execute(
            update(Message).values(
                triage={"intents": ["question"], "sentiment": {"label": "neutral", "score": 0}},
                triaged_at=datetime.now(UTC),
            )
        )
        message_id = await session.scalar(select(Message.id))
    token = await sign_in(client)
    url = f"/messages/{message_id}/corrections"
    done = await client.post(url, data={"csrf_token": token, "correction": "intent:complaint"})
    assert done.status_code == 303 and done.headers["location"].endswith(f"#message-{message_id}")
    ignored = await client.post(url, data={"csrf_token": token, "correction": "priority:9"})
    foreign = await client.post(
        "/messages/999999/corrections", data={"csrf_token": token, "correction": "spam:true"}
    )
    assert ignored.status_code == foreign.status_code == 303
    assert foreign.headers["location"] == "/inbox"
    async with db.sessions() as session:
        message = await session.get(Message, message_id)
    assert message is not None and message.triage is not None
    assert message.triage["intents"] == ["complaint"]


async def test_each_view_counts_its_open_conversations_in_one_request(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    agent_id = await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"), ("m2", "c2"), ("m3", "c3"))
    first, second, _ = await conversations(db)
    async with db.transaction() as session:
        await session.execute(
            update(Conversation).where(Conversation.id == first.id).values(assignee_id=agent_id)
        )
        await session.execute(
            update(Conversation)
            .where(Conversation.id == second.id)
            .values(waiting_triage={"spam": True}, response_due_at=datetime.now(UTC))
        )
    await sign_in(client)
    views = (await client.get("/inbox/views?view=all")).text
    counted = dict(
        re.findall(r'href="/inbox\?view=(\w+)".*?<span class="count">(\d+)</span>', views, re.S)
    )
    assert counted == {
        "mine": "1",
        "unassigned": "2",
        "teams": "0",
        "mentions": "0",
        "all": "3",
        "sla": "1",
        "spam": "1",
    }


async def test_the_inbox_filters_by_priority_and_recent_activity(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"), ("m2", "c2"))
    old, urgent = await conversations(db)
    async with db.transaction() as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == old.id)
            .values(last_message_at=datetime.now(UTC) - timedelta(days=2))
        )
        await session.execute(
            update(Conversation).where(Conversation.id == urgent.id).values(priority=2)
        )
    await sign_in(client)

    def ids(page: str) -> list[int]:
        return [int(found) for found in re.findall(r'<li data-id="(\d+)"', page)]

    assert ids((await client.get("/inbox/queue?view=all&priority=2")).text) == [urgent.id]
    assert ids((await client.get("/inbox/queue?view=all&since=24h")).text) == [urgent.id]
    assert len(ids((await client.get("/inbox/queue?view=all&since=7d")).text)) == 2


async def test_the_customer_panel_shows_the_contacts_details_escaped(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    async with db.transaction() as session:
        contact = await session.get(Contact, conversation.contact_id)
        assert contact is not None
        contact.email = "camille@example.test"
        contact.attributes = {"plan": "<b>Premium</b>", "vip": True}
    await sign_in(client)
    page = (await client.get(f"/conversations/{conversation.id}")).text
    assert "camille@example.test" in page and "&lt;b&gt;Premium&lt;/b&gt;" in page


async def test_an_agent_cannot_open_or_answer_another_teams_conversation(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    async with db.transaction() as session:
        team, _ = await routing.save_team(session, tenant.account_id, TeamIn(name="VIP desk"))
        await session.execute(
            update(Conversation).where(Conversation.id == conversation.id).values(team_id=team.id)
        )
    token = await sign_in(client)
    assert (await client.get(f"/conversations/{conversation.id}")).status_code == 404
    answer = await client.post(
        f"/conversations/{conversation.id}/replies",
        data={"csrf_token": token, "body": "Bonjour", "kind": "reply", "key": "k1"},
    )
    assert answer.status_code == 404
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(OutboxEntry)) == 0


async def test_correcting_spam_sends_the_conversation_back_to_routing(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant
) -> None:
    await make_agent(db, tenant)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    async with db.transaction() as session:
        await session.execute(
            update(Message).values(
                triage={"spam": True, "intents": ["spam"]}, triaged_at=datetime.now(UTC)
            )
        )
        await session.execute(update(Conversation).values(routed_at=datetime.now(UTC)))
        message_id = await session.scalar(select(Message.id))
    token = await sign_in(client)
    await client.post(
        f"/messages/{message_id}/corrections",
        data={"csrf_token": token, "correction": "spam:false"},
    )
    (conversation,) = await conversations(db)
    assert conversation.routed_at is None
