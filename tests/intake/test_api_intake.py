"""Pushing customer messages through the generic API channel."""

from __future__ import annotations

import asyncio
import json

import httpx
from sqlalchemy import func, select

from allo.conversations.models import Message
from allo.db.engine import Database
from allo.intake.models import InboundEvent
from allo.settings import Settings
from tests.conftest import Tenant, auth, process


def message(
    external_id: str = "m-1", text: str = "Bonjour, ma fibre est coupée", **extra: object
) -> dict[str, object]:
    return {
        "external_id": external_id,
        "contact": {"id": "cust-1", "name": "Camille"},
        "text": text,
        **extra,
    }


async def count(db: Database, model: type) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_pushed_message_is_stored_raw_then_becomes_a_conversation(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    body = json.dumps(message()).encode()
    response = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages",
        content=body,
        headers=auth(tenant.token) | {"Content-Type": "application/json"},
    )
    assert response.status_code == 202
    assert response.json()["duplicate"] is False
    async with db.sessions() as session:
        event = await session.scalar(select(InboundEvent))
    assert event is not None and event.raw == body and event.status == "pending"

    report = await process(db, settings)
    assert (report.processed, report.failed, report.messages) == (1, 0, 1)

    listed = (await client.get("/api/v1/conversations", headers=auth(tenant.token))).json()
    [conversation] = listed["conversations"]
    assert conversation["channel"] == "api" and conversation["status"] == "open"
    assert conversation["waiting_since"] is not None and conversation["first_response_at"] is None
    messages = (
        await client.get(
            f"/api/v1/conversations/{conversation['id']}/messages", headers=auth(tenant.token)
        )
    ).json()["messages"]
    assert [m["text"] for m in messages] == ["Bonjour, ma fibre est coupée"]
    assert messages[0]["direction"] == "in" and messages[0]["delivery_status"] == "received"
    contact = (
        await client.get(
            f"/api/v1/contacts/{conversation['contact_id']}", headers=auth(tenant.token)
        )
    ).json()
    assert contact["name"] == "Camille"
    assert [(i["platform"], i["platform_id"]) for i in contact["identities"]] == [("api", "cust-1")]


async def test_the_same_event_sent_100_times_at_once_makes_one_message(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    async def push() -> httpx.Response:
        return await client.post(
            f"/api/v1/inboxes/{tenant.inbox_id}/messages",
            json=message("same"),
            headers=auth(tenant.token),
        )

    responses = await asyncio.gather(*(push() for _ in range(100)))
    assert {r.status_code for r in responses} == {202}
    assert sorted(r.json()["duplicate"] for r in responses).count(False) == 1
    assert len({r.json()["event_id"] for r in responses}) == 1
    await process(db, settings)
    assert await count(db, InboundEvent) == 1
    assert await count(db, Message) == 1


async def test_the_idempotency_key_header_stands_for_a_missing_external_id(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    body = {"contact": {"id": "c"}, "text": "hello"}
    headers = auth(tenant.token) | {"Idempotency-Key": "key-1"}
    first = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages", json=body, headers=headers
    )
    second = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages", json=body, headers=headers
    )
    assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, True)
    without_key = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages", json=body, headers=auth(tenant.token)
    )
    assert without_key.json()["duplicate"] is False
    assert await count(db, InboundEvent) == 2


