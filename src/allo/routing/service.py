"""Routing: the team and agent of each conversation, its SLA clocks and their timers, the
out-of-hours acknowledgement, escalation, and the settings behind them.

Conversations are routed from a queue in their own table: a conversation whose `routed_at` is
null (intake clears it with each new message; status changes and triage too) waits to be read
(`route_pending`), once triage has read its waiting messages or after `TRIAGE_GRACE`, so that
triage never delays a clock or an assignment for long and a triage failure never blocks one.
Conversations are routed in batches, a transaction each, holding only their rows (what
routing reads for them is read for the whole batch). Agents are then given conversations
(`fill`) under the account's assignment lock: two workers never fill an agent's last place
twice.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import DateTime, bindparam, case, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from allo import events
from allo.accounts.models import User
from allo.channels.models import ChannelAccount
from allo.contacts.models import Contact
from allo.conversations.models import Conversation, Message
from allo.db import bulk
from allo.db.engine import Database, is_transient
from allo.db.keys import among
from allo.replies import service as replies
from allo.routing import assignment, priority
from allo.routing.calendars import BusinessCalendar
from allo.routing.models import (
    Agent,
    EscalationRule,
    Notification,
    SlaEvent,
    SlaPolicy,
    SlaTimer,
    Team,
    TeamMember,
)
from allo.routing.priority import Waiting
from allo.routing.schemas import (
    AgentIn,
    EscalationRuleIn,
    QueueEntry,
    RoutingOut,
    SlaPolicyIn,
    SlaReport,
    TeamIn,
)
from allo.routing.sla import (
    PAUSED_STATUSES,
    PRIORITIES,
    ClockState,
    Targets,
    running_clocks,
    targets_for,
)

logger = logging.getLogger(__name__)

# How long routing waits for triage to read a message before going without it.
TRIAGE_GRACE = timedelta(seconds=15)
# Conversations routed between two looks at whether intake waits (`route_pending`).
ROUTE_BATCH = 50
# What agents hold at once, per kind of channel, when their profile does not say.
DEFAULT_CAPACITY = {"social": 8, "messaging": 4, "email": 10, "voice": 1}
CHANNEL_KIND = {
    "x": "social",
    "facebook": "social",
    "instagram": "social",
    "messenger": "messaging",
    "whatsapp": "messaging",
    "webchat": "messaging",
    "api": "messaging",
    "email": "email",
    "webform": "email",
    "voice": "voice",
}
HOLDING_STATUSES = ("open", "pending")
KINDS = ("social", "messaging", "email", "voice")
# Conversations read from the head of the queue at a time when filling agents' places.
FILL_PAGE = 10
# The namespace of the account-wide assignment lock (pg_advisory_xact_lock(namespace, account)).
ASSIGNMENT_LOCK = 0x616C6C6F
# The handling time an out-of-hours acknowledgement assumes per conversation ahead in the queue.
ACKNOWLEDGEMENT_HANDLE = timedelta(minutes=5)
DUE_COLUMNS = {
    "first_response": "first_response_due_at",
    "next_response": "next_response_due_at",
    "resolution": "resolution_due_at",
}


@dataclass(frozen=True)
class WaitingTriage:
    """What triage read in the messages the customer is waiting on."""

    answerable: bool = True
    spam: bool = False
    urgent: bool = False
    sentiment: float = 0.0
    churn: bool = False
    intents: frozenset[str] = frozenset()


@dataclass
class RouteReport:
    routed: int = 0
    assigned: int = 0
    acknowledged: int = 0
    failed: int = 0
    teams: set[int] = field(default_factory=set)

    def add(self, other: RouteReport) -> None:
        self.routed += other.routed
        self.assigned += other.assigned
        self.acknowledged += other.acknowledged
        self.teams |= other.teams


ALWAYS_OPEN = BusinessCalendar.always_open()


def calendar_of(team: Team | None) -> BusinessCalendar:
    """The team's calendar. Calendars are frozen, so one is built per stored form and shared:
    checking and normalising a week for every conversation routed was a tenth of routing."""
    if team is None or team.calendar is None:
        return ALWAYS_OPEN
    return _calendar(json.dumps(team.calendar, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _calendar(stored: str) -> BusinessCalendar:
    return BusinessCalendar.from_json(json.loads(stored))


async def route_pending(
    db: Database,
    now: datetime | None = None,
    step_aside: Callable[[], Awaitable[bool]] | None = None,
) -> RouteReport:
    """Route every conversation waiting to be read, a batch per transaction.

    Before each batch `step_aside` may say that more urgent work waits (intake): routing then
    stops after assigning what it read; the rest stays pending for the next job. A batch that
    fails is routed again one conversation per transaction, so that only the one at fault
    stays behind."""
    report = RouteReport()
    failed: set[int] = set()
    while not (step_aside is not None and await step_aside()):
        moment = now or datetime.now(UTC)
        async with db.sessions() as session:
            ids = list(
                await session.scalars(
                    _unrouted(moment)
                    .where(~among(Conversation.id, failed))
                    .limit(ROUTE_BATCH)
                    .with_only_columns(Conversation.id)
                )
            )
        try:
            report.add(await _route_ids(db, ids, moment))
        except Exception as error:
            if is_transient(error):
                raise
            logger.warning("routing a batch failed; one conversation at a time", exc_info=True)
            for conversation_id in ids:
                try:
                    report.add(await _route_ids(db, [conversation_id], moment))
                except Exception as alone:
                    if is_transient(alone):
                        raise
                    # Left unrouted, in the inbox: the next routing job tries it again.
                    logger.exception("routing conversation %s failed", conversation_id)
                    failed.add(conversation_id)
        if len(ids) < ROUTE_BATCH:
            break
    report.failed = len(failed)
    for team_id in sorted(report.teams):
        report.assigned += await fill(db, team_id, now or datetime.now(UTC))
    return report


async def _route_ids(db: Database, ids: Sequence[int], now: datetime) -> RouteReport:
    """Route those of these conversations still waiting and not held by another worker."""
    report = RouteReport()
    if not ids:
        return report
    async with db.transaction() as session:
        conversations = list(
            await session.scalars(
                _unrouted(now).where(among(Conversation.id, ids)).with_for_update(skip_locked=True)
            )
        )
        await route_many(session, conversations, now, report)
    return report


async def fill(db: Database, team_id: int, now: datetime) -> int:
    """Give the team's waiting conversations to its agents with room, first in the queue's
    order first; how many were assigned."""
    async with db.transaction() as session:
        team = await session.get(Team, team_id)
        if team is None:
            return 0
        await _lock_account(session, team.account_id)
        # The agents' loads are read once per kind of channel and kept up to date here, so a
        # long queue with every agent full costs one read, not one per conversation.
        loads = await team_loads(session, team.id)
        places = {
            kind: sum(max(0, load.capacity - load.holding) for load in loads[kind] if load.online)
            for kind in KINDS
        }
        assigned_ids: list[int] = []
        while kinds := [kind for kind in KINDS if places[kind] > 0]:
            # Only conversations of channels with room are read; when a kind fills up, the
            # queue is read again without it.
            filled_a_kind = False
            async with aclosing(assignable(session, team, now, _channels_of(kinds))) as queue:
                async for conversation in queue:
                    kind = CHANNEL_KIND.get(conversation.channel, "messaging")
                    chosen = await _choose_agent(session, conversation, team, loads[kind], now)
                    if chosen is None:
                        continue
                    conversation.assignee_id = chosen
                    await session.execute(
                        update(Conversation)
                        .where(Conversation.id == conversation.id)
                        .values(assignee_id=chosen)
                        .execution_options(synchronize_session=False)
                    )
                    loads[kind] = [
                        replace(load, holding=load.holding + 1, last_assigned_at=now)
                        if load.agent_id == chosen
                        else load
                        for load in loads[kind]
                    ]
                    places[kind] -= 1
                    assigned_ids.append(conversation.id)
                    if places[kind] == 0:
                        filled_a_kind = True
                        break
            if not filled_a_kind:
                break
        await events.announce(session, team.account_id, "assignment", assigned_ids)
        return len(assigned_ids)


async def fill_all(db: Database, now: datetime) -> int:
    """`fill` every team that has an agent online: capacity freed by a resolution or an agent
    coming online is used at the next sweep."""
    async with db.sessions() as session:
        teams = list(
            await session.scalars(
                select(TeamMember.team_id)
                .join(Agent, Agent.user_id == TeamMember.user_id)
                .where(Agent.presence == "online")
                .distinct()
            )
        )
    return sum([await fill(db, team_id, now) for team_id in sorted(teams)])


@dataclass
class Queued:
    """A conversation as the queue reads it: only the columns its order and assignment need,
    so a queue of thousands is read in milliseconds."""

    id: int
    channel: str
    language: str | None
    contact_id: int
    assignee_id: int | None
    priority: int
    waiting_since: datetime | None
    last_message_at: datetime
    first_response_due_at: datetime | None
    next_response_due_at: datetime | None
    waiting_triage: dict[str, Any] | None

    @classmethod
    def of(cls, conversation: Conversation) -> Queued:
        return cls(*(getattr(conversation, name) for name in Queued.__dataclass_fields__))

    def waiting(self) -> Waiting:
        """The earliest running response clock, and what triage read in the waiting messages."""
        dues = [d for d in (self.first_response_due_at, self.next_response_due_at) if d]
        read = self.waiting_triage or {}
        return Waiting(
            conversation_id=self.id,
            waiting_since=self.waiting_since or self.last_message_at,
            due_at=min(dues) if dues else None,
            urgent=bool(read.get("urgent")),
            sentiment=float(read.get("sentiment", 0.0)),
            churn=bool(read.get("churn")),
            priority=self.priority,
        )


QUEUED_COLUMNS = [getattr(Conversation, name) for name in Queued.__dataclass_fields__]


def _queue_statement(part: str) -> Any:
    """A team's queue, sorted by the database: `routing.priority.place` over the stored place
    (`set_queue_place`), so that a decision reads only the queue's head. Built once; the team,
    the time and the page are parameters. `part`: "all" (the whole queue), or, for assignment,
    "on_time" and "overdue" (unassigned, on the clock), each read in the order of an index.
    A test holds the database's order and `routing.priority.order` to one."""
    due = Conversation.response_due_at
    now = bindparam("now", type_=DateTime(timezone=True))
    arrived = func.coalesce(Conversation.waiting_since, Conversation.last_message_at)
    query = select(*QUEUED_COLUMNS).where(
        Conversation.team_id == bindparam("team"),
        Conversation.status == "open",
        Conversation.waiting_since.is_not(None),
    )
    if part != "all":
        query = query.where(Conversation.channel.in_(bindparam("channels", expanding=True)))
    if part == "on_time":
        query = query.where(Conversation.assignee_id.is_(None), due > now)
        order = [Conversation.queue_deadline, arrived, Conversation.id]
    elif part == "overdue":
        query = query.where(Conversation.assignee_id.is_(None), due <= now)
        order = [due, arrived, Conversation.id]
    else:
        order = queue_order(now)
    return query.order_by(*order).limit(bindparam("limit")).offset(bindparam("offset"))


