"""Intake: record raw events durably, then process them exactly once, in arrival order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from allo import events
from allo.channels.inbound import InboundMessage, StatusUpdate
from allo.channels.models import ChannelAccount
from allo.channels.registry import NETWORKS, parser_for
from allo.contacts import service as contacts
from allo.conversations import delivery
from allo.conversations import service as conversations
from allo.db import bulk
from allo.db.engine import Database, is_transient
from allo.intake.models import InboundEvent
from allo.intake.recording import NewEvent, Recorded, Recorder, record, record_many

__all__ = ["NewEvent", "Recorded", "Recorder", "record", "record_many"]  # intake's whole API

logger = logging.getLogger(__name__)

# One processor at a time keeps arrival order (a reply after the post it answers) and spares
# threading from deadlocks; batches make it cheap. See docs/decisions.md.
PROCESSING_LOCK = 4242002
# Batch sizes by backlog (`process_all`): small batches while fewer events than this wait.
SMALL_BATCH = 100
BACKLOG_FOR_FULL_BATCHES = 1_000
MAX_ERROR_LENGTH = 4000


@dataclass
class ProcessReport:
    processed: int = 0
    failed: int = 0
    skipped: int = 0
    messages: int = 0

    @property
    def events(self) -> int:
        return self.processed + self.failed + self.skipped

    def add(self, other: ProcessReport) -> None:
        self.processed += other.processed
        self.failed += other.failed
        self.skipped += other.skipped
        self.messages += other.messages


@dataclass
class Outcome:
    status: str
    message_ids: list[int] = field(default_factory=list)
    error: str | None = None


async def process_batch(db: Database, batch_size: int, reopen_window: timedelta) -> ProcessReport:
    """Process up to `batch_size` pending events in one transaction.

    The batch is placed together (a few statements for all its events). Should that fail on
    the database, it is rolled back and its events are processed one by one, so that only
    the event at fault is marked failed. A crash anywhere rolls the whole batch back: it is
    processed again, once.
    """
    async with db.sessions() as session:
        async with session.begin():
            # Another processor is at work: it drains the queue, so this one leaves rather
            # than wait holding a connection (new events defer a job again).
            locked = await session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": PROCESSING_LOCK}
            )
            if not locked:
                return ProcessReport()
            pending = (
                await session.scalars(
                    select(InboundEvent)
                    .where(InboundEvent.status == "pending")
                    .order_by(InboundEvent.id)
                    .limit(batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            channel_accounts = await _channel_accounts(session, pending)
            try:
                async with session.begin_nested():
                    outcomes = await _process_together(
                        session, pending, channel_accounts, reopen_window
                    )
            except Exception as error:
                if is_transient(error):
                    raise
                logger.warning("batch failed as a whole (%s); one event at a time", error)
                events.take_recorded(session)
                outcomes = {}
                for event in pending:
                    outcomes[event.id] = await _process_alone(
                        session, event, channel_accounts, reopen_window
                    )
            report = await _apply(session, pending, outcomes)
            domain_events = events.take_recorded(session)
            await events.announce_received(session, domain_events)
        await events.dispatch(domain_events)
    return report


async def _channel_accounts(
    session: AsyncSession, pending: Sequence[InboundEvent]
) -> dict[int, ChannelAccount]:
    ids = {e.channel_account_id for e in pending}
    if not ids:
        return {}
    rows = await session.scalars(select(ChannelAccount).where(ChannelAccount.id.in_(ids)))
    return {c.id: c for c in rows}


async def _process_alone(
    session: AsyncSession,
    event: InboundEvent,
    channel_accounts: dict[int, ChannelAccount],
    reopen_window: timedelta,
) -> Outcome:
    try:
        async with session.begin_nested():
            outcomes = await _process_together(session, [event], channel_accounts, reopen_window)
    except Exception as error:
        if is_transient(error):
            raise
        events.take_recorded(session)
        return Outcome("failed", error=_describe(error))
    return outcomes[event.id]


async def _process_together(
    session: AsyncSession,
    pending: Sequence[InboundEvent],
    channel_accounts: dict[int, ChannelAccount],
    reopen_window: timedelta,
) -> dict[int, Outcome]:
    """parse → contacts → threads → messages for a batch; hooks run after commit."""
    outcomes: dict[int, Outcome] = {}
    parsed: list[tuple[InboundEvent, list[InboundMessage]]] = []
    reported: list[delivery.Reported] = []
    for event in pending:
        channel_account = channel_accounts[event.channel_account_id]
        try:
            parse = parser_for(event.parser)
            found = parse(
                event.raw, event.external_id, event.received_at, channel_account.external_id
            )
        except Exception as error:
            logger.warning("inbound event %s failed: %s", event.id, error)
            outcomes[event.id] = Outcome("failed", error=_describe(error))
            continue
        parsed.append((event, [m for m in found if isinstance(m, InboundMessage)]))
        reported += [
            delivery.Reported(channel_account, u) for u in found if isinstance(u, StatusUpdate)
        ]

    # The brand's own messages, seen again on a network Allo sends through.
    echoes = [
        (channel_accounts[e.channel_account_id], m)
        for e, ms in parsed
        for m in ms
        if m.direction == "out" and channel_accounts[e.channel_account_id].kind in NETWORKS
    ]
    claimed = await delivery.claim_echoes(session, echoes) if echoes else set()
    parsed = [(e, [m for m in ms if id(m) not in claimed]) for e, ms in parsed]
    placed = [(e, channel_accounts[e.channel_account_id], m) for e, ms in parsed for m in ms]
    with_contact = [(e, ca, m) for e, ca, m in placed if m.contact is not None]
    contact_ids = await contacts.resolve_identities(
        session, [(e.account_id, ca.kind, m.contact) for e, ca, m in with_contact if m.contact]
    )
    contact_of = {id(m): c for (_, _, m), c in zip(with_contact, contact_ids, strict=True)}
    threads = conversations.Threads(session, reopen_window)
    await threads.load([(ca, contact_of.get(id(m)), m) for _, ca, m in placed])

    for event, messages in parsed:
        outcome = Outcome("processed")
        for message in messages:
            channel_account = channel_accounts[event.channel_account_id]
            contact_id = contact_of.get(id(message))
            try:
                placement = threads.place(channel_account, contact_id, message)
            except conversations.ThreadNotFound as reason:
                outcome.error = str(reason)
                continue
            message_id = threads.add(placement, message, contact_id, event.received_at, event.id)
            if message_id is not None:
                outcome.message_ids.append(message_id)
        if outcome.error and not outcome.message_ids:
            outcome.status = "skipped"
        outcomes[event.id] = outcome
    await threads.flush()
    await delivery.apply_updates(session, reported)
    await delivery.apply_waiting(
        session,
        [(ca, e) for ca, e in threads.stored_keys() if channel_accounts[ca].kind in NETWORKS],
    )
    return outcomes


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_LENGTH]


async def _apply(
    session: AsyncSession, pending: Sequence[InboundEvent], outcomes: dict[int, Outcome]
) -> ProcessReport:
    """Each event's outcome, written in one statement for the batch."""
    report = ProcessReport()
    now = datetime.now(UTC)
    rows = []
    for event in pending:
        outcome = outcomes[event.id]
        rows.append(
            {
                "id": event.id,
                "attempts": event.attempts + 1,
                "status": outcome.status,
                "error": outcome.error,
                "processed_at": now,
                "message_ids": outcome.message_ids,
            }
        )
        if outcome.status == "processed":
            report.processed += 1
            report.messages += len(outcome.message_ids)
        elif outcome.status == "failed":
            report.failed += 1
        else:
            report.skipped += 1
    await bulk.update_rows(session, InboundEvent, rows)
    return report


