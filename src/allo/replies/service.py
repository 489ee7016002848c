"""Writing to customers and to colleagues: every outgoing message and internal note is made here,
and every message to a customer goes through the outbox."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allo import events
from allo.accounts.models import MANAGERS, Account, User
from allo.conversations.models import Conversation, Message
from allo.replies import rules
from allo.replies.models import CannedResponse, MessageTemplate, OutboxEntry
from allo.routing.models import Notification
from allo.triage.pii import pii_kinds

# Longer than any channel allows (X 280, Messenger 2,000, WhatsApp 4,096, email more); the
# per-channel limits are the composer's (issue 6), this one keeps a pasted novel out.
MAX_TEXT = 20_000
# reply: in the conversation's own visibility; private_reply: the public-to-private handoff
# (a direct message or private reply to the post, in the same network); note: internal.
KINDS = ("reply", "private_reply", "note")
# Written but not (or not yet) sent: waiting for approval, or refused.
NOT_SENT = ("held", "failed")


class ReplyError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Answer:
    """A reply someone else sent, as the stopped writer is shown it."""

    id: int
    author_name: str | None
    text: str
    sent_at: datetime


class PublicPersonalData(Exception):
    """A public reply that would show personal data (a card, an IBAN, a phone number, an
    email, an address): sent only once the writer confirms it."""

    def __init__(self, kinds: list[str]) -> None:
        super().__init__(f"this public reply contains personal data: {', '.join(kinds)}")
        self.kinds = kinds


class AlreadyAnswered(Exception):
    """Someone else answered while this reply was being written: it is not sent, and the
    agent is shown what was sent (and sends again if theirs still needs saying)."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__(f"{len(answers)} answer(s) sent since this reply was started")
        self.answers = answers


@dataclass(frozen=True)
class Author:
    user_id: int | None  # None: an integration's account-wide API token
    name: str
    role: str = "agent"  # an agent's public replies may need approval (account setting)


@dataclass(frozen=True)
class Written:
    message: Message
    created: bool  # False: the same key was sent before; nothing new was made


def new_key() -> str:
    """A composer's idempotency key, made when the form is shown."""
    return secrets.token_urlsafe(18)


async def write(
    session: AsyncSession,
    account_id: int,
    conversation_id: int,
    author: Author,
    kind: str,
    body: str,
    key: str,
    now: datetime,
    seen_message_id: int | None = None,
    personal_data_confirmed: bool = False,
    in_reply_to_message_id: int | None = None,
) -> Written | None:
    """A reply to the customer (queued in the outbox, in the conversation's own visibility:
    public under a public post, private in a private thread) or an internal note. None when
    the conversation is not the account's.

    Sent twice with one key, it is written once. With `seen_message_id` (the last message the
    writer saw), a reply is refused with `AlreadyAnswered` when another person answered since.
    A public reply holding personal data is refused with `PublicPersonalData` unless
    `personal_data_confirmed`."""
    if kind not in KINDS:
        raise ReplyError(f"one of {', '.join(KINDS)}", "kind")
    text = body.strip()
    if not text:
        raise ReplyError("write something first", "body")
    if len(text) > MAX_TEXT:
        raise ReplyError(f"at most {MAX_TEXT:,} characters", "body")
    if not key or len(key) > 200:
        raise ReplyError("an idempotency key of 1 to 200 characters", "key")
    conversation = await session.get(Conversation, conversation_id, with_for_update=True)
    if conversation is None or conversation.account_id != account_id:
        return None
    before = await session.scalar(
        select(Message).where(Message.account_id == account_id, Message.idempotency_key == key)
    )
    if before is not None:
        if before.conversation_id != conversation_id:
            raise ReplyError("this key was used for another conversation", "key")
        return Written(before, created=False)
    visibility = _visibility(kind, conversation)
    if kind != "note":
        _within_channel_rules(conversation, visibility, text, now)
    if visibility == "public" and not personal_data_confirmed and (kinds := pii_kinds(text)):
        raise PublicPersonalData(kinds)
    if kind != "note" and seen_message_id is not None:
        answers = await answers_since(session, conversation_id, seen_message_id, author.user_id)
        if answers:
            raise AlreadyAnswered([Answer(m.id, m.author_name, m.text, m.sent_at) for m in answers])
    message = Message(
        account_id=account_id,
        conversation_id=conversation_id,
        channel_account_id=conversation.channel_account_id,
        direction="out",
        visibility=visibility,
        text=text,
        author_user_id=author.user_id,
        author_name=author.name,
        sent_at=now,
        received_at=now,
        # A note goes nowhere: it is stored as sent.
        delivery_status="sent" if kind == "note" else "queued",
        idempotency_key=key,
    )
    held = kind != "note" and await _needs_approval(session, account_id, visibility, author)
    if held:
        message.delivery_status = "held"
    session.add(message)
    await session.flush()
    if kind != "note":
        payload = _sending_rules(conversation, visibility, now)
        if visibility == "private" and conversation.visibility == "public":
            payload |= await _taken_private(session, conversation, now)
        if in_reply_to_message_id is not None:
            payload["reply_to"] = await _answered_message(
                session, conversation, in_reply_to_message_id
            )
        await _queue(session, conversation, message, key, now, held, payload)
        if not held:
            _answered(conversation, author, now)
    else:
        await _notify_mentioned(session, conversation, message, author, now)
    await events.announce(session, account_id, "message", [conversation_id])
    return Written(message, created=True)