def queue_order(now: Any) -> list[Any]:
    """The queue's order (`routing.priority.order`) as ORDER BY terms, over the stored place:
    on time by deadline, then overdue by due time, then conversations without a clock."""
    due = Conversation.response_due_at
    arrived = func.coalesce(Conversation.waiting_since, Conversation.last_message_at)
    tier = case(
        (due.is_(None), priority.NO_CLOCK),
        (due <= now, priority.OVERDUE),
        else_=priority.ON_TIME,
    )
    first = case((due.is_(None), arrived), (due <= now, due), else_=Conversation.queue_deadline)
    return [tier, first, arrived, Conversation.id]


_QUEUE = {part: _queue_statement(part) for part in ("all", "on_time", "overdue")}


async def team_queue(
    session: AsyncSession, team: Team, now: datetime, part: str = "all"
) -> list[Queued]:
    """The team's open conversations where a customer waits for an answer, in the queue's
    order (`routing.priority`)."""
    return await _queue_page(session, team, now, part, None, 0)


async def _queue_page(
    session: AsyncSession,
    team: Team,
    now: datetime,
    part: str,
    limit: int | None,
    offset: int,
    channels: Sequence[str] = (),
) -> list[Queued]:
    # Through the connection, not the ORM session: plain rows, without the ORM's per-row work.
    connection = await session.connection()
    values: dict[str, Any] = {"team": team.id, "now": now, "limit": limit, "offset": offset}
    if part != "all":
        values["channels"] = list(channels)
    rows = await connection.execute(_QUEUE[part], values)
    return [Queued(*row) for row in rows.all()]