async def process_all(
    db: Database, batch_size: int, reopen_window: timedelta, max_batches: int | None = None
) -> ProcessReport:
    """Process batches until nothing is pending (or `max_batches` were done).

    While the backlog is short, batches are small (`SMALL_BATCH`): the database work of a
    batch competes for the CPU with webhook answers, and short bursts keep their latency even.
    When it grows past `BACKLOG_FOR_FULL_BATCHES`, batches take up to `batch_size` events,
    which processes more per second, until it is short again."""
    total = ProcessReport()
    batches = 0
    while max_batches is None or batches < max_batches:
        size = batch_size
        if batch_size > SMALL_BATCH and not await pending_at_least(db, BACKLOG_FOR_FULL_BATCHES):
            size = SMALL_BATCH
        report = await process_batch(db, size, reopen_window)
        total.add(report)
        batches += 1
        if report.events < size:
            break
    return total


async def retry(
    session: AsyncSession, account_id: int | None = None, event_ids: Sequence[int] | None = None
) -> int:
    """Put failed (and skipped) events back in the queue; returns how many."""
    query = update(InboundEvent).where(InboundEvent.status.in_(("failed", "skipped")))
    if account_id is not None:
        query = query.where(InboundEvent.account_id == account_id)
    if event_ids is not None:
        query = query.where(InboundEvent.id.in_(list(event_ids)))
    result = await session.execute(query.values(status="pending"))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def count_by_status(session: AsyncSession, account_id: int | None = None) -> dict[str, int]:
    query = select(InboundEvent.status, func.count()).group_by(InboundEvent.status)
    if account_id is not None:
        query = query.where(InboundEvent.account_id == account_id)
    return {status: count for status, count in (await session.execute(query)).all()}


async def pending_at_least(db: Database, count: int) -> bool:
    """Whether `count` events or more wait (counted no further than that)."""
    async with db.sessions() as session:
        waiting = (
            select(InboundEvent.id).where(InboundEvent.status == "pending").limit(count).subquery()
        )
        return int(await session.scalar(select(func.count()).select_from(waiting)) or 0) >= count


async def pending_exists(session: AsyncSession) -> bool:
    found = await session.scalar(
        select(InboundEvent.id).where(InboundEvent.status == "pending").limit(1)
    )
    return found is not None


async def list_events(
    session: AsyncSession,
    account_id: int | None,
    status: str | None,
    limit: int,
    before_id: int | None = None,
) -> list[InboundEvent]:
    query = select(InboundEvent)
    if account_id is not None:
        query = query.where(InboundEvent.account_id == account_id)
    if status:
        query = query.where(InboundEvent.status == status)
    if before_id is not None:
        query = query.where(InboundEvent.id < before_id)
    return list((await session.scalars(query.order_by(InboundEvent.id.desc()).limit(limit))).all())
