"""Sending what the outbox holds through each network's module: once, even across crashes.

A row is claimed (status `sending`, a lease in `next_attempt_at`) and committed before the
network is called; the answer is written after. A worker that dies between the call and the
write leaves a `sending` row whose lease runs out: it is then reconciled — an echo or a status
carrying its key may already have named it; else the network is asked whether it has the
message (`find_sent`); where it cannot tell, a person decides rather than risk a second copy.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allo import events
from allo.channels import service as channels
from allo.channels.credentials import CredentialsCipher
from allo.channels.models import ChannelAccount
from allo.channels.outbound import Lookup, Outgoing, SendError, Sent, Template
from allo.channels.registry import NETWORKS, network_for
from allo.contacts.models import Identity
from allo.conversations import delivery
from allo.conversations.models import Conversation, Message
from allo.db.engine import Database
from allo.replies.models import OutboxEntry

logger = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
"""How long a send may take before it counts as interrupted."""
FIRST_RETRY = timedelta(seconds=5)
LAST_RETRY = timedelta(hours=1)
CLAIMED_AT_ONCE = 20

_CLAIM = text(
    """
    UPDATE outbox SET status = 'sending', attempts = attempts + 1,
        next_attempt_at = :lease_ends
    WHERE id IN (
        SELECT outbox.id FROM outbox
        JOIN channel_accounts ON channel_accounts.id = outbox.channel_account_id
        WHERE outbox.status = :status AND outbox.next_attempt_at <= :now
          AND channel_accounts.kind = ANY(:kinds)
          AND channel_accounts.credentials_encrypted IS NOT NULL
        ORDER BY outbox.next_attempt_at, outbox.id
        LIMIT :limit
        FOR UPDATE OF outbox SKIP LOCKED
    )
    RETURNING id
    """
)


@dataclass
class SendReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    reconciled: int = 0

    @property
    def done(self) -> int:
        return self.sent + self.retried + self.failed + self.reconciled


@dataclass(frozen=True)
class Sending:
    """One claimed row and everything its send needs, read in one go."""

    entry_id: int
    attempts: int
    channel_account: ChannelAccount
    outgoing: Outgoing


class Sender:
    """Sends due outbox rows of the channels connected to a network (a network's kind, with
    credentials). A channel account of such a kind without credentials (the demo's, an
    import's, one fed through the API) is not connected: its replies stay queued, for the
    integration that reads them through the API."""

    def __init__(
        self, db: Database, cipher: CredentialsCipher, http: httpx.AsyncClient, max_attempts: int
    ) -> None:
        self.db = db
        self.cipher = cipher
        self.http = http
        self.max_attempts = max_attempts

    async def send_due(self, now: datetime | None = None) -> SendReport:
        """Reconcile interrupted sends, then send what is due, until nothing is."""
        report = SendReport()
        report.reconciled += await self._reconcile_interrupted(now)
        while True:
            claimed = await self._claim("queued", now)
            for sending in claimed:
                await self._send(sending, report, now)
            if len(claimed) < CLAIMED_AT_ONCE:
                return report

    async def _claim(self, status: str, now: datetime | None) -> list[Sending]:
        moment = now or datetime.now(UTC)
        async with self.db.transaction() as session:
            ids = list(
                (
                    await session.scalars(
                        _CLAIM,
                        {
                            "now": moment,
                            "lease_ends": moment + LEASE,
                            "status": status,
                            "kinds": list(NETWORKS),
                            "limit": CLAIMED_AT_ONCE,
                        },
                    )
                ).all()
            )
            return [await _sending(session, entry_id) for entry_id in sorted(ids)]

    async def _send(self, sending: Sending, report: SendReport, now: datetime | None) -> None:
        network = network_for(sending.channel_account.kind)
        assert network is not None  # only rows of network kinds are claimed
        connection = channels.connect(sending.channel_account, self.cipher, self.http)
        try:
            sent = await network.send(connection, sending.outgoing)
        except SendError as refused:
            await self._refused(sending, refused, report, now)
            return
        except Exception as error:
            # A fault of ours or an unexpected answer: tried again later, like a network error.
            logger.exception("outbox %s: sending failed unexpectedly", sending.entry_id)
            await self._refused(sending, SendError("unavailable", str(error), True), report, now)
            return
        async with self.db.transaction() as session:
            await record_sent(session, sending.entry_id, sent)
        report.sent += 1

    async def _refused(
        self, sending: Sending, refused: SendError, report: SendReport, now: datetime | None
    ) -> None:
        moment = now or datetime.now(UTC)
        async with self.db.transaction() as session:
            entry = await session.get(OutboxEntry, sending.entry_id, with_for_update=True)
            if entry is None or entry.status != "sending":
                return
            entry.last_error = f"{refused.reason}: {refused.detail}"[:2000]
            if refused.retryable and entry.attempts < self.max_attempts:
                entry.status = "queued"
                entry.next_attempt_at = moment + retry_delay(entry.attempts, refused.retry_after)
                report.retried += 1
                return
            await fail(session, entry, entry.last_error)
            report.failed += 1

    async def _reconcile_interrupted(self, now: datetime | None) -> int:
        """Rows whose lease ran out while `sending`: the worker died mid-send."""
        reconciled = 0
        for sending in await self._claim("sending", now):
            network = network_for(sending.channel_account.kind)
            assert network is not None
            connection = channels.connect(sending.channel_account, self.cipher, self.http)
            try:
                lookup = await network.find_sent(connection, sending.outgoing)
            except Exception as error:
                # The network cannot be asked now: the row stays `sending`, asked again later.
                logger.warning("outbox %s: cannot look it up yet (%s)", sending.entry_id, error)
                continue
            async with self.db.transaction() as session:
                await _reconciled(session, sending.entry_id, lookup)
            reconciled += 1
        return reconciled


def retry_delay(attempts: int, retry_after: float | None) -> timedelta:
    """Exponential backoff with jitter, never sooner than the network asked."""
    backoff = min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), LAST_RETRY)
    jittered: timedelta = backoff * random.uniform(0.8, 1.2)
    asked = timedelta(seconds=retry_after or 0)
    return max(jittered, asked)


async def _sending(session: AsyncSession, entry_id: int) -> Sending:
    entry = await session.get(OutboxEntry, entry_id)
    assert entry is not None
    message = await session.get(Message, entry.message_id)
    conversation = await session.get(Conversation, entry.conversation_id)
    channel_account = await session.get(ChannelAccount, entry.channel_account_id)
    assert message is not None and conversation is not None and channel_account is not None
    session.expunge(channel_account)
    return Sending(
        entry.id,
        entry.attempts,
        channel_account,
        await outgoing_of(session, entry, message, conversation),
    )


async def outgoing_of(
    session: AsyncSession, entry: OutboxEntry, message: Message, conversation: Conversation
) -> Outgoing:
    """What the network module is asked to send for one outbox row."""
    payload = entry.payload or {}
    template = payload.get("template")
    reply_to = payload.get("reply_to")
    if reply_to is None and message.visibility == "public":
        reply_to = await _latest_from_customer(session, conversation.id, "public")
    return Outgoing(
        key=entry.idempotency_key,
        text=message.text,
        visibility="public" if message.visibility == "public" else "private",
        recipient_id=conversation.recipient_id,
        reply_to_external_id=reply_to,
        thread_key=conversation.thread_key,
        private_reply_to=payload.get("private_reply_to"),
        tag=payload.get("tag"),
        template=(
            Template(template["name"], template["language"], tuple(template["parameters"]))
            if template
            else None
        ),
        sent_at=message.sent_at,
    )


async def _latest_from_customer(
    session: AsyncSession, conversation_id: int, visibility: str
) -> str | None:
    found: str | None = await session.scalar(
        select(Message.external_id)
        .where(
            Message.conversation_id == conversation_id,
            Message.direction == "in",
            Message.visibility == visibility,
            Message.external_id.is_not(None),
        )
        .order_by(Message.sent_at.desc(), Message.id.desc())
        .limit(1)
    )
    return found


async def record_sent(session: AsyncSession, entry_id: int, sent: Sent) -> None:
    """The network took the message: its id on the message, statuses that came first applied,
    and the customer's private id (a private reply's) joined to the conversation's contact."""
    entry = await session.get(OutboxEntry, entry_id, with_for_update=True)
    assert entry is not None
    message = await session.get(Message, entry.message_id, with_for_update=True)
    conversation = await session.get(Conversation, entry.conversation_id, with_for_update=True)
    assert message is not None and conversation is not None
    if message.external_id is None:
        await _drop_echo_copy(session, message, sent.external_id)
        message.external_id = sent.external_id
    await delivery.mark_sent(session, message)
    if sent.recipient_id and sent.recipient_id != conversation.recipient_id:
        conversation.recipient_id = sent.recipient_id
        await _join_identity(session, conversation, sent.recipient_id)
    await session.flush()
    await delivery.apply_waiting(session, [(message.channel_account_id, sent.external_id)])
    await events.announce(session, entry.account_id, "message", [conversation.id])