MENTION = re.compile(r"(?<![\w.])@([\w][\w.\-]{0,63})")


async def _notify_mentioned(
    session: AsyncSession, conversation: Conversation, note: Message, author: Author, now: datetime
) -> list[int]:
    """A note's @mentions of colleagues (by the part of their email before the @, their name
    without spaces, or their first name when no one else in the account has it) become their
    notifications; the Mentions view lists those conversations."""
    handles = {handle.lower().rstrip(".") for handle in MENTION.findall(note.text)}
    if not handles:
        return []
    users = (
        await session.execute(
            select(User.id, User.email, User.name).where(User.account_id == conversation.account_id)
        )
    ).all()
    first_names: dict[str, list[int]] = {}
    for user_id, _, name in users:
        first_names.setdefault(name.split(" ")[0].lower(), []).append(user_id)

    def handles_of(user_id: int, email: str, name: str) -> set[str]:
        first = name.split(" ")[0].lower()
        unique_first = {first} if first_names.get(first) == [user_id] else set()
        return {email.split("@")[0], name.replace(" ", "").lower(), *unique_first}

    mentioned = [
        user_id
        for user_id, email, name in users
        if user_id != author.user_id and handles & handles_of(user_id, email, name)
    ]
    for user_id in mentioned:
        session.add(
            Notification(
                account_id=conversation.account_id,
                user_id=user_id,
                conversation_id=conversation.id,
                kind="mention",
                text=f"{author.name}: {note.text[:200]}",
                created_at=now,
            )
        )
    return mentioned


def _within_channel_rules(
    conversation: Conversation, visibility: str, text: str, now: datetime
) -> None:
    checked = rules.check(conversation.channel, visibility, text, conversation.last_inbound_at, now)
    if "too_long" in checked.problems:
        raise ReplyError(
            f"at most {checked.limit} characters on {conversation.channel} "
            f"(this one counts {checked.length})",
            "body",
        )
    if "window_closed" in checked.problems:
        raise ReplyError(
            "the customer wrote too long ago for a free message on "
            f"{conversation.channel} ({checked.window})",
            "window",
        )


def _sending_rules(conversation: Conversation, visibility: str, now: datetime) -> dict[str, Any]:
    """What the sender must say to the network: a message after Messenger's or Instagram's
    24 hours goes with the human-agent tag."""
    window, _ = rules.window_of(conversation.channel, visibility, conversation.last_inbound_at, now)
    return {"tag": "HUMAN_AGENT"} if window == "human_agent" else {}


