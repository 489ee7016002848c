"""Processing inbound events: failures are kept and retryable, a crash loses nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select

from allo import events
from allo.channels import registry
from allo.channels.api import parse as parse_api
from allo.channels.inbound import InboundMessage
from allo.conversations.models import Message
from allo.db.engine import Database
from allo.intake import service as intake
from allo.intake.models import InboundEvent
from allo.settings import Settings
from tests.conftest import Tenant, auth, process


class Outage:
    """A parser standing in for a channel that fails while `down` (or crashes the process)."""

    def __init__(self) -> None:
        self.down = True
        self.crash_on: str | None = None

    def __call__(
        self, raw: bytes, external_id: str, received_at: datetime, own_id: str
    ) -> list[InboundMessage]:
        if external_id == self.crash_on:
            raise KeyboardInterrupt("the worker dies here")
        if self.down:
            raise RuntimeError("upstream profile lookup failed")
        return parse_api(raw, external_id, received_at)


@pytest.fixture
def outage() -> Iterator[Outage]:
    parser = Outage()
    registry.PARSERS["flaky"] = parser
    yield parser
    del registry.PARSERS["flaky"]


def pushed(external_id: str, text: str = "allô ?") -> bytes:
    return json.dumps({"external_id": external_id, "contact": {"id": "c1"}, "text": text}).encode()


async def record(
    db: Database, tenant: Tenant, external_id: str, parser: str = "api", raw: bytes | None = None
) -> int:
    async with db.transaction() as session:
        recorded = await intake.record(
            session,
            intake.NewEvent(
                account_id=tenant.account_id,
                channel_account_id=tenant.inbox_id,
                parser=parser,
                external_id=external_id,
                raw=pushed(external_id) if raw is None else raw,
            ),
        )
    return recorded.event_id


async def statuses(db: Database) -> dict[str, str]:
    async with db.sessions() as session:
        rows = await session.execute(select(InboundEvent.external_id, InboundEvent.status))
    return {external_id: status for external_id, status in rows.all()}


async def message_count(db: Database) -> int:
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


async def test_a_failing_event_is_kept_with_its_error_listed_and_retried(
    db: Database, settings: Settings, tenant: Tenant, client: httpx.AsyncClient, outage: Outage
) -> None:
    await record(db, tenant, "ok-1")
    failing = await record(db, tenant, "flaky-1", parser="flaky")
    await record(db, tenant, "ok-2")
    report = await process(db, settings)
    assert (report.processed, report.failed) == (2, 1)
    assert await statuses(db) == {"ok-1": "processed", "flaky-1": "failed", "ok-2": "processed"}

    listed = (
        await client.get(
            "/api/v1/intake/events", params={"status": "failed"}, headers=auth(tenant.token)
        )
    ).json()
    assert [(e["id"], e["attempts"]) for e in listed] == [(failing, 1)]
    assert "upstream profile lookup failed" in listed[0]["error"]

    outage.down = False
    retried = await client.post("/api/v1/intake/events/retry", json={}, headers=auth(tenant.token))
    assert retried.json() == {"requeued": 1}
    report = await process(db, settings)
    assert report.processed == 1
    async with db.sessions() as session:
        event = await session.get(InboundEvent, failing)
    assert event is not None
    assert (event.status, event.attempts, event.error, len(event.message_ids)) == (
        "processed",
        2,
        None,
        1,
    )
    assert await message_count(db) == 3


async def test_an_event_that_cannot_be_parsed_fails_without_stopping_the_others(
    db: Database, settings: Settings, tenant: Tenant
) -> None:
    await record(db, tenant, "broken", raw=b"\xff\xfe not json")
    await record(db, tenant, "fine")
    report = await process(db, settings)
    assert (report.processed, report.failed) == (1, 1)
    async with db.sessions() as session:
        broken = await session.scalar(
            select(InboundEvent).where(InboundEvent.external_id == "broken")
        )
    assert broken is not None and broken.status == "failed"
    assert broken.error is not None and "ParseError" in broken.error
    assert broken.raw == b"\xff\xfe not json"


async def test_a_crash_in_the_middle_of_a_batch_is_repaired_by_reprocessing_once(
    db: Database, settings: Settings, tenant: Tenant, outage: Outage
) -> None:
    outage.down = False
    for number in range(5):
        await record(db, tenant, f"e{number}", parser="flaky")
    outage.crash_on = "e3"
    with pytest.raises(KeyboardInterrupt):
        await process(db, settings)
    assert set((await statuses(db)).values()) == {"pending"}
    assert await message_count(db) == 0

    outage.crash_on = None
    report = await process(db, settings)
    assert report.processed == 5
    assert await message_count(db) == 5
    assert (await process(db, settings)).events == 0


async def test_listeners_hear_of_messages_after_commit_and_a_failing_one_blocks_nothing(
    db: Database, settings: Settings, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[events.MessageReceived] = []
    committed_when_heard: list[int] = []

    async def triage(event: events.MessageReceived) -> None:
        async with db.sessions() as session:
            committed_when_heard.append(
                int(
                    await session.scalar(
                        select(func.count())
                        .select_from(Message)
                        .where(Message.id == event.message_id)
                    )
                    or 0
                )
            )
        heard.append(event)

    async def broken(event: events.MessageReceived) -> None:
        raise RuntimeError("routing is down")

    events.subscribe(events.MessageReceived)(broken)
    events.subscribe(events.MessageReceived)(triage)
    try:
        await record(db, tenant, "a")
        await record(db, tenant, "b")
        report = await process(db, settings)
    finally:
        events.unsubscribe(events.MessageReceived, broken)
        events.unsubscribe(events.MessageReceived, triage)
    assert report.processed == 2
    assert [e.conversation_created for e in heard] == [True, False]
    assert committed_when_heard == [1, 1]
    assert "routing is down" in caplog.text


async def test_retry_of_specific_events_leaves_the_others_failed(
    db: Database, settings: Settings, tenant: Tenant, outage: Outage
) -> None:
    first = await record(db, tenant, "f1", parser="flaky")
    await record(db, tenant, "f2", parser="flaky")
    await process(db, settings)
    async with db.transaction() as session:
        assert await intake.retry(session, tenant.account_id, [first]) == 1
    outage.down = False
    await process(db, settings)
    assert await statuses(db) == {"f1": "processed", "f2": "failed"}


async def test_a_short_backlog_goes_in_small_batches_and_a_long_one_in_full_batches(
    db: Database, tenant: Tenant, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intake, "SMALL_BATCH", 3)
    monkeypatch.setattr(intake, "BACKLOG_FOR_FULL_BATCHES", 8)
    sizes: list[int] = []
    process_batch = intake.process_batch

    async def counted(db: Database, size: int, window: timedelta) -> intake.ProcessReport:
        sizes.append(size)
        return await process_batch(db, size, window)

    monkeypatch.setattr(intake, "process_batch", counted)
    for number in range(12):
        await record(db, tenant, f"e{number}")
    report = await intake.process_all(db, 10, settings.reopen_window)
    assert report.processed == 12 and await message_count(db) == 12
    # 12 waiting: a full batch of 10; then 2 left, below the backlog: a small batch.
    assert sizes == [10, 3]
