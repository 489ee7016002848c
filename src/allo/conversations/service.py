"""Conversations and messages: threading, status, and the only code that writes them."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, true, update
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.ext.asyncio import AsyncSession

from allo import events
from allo.accounts.models import User
from allo.channels.inbound import InboundMessage
from allo.channels.models import ChannelAccount
from allo.contacts import service as contacts_service
from allo.contacts.models import Contact, Identity
from allo.conversations.models import STATUSES, Conversation, Message
from allo.db import bulk
from allo.db.keys import among, pairs_match
from allo.db.search import contains_pattern
from allo.replies.models import OutboxEntry
from allo.routing.models import Notification, TeamMember
from allo.routing.service import queue_order

THREADED_BY_HEADERS = frozenset({"email"})
STATE_COLUMNS = (
    "thread_key",
    "subject",
    "status",
    "waiting_since",
    "first_response_at",
    "last_inbound_at",
    "last_response_at",
    "last_message_at",
    "resolved_at",
    "recipient_id",
)
# Networks where a customer's public id is also where a private message reaches them (on
# Facebook a commenter's id is not their Messenger id: a private reply finds that one).
PUBLIC_ID_IS_PRIVATE = frozenset({"x", "instagram"})


class ThreadNotFound(LookupError):
    """A brand message names no customer and answers nothing Allo knows."""


@dataclass
class Thread:
    """A conversation's threading state while a batch is placed in memory."""

    id: int
    account_id: int
    channel_account_id: int
    channel: str
    visibility: str
    contact_id: int
    thread_key: str | None
    subject: str | None
    status: str
    waiting_since: datetime | None
    first_response_at: datetime | None
    last_inbound_at: datetime | None
    last_response_at: datetime | None
    last_message_at: datetime
    resolved_at: datetime | None
    recipient_id: str | None = None
    private_since: datetime | None = None
    new: bool = False
    changed: bool = False

    @classmethod
    def of(cls, row: Conversation) -> Thread:
        return cls(
            id=row.id,
            account_id=row.account_id,
            channel_account_id=row.channel_account_id,
            channel=row.channel,
            visibility=row.visibility,
            contact_id=row.contact_id,
            private_since=row.private_since,
            **{name: getattr(row, name) for name in STATE_COLUMNS},
        )

    @property
    def takes_private_messages(self) -> bool:
        """Private in itself, or a public thread taken private by a private reply."""
        return self.visibility == "private" or self.private_since is not None

    def receive(self, message: InboundMessage) -> None:
        """What a new message changes: activity, waiting clock, first and last response."""
        sent_at = message.sent_at
        self.changed = True
        self.last_message_at = max(self.last_message_at, sent_at)
        if self.subject is None and message.subject:
            self.subject = message.subject
        if message.direction == "in":
            self._customer_wrote(sent_at)
        else:
            self._brand_answered(sent_at)
        if message.contact is not None and (
            message.visibility == "private" or self.channel in PUBLIC_ID_IS_PRIVATE
        ):
            self.recipient_id = message.contact.platform_id

    def _customer_wrote(self, sent_at: datetime) -> None:
        self.last_inbound_at = max(self.last_inbound_at or sent_at, sent_at)
        answered_after = self.last_response_at is not None and sent_at <= self.last_response_at
        if not answered_after:
            self.waiting_since = min(self.waiting_since or sent_at, sent_at)
        if self.status != "open":
            # Resolved, pending on the customer or snoozed: the customer writing reopens it.
            self.status = "open"
            self.resolved_at = None

    def _brand_answered(self, sent_at: datetime) -> None:
        self.first_response_at = min(self.first_response_at or sent_at, sent_at)
        self.last_response_at = max(self.last_response_at or sent_at, sent_at)
        if self.waiting_since is not None and sent_at >= self.waiting_since:
            # A customer message that arrived before this (older) answer is still waiting;
            # its exact time is not kept, so the wait counts from the latest one.
            later = (
                self.last_inbound_at
                if self.last_inbound_at and self.last_inbound_at > sent_at
                else None
            )
            self.waiting_since = later

    def continues_with(self, message: InboundMessage, reopen_window: timedelta) -> bool:
        if self.status != "resolved" or self.resolved_at is None:
            return True
        return message.sent_at - self.resolved_at <= reopen_window

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "channel_account_id": self.channel_account_id,
            "channel": self.channel,
            "visibility": self.visibility,
            "contact_id": self.contact_id,
            "labels": [],
            "private_since": self.private_since,
            **{name: getattr(self, name) for name in STATE_COLUMNS},
        }


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int


