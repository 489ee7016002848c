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
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allo.db.base import Base, Timestamped

# held: a public reply waiting for a supervisor's approval; rejected: refused by one.
OUTBOX_STATUSES = ("held", "queued", "sending", "sent", "failed", "rejected")


class OutboxEntry(Timestamped, Base):
    """One message to send to a customer, one row per message. The channel senders (issue 6)
    take the queued rows; the idempotency key is what they give the platform, where it takes
    one, so that a retried send is one message."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("account_id", "idempotency_key"),
        CheckConstraint(f"status IN {OUTBOX_STATUSES}", name="status"),
        Index("ix_outbox_queued", "next_attempt_at", postgresql_where=text("status = 'queued'")),
        Index("ix_outbox_account", "account_id", "id"),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE")
    )
    channel_account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("channel_accounts.id", ondelete="CASCADE")
    )
    idempotency_key: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10), default="queued", server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    """What the sender needs beyond the text: a WhatsApp template and its parameters."""


class CannedResponse(Timestamped, Base):
    """A saved answer an agent inserts in the composer: per language (null: any), with
    variables such as {{contact.first_name}} filled in for the conversation at hand."""

    __tablename__ = "canned_responses"
    __table_args__ = (
        Index(
            "uq_canned_responses_shortcut",
            "account_id",
            "shortcut",
            text("coalesce(language, '')"),
            unique=True,
        ),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    shortcut: Mapped[str] = mapped_column(String(50))
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)


class MessageTemplate(Timestamped, Base):
    """A message the network approved in advance (WhatsApp), the only kind it lets through
    once the customer's 24-hour window has closed; {{1}}, {{2}}… are its parameters."""

    __tablename__ = "message_templates"
    __table_args__ = (UniqueConstraint("account_id", "channel", "name", "language"),)

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    channel: Mapped[str] = mapped_column(String(20), default="whatsapp", server_default="whatsapp")
    name: Mapped[str] = mapped_column(String(512))
    language: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