def _channels_of(kinds: Sequence[str]) -> list[str]:
    return [channel for channel, kind in CHANNEL_KIND.items() if kind in kinds]


async def assignable(
    session: AsyncSession, team: Team, now: datetime, channels: Sequence[str] | None = None
) -> AsyncGenerator[Queued, None]:
    """The unassigned conversations on the clock, head of the queue first, a page at a time
    (most decisions read one page): those still on time, then the overdue ones. Assignment
    takes only conversations on the clock: spam and messages that need no answer stay in the
    team's inbox, unassigned. Rows assigned meanwhile leave the query, so the next page starts
    after the rows passed over."""
    wanted = list(channels) if channels is not None else list(CHANNEL_KIND)
    for part in ("on_time", "overdue"):
        passed_over = 0
        while True:
            page = await _queue_page(session, team, now, part, FILL_PAGE, passed_over, wanted)
            for conversation in page:
                before = conversation.assignee_id
                yield conversation
                passed_over += conversation.assignee_id == before
            if len(page) < FILL_PAGE:
                break


def _unrouted(now: datetime) -> Any:
    untriaged = (
        select(Message.id)
        .where(
            Message.conversation_id == Conversation.id,
            Message.direction == "in",
            Message.triaged_at.is_(None),
            Message.received_at > now - TRIAGE_GRACE,
        )
        .exists()
    )
    return (
        select(Conversation)
        .where(Conversation.routed_at.is_(None), ~untriaged)
        .order_by(Conversation.id)
    )


async def pending_exists(session: AsyncSession) -> bool:
    found = await session.scalar(
        select(Conversation.id).where(Conversation.routed_at.is_(None)).limit(1)
    )
    return found is not None


async def route(
    session: AsyncSession, conversation: Conversation, now: datetime, report: RouteReport
) -> None:
    """Read one conversation (see `route_many`)."""
    await route_many(session, [conversation], now, report)


async def route_many(
    session: AsyncSession,
    conversations: Sequence[Conversation],
    now: datetime,
    report: RouteReport,
) -> None:
    """Read conversations: team, priority, clocks, acknowledgement. Agents are given
    conversations afterwards, team by team in the queue's order (`fill`), under the account's
    assignment lock; reading conversations needs only their own rows'. What is read for each
    (its waiting messages' triage, its team, whether its contact is a VIP) is read for all of
    them at once, and their timers are rewritten in two statements."""
    if not conversations:
        return
    triages = await waiting_triages(session, conversations)
    setups = await _teams(session, conversations)
    vips = await _vips(session, {c.contact_id for c in conversations})
    timers: list[dict[str, Any]] = []
    for conversation in conversations:
        triage, setup = triages[conversation.id], setups[conversation.id]
        if triage.urgent and conversation.priority < PRIORITIES["urgent"]:
            conversation.priority = PRIORITIES["urgent"]
        if conversation.sla_paused_at is not None and conversation.status not in PAUSED_STATUSES:
            # Back from pending or snoozed: the pause, in business time, extends the resolution.
            team = setup.team if setup else None
            paused = calendar_of(team).elapsed(conversation.sla_paused_at, now)
            conversation.sla_paused_seconds += round(paused.total_seconds())
            conversation.sla_paused_at = None
        timers += set_clocks(conversation, setup, triage, now)
        conversation.waiting_triage = {
            "answerable": triage.answerable,
            "spam": triage.spam,
            "urgent": triage.urgent,
            "sentiment": triage.sentiment,
            "churn": triage.churn,
            "intents": sorted(triage.intents),
            "vip": conversation.contact_id in vips,
        }
        set_queue_place(conversation)
        conversation.routed_at = now
        report.routed += 1
    # Every row changed above is written in one flush, before the timers are.
    await _replace_timers(session, [c.id for c in conversations], timers)
    for conversation in conversations:
        setup = setups[conversation.id]
        if setup is not None:
            report.teams.add(setup.team.id)
            triage = triages[conversation.id]
            if await acknowledge(session, conversation, setup.team, triage, now):
                report.acknowledged += 1


async def _vips(session: AsyncSession, contact_ids: set[int]) -> set[int]:
    """The contacts marked VIP (`attributes.vip` true, set by an admin or an integration)."""
    found = await session.scalars(
        select(Contact.id).where(
            among(Contact.id, contact_ids), Contact.attributes.contains({"vip": True})
        )
    )
    return set(found)


def set_queue_place(conversation: Conversation) -> None:
    """Keep the conversation's place in its team's queue where the database can sort by it:
    the earliest running response clock, and that due time brought forward by the credits
    (`routing.priority.deadline`), which do not change with time."""
    waiting = Queued.of(conversation).waiting()
    conversation.response_due_at = waiting.due_at
    conversation.queue_deadline = (
        None
        if waiting.due_at is None
        else datetime.fromtimestamp(priority.deadline(waiting, priority.PriorityWeights()), UTC)
    )


