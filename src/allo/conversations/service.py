"""Conversations and messages: threading, status, and the only code that writes them."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from allo import events
from allo.channels.inbound import InboundMessage
from allo.channels.models import ChannelAccount
from allo.conversations.models import Conversation, Message

THREADED_BY_HEADERS = frozenset({"email"})


class ThreadNotFound(LookupError):
    """A brand message names no customer and answers nothing Allo knows."""


@dataclass(frozen=True)
class Placement:
    conversation: Conversation
    reply_to_id: int | None
    created: bool


async def _message_answered(
    session: AsyncSession, channel_account_id: int, external_ids: list[str]
) -> Message | None:
    """The most recent known message among those this one answers or references."""
    if not external_ids:
        return None
    found = (
        await session.scalars(
            select(Message).where(
                Message.channel_account_id == channel_account_id,
                Message.external_id.in_(external_ids),
            )
        )
    ).all()
    by_id = {m.external_id: m for m in found}
    return next((by_id[e] for e in external_ids if e in by_id), None)


def _answered_ids(message: InboundMessage) -> list[str]:
    """In-Reply-To first, then References from the newest back."""
    ids = [message.reply_to_external_id] if message.reply_to_external_id else []
    return ids + [r for r in reversed(message.references) if r not in ids]


async def place(
    session: AsyncSession,
    channel_account: ChannelAccount,
    contact_id: int | None,
    message: InboundMessage,
    reopen_window: timedelta,
) -> Placement:
    """Find or start the conversation a message belongs to.

    - Public: the conversation of the message it answers; else the thread of the post it
      answers or of its thread key; a post that arrives after its replies joins their thread.
    - Email: by In-Reply-To and References.
    - Other private channels: one conversation per channel account and contact, reopened when
      the contact writes within `reopen_window` of its resolution, a new one after it.
    """
    answered = await _message_answered(session, channel_account.id, _answered_ids(message))
    reply_to_id = answered.id if answered else None
    if answered is not None:
        conversation = await session.get(Conversation, answered.conversation_id)
        assert conversation is not None
        return Placement(conversation, reply_to_id, created=False)

    if message.visibility == "public":
        keys = [
            k for k in (message.thread_key, message.reply_to_external_id, message.external_id) if k
        ]
        conversation = await session.scalar(
            select(Conversation)
            .where(
                Conversation.channel_account_id == channel_account.id,
                Conversation.thread_key.in_(keys),
            )
            .order_by(Conversation.id)
            .limit(1)
        )
        if conversation is not None:
            return Placement(conversation, reply_to_id, created=False)
        thread_key: str | None = keys[0]
    elif channel_account.kind not in THREADED_BY_HEADERS and contact_id is not None:
        conversation = await _latest_private(session, channel_account.id, contact_id)
        if conversation is not None and _continues(conversation, message, reopen_window):
            return Placement(conversation, reply_to_id, created=False)
        thread_key = None
    else:
        thread_key = message.thread_key

    if contact_id is None:
        raise ThreadNotFound("a brand message that names no customer and answers nothing known")
    conversation = Conversation(
        account_id=channel_account.account_id,
        channel_account_id=channel_account.id,
        channel=channel_account.kind,
        visibility=message.visibility,
        contact_id=contact_id,
        thread_key=thread_key,
        subject=message.subject,
        status="open",
        last_message_at=message.sent_at,
        labels=[],
    )
    session.add(conversation)
    await session.flush()
    return Placement(conversation, reply_to_id, created=True)


async def _latest_private(
    session: AsyncSession, channel_account_id: int, contact_id: int
) -> Conversation | None:
    result: Conversation | None = await session.scalar(
        select(Conversation)
        .where(
            Conversation.channel_account_id == channel_account_id,
            Conversation.contact_id == contact_id,
            Conversation.visibility == "private",
        )
        .order_by(Conversation.id.desc())
        .limit(1)
    )
    return result


def _continues(conversation: Conversation, message: InboundMessage, window: timedelta) -> bool:
    if conversation.status != "resolved" or conversation.resolved_at is None:
        return True
    return message.sent_at - conversation.resolved_at <= window


async def add_message(
    session: AsyncSession,
    placement: Placement,
    message: InboundMessage,
    contact_id: int | None,
    received_at: datetime,
    inbound_event_id: int | None,
) -> int | None:
    """Store a message once (per channel account and external id); None if it was already there."""
    conversation = placement.conversation
    inbound = message.direction == "in"
    message_id: int | None = await session.scalar(
        insert(Message)
        .values(
            account_id=conversation.account_id,
            conversation_id=conversation.id,
            channel_account_id=conversation.channel_account_id,
            direction=message.direction,
            visibility=message.visibility,
            external_id=message.external_id,
            reply_to_external_id=message.reply_to_external_id,
            reply_to_id=placement.reply_to_id,
            text=message.text,
            html=message.html,
            attachments=list(message.attachments),
            author_contact_id=contact_id if inbound else None,
            author_name=message.author_name,
            sent_at=message.sent_at,
            received_at=received_at,
            delivery_status="received" if inbound else "sent",
            inbound_event_id=inbound_event_id,
        )
        .on_conflict_do_nothing(
            index_elements=["channel_account_id", "external_id"],
            index_where=Message.external_id.is_not(None),
        )
        .returning(Message.id)
    )
    if message_id is None:
        return None
    _apply_to_conversation(conversation, message)
    events.record(
        session,
        events.MessageReceived(
            account_id=conversation.account_id,
            conversation_id=conversation.id,
            message_id=message_id,
            direction=message.direction,
            conversation_created=placement.created,
        ),
    )
    return message_id


def _apply_to_conversation(conversation: Conversation, message: InboundMessage) -> None:
    sent_at = message.sent_at
    if sent_at > conversation.last_message_at:
        conversation.last_message_at = sent_at
    if conversation.subject is None and message.subject:
        conversation.subject = message.subject
    if message.direction == "in":
        if conversation.waiting_since is None or sent_at < conversation.waiting_since:
            waiting_answered = (
                conversation.first_response_at and sent_at <= conversation.first_response_at
            )
            if not waiting_answered:
                conversation.waiting_since = sent_at
        if conversation.status == "resolved":
            conversation.status = "open"
            conversation.resolved_at = None
        return
    if conversation.first_response_at is None or sent_at < conversation.first_response_at:
        conversation.first_response_at = sent_at
    if conversation.waiting_since is not None and sent_at >= conversation.waiting_since:
        conversation.waiting_since = None


async def resolve(session: AsyncSession, conversation: Conversation, at: datetime) -> None:
    conversation.status = "resolved"
    conversation.resolved_at = at


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


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
        pattern = f"%{escape_like(filters.text)}%"
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