async def _answered_message(
    session: AsyncSession, conversation: Conversation, message_id: int
) -> str:
    """The network's id of the customer's message a reply answers."""
    external_id = await session.scalar(
        select(Message.external_id).where(
            Message.id == message_id,
            Message.conversation_id == conversation.id,
            Message.direction == "in",
        )
    )
    if not external_id:
        raise ReplyError("a message of the customer's in this conversation", "in_reply_to")
    return str(external_id)


# Where a private answer to a public post is a "private reply" to the customer's comment
# (the network then opens the private thread); elsewhere it is a direct message.
PRIVATE_REPLY_NETWORKS = ("facebook", "instagram")


async def _taken_private(
    session: AsyncSession, conversation: Conversation, now: datetime
) -> dict[str, Any]:
    """A public thread answered in private: the customer's private answers will join it, and
    on Facebook and Instagram the message goes as a private reply to their latest comment."""
    conversation.private_since = conversation.private_since or now
    if conversation.channel not in PRIVATE_REPLY_NETWORKS:
        return {}
    comment = await session.scalar(
        select(Message.external_id)
        .where(
            Message.conversation_id == conversation.id,
            Message.direction == "in",
            Message.visibility == "public",
            Message.external_id.is_not(None),
        )
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(1)
    )
    return {"private_reply_to": comment} if comment else {}


def _visibility(kind: str, conversation: Conversation) -> str:
    if kind == "note":
        return "note"
    return "private" if kind == "private_reply" else conversation.visibility


async def queue_automatic(
    session: AsyncSession, conversation: Conversation, body: str, author_name: str, now: datetime
) -> Message:
    """A message Allo sends by itself (an out-of-hours acknowledgement): queued like a reply,
    without answering the customer."""
    key = f"auto-{new_key()}"
    message = Message(
        account_id=conversation.account_id,
        conversation_id=conversation.id,
        channel_account_id=conversation.channel_account_id,
        direction="out",
        visibility=conversation.visibility,
        text=body,
        author_name=author_name,
        sent_at=now,
        received_at=now,
        delivery_status="queued",
        idempotency_key=key,
    )
    session.add(message)
    await session.flush()
    await _queue(session, conversation, message, key, now)
    return message


async def answers_since(
    session: AsyncSession, conversation_id: int, seen_message_id: int, user_id: int | None
) -> list[Message]:
    """Replies to the customer by someone else after the message this writer last saw."""
    rows = await session.scalars(
        select(Message)
        .where(
            Message.conversation_id == conversation_id,
            Message.id > seen_message_id,
            Message.direction == "out",
            Message.visibility != "note",
            Message.delivery_status.not_in(NOT_SENT),
            Message.author_user_id.is_distinct_from(user_id),
        )
        .order_by(Message.id)
    )
    return list(rows.all())


async def _queue(
    session: AsyncSession,
    conversation: Conversation,
    message: Message,
    key: str,
    now: datetime,
    held: bool = False,
    payload: dict[str, Any] | None = None,
) -> None:
    session.add(
        OutboxEntry(
            account_id=conversation.account_id,
            message_id=message.id,
            conversation_id=conversation.id,
            channel_account_id=conversation.channel_account_id,
            idempotency_key=key,
            next_attempt_at=now,
            status="held" if held else "queued",
            payload=payload or {},
        )
    )
    await session.flush()


APPROVAL_SETTING = "approve_public_replies"


async def _needs_approval(
    session: AsyncSession, account_id: int, visibility: str, author: Author
) -> bool:
    """Where the account asks for it, an agent's public replies wait for a supervisor."""
    if visibility != "public" or author.user_id is None or author.role in MANAGERS:
        return False
    settings = await session.scalar(select(Account.settings).where(Account.id == account_id))
    return bool((settings or {}).get(APPROVAL_SETTING))


class ApprovalError(ValueError):
    pass


