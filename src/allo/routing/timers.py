"""SLA timers: breaches recorded at their due second, warnings before, escalations with them.

Routing writes a timer for each running clock (the breach at its due time) and for each
escalation rule that acts before a breach. `TimerLoop` runs in every worker: it fires the timers
that are due (rows locked with SKIP LOCKED, so two workers never fire one twice), then sleeps
until the next one, at most `POLL` seconds so that a timer written by another process is seen
within that. A timer whose clock stopped or moved since (answered, re-routed) does nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from allo.conversations.models import Conversation
from allo.db.engine import Database
from allo.routing import service
from allo.routing.models import EscalationRule, SlaEvent, SlaTimer

logger = logging.getLogger(__name__)

POLL = timedelta(seconds=1)
FIRE_BATCH = 200


class Clock:
    """Real time; tests give the loop a fake one."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def fire_due(db: Database, now: datetime) -> int:
    """Fire every timer due at `now`; how many fired."""
    fired = 0
    while True:
        async with db.transaction() as session:
            timers = list(
                await session.scalars(
                    select(SlaTimer)
                    .where(SlaTimer.done_at.is_(None), SlaTimer.fires_at <= now)
                    .order_by(SlaTimer.fires_at, SlaTimer.id)
                    .limit(FIRE_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            for timer in timers:
                await _fire(session, timer, now)
                timer.done_at = now
        fired += len(timers)
        if len(timers) < FIRE_BATCH:
            return fired


async def _fire(session: AsyncSession, timer: SlaTimer, now: datetime) -> None:
    conversation = await session.get(Conversation, timer.conversation_id, with_for_update=True)
    if conversation is None:
        return
    if getattr(conversation, service.DUE_COLUMNS[timer.kind]) != timer.due_at:
        return  # the clock stopped or moved: another timer (or none) stands for it now
    if timer.action == "breach":
        if not await service.record_breach(session, conversation, timer, now):
            return
        for rule in await _breach_rules(session, conversation, timer.kind):
            await _escalate(session, conversation, rule, timer, now)
        return
    warning = await session.get(EscalationRule, timer.rule_id) if timer.rule_id else None
    if warning is not None and not await _warned(session, timer):
        session.add(_event(conversation, timer, "warned", now, {"rule": warning.id}))
        await _escalate(session, conversation, warning, timer, now)


async def _warned(session: AsyncSession, timer: SlaTimer) -> bool:
    """Whether this rule already warned about this clock (its timers are rewritten each time
    the conversation is routed)."""
    found = await session.scalar(
        select(SlaEvent.id)
        .where(
            SlaEvent.conversation_id == timer.conversation_id,
            SlaEvent.kind == timer.kind,
            SlaEvent.clock_started_at == timer.clock_started_at,
            SlaEvent.event == "warned",
            SlaEvent.details["rule"].as_integer() == timer.rule_id,
        )
        .limit(1)
    )
    return found is not None


async def _breach_rules(
    session: AsyncSession, conversation: Conversation, kind: str
) -> list[EscalationRule]:
    scope: ColumnElement[bool] = EscalationRule.team_id.is_(None)
    if conversation.team_id is not None:
        scope = scope | (EscalationRule.team_id == conversation.team_id)
    rows = await session.scalars(
        select(EscalationRule)
        .where(
            EscalationRule.account_id == conversation.account_id,
            EscalationRule.kind == kind,
            EscalationRule.before_seconds == 0,
            scope,
        )
        .order_by(EscalationRule.id)
    )
    return list(rows.all())


async def _escalate(
    session: AsyncSession,
    conversation: Conversation,
    rule: EscalationRule,
    timer: SlaTimer,
    now: datetime,
) -> None:
    done = await service.escalate(session, conversation, rule, timer.kind, now)
    details = {"rule": rule.id, "action": rule.action, **done}
    session.add(_event(conversation, timer, "escalated", now, details))


def _event(
    conversation: Conversation,
    timer: SlaTimer,
    event: str,
    now: datetime,
    details: dict[str, object],
) -> SlaEvent:
    return SlaEvent(
        account_id=conversation.account_id,
        conversation_id=conversation.id,
        team_id=conversation.team_id,
        kind=timer.kind,
        event=event,
        clock_started_at=timer.clock_started_at,
        due_at=timer.due_at,
        at=now,
        details=details,
    )


async def next_fire_at(db: Database) -> datetime | None:
    async with db.sessions() as session:
        found: datetime | None = await session.scalar(
            select(func.min(SlaTimer.fires_at)).where(SlaTimer.done_at.is_(None))
        )
        return found


class TimerLoop:
    """Fires timers as they fall due, until `stop` (it finishes its round, within POLL, so no
    transaction is left open the way a cancellation in the middle of a query could)."""

    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        after_fire: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or Clock()
        self.after_fire = after_fire
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.step()
            except Exception:
                logger.warning("SLA timers: a round failed; trying again", exc_info=True)
                await self.clock.sleep(POLL.total_seconds())

    async def step(self) -> None:
        """Fire what is due, then sleep until the next timer (at most POLL)."""
        fired = await fire_due(self.db, self.clock.now())
        if fired and self.after_fire is not None:
            await self.after_fire(fired)
        upcoming = await next_fire_at(self.db)
        now = self.clock.now()
        wait = POLL if upcoming is None else min(POLL, max(timedelta(0), upcoming - now))
        await self.clock.sleep(wait.total_seconds())
