"""An account's own intents: labels with examples, agents' corrections, trained versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allo.db.base import Base, Timestamped

CORRECTED_FIELDS = ("intent", "sentiment", "spam", "offensive", "language", "needs_answer")


class IntentLabel(Timestamped, Base):
    """A label an admin defined ("delivery delay", "refund"), with a few example messages."""

    __tablename__ = "intent_labels"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    examples: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=list, server_default=text("'{}'")
    )


class TriageCorrection(Timestamped, Base):
    """An agent's "this was a complaint, not a question": kept, and used by the next training."""

    __tablename__ = "triage_corrections"
    __table_args__ = (
        CheckConstraint(f"field IN {CORRECTED_FIELDS}", name="field"),
        Index("ix_triage_corrections_account_field", "account_id", "field"),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    message_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    field: Mapped[str] = mapped_column(String(20))
    previous: Mapped[Any] = mapped_column(JSONB, nullable=True)
    value: Mapped[Any] = mapped_column(JSONB)
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )


class IntentModelVersion(Timestamped, Base):
    """One training of an account's intents; the previous versions stay, one is active."""

    __tablename__ = "intent_model_versions"
    __table_args__ = (
        UniqueConstraint("account_id", "version"),
        Index(
            "uq_intent_model_versions_active",
            "account_id",
            unique=True,
            postgresql_where=text("active"),
        ),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    labels: Mapped[list[str]] = mapped_column(ARRAY(Text))
    examples: Mapped[int] = mapped_column(Integer)
    corrections: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    artifact: Mapped[bytes] = mapped_column(LargeBinary)
    trained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