@dataclass(frozen=True)
class Placement:
    thread: Thread
    reply_to_id: int | None


@dataclass
class Threads:
    """The conversations and messages one batch of inbound messages touches.

    `load` reads everything the batch can refer to in a few queries; `place` and `add` decide
    in memory, in arrival order (so a reply later in the batch finds its post); `flush`
    writes new conversations, messages and changed conversations in a few statements.
    """

    session: AsyncSession
    reopen_window: timedelta
    messages: dict[tuple[int, str], StoredMessage] = field(default_factory=dict)
    by_key: dict[tuple[int, str], Thread] = field(default_factory=dict)
    latest_private: dict[tuple[int, int], Thread] = field(default_factory=dict)
    threads: dict[int, Thread] = field(default_factory=dict)
    new_messages: list[dict[str, Any]] = field(default_factory=list)
    _conversation_ids: list[int] = field(default_factory=list)
    _message_ids: list[int] = field(default_factory=list)
    _with_messages: set[int] = field(default_factory=set)
    _stored_keys: list[tuple[int, str]] = field(default_factory=list)

    async def load(
        self, batch: Sequence[tuple[ChannelAccount, int | None, InboundMessage]]
    ) -> None:
        message_keys: set[tuple[int, str]] = set()
        thread_keys: set[tuple[int, str]] = set()
        private: set[tuple[int, int]] = set()
        for channel_account, contact_id, message in batch:
            ca = channel_account.id
            message_keys.update((ca, e) for e in (message.external_id, *_answered_ids(message)))
            if message.visibility == "public":
                thread_keys.update((ca, k) for k in _thread_keys(message))
            elif channel_account.kind not in THREADED_BY_HEADERS and contact_id is not None:
                private.add((ca, contact_id))
        await self._load_messages(message_keys)
        await self._load_threads(thread_keys)
        await self._load_private(private)
        self._conversation_ids = await bulk.allocate_ids(self.session, Conversation, len(batch))
        self._message_ids = await bulk.allocate_ids(self.session, Message, len(batch))

    async def _load_messages(self, keys: set[tuple[int, str]]) -> None:
        if not keys:
            return
        rows = await self.session.execute(
            select(
                Message.channel_account_id, Message.external_id, Message.id, Message.conversation_id
            ).where(pairs_match(Message.channel_account_id, Message.external_id, keys))
        )
        for ca, external_id, message_id, conversation_id in rows.all():
            if external_id is not None:
                self.messages[(ca, external_id)] = StoredMessage(message_id, conversation_id)
        await self._load_conversations({m.conversation_id for m in self.messages.values()})

    async def _load_conversations(self, ids: set[int]) -> None:
        missing = ids - set(self.threads)
        if missing:
            rows = await self.session.scalars(
                select(Conversation).where(among(Conversation.id, missing))
            )
            for row in rows:
                self._remember(Thread.of(row))

    async def _load_threads(self, keys: set[tuple[int, str]]) -> None:
        if not keys:
            return
        rows = await self.session.scalars(
            select(Conversation)
            .where(pairs_match(Conversation.channel_account_id, Conversation.thread_key, keys))
            .order_by(Conversation.id)
        )
        for row in rows:
            self._remember(self.threads.get(row.id) or Thread.of(row))

    async def _load_private(self, pairs: set[tuple[int, int]]) -> None:
        if not pairs:
            return
        rows = await self.session.scalars(
            select(Conversation)
            .where(
                or_(Conversation.visibility == "private", Conversation.private_since.is_not(None)),
                pairs_match(Conversation.channel_account_id, Conversation.contact_id, pairs),
            )
            .order_by(
                Conversation.channel_account_id, Conversation.contact_id, Conversation.id.desc()
            )
            .ext(distinct_on(Conversation.channel_account_id, Conversation.contact_id))
        )
        for row in rows:
            self._remember(self.threads.get(row.id) or Thread.of(row))

    def _remember(self, thread: Thread) -> None:
        self.threads[thread.id] = thread
        if thread.thread_key is not None:
            self.by_key.setdefault((thread.channel_account_id, thread.thread_key), thread)
        if thread.takes_private_messages:
            key = (thread.channel_account_id, thread.contact_id)
            current = self.latest_private.get(key)
            if current is None or current.id < thread.id:
                self.latest_private[key] = thread

    def place(
        self, channel_account: ChannelAccount, contact_id: int | None, message: InboundMessage
    ) -> Placement:
        """Find or start the conversation a message belongs to.

        - Any message that answers or references a known message joins its conversation.
        - Public: else the thread of the post it answers or of its thread key; a post that
          arrives after its replies joins their thread (which is then keyed by what it
          answers, so an even older post joins too).
        - Email: by In-Reply-To and References only.
        - Other private channels: one conversation per channel account and contact, reopened
          when the contact writes within the reopen window of its resolution, new after it.
          A public thread the brand took private (a private reply to a comment) counts as
          that conversation: public → private → public stays one conversation.
        """
        ca = channel_account.id
        answered = next(
            (self.messages[(ca, e)] for e in _answered_ids(message) if (ca, e) in self.messages),
            None,
        )
        if answered is not None:
            return Placement(self.threads[answered.conversation_id], answered.id)
        if message.visibility == "public":
            for key in _thread_keys(message):
                thread = self.by_key.get((ca, key))
                if thread is not None:
                    self._rekey(thread, message)
                    return Placement(thread, None)
        elif channel_account.kind not in THREADED_BY_HEADERS and contact_id is not None:
            thread = self.latest_private.get((ca, contact_id))
            if thread is not None and thread.continues_with(message, self.reopen_window):
                return Placement(thread, None)
        if contact_id is None:
            raise ThreadNotFound("a brand message that names no customer and answers nothing known")
        return Placement(self._start(channel_account, contact_id, message), None)

    def _rekey(self, thread: Thread, message: InboundMessage) -> None:
        """A thread keyed by this post's id is now keyed by the post it answers."""
        parent = message.reply_to_external_id
        if parent and thread.thread_key == message.external_id and message.thread_key is None:
            thread.thread_key = parent
            thread.changed = True
            self.by_key.setdefault((thread.channel_account_id, parent), thread)

    def _start(
        self, channel_account: ChannelAccount, contact_id: int, message: InboundMessage
    ) -> Thread:
        keys = _thread_keys(message) if message.visibility == "public" else ()
        thread = Thread(
            id=self._conversation_ids.pop(0),
            account_id=channel_account.account_id,
            channel_account_id=channel_account.id,
            channel=channel_account.kind,
            visibility=message.visibility,
            contact_id=contact_id,
            thread_key=keys[0] if keys else message.thread_key,
            subject=message.subject,
            status="open",
            waiting_since=None,
            first_response_at=None,
            last_inbound_at=None,
            last_response_at=None,
            last_message_at=message.sent_at,
            resolved_at=None,
            new=True,
        )
        self._remember(thread)
        return thread

    def add(
        self,
        placement: Placement,
        message: InboundMessage,
        contact_id: int | None,
        received_at: datetime,
        inbound_event_id: int | None,
    ) -> int | None:
        """Queue a message once (per channel account and external id); None if already there."""
        thread = placement.thread
        key = (thread.channel_account_id, message.external_id)
        if key in self.messages:
            return None
        message_id = self._message_ids.pop(0)
        self.messages[key] = StoredMessage(message_id, thread.id)
        inbound = message.direction == "in"
        self.new_messages.append(
            {
                "id": message_id,
                "account_id": thread.account_id,
                "conversation_id": thread.id,
                "channel_account_id": thread.channel_account_id,
                "direction": message.direction,
                "visibility": message.visibility,
                "external_id": message.external_id,
                "reply_to_external_id": message.reply_to_external_id,
                "reply_to_id": placement.reply_to_id,
                "text": message.text,
                "html": message.html,
                "attachments": list(message.attachments),
                "author_contact_id": contact_id if inbound else None,
                "author_name": message.author_name,
                "sent_at": message.sent_at,
                "received_at": received_at,
                "delivery_status": "received" if inbound else "sent",
                "inbound_event_id": inbound_event_id,
            }
        )
        created = thread.new and thread.id not in self._with_messages
        self._with_messages.add(thread.id)
        thread.receive(message)
        events.record(
            self.session,
            events.MessageReceived(
                account_id=thread.account_id,
                conversation_id=thread.id,
                message_id=message_id,
                direction=message.direction,
                conversation_created=created,
            ),
        )
        return message_id

    def stored_keys(self) -> list[tuple[int, str]]:
        """(channel account, external id) of the messages this batch stored."""
        return self._stored_keys

    async def flush(self) -> None:
        self._stored_keys += [
            (m["channel_account_id"], m["external_id"])
            for m in self.new_messages
            if m["external_id"]
        ]
        await bulk.insert_rows(
            self.session, Conversation, [t.row() for t in self.threads.values() if t.new]
        )
        await bulk.insert_rows(self.session, Message, self.new_messages)
        # A conversation with a new message waits for routing to read it (routed_at null).
        changed = [
            {"id": t.id, "routed_at": None, **{name: getattr(t, name) for name in STATE_COLUMNS}}
            for t in self.threads.values()
            if t.changed and not t.new
        ]
        await bulk.update_rows(self.session, Conversation, changed)
        for thread in self.threads.values():
            thread.new = thread.changed = False
        self.new_messages = []