async def decide(
    session: AsyncSession,
    account_id: int,
    outbox_id: int,
    approver: Author,
    approve: bool,
    now: datetime,
) -> Message:
    """A supervisor approves a held public reply (queued to be sent; it answers the customer
    now) or rejects it (never sent; the customer still waits)."""
    if approver.role not in MANAGERS:
        raise ApprovalError("only admins and supervisors approve replies")
    entry = await session.get(OutboxEntry, outbox_id, with_for_update=True)
    if entry is None or entry.account_id != account_id:
        raise LookupError(f"no outbox entry {outbox_id} in this account")
    if entry.status != "held":
        raise ApprovalError(f"this reply is {entry.status}, not waiting for approval")
    message = await session.get(Message, entry.message_id)
    conversation = await session.get(Conversation, entry.conversation_id, with_for_update=True)
    assert message is not None and conversation is not None
    if approve:
        try:
            _within_channel_rules(conversation, message.visibility, message.text, now)
        except ReplyError as error:
            raise ApprovalError(f"too late to send it: {error}") from None
        entry.status, entry.next_attempt_at = "queued", now
        message.delivery_status = "queued"
        writer = Author(message.author_user_id, message.author_name or "")
        _answered(conversation, writer, now)
    else:
        entry.status, entry.last_error = "rejected", f"rejected by {approver.name}"
        message.delivery_status = "failed"
    await events.announce(session, account_id, "message", [conversation.id])
    return message


def _answered(conversation: Conversation, author: Author, now: datetime) -> None:
    """The customer has an answer: response clocks stop (routing reads the conversation again),
    and an unassigned conversation goes to whoever answered it."""
    if conversation.first_response_at is None:
        conversation.first_response_at = now
    conversation.last_response_at = now
    conversation.last_message_at = now
    conversation.waiting_since = None
    # Out of the queue at once; routing confirms when it reads the conversation again.
    conversation.response_due_at = None
    conversation.queue_deadline = None
    if conversation.assignee_id is None and author.user_id is not None:
        conversation.assignee_id = author.user_id
    conversation.routed_at = None


async def outbox(
    session: AsyncSession, account_id: int, limit: int = 50
) -> list[tuple[OutboxEntry, Message]]:
    """The account's latest messages to customers, newest first, held ones first."""
    rows = await session.execute(
        select(OutboxEntry, Message)
        .join(Message, OutboxEntry.message_id == Message.id)
        .where(OutboxEntry.account_id == account_id)
        .order_by((OutboxEntry.status == "held").desc(), OutboxEntry.id.desc())
        .limit(limit)
    )
    return [(entry, message) for entry, message in rows.all()]


# Canned responses

VARIABLE = re.compile(r"\{\{\s*([a-z_]+\.[a-z_]+)\s*\}\}")
VARIABLES = (
    "contact.name",
    "contact.first_name",
    "agent.name",
    "agent.first_name",
    "conversation.id",
)
MAX_CANNED = 5_000


def check_canned(shortcut: str, title: str, body: str, language: str | None) -> None:
    """Refuse what would not work in the composer, naming the field."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,49}", shortcut):
        raise ReplyError("lowercase letters, digits, - and _ (at most 50)", "shortcut")
    if not title.strip() or len(title) > 200:
        raise ReplyError("1 to 200 characters", "title")
    if not body.strip() or len(body) > MAX_CANNED:
        raise ReplyError(f"1 to {MAX_CANNED:,} characters", "body")
    if language is not None and not re.fullmatch(r"[a-z]{2}", language):
        raise ReplyError("a two-letter language code, or none for every language", "language")
    unknown = sorted({name for name in VARIABLE.findall(body) if name not in VARIABLES})
    if unknown:
        raise ReplyError(
            f"unknown variable {', '.join(unknown)}: use {', '.join(VARIABLES)}", "body"
        )


def fill_canned(body: str, values: dict[str, str]) -> str:
    """The text with its variables filled in (a missing value leaves nothing behind)."""
    return VARIABLE.sub(lambda found: values.get(found.group(1), ""), body)


def canned_values(
    contact_name: str | None, agent_name: str, conversation_id: int
) -> dict[str, str]:
    def first(name: str | None) -> str:
        return (name or "").split(" ")[0]

    return {
        "contact.name": contact_name or "",
        "contact.first_name": first(contact_name),
        "agent.name": agent_name,
        "agent.first_name": first(agent_name),
        "conversation.id": str(conversation_id),
    }


async def save_canned(
    session: AsyncSession,
    account_id: int,
    shortcut: str,
    title: str,
    body: str,
    language: str | None,
) -> CannedResponse:
    """A new canned response, or the one with this shortcut and language changed."""
    check_canned(shortcut, title, body, language)
    found = await session.scalar(
        select(CannedResponse).where(
            CannedResponse.account_id == account_id,
            CannedResponse.shortcut == shortcut,
            CannedResponse.language.is_not_distinct_from(language),
        )
    )
    canned = found or CannedResponse(account_id=account_id, shortcut=shortcut, language=language)
    canned.title = title.strip()
    canned.body = body.strip()
    session.add(canned)
    await session.flush()
    return canned


async def list_canned(
    session: AsyncSession, account_id: int, language: str | None = None
) -> list[CannedResponse]:
    """The account's canned responses; with a language, those in it and those for any
    language, the language's own first."""
    query = select(CannedResponse).where(CannedResponse.account_id == account_id)
    if language is not None:
        query = query.where(
            or_(CannedResponse.language == language, CannedResponse.language.is_(None))
        ).order_by(CannedResponse.language.is_(None))
    rows = await session.scalars(query.order_by(CannedResponse.shortcut))
    return list(rows.all())