async def _lock_account(session: AsyncSession, account_id: int) -> None:
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:namespace, :account)"),
        {"namespace": ASSIGNMENT_LOCK, "account": account_id},
    )


async def waiting_triages(
    session: AsyncSession, conversations: Sequence[Conversation]
) -> dict[int, WaitingTriage]:
    """Triage of the customer messages since each conversation's wait began (the latest ones
    when the customer waits for nothing): answerable if any of them needs an answer and is
    not spam. Read for every conversation in one statement."""
    since = func.coalesce(Conversation.waiting_since, Conversation.last_inbound_at)
    rows = await session.execute(
        select(Message.conversation_id, Message.triage)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            among(Message.conversation_id, [c.id for c in conversations]),
            Message.direction == "in",
            Message.sent_at >= since,
        )
    )
    read: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for conversation_id, triage in rows.all():
        if triage is not None:
            read[conversation_id].append(triage)
    return {
        c.id: _waiting_triage(read[c.id])
        if (c.waiting_since or c.last_inbound_at) is not None
        else WaitingTriage(answerable=False)
        for c in conversations
    }


def _waiting_triage(read: list[dict[str, Any]]) -> WaitingTriage:
    if not read:
        return WaitingTriage()  # not read (yet, or triage failed): a customer is owed an answer
    intents = frozenset(intent for row in read for intent in row.get("intents", []))
    return WaitingTriage(
        answerable=any(row.get("needs_answer") and not row.get("spam") for row in read),
        spam=all(row.get("spam") for row in read),
        urgent=any(row.get("urgent") for row in read),
        sentiment=min(float(row.get("sentiment", {}).get("score", 0.0)) for row in read),
        churn="churn" in intents,
        intents=intents,
    )


@dataclass(frozen=True)
class EarlyWarning:
    """An escalation rule that acts before a breach: when its timer fires."""

    rule_id: int
    kind: str
    before_seconds: int


@dataclass(frozen=True)
class TeamSetup:
    """What routing reads of a conversation's team, in one statement: the team, its policy's
    targets, and the escalation rules that warn before a breach."""

    team: Team
    targets: dict[str, dict[str, int]]
    channel_targets: dict[str, dict[str, dict[str, int]]]
    warnings: tuple[EarlyWarning, ...]

    def targets_for(self, conversation: Conversation) -> Targets:
        return targets_for(
            self.targets, self.channel_targets, conversation.priority, conversation.channel
        )


def _setup_statement() -> Any:
    rules = (
        select(
            func.coalesce(
                func.json_agg(
                    func.json_build_array(
                        EscalationRule.id, EscalationRule.kind, EscalationRule.before_seconds
                    )
                ),
                text("'[]'::json"),
            )
        )
        .where(
            EscalationRule.account_id == Team.account_id,
            (EscalationRule.team_id.is_(None)) | (EscalationRule.team_id == Team.id),
            EscalationRule.before_seconds > 0,
        )
        .scalar_subquery()
    )
    return (
        select(Team, SlaPolicy.targets, SlaPolicy.channel_targets, rules)
        .outerjoin(SlaPolicy, SlaPolicy.id == Team.sla_policy_id)
        .where(Team.id == bindparam("team"))
    )


_SETUP = _setup_statement()


async def team_setup(session: AsyncSession, team_id: int) -> TeamSetup | None:
    row = (await session.execute(_SETUP, {"team": team_id})).first()
    if row is None:
        return None
    team, targets, channel_targets, rules = row
    return TeamSetup(
        team=team,
        targets=targets or {},
        channel_targets=channel_targets or {},
        warnings=tuple(EarlyWarning(*rule) for rule in rules),
    )


async def _teams(
    session: AsyncSession, conversations: Sequence[Conversation]
) -> dict[int, TeamSetup | None]:
    """Each conversation's team, chosen once: the first team (by id) that answers its inbox
    and takes its language, else the first that answers any inbox. Each account's teams and
    each team's setup are read once for all the conversations."""
    teams: dict[int, list[Team]] = defaultdict(list)
    unteamed = {c.account_id for c in conversations if c.team_id is None}
    if unteamed:
        for candidate in await session.scalars(
            select(Team).where(among(Team.account_id, unteamed)).order_by(Team.id)
        ):
            teams[candidate.account_id].append(candidate)
    setups: dict[int, TeamSetup | None] = {}
    chosen: dict[int, TeamSetup | None] = {}
    for conversation in conversations:
        if conversation.team_id is None:
            team = _first_team(conversation, teams[conversation.account_id])
            if team is None:
                chosen[conversation.id] = None
                continue
            conversation.team_id = team.id
        if conversation.team_id not in setups:
            setups[conversation.team_id] = await team_setup(session, conversation.team_id)
        chosen[conversation.id] = setups[conversation.team_id]
    return chosen


def _first_team(conversation: Conversation, teams: Sequence[Team]) -> Team | None:
    def speaks(team: Team) -> bool:
        return not team.languages or conversation.language in team.languages

    return next(
        (t for t in teams if conversation.channel_account_id in t.inbox_ids and speaks(t)),
        None,
    ) or next((t for t in teams if not t.inbox_ids and speaks(t)), None)