async def test_bad_requests_get_a_clear_error_and_store_nothing(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    url = f"/api/v1/inboxes/{tenant.inbox_id}/messages"
    json_headers = auth(tenant.token) | {"Content-Type": "application/json"}
    cases = [
        (
            await client.post(
                url, content=b'{"contact": {"id": "c"}, "text": ', headers=json_headers
            ),
            400,
            "malformed_json",
        ),
        (
            await client.post(
                url,
                content=b"text=hello",
                headers=auth(tenant.token) | {"Content-Type": "application/x-www-form-urlencoded"},
            ),
            415,
            "unsupported_media_type",
        ),
        (
            await client.post(
                url,
                content=json.dumps(message(text="x" * (settings.max_body_bytes + 1))).encode(),
                headers=json_headers,
            ),
            413,
            "too_large",
        ),
        (
            await client.post(
                "/api/v1/inboxes/999999/messages", json=message(), headers=auth(tenant.token)
            ),
            404,
            "not_found",
        ),
        (await client.post(url, json=message()), 401, "unauthenticated"),
        (
            await client.post(url, json=message(), headers=auth("allo_forged")),
            401,
            "unauthenticated",
        ),
        (
            await client.post(url, json={"contact": {"id": "c"}}, headers=auth(tenant.token)),
            422,
            "invalid",
        ),
        (
            await client.post(url, json={"text": "no contact"}, headers=auth(tenant.token)),
            422,
            "invalid",
        ),
        (
            await client.post(url, json=message(direction="sideways"), headers=auth(tenant.token)),
            422,
            "invalid",
        ),
        (await client.post(url, json=[1, 2], headers=auth(tenant.token)), 422, "invalid"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    invalid_direction = cases[8][0].json()["error"]
    assert invalid_direction["field"] == "direction"
    assert cases[4][0].headers["WWW-Authenticate"] == "Bearer"
    assert await count(db, InboundEvent) == 0


async def test_a_streamed_body_over_the_limit_is_refused_without_content_length(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(settings.max_body_bytes // 1024 + 2):
            yield b" " * 1024

    response = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages",
        content=chunks(),
        headers=auth(tenant.token) | {"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert await count(db, InboundEvent) == 0


async def test_another_accounts_inbox_is_not_found(
    client: httpx.AsyncClient, tenant: Tenant, db: Database
) -> None:
    from allo.accounts import service as accounts

    async with db.transaction() as session:
        other = await accounts.create_account(session, "Other brand")
        other_token = await accounts.create_api_token(session, other.id, "t")
    response = await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages", json=message(), headers=auth(other_token)
    )
    assert response.status_code == 404
    assert await count(db, InboundEvent) == 0


async def test_unicode_is_kept_intact_and_nul_becomes_a_replacement_character(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    family = "👩\u200d👩\u200d👧\u200d👦"
    right_to_left = "\u200fمرحبا بكم\u200e"
    combining = "e\u0301te\u0301 cafe\u0301 Z\u0351\u0300"
    flags = "🇫🇷🇨🇦"
    text = f"{family} {right_to_left} {combining} {flags} \U0001f9d1\U0001f3fd\u200d\U0001f4bb"
    await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages",
        json=message("u1", text, contact={"id": "رقم-1", "name": "يوسف بن علي"}),
        headers=auth(tenant.token),
    )
    raw_with_nul = json.dumps(message("u2", "avant\u0000après")).encode()
    await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages",
        content=raw_with_nul,
        headers=auth(tenant.token) | {"Content-Type": "application/json"},
    )
    report = await process(db, settings)
    assert report.failed == 0
    conversations = (await client.get("/api/v1/conversations", headers=auth(tenant.token))).json()
    texts = {}
    for conversation in conversations["conversations"]:
        page = await client.get(
            f"/api/v1/conversations/{conversation['id']}/messages", headers=auth(tenant.token)
        )
        for m in page.json()["messages"]:
            texts[m["external_id"]] = m["text"]
    assert texts["u1"] == text
    assert texts["u2"] == "avant\ufffdaprès"
    async with db.sessions() as session:
        raw = await session.scalar(select(InboundEvent.raw).where(InboundEvent.external_id == "u2"))
    assert raw == raw_with_nul
    contacts = (await client.get("/api/v1/contacts?q=يوسف", headers=auth(tenant.token))).json()
    assert [c["name"] for c in contacts["contacts"]] == ["يوسف بن علي"]


async def test_html_from_customers_is_stored_inert(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    hostile = (
        '<p>Hello<script>alert(1)</script><img src=x onerror="alert(2)">'
        '<a href="javascript:alert(3)">link</a><svg onload="alert(4)"></svg>'
        '<a href="https://example.com/ok">fine</a></p>'
    )
    await client.post(
        f"/api/v1/inboxes/{tenant.inbox_id}/messages",
        json={"external_id": "h", "contact": {"id": "c"}, "html": hostile},
        headers=auth(tenant.token),
    )
    await process(db, settings)
    async with db.sessions() as session:
        stored = await session.scalar(select(Message))
    assert stored is not None and stored.html is not None
    for dangerous in ("<script", "onerror", "javascript:", "onload", "<svg"):
        assert dangerous not in stored.html
    assert 'href="https://example.com/ok"' in stored.html
    assert stored.text == "Hellolinkfine"


async def test_conversation_listing_filters_and_pages(
    client: httpx.AsyncClient, tenant: Tenant, db: Database, settings: Settings
) -> None:
    for number in range(7):
        await client.post(
            f"/api/v1/inboxes/{tenant.inbox_id}/messages",
            json={
                "external_id": f"p{number}",
                "contact": {"id": f"customer-{number}"},
                "text": "refund please" if number % 2 else "where is my parcel 100%",
                "sent_at": f"2026-01-0{number + 1}T10:00:00Z",
            },
            headers=auth(tenant.token),
        )
    await process(db, settings)
    headers = auth(tenant.token)
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/conversations", params=params, headers=headers)).json()
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and len(set(seen)) == 7
    refunds = (
        await client.get("/api/v1/conversations", params={"q": "REFUND"}, headers=headers)
    ).json()
    assert len(refunds["conversations"]) == 3
    percent = (
        await client.get("/api/v1/conversations", params={"q": "100%"}, headers=headers)
    ).json()
    assert len(percent["conversations"]) == 4
    window = (
        await client.get(
            "/api/v1/conversations",
            params={"since": "2026-01-03T00:00:00Z", "until": "2026-01-05T00:00:00Z"},
            headers=headers,
        )
    ).json()
    assert len(window["conversations"]) == 2
    for params in ({"status": "open"}, {"channel": "api"}, {"assignee_id": "none"}):
        listed = (await client.get("/api/v1/conversations", params=params, headers=headers)).json()
        assert len(listed["conversations"]) == 7, params
    for params in (
        {"status": "resolved"},
        {"channel": "x"},
        {"assignee_id": "5"},
        {"label": "vip"},
    ):
        listed = (await client.get("/api/v1/conversations", params=params, headers=headers)).json()
        assert listed["conversations"] == [], params
    for params in ({"status": "closed"}, {"cursor": "not-a-cursor"}, {"assignee_id": "me"}):
        response = await client.get("/api/v1/conversations", params=params, headers=headers)
        assert response.status_code == 422, params