async def delete_canned(session: AsyncSession, account_id: int, canned_id: int) -> bool:
    deleted = await session.execute(
        delete(CannedResponse).where(
            CannedResponse.account_id == account_id, CannedResponse.id == canned_id
        )
    )
    return bool(getattr(deleted, "rowcount", 0))


# Suggested replies

# Resolved conversations searched for a similar question, most recent first: enough to find
# this week's answers, few enough to stay within tens of milliseconds (1,000,000 messages).
SIMILAR_SEARCHED = 500
SIMILAR_AT_LEAST = 0.3
SUGGESTED = 3

_SIMILAR = text(
    """
    WITH recent AS MATERIALIZED (
        SELECT id FROM conversations
        WHERE account_id = :account AND status = 'resolved' AND id <> :conversation
          AND (CAST(:language AS text) IS NULL OR language = :language)
        ORDER BY last_message_at DESC
        LIMIT :searched
    ), best AS MATERIALIZED (
        SELECT m.id, m.conversation_id, similarity(m.text, :question) AS score
        FROM recent JOIN messages m ON m.conversation_id = recent.id
        WHERE m.direction = 'in'
        ORDER BY score DESC
        LIMIT :candidates
    )
    SELECT best.conversation_id, best.score, reply.text
    FROM best
    JOIN LATERAL (
        SELECT r.text FROM messages r
        WHERE r.conversation_id = best.conversation_id AND r.direction = 'out'
          AND r.visibility <> 'note' AND r.author_user_id IS NOT NULL AND r.id > best.id
          AND r.delivery_status NOT IN ('held', 'failed')
        ORDER BY r.id LIMIT 1
    ) reply ON true
    WHERE best.score >= :at_least
    ORDER BY best.score DESC
    """
)


@dataclass(frozen=True)
class Suggestion:
    text: str
    score: float
    from_conversation_id: int


async def suggestions(
    session: AsyncSession, conversation: Conversation, limit: int = SUGGESTED
) -> list[Suggestion]:
    """What agents answered to the most similar customer messages in recently resolved
    conversations of the account, in the conversation's language (trigram similarity)."""
    question = await session.scalar(
        select(Message.text)
        .where(Message.conversation_id == conversation.id, Message.direction == "in")
        .order_by(Message.id.desc())
        .limit(1)
    )
    if not question or not question.strip():
        return []
    rows = await session.execute(
        _SIMILAR,
        {
            "account": conversation.account_id,
            "conversation": conversation.id,
            "language": conversation.language,
            "searched": SIMILAR_SEARCHED,
            "question": question[:1000],
            "candidates": limit * 5,
            "at_least": SIMILAR_AT_LEAST,
        },
    )
    found: list[Suggestion] = []
    for conversation_id, score, reply in rows.all():
        if reply not in {s.text for s in found}:
            found.append(Suggestion(reply, round(float(score), 2), conversation_id))
    return found[:limit]


# WhatsApp templates