def set_clocks(
    conversation: Conversation,
    setup: TeamSetup | None,
    triage: WaitingTriage,
    now: datetime,
) -> list[dict[str, Any]]:
    """The due times of the running clocks, from the current policy and priority, and the
    rows of their timers, to be written anew (`_replace_timers`: escalation rules may have
    changed too). A policy changed while clocks run therefore applies to them at the next
    reading, counted from when each clock started. A breach or a warning already given is not
    given again (see `routing.timers`)."""
    state = ClockState(
        status=conversation.status,
        created_at=conversation.created_at,
        waiting_since=conversation.waiting_since,
        first_response_at=conversation.first_response_at,
        sla_paused_seconds=conversation.sla_paused_seconds,
        answerable=triage.answerable,
    )
    targets = setup.targets_for(conversation) if setup else Targets()
    clocks = running_clocks(state, targets, calendar_of(setup.team if setup else None))
    wanted = {clock.kind: clock.due_at for clock in clocks}
    for kind, column in DUE_COLUMNS.items():
        setattr(conversation, column, wanted.get(kind))
    warnings = setup.warnings if setup else ()
    timers = []
    for clock in clocks:
        common = {
            "account_id": conversation.account_id,
            "conversation_id": conversation.id,
            "kind": clock.kind,
            "clock_started_at": clock.started_at,
            "due_at": clock.due_at,
        }
        timers.append({**common, "action": "breach", "rule_id": None, "fires_at": clock.due_at})
        for rule in warnings:
            if rule.kind == clock.kind and clock.due_at > now:
                warn_at = max(now, clock.due_at - timedelta(seconds=rule.before_seconds))
                timers.append(
                    {**common, "action": "warn", "rule_id": rule.rule_id, "fires_at": warn_at}
                )
    return timers


async def _replace_timers(
    session: AsyncSession, conversation_ids: Sequence[int], timers: list[dict[str, Any]]
) -> None:
    """The conversations' timers not fired yet, replaced by `timers`."""
    await session.execute(
        delete(SlaTimer).where(
            among(SlaTimer.conversation_id, conversation_ids), SlaTimer.done_at.is_(None)
        )
    )
    await bulk.insert_rows(session, SlaTimer, timers)


async def assign(
    session: AsyncSession,
    conversation: Conversation,
    team: Team,
    now: datetime,
    exclude: int | None = None,
) -> int | None:
    """Give the conversation to one of the team's agents by the team's strategy, within their
    capacity for its kind of channel; None when nobody can take it now. The caller holds the
    account's assignment lock."""
    kind = CHANNEL_KIND.get(conversation.channel, "messaging")
    loads = await agent_loads(session, team.id, kind)
    others = [load for load in loads if load.agent_id != exclude]
    chosen = await _choose_agent(session, conversation, team, others, now)
    if chosen is not None:
        conversation.assignee_id = chosen
    return chosen


async def _choose_agent(
    session: AsyncSession,
    conversation: Queued | Conversation,
    team: Team,
    loads: Sequence[assignment.AgentLoad],
    now: datetime,
) -> int | None:
    """The agent the team's strategy picks (their last assignment time is set), or None."""
    need = assignment.Need(
        skills=_needed_skills(conversation, loads),
        last_agent_id=await _last_agent(session, conversation)
        if team.strategy == "sticky"
        else None,
    )
    chosen = assignment.choose(team.strategy, loads, need, team.last_round_robin_user_id)
    if chosen is None:
        return None
    team.last_round_robin_user_id = chosen.agent_id
    await session.execute(
        update(Agent).where(Agent.user_id == chosen.agent_id).values(last_assigned_at=now)
    )
    return chosen.agent_id


async def agent_loads(session: AsyncSession, team_id: int, kind: str) -> list[assignment.AgentLoad]:
    return (await team_loads(session, team_id))[kind]


def _loads_statement() -> Any:
    held = [
        func.count(Conversation.id).filter(
            Conversation.channel.in_([name for name, of in CHANNEL_KIND.items() if of == kind])
        )
        for kind in KINDS
    ]
    return (
        select(
            Agent.user_id,
            Agent.presence,
            Agent.capacity,
            Agent.skills,
            Agent.last_assigned_at,
            *held,
        )
        .join(TeamMember, TeamMember.user_id == Agent.user_id)
        .outerjoin(
            Conversation,
            (Conversation.assignee_id == Agent.user_id) & Conversation.status.in_(HOLDING_STATUSES),
        )
        .where(TeamMember.team_id == bindparam("team"))
        .group_by(Agent.user_id)
        .order_by(Agent.user_id)
    )


_LOADS = _loads_statement()


async def team_loads(session: AsyncSession, team_id: int) -> dict[str, list[assignment.AgentLoad]]:
    """The team's agents as assignment sees them, per kind of channel, in one statement."""
    connection = await session.connection()  # plain rows: no ORM work per agent
    rows = await connection.execute(_LOADS, {"team": team_id})
    loads: dict[str, list[assignment.AgentLoad]] = {kind: [] for kind in KINDS}
    for user_id, presence, capacity, skills, last_assigned_at, *counts in rows.all():
        for kind, count in zip(KINDS, counts, strict=True):
            loads[kind].append(
                assignment.AgentLoad(
                    agent_id=user_id,
                    online=presence == "online",
                    capacity=int(capacity.get(kind, DEFAULT_CAPACITY[kind])),
                    holding=int(count),
                    skills=frozenset(skills),
                    last_assigned_at=last_assigned_at,
                )
            )
    return loads


def _needed_skills(
    conversation: Queued | Conversation, loads: Sequence[assignment.AgentLoad]
) -> frozenset[str]:
    """The conversation's language, channel, intents and VIP status as skills (`lang:fr`,
    `channel:x`, `intent:complaint`, `vip`), each required only where someone in the team has
    it: a team without French speakers still answers French, and a VIP waits for the team's
    VIP agents when it has some."""
    read = conversation.waiting_triage or {}
    wanted = {f"channel:{conversation.channel}"}
    wanted |= {f"intent:{intent}" for intent in read.get("intents", [])}
    if conversation.language:
        wanted.add(f"lang:{conversation.language}")
    if read.get("vip"):
        wanted.add("vip")
    offered = set().union(*(load.skills for load in loads)) if loads else set()
    return frozenset(wanted & offered)


async def _last_agent(session: AsyncSession, conversation: Queued | Conversation) -> int | None:
    """Who last answered this contact, on any of their conversations."""
    found: int | None = await session.scalar(
        select(Message.author_user_id)
        .join(Conversation, Conversation.id == Message.conversation_id)
        .where(
            Conversation.contact_id == conversation.contact_id,
            Message.direction == "out",
            Message.author_user_id.is_not(None),
        )
        .order_by(Message.sent_at.desc())
        .limit(1)
    )
    return found