def _answered_ids(message: InboundMessage) -> list[str]:
    """In-Reply-To first, then References from the newest back."""
    ids = [message.reply_to_external_id] if message.reply_to_external_id else []
    return ids + [r for r in reversed(message.references) if r not in ids]


def _thread_keys(message: InboundMessage) -> tuple[str, ...]:
    return tuple(
        k for k in (message.thread_key, message.reply_to_external_id, message.external_id) if k
    )


# Why a conversation where the customer spoke last may be resolved without an answer.
UNANSWERED_REASONS = ("spam", "no_answer_needed", "handled_elsewhere")
PAUSED_STATUSES = ("pending", "snoozed")
PRIORITY_VALUES = (-1, 0, 1, 2)


class StatusError(ValueError):
    """A status change refused; `field` names what to change in the request."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


async def change_status(
    session: AsyncSession,
    account_id: int,
    conversation_id: int,
    status: str,
    at: datetime,
    reason: str | None = None,
) -> Conversation | None:
    """Open, pend, snooze or resolve a conversation (None when it is not the account's).

    The unanswered guard: a conversation where the customer spoke last is never closed
    silently. Resolving it needs one of UNANSWERED_REASONS, which is kept for reports. Pending
    and snoozed stop the resolution clock (routing counts the pause when it reopens)."""
    if status not in STATUSES:
        raise StatusError(f"one of {', '.join(STATUSES)}", "status")
    if reason is not None and reason not in UNANSWERED_REASONS:
        raise StatusError(f"one of {', '.join(UNANSWERED_REASONS)}", "reason")
    conversation = await session.get(Conversation, conversation_id, with_for_update=True)
    if conversation is None or conversation.account_id != account_id:
        return None
    if status == "resolved":
        unanswered = conversation.waiting_since is not None
        if unanswered and reason is None:
            raise StatusError(
                "the customer spoke last: resolving without an answer needs a reason "
                f"({', '.join(UNANSWERED_REASONS)})",
                "reason",
            )
        conversation.resolved_at = at
        conversation.unanswered_reason = reason if unanswered else None
    else:
        conversation.resolved_at = None
        conversation.unanswered_reason = None
    if status in PAUSED_STATUSES and conversation.sla_paused_at is None:
        conversation.sla_paused_at = at
    conversation.status = status
    conversation.routed_at = None  # routing reads it again: clocks stop, pause or restart
    await events.announce(session, account_id, "status", [conversation_id])
    return conversation


LABEL = re.compile(r"[\w][\w \-]{0,49}")
MAX_LABELS = 20


def clean_labels(labels: Sequence[str]) -> list[str]:
    """Labels as stored: trimmed, lowercased, each once, in the order given."""
    cleaned: list[str] = []
    for label in labels:
        label = " ".join(label.split()).lower()
        if not label:
            continue
        if not LABEL.fullmatch(label):
            raise StatusError("letters, digits, spaces, - and _; at most 50 each", "labels")
        if label not in cleaned:
            cleaned.append(label)
    if len(cleaned) > MAX_LABELS:
        raise StatusError(f"at most {MAX_LABELS} labels", "labels")
    return cleaned


async def change_details(
    session: AsyncSession,
    account_id: int,
    conversation_id: int,
    labels: Sequence[str] | None = None,
    priority: int | None = None,
) -> Conversation | None:
    """Labels and priority (low -1 to urgent 2); None when it is not the account's. A new
    priority moves the conversation in its queue (routing reads it again)."""
    if priority is not None and priority not in PRIORITY_VALUES:
        raise StatusError("-1 (low), 0 (normal), 1 (high) or 2 (urgent)", "priority")
    cleaned = clean_labels(labels) if labels is not None else None
    conversation = await session.get(Conversation, conversation_id, with_for_update=True)
    if conversation is None or conversation.account_id != account_id:
        return None
    if cleaned is not None:
        conversation.labels = cleaned
    if priority is not None and priority != conversation.priority:
        conversation.priority = priority
        conversation.routed_at = None
    await events.announce(session, account_id, "status", [conversation_id])
    return conversation


# Reading


@dataclass(frozen=True)
class ConversationFilters:
    status: str | None = None
    channel: str | None = None
    assignee_id: int | None = None
    unassigned: bool = False
    label: str | None = None
    contact_id: int | None = None
    text: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class BadCursor(ValueError):
    pass


def encode_cursor(at: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, row_id = decoded.split("|")
        return datetime.fromisoformat(at), int(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as error:
        raise BadCursor("cursor: not a cursor this API returned") from error


def _filtered(account_id: int, filters: ConversationFilters) -> Select[Conversation]:
    query = select(Conversation).where(Conversation.account_id == account_id)
    if filters.status:
        query = query.where(Conversation.status == filters.status)
    if filters.channel:
        query = query.where(Conversation.channel == filters.channel)
    if filters.unassigned:
        query = query.where(Conversation.assignee_id.is_(None))
    elif filters.assignee_id is not None:
        query = query.where(Conversation.assignee_id == filters.assignee_id)
    if filters.label:
        query = query.where(Conversation.labels.contains([filters.label]))
    if filters.contact_id is not None:
        query = query.where(Conversation.contact_id == filters.contact_id)
    if filters.since:
        query = query.where(Conversation.last_message_at >= filters.since)
    if filters.until:
        query = query.where(Conversation.last_message_at < filters.until)
    if filters.text:
        pattern = contains_pattern(filters.text)
        query = query.where(
            or_(
                Conversation.subject.ilike(pattern),
                exists().where(
                    Message.conversation_id == Conversation.id,
                    Message.account_id == account_id,
                    Message.text.ilike(pattern),
                ),
            )
        )
    return query


async def list_conversations(
    session: AsyncSession,
    account_id: int,
    filters: ConversationFilters,
    limit: int,
    cursor: str | None,
) -> tuple[list[Conversation], str | None]:
    """Most recent activity first; the cursor continues after the last row returned."""
    query = _filtered(account_id, filters)
    if cursor:
        at, row_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Conversation.last_message_at < at,
                and_(Conversation.last_message_at == at, Conversation.id < row_id),
            )
        )
    rows = list(
        (
            await session.scalars(
                query.order_by(Conversation.last_message_at.desc(), Conversation.id.desc()).limit(
                    limit + 1
                )
            )
        ).all()
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].last_message_at, rows[-1].id)
    return rows, next_cursor


async def get_conversation(
    session: AsyncSession, account_id: int, conversation_id: int
) -> Conversation | None:
    conversation: Conversation | None = await session.scalar(
        select(Conversation).where(
            Conversation.account_id == account_id, Conversation.id == conversation_id
        )
    )
    return conversation


async def list_messages(
    session: AsyncSession, account_id: int, conversation_id: int, limit: int, cursor: str | None
) -> tuple[list[Message], str | None]:
    """Oldest first, as a thread is read."""
    query = select(Message).where(
        Message.account_id == account_id, Message.conversation_id == conversation_id
    )
    if cursor:
        at, row_id = decode_cursor(cursor)
        query = query.where(
            or_(Message.sent_at > at, and_(Message.sent_at == at, Message.id > row_id))
        )
    rows = list(
        (await session.scalars(query.order_by(Message.sent_at, Message.id).limit(limit + 1))).all()
    )
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].sent_at, rows[-1].id)
    return rows, next_cursor


# The workspace's inbox

VIEWS = ("mine", "unassigned", "teams", "mentions", "all", "sla", "spam")
# "SLA at risk": a response due within this, or already overdue.
AT_RISK = timedelta(minutes=15)
SENTIMENT_BANDS = {"negative": (-1.0, -0.35), "neutral": (-0.35, 0.35), "positive": (0.35, 1.01)}


@dataclass(frozen=True)
class Viewer:
    """Who looks at the inbox: agents see their teams' conversations, those without a team
    and their own; supervisors and admins see the whole account."""

    user_id: int
    account_id: int
    role: str


@dataclass(frozen=True)
class InboxFilters:
    status: str | None = "open"
    channel: str | None = None
    label: str | None = None
    language: str | None = None
    sentiment: str | None = None
    intent: str | None = None
    priority: int | None = None
    text: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class InboxRow:
    conversation: Conversation
    contact_name: str | None
    assignee_name: str | None
    preview: str | None


async def inbox(
    session: AsyncSession,
    viewer: Viewer,
    view: str,
    filters: InboxFilters,
    now: datetime,
    limit: int = 50,
) -> list[InboxRow]:
    """A view of the account's conversations in the routing queue's order (the next one to
    answer first), with what a row shows: the contact, the assignee, the latest message."""
    query = _filtered(
        viewer.account_id,
        ConversationFilters(
            status=filters.status,
            channel=filters.channel,
            label=filters.label,
            text=filters.text,
            since=filters.since,
        ),
    )
    query = query.where(_visible_to(viewer), _view_condition(view, viewer, now))
    query = _by_triage(query, filters)
    latest = (
        select(Message.text)
        .where(
            Message.conversation_id == Conversation.id,
            Message.visibility != "note",
            Message.delivery_status != "failed",
        )
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    rows = await session.execute(
        query.add_columns(Contact.name, User.name, latest)
        .join(Contact, Contact.id == Conversation.contact_id)
        .outerjoin(User, User.id == Conversation.assignee_id)
        .order_by(*queue_order(now))
        .limit(limit)
    )
    return [
        InboxRow(conversation, contact, assignee, preview)
        for conversation, contact, assignee, preview in rows.all()
    ]


def _view_condition(view: str, viewer: Viewer, now: datetime) -> ColumnElement[bool]:
    """What puts a conversation in a view (`all`: every one)."""
    if view == "mine":
        return Conversation.assignee_id == viewer.user_id
    if view == "unassigned":
        return Conversation.assignee_id.is_(None)
    if view == "teams":
        return Conversation.team_id.in_(_teams_of(viewer))
    if view == "mentions":
        return Conversation.id.in_(
            select(Notification.conversation_id).where(
                Notification.user_id == viewer.user_id, Notification.kind == "mention"
            )
        )
    if view == "sla":
        return and_(
            Conversation.response_due_at.is_not(None), Conversation.response_due_at <= now + AT_RISK
        )
    if view == "spam":
        spam: ColumnElement[bool] = Conversation.waiting_triage["spam"].as_boolean().is_(True)
        return spam
    return true()


def _teams_of(viewer: Viewer) -> Select[int]:
    return select(TeamMember.team_id).where(TeamMember.user_id == viewer.user_id)


def _visible_to(viewer: Viewer) -> ColumnElement[bool]:
    """Agents see their teams' conversations, those without a team and their own."""
    if viewer.role != "agent":
        return true()
    return or_(
        Conversation.team_id.in_(_teams_of(viewer)),
        Conversation.team_id.is_(None),
        Conversation.assignee_id == viewer.user_id,
    )


async def visible(session: AsyncSession, viewer: Viewer, conversation_id: int) -> bool:
    """Whether this person may open the conversation (the account's, and for an agent one of
    their teams', one without a team, or their own)."""
    found = await session.scalar(
        select(Conversation.id).where(
            Conversation.id == conversation_id,
            Conversation.account_id == viewer.account_id,
            _visible_to(viewer),
        )
    )
    return found is not None


async def view_counts(session: AsyncSession, viewer: Viewer, now: datetime) -> dict[str, int]:
    """Open conversations per view, in one statement (the inbox asks at most every few
    seconds, never per event)."""
    counted = [
        func.count().filter(_view_condition(view, viewer, now)).label(view) for view in VIEWS
    ]
    row = (
        await session.execute(
            select(*counted).where(
                Conversation.account_id == viewer.account_id,
                Conversation.status == "open",
                _visible_to(viewer),
            )
        )
    ).one()
    return dict(row._mapping)


def _by_triage(query: Select[Conversation], filters: InboxFilters) -> Select[Conversation]:
    read = Conversation.waiting_triage
    if filters.language:
        query = query.where(Conversation.language == filters.language)
    if filters.priority is not None:
        query = query.where(Conversation.priority == filters.priority)
    if filters.intent:
        query = query.where(read["intents"].contains([filters.intent]))
    if filters.sentiment in SENTIMENT_BANDS:
        low, high = SENTIMENT_BANDS[filters.sentiment]
        score = read["sentiment"].as_float()
        query = query.where(score >= low, score < high)
    return query


THREAD_SHOWN = 200
PAST_SHOWN = 20


async def mark_mentions_read(
    session: AsyncSession, user_id: int, conversation_id: int, now: datetime
) -> None:
    """Opening a conversation reads the mentions of this user in it."""
    await session.execute(
        update(Notification)
        .where(
            Notification.user_id == user_id,
            Notification.conversation_id == conversation_id,
            Notification.kind == "mention",
            Notification.read_at.is_(None),
        )
        .values(read_at=now)
    )


async def workspace_view(
    session: AsyncSession, account_id: int, conversation_id: int
) -> dict[str, Any] | None:
    """What the conversation page shows: the conversation, its latest messages (oldest first),
    the customer with every identity, their other conversations on every channel, and who
    holds it. None when the conversation is not the account's."""
    conversation = await get_conversation(session, account_id, conversation_id)
    if conversation is None:
        return None
    latest = (
        await session.scalars(
            select(Message)
            .where(Message.account_id == account_id, Message.conversation_id == conversation_id)
            .order_by(Message.sent_at.desc(), Message.id.desc())
            .limit(THREAD_SHOWN)
        )
    ).all()
    contact = await session.get(Contact, conversation.contact_id)
    identities = (
        await session.scalars(
            select(Identity).where(Identity.contact_id == conversation.contact_id)
        )
    ).all()
    past = (
        await session.scalars(
            select(Conversation)
            .where(
                Conversation.account_id == account_id,
                Conversation.contact_id == conversation.contact_id,
                Conversation.id != conversation_id,
            )
            .order_by(Conversation.last_message_at.desc())
            .limit(PAST_SHOWN)
        )
    ).all()
    assignee = (
        await session.get(User, conversation.assignee_id) if conversation.assignee_id else None
    )
    messages = list(reversed(latest))
    duplicates = (
        await contacts_service.possible_duplicates(session, account_id, contact) if contact else []
    )
    notes = await contacts_service.notes_of(session, contact.id) if contact else []
    failed = [m.id for m in messages if m.delivery_status == "failed"]
    send_errors = dict(
        (
            await session.execute(
                select(OutboxEntry.message_id, OutboxEntry.last_error).where(
                    OutboxEntry.message_id.in_(failed)
                )
            )
        ).all()
        if failed
        else []
    )
    return {
        "contact_notes": notes,
        "send_errors": send_errors,
        "duplicates": duplicates,
        "conversation": conversation,
        "messages": messages,
        "last_message_id": max((m.id for m in messages), default=0),
        "contact": contact,
        "identities": list(identities),
        "past": list(past),
        "assignee": assignee,
    }
