"""Set-based writes keep every value exactly, whatever it holds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from allo.contacts.models import Contact
from allo.conversations.models import Conversation
from allo.db import bulk
from allo.db.engine import Database
from allo.intake.models import InboundEvent
from tests.conftest import Tenant

AWKWARD_LABELS = ['quote " inside', "back\\slash", "{braces,comma}", "NULL", "", "émoji 🙂"]


async def test_rows_go_in_and_change_with_arrays_json_and_nulls(
    db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as session:
        await bulk.insert_rows(
            session,
            InboundEvent,
            [
                {
                    "account_id": tenant.account_id,
                    "channel_account_id": tenant.inbox_id,
                    "parser": "api",
                    "external_id": f"e{n}",
                    "raw": bytes([0, n, 255]),
                    "content_type": None if n else "application/json",
                    "headers": {"n": n, "quote": 'a"b'},
                }
                for n in range(3)
            ],
        )
    async with db.sessions() as session:
        ids = list(await session.scalars(select(InboundEvent.id).order_by(InboundEvent.id)))
    async with db.transaction() as session:
        await bulk.update_rows(
            session,
            InboundEvent,
            [
                {"id": ids[0], "status": "processed", "error": None, "message_ids": [7, 8]},
                {"id": ids[1], "status": "failed", "error": 'it\'s "bad"', "message_ids": []},
            ],
        )
    async with db.sessions() as session:
        rows = (await session.scalars(select(InboundEvent).order_by(InboundEvent.id))).all()
    assert [r.raw for r in rows] == [bytes([0, n, 255]) for n in range(3)]
    assert [r.content_type for r in rows] == ["application/json", None, None]
    assert rows[2].headers == {"n": 2, "quote": 'a"b'}
    assert [(r.status, r.error, r.message_ids) for r in rows] == [
        ("processed", None, [7, 8]),
        ("failed", 'it\'s "bad"', []),
        ("pending", None, []),
    ]


async def test_text_arrays_keep_awkward_values(db: Database, tenant: Tenant) -> None:
    now = datetime.now(UTC)
    async with db.transaction() as session:
        contact = Contact(account_id=tenant.account_id)
        session.add(contact)
        await session.flush()
        await bulk.insert_rows(
            session,
            Conversation,
            [
                {
                    "account_id": tenant.account_id,
                    "channel_account_id": tenant.inbox_id,
                    "channel": "api",
                    "visibility": "private",
                    "contact_id": contact.id,
                    "labels": AWKWARD_LABELS,
                    "last_message_at": now,
                }
            ],
        )
    async with db.sessions() as session:
        conversation = (await session.scalars(select(Conversation))).one()
    assert conversation.labels == AWKWARD_LABELS
    assert conversation.last_message_at == now


async def test_nothing_to_write_writes_nothing(db: Database) -> None:
    async with db.transaction() as session:
        await bulk.insert_rows(session, InboundEvent, [])
        await bulk.update_rows(session, InboundEvent, [])
    async with db.sessions() as session:
        assert (await session.scalars(select(InboundEvent))).all() == []


def _event(tenant: Tenant, external_id: str) -> dict[str, object]:
    return {
        "account_id": tenant.account_id,
        "channel_account_id": tenant.inbox_id,
        "parser": "api",
        "external_id": external_id,
        "raw": b"{}",
    }


async def test_a_failing_write_raises_sqlalchemys_error_and_its_savepoint_rolls_back(
    db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as session:
        await bulk.insert_rows(session, InboundEvent, [_event(tenant, "kept")])
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                await bulk.insert_rows(
                    session, InboundEvent, [_event(tenant, "new"), _event(tenant, "kept")]
                )
    async with db.sessions() as session:
        stored = await session.scalars(select(InboundEvent.external_id))
        assert stored.all() == ["kept"]


async def test_what_the_session_holds_unwritten_is_written_first(
    db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as session:
        contact = Contact(account_id=tenant.account_id, name="Before")
        session.add(contact)
        await session.flush()
        # Changed in the session only: written before the bulk write, which therefore wins.
        contact.name = "Pending"
        await bulk.update_rows(session, Contact, [{"id": contact.id, "name": "Bulk"}])
    async with db.sessions() as session:
        found = await session.get(Contact, contact.id)
        assert found is not None
        assert found.name == "Bulk"


async def test_rows_that_break_the_named_unique_index_are_left_out_and_not_returned(
    db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as session:
        await bulk.insert_rows(session, InboundEvent, [_event(tenant, "kept")])
        written = await bulk.insert_rows(
            session,
            InboundEvent,
            [_event(tenant, "new"), _event(tenant, "kept"), _event(tenant, "other")],
            skip_conflicts_on=("channel_account_id", "external_id"),
            returning=("external_id",),
        )
    assert sorted(written) == [("new",), ("other",)]
    async with db.sessions() as session:
        stored = await session.scalars(select(InboundEvent.external_id).order_by("external_id"))
        assert stored.all() == ["kept", "new", "other"]


async def test_allocated_ids_are_distinct_and_let_rows_be_written_with_them(
    db: Database, tenant: Tenant
) -> None:
    async with db.transaction() as session:
        first = await bulk.allocate_ids(session, Contact, 3)
        second = await bulk.allocate_ids(session, Contact, 2)
        assert await bulk.allocate_ids(session, Contact, 0) == []
        await bulk.insert_rows(
            session,
            Contact,
            [{"id": i, "account_id": tenant.account_id, "name": f"c{i}"} for i in first],
        )
    assert len(set(first + second)) == 5
    async with db.sessions() as session:
        contacts = (await session.scalars(select(Contact).where(Contact.id.in_(first)))).all()
    # Columns the rows do not name take their database defaults.
    assert sorted(c.id for c in contacts) == sorted(first)
    assert all(c.attributes == {} and c.created_at is not None for c in contacts)
