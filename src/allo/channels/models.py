from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    LargeBinary,
    String,
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
