"""What networks report about messages that exist: sent, delivered, read, failed, deleted,
reacted to; and the brand's own messages coming back (echoes) that are replies Allo sent.

A status may come before Allo knows its message (WhatsApp's "sent" can beat the answer to the
send itself): it waits in `delivery_updates` and is applied when the message appears.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from allo import events
from allo.channels.inbound import InboundMessage, StatusUpdate
from allo.channels.models import ChannelAccount, DeliveryUpdate
from allo.conversations.models import Conversation, Message
from allo.db.keys import pairs_match
from allo.replies.models import OutboxEntry
from allo.routing.models import Notification

# A status only moves forward: a late "delivered" does not undo "read".
RANK = {"held": 0, "queued": 0, "sent": 1, "delivered": 2, "read": 3}
PROGRESS = ("sent", "delivered", "read")


@dataclass(frozen=True)
class Reported:
    channel_account: ChannelAccount
    update: StatusUpdate


async def claim_echoes(
    session: AsyncSession, echoes: Sequence[tuple[ChannelAccount, InboundMessage]]
) -> set[int]:
    """The echoes (the brand's own messages the network sends back) that are replies sent
    through the outbox: each gives its reply the network's id, and is not stored again.
    Returns the `id()` of the claimed echoes.

    An echo is matched by the key Allo sent with it (Messenger's metadata) or, where the
    network echoes nothing back, by its text among the replies being sent on that channel
    account whose network id is not known yet (a send interrupted before its answer was
    written)."""
    claimed: set[int] = set()
    for channel_account, echo in echoes:
        reply = await _reply_echoed(session, channel_account, echo)
        if reply is None:
            continue
        if reply.external_id is None:
            reply.external_id = echo.external_id
            await mark_sent(session, reply)
        if reply.external_id == echo.external_id:
            claimed.add(id(echo))
    if claimed:
        await session.flush()
    return claimed


async def _reply_echoed(
    session: AsyncSession, channel_account: ChannelAccount, echo: InboundMessage
) -> Message | None:
    if echo.outbox_key:
        found: Message | None = await session.scalar(
            select(Message).where(
                Message.account_id == channel_account.account_id,
                Message.idempotency_key == echo.outbox_key,
            )
        )
        return found
    return await session.scalar(
        select(Message)
        .join(OutboxEntry, OutboxEntry.message_id == Message.id)
        .where(
            OutboxEntry.channel_account_id == channel_account.id,
            OutboxEntry.status == "sending",
            Message.external_id.is_(None),
            Message.text == echo.text.strip(),
        )
        .order_by(OutboxEntry.id)
        .limit(1)
    )


async def mark_sent(session: AsyncSession, message: Message) -> None:
    """The network has the message: its outbox row is done, its status at least sent."""
    if RANK.get(message.delivery_status, 0) < RANK["sent"]:
        message.delivery_status = "sent"
    await session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.message_id == message.id, OutboxEntry.status != "sent")
        .values(status="sent", last_error=None)
    )


async def apply_updates(session: AsyncSession, reported: Sequence[Reported]) -> None:
    """Apply statuses to their messages; keep those whose message is not known yet."""
    if not reported:
        return
    await _reconcile_by_key(session, reported)
    named = [r for r in reported if r.update.external_id is not None]
    keys = {(r.channel_account.id, r.update.external_id) for r in named if r.update.external_id}
    messages = await _messages(session, keys)
    touched: set[tuple[int, int]] = set()
    for r in named:
        message = messages.get((r.channel_account.id, r.update.external_id or ""))
        if message is None:
            session.add(_waiting(r))
            continue
        _apply(session, message, r.update)
        touched.add((message.account_id, message.conversation_id))
    for r in reported:
        if r.update.external_id is None and r.update.recipient_id:
            touched |= await _apply_watermark(session, r)
    await session.flush()
    await _announce(session, touched)


async def _reconcile_by_key(session: AsyncSession, reported: Sequence[Reported]) -> None:
    """A status carrying the key Allo sent names the reply even when its send's answer (the
    network's id) was lost: the reply takes that id."""
    for r in reported:
        key, external_id = r.update.outbox_key, r.update.external_id
        if not key or not external_id:
            continue
        message = await session.scalar(
            select(Message).where(
                Message.account_id == r.channel_account.account_id,
                Message.idempotency_key == key,
                Message.external_id.is_(None),
            )
        )
        if message is not None:
            message.external_id = external_id
            await mark_sent(session, message)
    await session.flush()


async def _messages(
    session: AsyncSession, keys: set[tuple[int, str]]
) -> dict[tuple[int, str], Message]:
    if not keys:
        return {}
    rows = await session.scalars(
        select(Message).where(pairs_match(Message.channel_account_id, Message.external_id, keys))
    )
    return {(m.channel_account_id, m.external_id or ""): m for m in rows}


def _waiting(r: Reported) -> DeliveryUpdate:
    return DeliveryUpdate(
        account_id=r.channel_account.account_id,
        channel_account_id=r.channel_account.id,
        external_id=r.update.external_id,
        kind=r.update.kind,
        at=r.update.at,
        error=r.update.error,
        reaction=r.update.reaction,
    )


def _apply(session: AsyncSession, message: Message, update: StatusUpdate | DeliveryUpdate) -> None:
    kind, error = update.kind, update.error
    if kind == "deleted":
        message.deleted_at = message.deleted_at or update.at
    elif kind == "reaction":
        message.reaction = update.reaction
    elif kind == "failed":
        if message.direction == "out" and RANK.get(message.delivery_status, 0) < RANK["delivered"]:
            message.delivery_status = "failed"
            notify_failed(session, message, error or "the network did not deliver it")
    elif (
        message.direction == "out"
        and message.delivery_status != "failed"
        and RANK[kind] > RANK.get(message.delivery_status, 0)
    ):
        message.delivery_status = kind


def notify_failed(session: AsyncSession, message: Message, reason: str) -> None:
    """Whoever wrote a reply the network did not deliver is told why."""
    session.add(
        Notification(
            account_id=message.account_id,
            user_id=message.author_user_id,
            conversation_id=message.conversation_id,
            kind="send_failed",
            text=f"Not delivered: {reason}"[:1000],
            created_at=datetime.now(UTC),
        )
    )


async def _apply_watermark(session: AsyncSession, r: Reported) -> set[tuple[int, int]]:
    """Messenger reads and deliveries by watermark: every private reply to that customer on
    that channel account sent up to then."""
    kind = r.update.kind
    if kind not in PROGRESS:
        return set()
    lower = [status for status, rank in RANK.items() if rank < RANK[kind] and status != "held"]
    result = await session.execute(
        update(Message)
        .where(
            Message.channel_account_id == r.channel_account.id,
            Message.direction == "out",
            Message.visibility == "private",
            Message.sent_at <= r.update.at,
            Message.delivery_status.in_(lower),
            Message.conversation_id.in_(
                select(Conversation.id).where(
                    Conversation.channel_account_id == r.channel_account.id,
                    Conversation.recipient_id == r.update.recipient_id,
                )
            ),
        )
        .values(delivery_status=kind)
        .returning(Message.account_id, Message.conversation_id)
    )
    return {(account_id, conversation_id) for account_id, conversation_id in result.all()}


async def apply_waiting(session: AsyncSession, keys: Iterable[tuple[int, str]]) -> None:
    """Statuses that came before their message, applied now that it exists."""
    wanted = set(keys)
    if not wanted:
        return
    waiting = list(
        (
            await session.scalars(
                select(DeliveryUpdate)
                .where(
                    pairs_match(
                        DeliveryUpdate.channel_account_id, DeliveryUpdate.external_id, wanted
                    )
                )
                .order_by(DeliveryUpdate.id)
            )
        ).all()
    )
    if not waiting:
        return
    messages = await _messages(session, {(w.channel_account_id, w.external_id) for w in waiting})
    touched = set()
    for w in waiting:
        message = messages.get((w.channel_account_id, w.external_id))
        if message is not None:
            _apply(session, message, w)
            touched.add((message.account_id, message.conversation_id))
    await session.execute(
        delete(DeliveryUpdate).where(DeliveryUpdate.id.in_([w.id for w in waiting]))
    )
    await session.flush()
    await _announce(session, touched)


async def _announce(session: AsyncSession, touched: set[tuple[int, int]]) -> None:
    by_account: dict[int, list[int]] = {}
    for account_id, conversation_id in touched:
        by_account.setdefault(account_id, []).append(conversation_id)
    for account_id, conversation_ids in by_account.items():
        await events.announce(session, account_id, "message", sorted(conversation_ids))