async def acknowledge(
    session: AsyncSession,
    conversation: Conversation,
    team: Team,
    triage: WaitingTriage,
    now: datetime,
) -> bool:
    """Out of business hours, tell a waiting customer once per closed period, in their channel
    and language, when an answer can honestly be expected; never to spam or to an automated
    message (neither is answerable). Stored as a queued outbound message: the outbox sends it."""
    calendar = calendar_of(team)
    if (
        not team.acknowledgements
        or conversation.waiting_since is None
        or not triage.answerable
        or calendar.is_open(now)
        or _acknowledged_while_closed(conversation, calendar, now)
    ):
        return False
    template = team.acknowledgements.get(conversation.language or "") or next(
        iter(team.acknowledgements.values())
    )
    expected = await expected_answer_at(session, team, calendar, now)
    local = expected.astimezone(ZoneInfo(calendar.time_zone))
    message_text = template.replace("{expected}", local.strftime("%Y-%m-%d %H:%M"))
    await replies.queue_automatic(session, conversation, message_text, "Allo", now)
    conversation.acknowledged_at = now
    return True


def _acknowledged_while_closed(
    conversation: Conversation, calendar: BusinessCalendar, now: datetime
) -> bool:
    """Whether the customer was already told during this closed period (no business time has
    passed since): one acknowledgement a night, however many messages come in it."""
    told = conversation.acknowledged_at
    return told is not None and calendar.elapsed(told, now) == timedelta(0)


async def expected_answer_at(
    session: AsyncSession, team: Team, calendar: BusinessCalendar, now: datetime
) -> datetime:
    """When the team opens, plus the work already waiting shared by its agents, rounded up to
    a quarter of an hour."""
    waiting = await session.scalar(
        select(func.count()).where(
            Conversation.team_id == team.id,
            Conversation.status == "open",
            Conversation.waiting_since.is_not(None),
        )
    )
    agents = await session.scalar(
        select(func.count()).select_from(TeamMember).where(TeamMember.team_id == team.id)
    )
    backlog = ACKNOWLEDGEMENT_HANDLE * math.ceil(int(waiting or 0) / max(1, int(agents or 0)))
    expected = (
        calendar.add(calendar.next_open(now), backlog) if backlog else calendar.next_open(now)
    )
    quarter = 15 * 60
    return datetime.fromtimestamp(math.ceil(expected.timestamp() / quarter) * quarter, UTC)


# Escalation


async def escalate(
    session: AsyncSession,
    conversation: Conversation,
    rule: EscalationRule,
    kind: str,
    now: datetime,
) -> dict[str, Any]:
    """Carry out one escalation rule; what was done."""
    team = await session.get(Team, conversation.team_id) if conversation.team_id else None
    when = "breached" if rule.before_seconds == 0 else "about to breach"
    if rule.action == "notify":
        notify(session, conversation, team, "sla", f"{kind.replace('_', ' ')} {when}", now)
        return {"notified": True}
    if rule.action == "raise_priority":
        conversation.priority = min(PRIORITIES["urgent"], conversation.priority + 1)
        conversation.routed_at = None  # its targets and its place in the queue move with it
        return {"priority": conversation.priority}
    if rule.action == "reassign" and team is not None:
        previous = conversation.assignee_id
        conversation.assignee_id = None
        await _lock_account(session, conversation.account_id)
        chosen = await assign(session, conversation, team, now, exclude=previous)
        if chosen is None:
            conversation.assignee_id = previous
        return {"from": previous, "to": chosen}
    if rule.action == "move_team" and rule.target_team_id is not None:
        conversation.team_id = rule.target_team_id
        conversation.assignee_id = None
        conversation.routed_at = None
        return {"team": rule.target_team_id}
    return {}


def notify(
    session: AsyncSession,
    conversation: Conversation,
    team: Team | None,
    kind: str,
    message: str,
    now: datetime,
) -> None:
    """A notification for the assignee, or for the team when nobody holds the conversation."""
    session.add(
        Notification(
            account_id=conversation.account_id,
            user_id=conversation.assignee_id,
            team_id=None if conversation.assignee_id else (team.id if team else None),
            conversation_id=conversation.id,
            kind=kind,
            text=f"Conversation {conversation.id}: {message}",
            created_at=now,
        )
    )


# Agents