TEMPLATE_NAME = re.compile(r"[a-z0-9_]{1,512}")
TEMPLATE_LANGUAGE = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2})?")
TEMPLATE_PARAMETER = re.compile(r"\{\{(\d+)\}\}")
MAX_TEMPLATE = 1_024


async def save_template(
    session: AsyncSession, account_id: int, name: str, language: str, body: str
) -> MessageTemplate:
    """A WhatsApp template as approved by Meta (its name, language and text with {{1}}…),
    so agents can write once a customer's 24-hour window has closed."""
    if not TEMPLATE_NAME.fullmatch(name):
        raise ReplyError("lowercase letters, digits and _, as Meta names it", "name")
    if not TEMPLATE_LANGUAGE.fullmatch(language):
        raise ReplyError("a language code such as fr, en or en_US", "language")
    numbers = [int(found) for found in TEMPLATE_PARAMETER.findall(body)]
    if not body.strip() or len(body) > MAX_TEMPLATE:
        raise ReplyError(f"1 to {MAX_TEMPLATE:,} characters", "body")
    if sorted(set(numbers)) != list(range(1, len(set(numbers)) + 1)):
        raise ReplyError("parameters are numbered {{1}}, {{2}}… without gaps", "body")
    found = await session.scalar(
        select(MessageTemplate).where(
            MessageTemplate.account_id == account_id,
            MessageTemplate.channel == "whatsapp",
            MessageTemplate.name == name,
            MessageTemplate.language == language,
        )
    )
    template = found or MessageTemplate(
        account_id=account_id, channel="whatsapp", name=name, language=language
    )
    template.body = body.strip()
    session.add(template)
    await session.flush()
    return template


async def list_templates(session: AsyncSession, account_id: int) -> list[MessageTemplate]:
    rows = await session.scalars(
        select(MessageTemplate)
        .where(MessageTemplate.account_id == account_id)
        .order_by(MessageTemplate.name, MessageTemplate.language)
    )
    return list(rows.all())


def parameters_of(template: MessageTemplate) -> int:
    return len(set(TEMPLATE_PARAMETER.findall(template.body)))


async def write_template(
    session: AsyncSession,
    account_id: int,
    conversation_id: int,
    author: Author,
    template_id: int,
    parameters: list[str],
    key: str,
    now: datetime,
) -> Written | None:
    """A WhatsApp template message, the one kind WhatsApp lets through at any time: queued
    with the template's name, language and parameters for the sender (`outbox.payload`)."""
    if not key or len(key) > 200:
        raise ReplyError("an idempotency key of 1 to 200 characters", "key")
    conversation = await session.get(Conversation, conversation_id, with_for_update=True)
    if conversation is None or conversation.account_id != account_id:
        return None
    before = await session.scalar(
        select(Message).where(Message.account_id == account_id, Message.idempotency_key == key)
    )
    if before is not None:
        return Written(before, created=False)
    template = await session.get(MessageTemplate, template_id)
    if template is None or template.account_id != account_id:
        raise ReplyError("no such template in this account", "template")
    if conversation.channel != template.channel:
        raise ReplyError(f"templates are for {template.channel} conversations", "template")
    values = [value.strip() for value in parameters]
    if len(values) != parameters_of(template) or not all(values):
        raise ReplyError(f"{parameters_of(template)} parameter(s), none empty", "parameters")
    text = TEMPLATE_PARAMETER.sub(lambda found: values[int(found.group(1)) - 1], template.body)
    message = Message(
        account_id=account_id,
        conversation_id=conversation_id,
        channel_account_id=conversation.channel_account_id,
        direction="out",
        visibility="private",
        text=text,
        author_user_id=author.user_id,
        author_name=author.name,
        sent_at=now,
        received_at=now,
        delivery_status="queued",
        idempotency_key=key,
    )
    session.add(message)
    await session.flush()
    sent = {"name": template.name, "language": template.language, "parameters": values}
    await _queue(session, conversation, message, key, now, payload={"template": sent})
    _answered(conversation, author, now)
    await events.announce(session, account_id, "message", [conversation_id])
    return Written(message, created=True)
