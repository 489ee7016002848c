"""Routing through the API: settings checked field by field, the queue explained, the guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from allo.accounts import service as accounts
from allo.channels import service as channels
from allo.db.engine import Database
from allo.routing import service as routing
from allo.settings import Settings
from tests.conftest import Tenant, auth
from tests.routing.conftest import TARGETS, Desk, arrive, conversations, route


async def test_policies_are_checked_field_by_field(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    headers = auth(tenant.token)
    bad = [
        ({"name": "P", "targets": {"whenever": {"first_response": 60}}}, "unknown priority"),
        ({"name": "P", "targets": {"normal": {"first_response": -5}}}, "seconds > 0"),
        ({"name": "P", "targets": {"normal": {"first_answer": 60}}}, "unknown target"),
        ({"name": "P", "targets": {"normal": {"first_response": 1.5}}}, "integer"),
    ]
    for body, message in bad:
        response = await client.post("/api/v1/sla-policies", json=body, headers=headers)
        assert response.status_code == 422, body
        assert message in response.text
    created = await client.post(
        "/api/v1/sla-policies", json={"name": "P", "targets": TARGETS}, headers=headers
    )
    assert created.status_code == 201
    again = await client.post(
        "/api/v1/sla-policies", json={"name": "P", "targets": TARGETS}, headers=headers
    )
    assert again.status_code == 409 and again.json()["error"]["field"] == "name"


async def test_a_team_cannot_use_another_accounts_inbox_or_a_broken_calendar(
    client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as session:
        other = await accounts.create_account(session, "Other")
        foreign = await channels.create_channel_account(session, other.id, "api", "Theirs", "t-1")
    headers = auth(tenant.token)
    response = await client.post(
        "/api/v1/teams", json={"name": "T", "inbox_ids": [foreign.id]}, headers=headers
    )
    assert response.status_code == 422 and response.json()["error"]["field"] == "inbox_ids"
    overlapping = {
        "time_zone": "Europe/Paris",
        "hours": {"mon": [["09:00", "13:00"], ["12:00", "17:00"]]},
    }
    response = await client.post(
        "/api/v1/teams", json={"name": "T", "calendar": overlapping}, headers=headers
    )
    assert response.status_code == 422 and "overlap" in response.text
    empty = {"time_zone": "Europe/Paris", "hours": {}}
    response = await client.post(
        "/api/v1/teams", json={"name": "T", "calendar": empty}, headers=headers
    )
    assert response.status_code == 422
    response = await client.post(
        "/api/v1/teams",
        json={"name": "T", "acknowledgements": {"fr": "x" * 2001}},
        headers=headers,
    )
    assert response.status_code == 422


async def test_agents_presence_is_checked_and_foreign_users_are_not_found(
    client: httpx.AsyncClient, tenant: Tenant, desk: Desk
) -> None:
    headers = auth(tenant.token)
    agent = desk.agents[0]
    response = await client.put(
        f"/api/v1/agents/{agent}", json={"presence": "busy"}, headers=headers
    )
    assert response.status_code == 422
    response = await client.put(
        f"/api/v1/agents/{agent}",
        json={"presence": "away", "capacity": {"social": 3}, "skills": ["lang:fr", "lang:fr"]},
        headers=headers,
    )
    assert response.status_code == 200
    assert response.json()["skills"] == ["lang:fr"] and response.json()["presence"] == "away"
    response = await client.put("/api/v1/agents/9999", json={"presence": "online"}, headers=headers)
    assert response.status_code == 404


async def test_the_queue_and_a_conversations_place_in_it_are_explained(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    headers = auth(tenant.token)
    async with db.transaction() as session:
        for agent in desk.agents:
            await routing.remove_agent(session, tenant.account_id, agent)
    early = datetime.now(UTC) - timedelta(minutes=20)
    await arrive(client, db, settings, tenant, ("m1", "c1"), sent_at=early)
    await arrive(client, db, settings, tenant, ("m2", "c2"))
    await route(db)
    first, second = await conversations(db)

    queue = (await client.get(f"/api/v1/teams/{desk.team_id}/queue", headers=headers)).json()
    assert [entry["conversation_id"] for entry in queue] == [first.id, second.id]
    assert queue[0]["reasons"][0].startswith("due in 1")
    routed = (
        await client.get(f"/api/v1/conversations/{second.id}/routing", headers=headers)
    ).json()
    assert routed["position"] == 2 and routed["team_id"] == desk.team_id
    assert routed["first_response_due_at"] is not None


async def test_a_conversation_where_the_customer_spoke_last_needs_a_reason_to_be_resolved(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    headers = auth(tenant.token)
    await arrive(client, db, settings, tenant, ("m1", "c1"), ("m2", "c2"))
    await route(db)
    first, second = await conversations(db)

    refused = await client.post(
        f"/api/v1/conversations/{first.id}/status", json={"status": "resolved"}, headers=headers
    )
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "reason"
    unknown = await client.post(
        f"/api/v1/conversations/{first.id}/status",
        json={"status": "resolved", "reason": "bored"},
        headers=headers,
    )
    assert unknown.status_code == 422
    for conversation, reason in ((first, "spam"), (second, "handled_elsewhere")):
        done = await client.post(
            f"/api/v1/conversations/{conversation.id}/status",
            json={"status": "resolved", "reason": reason},
            headers=headers,
        )
        assert done.status_code == 200 and done.json()["unanswered_reason"] == reason
    report = (await client.get("/api/v1/reports/sla", headers=headers)).json()
    assert report["resolved_without_answer"] == {"spam": 1, "handled_elsewhere": 1}
    await route(db)
    assert all(c.first_response_due_at is None for c in await conversations(db))


async def test_assign_and_transfer_by_hand_and_nothing_of_another_account(
    client: httpx.AsyncClient, db: Database, settings: Settings, tenant: Tenant, desk: Desk
) -> None:
    headers = auth(tenant.token)
    await arrive(client, db, settings, tenant, ("m1", "c1"))
    (conversation,) = await conversations(db)
    response = await client.post(
        f"/api/v1/conversations/{conversation.id}/assign",
        json={"user_id": desk.agents[1]},
        headers=headers,
    )
    assert response.status_code == 200 and response.json()["assignee_id"] == desk.agents[1]
    other_team = await client.post("/api/v1/teams", json={"name": "Night"}, headers=headers)
    moved = await client.post(
        f"/api/v1/conversations/{conversation.id}/transfer",
        json={"team_id": other_team.json()["id"]},
        headers=headers,
    )
    assert moved.status_code == 200
    assert (
        moved.json()["team_id"] == other_team.json()["id"] and moved.json()["assignee_id"] is None
    )
    missing = await client.post(
        "/api/v1/conversations/9999/assign", json={"user_id": None}, headers=headers
    )
    assert missing.status_code == 404
    assert (await client.get("/api/v1/notifications", headers=headers)).json() == []
