"""Group commit: concurrent webhook requests share statements, never results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from allo.db.engine import Database, libpq_url
from allo.intake import service as intake
from allo.intake.models import InboundEvent
from allo.intake.recording import is_unavailable
from tests.conftest import Tenant


def event(tenant: Tenant, external_id: str, parser: str = "api") -> intake.NewEvent:
    return intake.NewEvent(
        account_id=tenant.account_id,
        channel_account_id=tenant.inbox_id,
        parser=parser,
        external_id=external_id,
        raw=f'{{"external_id": "{external_id}"}}'.encode(),
        content_type="application/json",
        headers={"user-agent": "test"},
    )


@pytest.fixture
async def recorder(database_url: str) -> AsyncIterator[intake.Recorder]:
    recorder = intake.Recorder(libpq_url(database_url))
    await recorder.open()
    yield recorder
    await recorder.close()


async def stored(db: Database) -> dict[str, int]:
    async with db.sessions() as session:
        rows = await session.execute(select(InboundEvent.external_id, InboundEvent.id))
        return {external_id: event_id for external_id, event_id in rows.all()}


async def test_concurrent_events_are_each_stored_once_with_their_own_id(
    db: Database, tenant: Tenant, recorder: intake.Recorder
) -> None:
    keys = [f"k{n % 150}" for n in range(400)]  # 150 keys, most sent two or three times

    results = await asyncio.gather(*(recorder.record(event(tenant, key)) for key in keys))

    rows = await stored(db)
    assert len(rows) == 150
    for key, result in zip(keys, results, strict=True):
        assert result.event_id == rows[key]
    firsts = [r for r in results if not r.duplicate]
    assert sorted(r.event_id for r in firsts) == sorted(rows.values())


async def test_an_event_already_stored_is_a_duplicate(
    db: Database, tenant: Tenant, recorder: intake.Recorder
) -> None:
    first = await recorder.record(event(tenant, "again"))

    again = await asyncio.gather(*(recorder.record(event(tenant, "again")) for _ in range(20)))

    assert not first.duplicate
    assert {(r.event_id, r.duplicate) for r in again} == {(first.event_id, True)}


async def test_one_bad_event_fails_alone(
    db: Database, tenant: Tenant, recorder: intake.Recorder
) -> None:
    # A parser name longer than its column: the database refuses that row.
    batch = [event(tenant, f"fine-{n}") for n in range(30)]
    batch.insert(10, event(tenant, "bad", parser="p" * 50))

    results = await asyncio.gather(*(recorder.record(e) for e in batch), return_exceptions=True)

    assert isinstance(results[10], Exception)
    good = [r for n, r in enumerate(results) if n != 10]
    assert all(isinstance(r, intake.Recorded) and not r.duplicate for r in good)
    assert set(await stored(db)) == {f"fine-{n}" for n in range(30)}


async def test_a_database_that_refuses_everything_fails_every_request(tenant: Tenant) -> None:
    recorder = intake.Recorder("postgresql://postgres@127.0.0.1:1/none")
    await recorder.open()
    try:
        results = await asyncio.gather(
            *(recorder.record(event(tenant, f"e{n}")) for n in range(5)), return_exceptions=True
        )
    finally:
        await recorder.close()
    assert all(isinstance(r, Exception) and is_unavailable(r) for r in results)


async def test_record_many_reports_each_event_in_order(db: Database, tenant: Tenant) -> None:
    async with db.transaction() as session:
        await intake.record(session, event(tenant, "old"))
    new_events = [event(tenant, k) for k in ("a", "old", "b", "a", "c")]

    async with db.transaction() as session:
        results = await intake.record_many(session, new_events)

    rows = await stored(db)
    assert [r.event_id for r in results] == [rows[k] for k in ("a", "old", "b", "a", "c")]
    assert [r.duplicate for r in results] == [False, True, False, True, False]


async def test_many_more_events_than_a_statement_holds(db: Database, tenant: Tenant) -> None:
    new_events = [event(tenant, f"m{n}") for n in range(2500)] + [event(tenant, "m5")]

    async with db.transaction() as session:
        results = await intake.record_many(session, new_events)

    assert sum(not r.duplicate for r in results) == 2500
    assert results[-1] == intake.Recorded(results[5].event_id, True)
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboundEvent)) == 2500


@pytest.mark.parametrize("raw", [b"\x00\xff binary \x00", "émoji 🙂 \u200f".encode()])
async def test_the_exact_bytes_are_kept(
    db: Database, tenant: Tenant, recorder: intake.Recorder, raw: bytes
) -> None:
    new = intake.NewEvent(tenant.account_id, tenant.inbox_id, "api", "bytes", raw)

    result = await recorder.record(new)

    async with db.sessions() as session:
        kept = await session.get(InboundEvent, result.event_id)
    assert kept is not None
    assert kept.raw == raw