async def release_offline_agents(session: AsyncSession, now: datetime) -> int:
    """Unassign the open conversations of agents offline for longer than their team's grace,
    and send them back to routing."""
    result = await session.execute(
        text(
            """
            UPDATE conversations c SET assignee_id = NULL, routed_at = NULL
            FROM agents a, teams t
            WHERE c.assignee_id = a.user_id AND c.team_id = t.id
              AND c.status IN ('open', 'pending')
              AND a.presence = 'offline'
              AND a.presence_changed_at < :now - make_interval(secs => t.unassign_grace_seconds)
            """
        ),
        {"now": now},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def record_breach(
    session: AsyncSession, conversation: Conversation, timer: SlaTimer, now: datetime
) -> bool:
    """The breach of a clock, once per clock; False when it was already recorded."""
    inserted = await session.execute(
        upsert(SlaEvent)
        .values(
            account_id=conversation.account_id,
            conversation_id=conversation.id,
            team_id=conversation.team_id,
            kind=timer.kind,
            event="breached",
            clock_started_at=timer.clock_started_at,
            due_at=timer.due_at,
            at=now,
            details={"late_ms": round((now - timer.due_at).total_seconds() * 1000)},
        )
        .on_conflict_do_nothing(
            index_elements=["conversation_id", "kind", "clock_started_at"],
            index_where=text("event = 'breached'"),
        )
        .returning(SlaEvent.id)
    )
    return inserted.scalar() is not None


# Settings and the API


class RoutingError(ValueError):
    """A request routing cannot carry out; `field` names the part of it that is wrong."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def _not_found(what: str, key: int) -> RoutingError:
    return RoutingError(f"no {what} {key} in this account", status=404)


async def save_sla_policy(
    session: AsyncSession, account_id: int, data: SlaPolicyIn, policy_id: int | None = None
) -> SlaPolicy:
    """Create or change a policy. A change applies to the running clocks of the conversations
    of every team that uses it, counted from when each clock started."""
    if policy_id is None:
        policy = SlaPolicy(account_id=account_id)
        session.add(policy)
    else:
        found = await session.get(SlaPolicy, policy_id)
        if found is None or found.account_id != account_id:
            raise _not_found("SLA policy", policy_id)
        policy = found
    policy.name = data.name
    policy.targets = data.targets
    policy.channel_targets = data.channel_targets
    await _flush_unique(session, "name", f"a policy named {data.name!r} exists")
    if policy_id is not None:
        teams = select(Team.id).where(Team.sla_policy_id == policy.id)
        await _reroute(session, Conversation.team_id.in_(teams))
    return policy


async def list_sla_policies(session: AsyncSession, account_id: int) -> list[SlaPolicy]:
    rows = await session.scalars(
        select(SlaPolicy).where(SlaPolicy.account_id == account_id).order_by(SlaPolicy.id)
    )
    return list(rows.all())


async def save_team(
    session: AsyncSession, account_id: int, data: TeamIn, team_id: int | None = None
) -> tuple[Team, list[int]]:
    """Create or change a team and set its members; its conversations are routed again (hours,
    policy or strategy may have changed)."""
    await _check_owned(session, account_id, data)
    if team_id is None:
        team = Team(account_id=account_id)
        session.add(team)
    else:
        found = await session.get(Team, team_id)
        if found is None or found.account_id != account_id:
            raise _not_found("team", team_id)
        team = found
    for name in (
        "name",
        "strategy",
        "calendar",
        "sla_policy_id",
        "inbox_ids",
        "languages",
        "unassign_grace_seconds",
        "acknowledgements",
    ):
        setattr(team, name, getattr(data, name))
    await _flush_unique(session, "name", f"a team named {data.name!r} exists")
    await session.execute(delete(TeamMember).where(TeamMember.team_id == team.id))
    members = sorted(set(data.member_ids))
    if members:
        await session.execute(
            insert(TeamMember),
            [{"team_id": team.id, "user_id": u, "account_id": account_id} for u in members],
        )
    for user_id in members:
        await _agent(session, account_id, user_id)
    if team_id is not None:
        await _reroute(session, Conversation.team_id == team.id)
    return team, members


async def _check_owned(session: AsyncSession, account_id: int, data: TeamIn) -> None:
    if data.sla_policy_id is not None:
        policy = await session.get(SlaPolicy, data.sla_policy_id)
        if policy is None or policy.account_id != account_id:
            raise RoutingError(f"no SLA policy {data.sla_policy_id}", "sla_policy_id")
    for ids, model, field_name in (
        (data.inbox_ids, ChannelAccount, "inbox_ids"),
        (data.member_ids, User, "member_ids"),
    ):
        if not ids:
            continue
        found = set(
            await session.scalars(
                select(model.id).where(model.id.in_(ids), model.account_id == account_id)
            )
        )
        if missing := sorted(set(ids) - found):
            raise RoutingError(f"not in this account: {missing}", field_name)


async def _flush_unique(session: AsyncSession, field_name: str, message: str) -> None:
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as error:
        raise RoutingError(message, field_name, status=409) from error


async def _reroute(session: AsyncSession, which: ColumnElement[bool]) -> None:
    await session.execute(
        update(Conversation)
        .where(which, Conversation.status != "resolved")
        .values(routed_at=None)
        .execution_options(synchronize_session=False)
    )


async def list_teams(session: AsyncSession, account_id: int) -> list[tuple[Team, list[int]]]:
    teams = list(
        await session.scalars(select(Team).where(Team.account_id == account_id).order_by(Team.id))
    )
    rows = await session.execute(
        select(TeamMember.team_id, TeamMember.user_id).where(TeamMember.account_id == account_id)
    )
    members: dict[int, list[int]] = {}
    for team_id, user_id in rows.all():
        members.setdefault(team_id, []).append(user_id)
    return [(team, sorted(members.get(team.id, []))) for team in teams]


async def _agent(session: AsyncSession, account_id: int, user_id: int) -> Agent:
    agent = await session.get(Agent, user_id)
    if agent is None:
        agent = Agent(
            user_id=user_id,
            account_id=account_id,
            presence="offline",
            presence_changed_at=datetime.now(UTC),
            capacity={},
            skills=[],
        )
        session.add(agent)
        await session.flush()
    return agent


async def save_agent(
    session: AsyncSession, account_id: int, user_id: int, data: AgentIn, now: datetime
) -> Agent:
    """Change an agent's presence, capacity or skills. Going offline starts the grace period
    after which their conversations go back to the queue (`release_offline_agents`)."""
    user = await session.get(User, user_id)
    if user is None or user.account_id != account_id:
        raise _not_found("user", user_id)
    agent = await _agent(session, account_id, user_id)
    if data.presence is not None and data.presence != agent.presence:
        agent.presence = data.presence
        agent.presence_changed_at = now
    if data.capacity is not None:
        agent.capacity = data.capacity
    if data.skills is not None:
        agent.skills = sorted(set(data.skills))
    return agent


async def remove_agent(session: AsyncSession, account_id: int, user_id: int) -> int:
    """Take a user out of routing: out of every team, their open conversations back to the
    queue. How many conversations were released."""
    await session.execute(
        delete(TeamMember).where(TeamMember.user_id == user_id, TeamMember.account_id == account_id)
    )
    await session.execute(
        delete(Agent).where(Agent.user_id == user_id, Agent.account_id == account_id)
    )
    result = await session.execute(
        update(Conversation)
        .where(
            Conversation.account_id == account_id,
            Conversation.assignee_id == user_id,
            Conversation.status != "resolved",
        )
        .values(assignee_id=None, routed_at=None)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def save_escalation_rule(
    session: AsyncSession, account_id: int, data: EscalationRuleIn
) -> EscalationRule:
    for team_id, field_name in ((data.team_id, "team_id"), (data.target_team_id, "target_team_id")):
        if team_id is not None:
            team = await session.get(Team, team_id)
            if team is None or team.account_id != account_id:
                raise RoutingError(f"no team {team_id} in this account", field_name)
    if data.action == "move_team" and data.target_team_id is None:
        raise RoutingError("move_team needs a target_team_id", "target_team_id")
    rule = EscalationRule(account_id=account_id, **data.model_dump())
    session.add(rule)
    await session.flush()
    scope = Conversation.account_id == account_id
    if data.team_id is not None:
        scope = scope & (Conversation.team_id == data.team_id)
    await _reroute(session, scope)
    return rule


async def list_escalation_rules(session: AsyncSession, account_id: int) -> list[EscalationRule]:
    rows = await session.scalars(
        select(EscalationRule)
        .where(EscalationRule.account_id == account_id)
        .order_by(EscalationRule.id)
    )
    return list(rows.all())


async def _conversation(
    session: AsyncSession, account_id: int, conversation_id: int, lock: bool = False
) -> Conversation:
    conversation = await session.get(Conversation, conversation_id, with_for_update=lock)
    if conversation is None or conversation.account_id != account_id:
        raise _not_found("conversation", conversation_id)
    return conversation


async def assign_by_hand(
    session: AsyncSession, account_id: int, conversation_id: int, user_id: int | None
) -> Conversation:
    """Manual assignment (or unassignment, with None); capacity does not stop a person."""
    conversation = await _conversation(session, account_id, conversation_id, lock=True)
    if user_id is not None:
        user = await session.get(User, user_id)
        if user is None or user.account_id != account_id:
            raise RoutingError(f"no user {user_id} in this account", "user_id")
    conversation.assignee_id = user_id
    await events.announce(session, account_id, "assignment", [conversation_id])
    return conversation


async def transfer(
    session: AsyncSession, account_id: int, conversation_id: int, team_id: int
) -> Conversation:
    """Move a conversation to another team: unassigned there, routed again (its clocks follow
    the new team's hours and policy)."""
    conversation = await _conversation(session, account_id, conversation_id, lock=True)
    team = await session.get(Team, team_id)
    if team is None or team.account_id != account_id:
        raise RoutingError(f"no team {team_id} in this account", "team_id")
    conversation.team_id = team_id
    conversation.assignee_id = None
    conversation.routed_at = None
    await events.announce(session, account_id, "assignment", [conversation_id])
    return conversation


async def routing_of(
    session: AsyncSession, account_id: int, conversation_id: int, now: datetime
) -> RoutingOut:
    """Where the conversation stands: its team, due times, and its place in the team's queue
    with the reasons for it ("why is this first")."""
    conversation = await _conversation(session, account_id, conversation_id)
    team = await session.get(Team, conversation.team_id) if conversation.team_id else None
    position = None
    if team is not None:
        queue = await team_queue(session, team, now)
        ids = [c.id for c in queue]
        position = ids.index(conversation.id) + 1 if conversation.id in ids else None
    waiting = Queued.of(conversation).waiting()
    reasons = priority.rank(waiting, now, priority.PriorityWeights()).reasons
    return RoutingOut(
        conversation_id=conversation.id,
        team_id=conversation.team_id,
        assignee_id=conversation.assignee_id,
        priority=conversation.priority,
        first_response_due_at=conversation.first_response_due_at,
        next_response_due_at=conversation.next_response_due_at,
        resolution_due_at=conversation.resolution_due_at,
        position=position,
        reasons=list(reasons),
    )


async def queue_of(
    session: AsyncSession, account_id: int, team_id: int, now: datetime
) -> list[QueueEntry]:
    team = await session.get(Team, team_id)
    if team is None or team.account_id != account_id:
        raise _not_found("team", team_id)
    weights = priority.PriorityWeights()
    entries = []
    for conversation in await team_queue(session, team, now):
        waiting = conversation.waiting()
        entries.append(
            QueueEntry(
                conversation_id=conversation.id,
                assignee_id=conversation.assignee_id,
                priority=conversation.priority,
                waiting_since=conversation.waiting_since,
                due_at=waiting.due_at,
                reasons=list(priority.rank(waiting, now, weights).reasons),
            )
        )
    return entries


async def list_notifications(
    session: AsyncSession, account_id: int, limit: int = 100
) -> list[Notification]:
    rows = await session.scalars(
        select(Notification)
        .where(Notification.account_id == account_id)
        .order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
    )
    return list(rows.all())


async def sla_report(
    session: AsyncSession, account_id: int, since: datetime, until: datetime
) -> SlaReport:
    """Breaches per clock, and conversations resolved without an answer per reason given."""
    breaches = await session.execute(
        select(SlaEvent.kind, func.count())
        .where(
            SlaEvent.account_id == account_id,
            SlaEvent.event == "breached",
            SlaEvent.at >= since,
            SlaEvent.at < until,
        )
        .group_by(SlaEvent.kind)
    )
    unanswered = await session.execute(
        select(Conversation.unanswered_reason, func.count())
        .where(
            Conversation.account_id == account_id,
            Conversation.unanswered_reason.is_not(None),
            Conversation.resolved_at >= since,
            Conversation.resolved_at < until,
        )
        .group_by(Conversation.unanswered_reason)
    )
    return SlaReport(
        since=since,
        until=until,
        breaches={str(kind): int(count) for kind, count in breaches.all()},
        resolved_without_answer={str(reason): int(count) for reason, count in unanswered.all()},
    )