async def _drop_echo_copy(session: AsyncSession, message: Message, external_id: str) -> None:
    """The network's echo of this reply may have been stored first, as a message of its own
    (X sends the brand's posts back with links shortened: the text did not match): it is this
    reply, seen again, and goes."""
    await session.execute(
        delete(Message).where(
            Message.channel_account_id == message.channel_account_id,
            Message.external_id == external_id,
            Message.direction == "out",
            Message.id != message.id,
        )
    )


async def _join_identity(
    session: AsyncSession, conversation: Conversation, platform_id: str
) -> None:
    """The id a network gave the customer in private becomes one more identity of theirs."""
    known = await session.scalar(
        select(Identity.id).where(
            Identity.account_id == conversation.account_id,
            Identity.platform == conversation.channel,
            Identity.platform_id == platform_id,
        )
    )
    if known is None:
        session.add(
            Identity(
                account_id=conversation.account_id,
                contact_id=conversation.contact_id,
                platform=conversation.channel,
                platform_id=platform_id,
            )
        )


async def fail(session: AsyncSession, entry: OutboxEntry, reason: str) -> None:
    """Not sent, for good: the writer is told why, and the customer waits again."""
    entry.status = "failed"
    entry.last_error = reason
    message = await session.get(Message, entry.message_id, with_for_update=True)
    conversation = await session.get(Conversation, entry.conversation_id, with_for_update=True)
    assert message is not None and conversation is not None
    message.delivery_status = "failed"
    delivery.notify_failed(session, message, reason)
    if conversation.last_inbound_at and conversation.waiting_since is None:
        answered = await session.scalar(
            select(Message.id).where(
                Message.conversation_id == conversation.id,
                Message.direction == "out",
                Message.visibility != "note",
                Message.delivery_status.in_(("sent", "delivered", "read")),
                Message.sent_at >= conversation.last_inbound_at,
            )
        )
        if answered is None:
            conversation.waiting_since = conversation.last_inbound_at
            conversation.routed_at = None
    await events.announce(session, entry.account_id, "message", [conversation.id])


async def _reconciled(session: AsyncSession, entry_id: int, lookup: Lookup) -> None:
    entry = await session.get(OutboxEntry, entry_id, with_for_update=True)
    if entry is None or entry.status != "sending":
        return  # an echo or a status named it meanwhile
    if lookup.external_id is not None:
        await record_sent(session, entry_id, Sent(lookup.external_id))
    elif lookup.certain:
        entry.status = "queued"  # the network does not have it: sending again is safe
        entry.next_attempt_at = datetime.now(UTC)
    else:
        await fail(
            session,
            entry,
            "interrupted: the network cannot say whether it received this reply; "
            "check the conversation there and send again if needed",
        )
