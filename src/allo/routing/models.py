"""Routing tables: teams and their agents, SLA policies, clocks' timers, breaches, escalation."""

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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from allo.db.base import Base, Timestamped

STRATEGIES = ("balanced", "round_robin", "sticky")
PRESENCES = ("online", "away", "offline")
SLA_KINDS = ("first_response", "next_response", "resolution")
TIMER_ACTIONS = ("warn", "breach")
SLA_EVENTS = ("breached", "warned", "escalated")
ESCALATION_ACTIONS = ("notify", "raise_priority", "reassign", "move_team")


class Team(Timestamped, Base):
    """A group of agents that answers some inboxes, with its hours, SLA policy and strategy."""

    __tablename__ = "teams"
    __table_args__ = (
        UniqueConstraint("account_id", "name"),
        CheckConstraint(f"strategy IN {STRATEGIES}", name="strategy"),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(20), default="balanced", server_default="balanced")
    # `routing.calendars.BusinessCalendar` as JSON; null: always open.
    calendar: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    sla_policy_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("sla_policies.id", ondelete="SET NULL"), nullable=True
    )
    # The inboxes (channel accounts) it answers; empty: any inbox no other team claims.
    inbox_ids: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger), default=list, server_default=text("'{}'")
    )
    # The conversation languages it takes; empty: any.
    languages: Mapped[list[str]] = mapped_column(
        ARRAY(String(8)), default=list, server_default=text("'{}'")
    )
    unassign_grace_seconds: Mapped[int] = mapped_column(Integer, default=300, server_default="300")
    # {"fr": "…", "en": "…"}: the out-of-hours acknowledgement; empty: none is sent.
    acknowledgements: Mapped[dict[str, str]] = mapped_column(
        JSONB, default=dict, server_default="{}"
    )
    last_round_robin_user_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class TeamMember(Base):
    __tablename__ = "team_members"

    team_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )


class Agent(Base):
    """A user as routing sees them: presence, capacity per kind of channel, skills."""

    __tablename__ = "agents"
    __table_args__ = (CheckConstraint(f"presence IN {PRESENCES}", name="presence"),)

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    presence: Mapped[str] = mapped_column(String(10), default="offline", server_default="offline")
    presence_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # {"social": 5, "messaging": 3, "email": 8}: conversations held at once per channel kind.
    capacity: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict, server_default="{}")
    skills: Mapped[list[str]] = mapped_column(
        ARRAY(String(100)), default=list, server_default=text("'{}'")
    )
    last_assigned_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class SlaPolicy(Timestamped, Base):
    """Targets per priority, and per channel where they differ: seconds of business time."""

    __tablename__ = "sla_policies"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    # {"normal": {"first_response": 3600, "next_response": 3600, "resolution": 86400}, …}
    targets: Mapped[dict[str, dict[str, int]]] = mapped_column(JSONB)
    # {"email": {"normal": {…}}}: overrides for one channel.
    channel_targets: Mapped[dict[str, dict[str, dict[str, int]]]] = mapped_column(
        JSONB, default=dict, server_default="{}"
    )


class SlaTimer(Base):
    """A moment when a clock must be looked at: a warning before a breach, or the breach."""

    __tablename__ = "sla_timers"
    __table_args__ = (
        CheckConstraint(f"kind IN {SLA_KINDS}", name="kind"),
        CheckConstraint(f"action IN {TIMER_ACTIONS}", name="action"),
        Index("ix_sla_timers_pending", "fires_at", postgresql_where=text("done_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(10))
    rule_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("escalation_rules.id", ondelete="CASCADE"), nullable=True
    )
    # A clock is one wait: the conversation, the kind, and when the wait began.
    clock_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    fires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SlaEvent(Base):
    """What happened to a clock: a breach, a warning, an escalation. Reports count these."""

    __tablename__ = "sla_events"
    __table_args__ = (
        CheckConstraint(f"kind IN {SLA_KINDS}", name="kind"),
        CheckConstraint(f"event IN {SLA_EVENTS}", name="event"),
        Index("ix_sla_events_account_at", "account_id", "at"),
        # One breach per clock, however often its timer fires or its due time moves.
        Index(
            "uq_sla_events_breach",
            "conversation_id",
            "kind",
            "clock_started_at",
            unique=True,
            postgresql_where=text("event = 'breached'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    team_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    kind: Mapped[str] = mapped_column(String(20))
    event: Mapped[str] = mapped_column(String(20))
    clock_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")


class EscalationRule(Timestamped, Base):
    """Before (`before_seconds` > 0) or at a breach of `kind`: notify, raise the priority,
    reassign, or move the conversation to another team."""

    __tablename__ = "escalation_rules"
    __table_args__ = (
        CheckConstraint(f"kind IN {SLA_KINDS}", name="kind"),
        CheckConstraint(f"action IN {ESCALATION_ACTIONS}", name="action"),
        CheckConstraint("before_seconds >= 0", name="before_seconds"),
    )

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    team_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("teams.id", ondelete="CASCADE"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    before_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    action: Mapped[str] = mapped_column(String(20))
    target_team_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("teams.id", ondelete="SET NULL"), nullable=True
    )


class Notification(Base):
    """Something a person should see: an SLA about to break, an escalation."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_unread", "account_id", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("accounts.id", ondelete="CASCADE")
    )
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    team_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("teams.id", ondelete="CASCADE"), nullable=True
    )
    conversation_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
