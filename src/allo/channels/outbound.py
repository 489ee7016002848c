"""What the outbox hands a network module, and what the module answers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx

# Why a send failed, as the agent is told. Retryable: unavailable (5xx, network) and
# rate_limited (429); the others cannot succeed by trying again.
SEND_REASONS = (
    "window_closed",  # the 24-hour (or 7-day) messaging window is over
    "blocked",  # the customer blocked the brand or cannot receive messages
    "deleted",  # the post or comment answered no longer exists
    "already_replied",  # a private reply was already sent to this comment
    "unauthorized",  # the token expired or lacks a permission: reconnect the channel
    "invalid",  # the network refused the message itself (too long, bad template…)
    "rate_limited",
    "unavailable",
)


@dataclass(frozen=True)
class Connection:
    """A connected channel account as a network module sees it."""

    channel_account_id: int
    kind: str
    external_id: str
    """The brand's id on the network: page id, Instagram account id, phone number id, X user id."""
    credentials: Mapping[str, str]
    settings: Mapping[str, Any]
    api_url: str
    """The network's API base URL, without a trailing slash (a local fake's in tests)."""
    http: httpx.AsyncClient


@dataclass(frozen=True)
class Template:
    """A WhatsApp template approved by Meta, with its parameters filled in."""

    name: str
    language: str
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outgoing:
    """One message to send, from an outbox row."""

    key: str
    """The outbox's idempotency key: given to the network where it takes one, and echoed back."""
    text: str
    visibility: Literal["public", "private"]
    recipient_id: str | None
    """The customer's id on this channel account (PSID, IGSID, wa_id, X user id)."""
    reply_to_external_id: str | None = None
    """The message answered: a comment, a post, a WhatsApp message (sent with context)."""
    thread_key: str | None = None
    """A public thread's post."""
    private_reply_to: str | None = None
    """A private reply to a public comment or post: its id (recipient.comment_id on Meta)."""
    tag: str | None = None
    """HUMAN_AGENT: a Messenger or Instagram message after the 24-hour window (within 7 days)."""
    template: Template | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True)
class Sent:
    """The network took the message."""

    external_id: str
    recipient_id: str | None = None
    """Who received it, when the network says (a private reply's PSID): joins the contact."""


class SendError(Exception):
    """The network refused or could not be reached."""

    def __init__(
        self, reason: str, detail: str, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Lookup:
    """Whether a message whose send was interrupted reached the network.

    `certain` is False where the network offers no way to look (the outbox then asks a
    person rather than risk a second copy)."""

    external_id: str | None
    certain: bool


@dataclass(frozen=True)
class Fetched:
    """Events polled from the network (where webhooks cannot deliver them): each with its
    idempotency key and its exact bytes, recorded like a webhook; and where to resume."""

    events: list[tuple[str, bytes]] = field(default_factory=list)
    cursor: str | None = None


@dataclass(frozen=True)
class Health:
    """Whether a connection works, as its check found it."""

    ok: bool
    problems: tuple[str, ...] = ()
    token_expires_at: datetime | None = None
    subscribed: bool | None = None
    """Whether the network delivers this account's webhooks to Allo (None: not known)."""
    checked_at: datetime | None = None
