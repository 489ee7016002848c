"""What every channel parser produces: channel-neutral inbound messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

Direction = Literal["in", "out"]
Visibility = Literal["public", "private"]


class ParseError(ValueError):
    """The raw event cannot be understood; it is kept, marked failed, and can be retried."""


@dataclass(frozen=True)
class Author:
    """A customer as the channel knows them (one identity of a contact)."""

    platform_id: str
    handle: str | None = None
    display_name: str | None = None
    followers: int | None = None
    verified: bool = False
    email: str | None = None
    phone: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class InboundMessage:
    """One message as a channel delivered it, before it joins a conversation.

    `contact` is the customer the message comes from ("in") or goes to ("out": the brand's own
    message seen by the channel, an echo or history imported from the network). An "out"
    message may leave it unknown when its thread names the customer already.
    """

    external_id: str
    contact: Author | None
    text: str
    sent_at: datetime
    direction: Direction = "in"
    visibility: Visibility = "private"
    html: str | None = None
    author_name: str | None = None
    subject: str | None = None
    reply_to_external_id: str | None = None
    references: tuple[str, ...] = ()
    thread_key: str | None = None
    attachments: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    outbox_key: str | None = None
    """On the brand's own message echoed back by the network: the idempotency key Allo gave
    it when sending (Messenger's `metadata`), so the echo is the sent message, not a copy."""


UpdateKind = Literal["sent", "delivered", "read", "failed", "deleted", "reaction"]


@dataclass(frozen=True)
class StatusUpdate:
    """What a network says about a message that exists (or will: statuses may come first).

    `external_id` names the message; a read receipt by watermark (Messenger) names none and
    gives instead the customer (`recipient_id`) and the time up to which everything was read.
    """

    kind: UpdateKind
    at: datetime
    external_id: str | None = None
    recipient_id: str | None = None
    error: str | None = None
    """failed: the network's code and reason, shown to the agent."""
    reaction: str | None = None
    """reaction: the emoji the customer put on the message (None: taken back)."""
    outbox_key: str | None = None
    """The idempotency key Allo sent with the message, where the network echoes it back
    (WhatsApp's `biz_opaque_callback_data`): ties a status to a send whose answer was lost."""


Parsed: TypeAlias = InboundMessage | StatusUpdate
