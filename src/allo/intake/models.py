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
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allo.db.base import Base

EVENT_STATUSES = ("pending", "processed", "failed", "skipped")


class InboundEvent(Base):
    """The exact bytes a channel delivered, kept before anything else happens to them.

    `raw` is stored `EXTERNAL` (migration 0006): a body that makes the row larger than about
    2 KB is kept beside it, uncompressed, so marking the event processed does not copy it."""

    __tablename__ = "inbound_events"
    __table_args__ = (
        UniqueConstraint("channel_account_id", "external_id"),
        CheckConstraint(f"status IN {EVENT_STATUSES}", name="status"),
        Index("ix_inbound_events_pending", "id", postgresql_where=text("status = 'pending'")),
        Index(
            "ix_inbound_events_failed",
            "account_id",
            "id",
            postgresql_where=text("status = 'failed'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    channel_account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("channel_accounts.id", ondelete="CASCADE")
    )
    parser: Mapped[str] = mapped_column(String(20))
    external_id: Mapped[str] = mapped_column(String(998))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    headers: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    status: Mapped[str] = mapped_column(String(10), default="pending", server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    message_ids: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger), default=list, server_default=text("'{}'")
    )
