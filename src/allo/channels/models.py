from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allo.db.base import Base, Timestamped

CHANNEL_KINDS = (
    "api",
    "x",
    "facebook",
    "instagram",
    "messenger",
    "whatsapp",
    "email",
    "webchat",
    "webform",
    "voice",
)


class ChannelAccount(Timestamped, Base):
    """A connected page, handle, number, mailbox or widget: what the API calls an inbox."""

    __tablename__ = "channel_accounts"
    __table_args__ = (
        UniqueConstraint("account_id", "kind", "external_id"),
        CheckConstraint(f"kind IN {CHANNEL_KINDS}", name="kind"),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[str] = mapped_column(String(200))
    credentials_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    health: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    """The last health check (`channels.outbound.Health` as JSON); null: never checked."""
    fetch_cursor: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Where polling the network resumes (X since_id, a feed's last time)."""
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


UPDATE_KINDS = ("sent", "delivered", "read", "failed", "deleted", "reaction")


class DeliveryUpdate(Base):
    """A status a network reported for a message Allo does not know yet (a WhatsApp "sent"
    can arrive before the send's own answer is written): kept, and applied when a message
    with this external id appears."""

    __tablename__ = "delivery_updates"
    __table_args__ = (
        CheckConstraint(f"kind IN {UPDATE_KINDS}", name="kind"),
        Index("ix_delivery_updates_message", "channel_account_id", "external_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    channel_account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("channel_accounts.id", ondelete="CASCADE")
    )
    external_id: Mapped[str] = mapped_column(String(998))
    kind: Mapped[str] = mapped_column(String(10))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reaction: Mapped[str | None] = mapped_column(String(64), nullable=True)
