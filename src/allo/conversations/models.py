from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allo.db.base import Base, Timestamped

STATUSES = ("open", "pending", "snoozed", "resolved")
VISIBILITIES = ("public", "private")
MESSAGE_VISIBILITIES = ("public", "private", "note")
DIRECTIONS = ("in", "out")
DELIVERY_STATUSES = ("received", "held", "queued", "sent", "delivered", "read", "failed")


class Conversation(Timestamped, Base):
    __tablename__ = "conversations"
    __table_args__ = (
        CheckConstraint(f"status IN {STATUSES}", name="status"),
        CheckConstraint(f"visibility IN {VISIBILITIES}", name="visibility"),
        Index("ix_conversations_account_last", "account_id", "last_message_at", "id"),
        Index("ix_conversations_thread", "channel_account_id", "thread_key"),
        Index("ix_conversations_private", "channel_account_id", "contact_id", "visibility"),
        Index("ix_conversations_labels", "labels", postgresql_using="gin"),
        # Routing's queue: conversations with a change routing has not read yet.
        Index("ix_conversations_unrouted", "id", postgresql_where=text("routed_at IS NULL")),
        Index("ix_conversations_team_waiting", "team_id", "status", "waiting_since"),
        # The head of a team's queue of unassigned conversations on the clock: those still on
        # time by deadline, the overdue ones by due time.
        Index(
            "ix_conversations_team_queue",
            "team_id",
            "queue_deadline",
            postgresql_where=text(
                "status = 'open' AND assignee_id IS NULL AND response_due_at IS NOT NULL"
            ),
        ),
        Index(
            "ix_conversations_team_overdue",
            "team_id",
            "response_due_at",
            postgresql_where=text(
                "status = 'open' AND assignee_id IS NULL AND response_due_at IS NOT NULL"
            ),
        ),
        Index("ix_conversations_assignee", "assignee_id", "status"),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    channel_account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("channel_accounts.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(20))
    visibility: Mapped[str] = mapped_column(String(10))
    contact_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    thread_key: Mapped[str | None] = mapped_column(String(998), nullable=True)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(10), default="open", server_default="open")
    priority: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    assignee_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    team_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    labels: Mapped[list[str]] = mapped_column(
        ARRAY(String(100)), default=list, server_default=text("'{}'")
    )
    waiting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    first_response_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_inbound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_response_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    last_message_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    # Routing (allo.routing): SLA due times of the running clocks, where the resolution clock
    # stopped (pending, snoozed) and for how much business time in all, when routing last
    # read the conversation, why it was resolved without an answer, and the last
    # out-of-hours acknowledgement.
    first_response_due_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    next_response_due_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    resolution_due_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    sla_paused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sla_paused_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    routed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    unanswered_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The earliest running response clock, and that due time brought forward by triage's and
    # the priority's credits: the queue is sorted by these (allo.routing.priority).
    response_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    queue_deadline: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # What triage read in the messages the customer waits on (urgent, sentiment, churn…), as
    # routing last saw it: the queue's order reads it without going through every message.
    waiting_triage: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    # Channels (allo.channels): the customer's id on the network, where private messages to
    # them go (a PSID, a wa_id, an X user id), and when a public thread was taken private
    # (a private reply to a comment): the customer's private answers then join it.
    recipient_id: Mapped[str | None] = mapped_column(String(320), nullable=True)
    private_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Message(Timestamped, Base):
    __tablename__ = "messages"
    __table_args__ = (
        CheckConstraint(f"direction IN {DIRECTIONS}", name="direction"),
        CheckConstraint(f"visibility IN {MESSAGE_VISIBILITIES}", name="visibility"),
        CheckConstraint(f"delivery_status IN {DELIVERY_STATUSES}", name="delivery_status"),
        Index(
            "uq_messages_external",
            "channel_account_id",
            "external_id",
            unique=True,
            postgresql_where=text("external_id IS NOT NULL"),
        ),
        Index("ix_messages_conversation", "conversation_id", "sent_at", "id"),
        Index(
            "ix_messages_text_trgm",
            "text",
            postgresql_using="gin",
            postgresql_ops={"text": "gin_trgm_ops"},
        ),
        # A message written in Allo is stored once per key, however often its form is sent.
        Index(
            "uq_messages_idempotency",
            "account_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        # Attachments still to download (allo.channels.attachments.PENDING, verbatim).
        Index(
            "ix_messages_attachments_pending",
            "id",
            postgresql_where=text(
                "direction = 'in' AND attachments @? '$[*] ? ((exists(@.url) || "
                "exists(@.media_id)) && !(exists(@.stored)) && !(exists(@.download_error)))'"
            ),
        ),
        # The triage queue: customer messages not read yet.
        Index(
            "ix_messages_untriaged",
            "id",
            postgresql_where=text("triaged_at IS NULL AND direction = 'in'"),
        ),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    channel_account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("channel_accounts.id", ondelete="CASCADE")
    )
    direction: Mapped[str] = mapped_column(String(3))
    visibility: Mapped[str] = mapped_column(String(10))
    external_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    reply_to_external_id: Mapped[str | None] = mapped_column(String(998), nullable=True)
    reply_to_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="SET NULL"), nullable=True
    )
    text: Mapped[str] = mapped_column(Text, default="", server_default="")
    html: Mapped[str | None] = mapped_column(Text, nullable=True)
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default="[]"
    )
    author_contact_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True
    )
    author_user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    author_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivery_status: Mapped[str] = mapped_column(String(10))
    inbound_event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    triage: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    """What triage read in it (`allo.triage.schemas.Assessment`); null until triaged."""
    triaged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    """For messages written in Allo (replies, notes): the composer's key."""
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    """The customer deleted or unsent it on the network; Allo keeps what it received."""
    reaction: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The emoji the customer reacted to this message with."""
